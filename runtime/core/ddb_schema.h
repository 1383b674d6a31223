/*
 * ddb_schema.h - which fields of a DynamoDB request or response hold
 * AttributeValues.
 *
 * DynamoDB names these fields the same way in every operation (Item, Key,
 * ExpressionAttributeValues, ...), so the codec decides by the key name and
 * the JSON shape of its value, at any depth. Pure: no Lua, no JSON library.
 */
#ifndef TIDE_DDB_SCHEMA_H
#define TIDE_DDB_SCHEMA_H

#include <stddef.h>

enum tide_ddb_field {
    TIDE_DDB_PLAIN,          /* plain JSON; names inside are matched again */
    TIDE_DDB_AV_MAP,         /* object: attribute name -> AttributeValue */
    TIDE_DDB_AV_MAP_LIST,    /* array of AV_MAP (Items, BatchGetItem Keys) */
    TIDE_DDB_AV_LIST,        /* array of AttributeValues (PartiQL Parameters) */
    TIDE_DDB_NAMED,          /* object keyed by table or index names (RequestItems,
                                UnprocessedItems, ...): keys are never matched,
                                values are PLAIN */
    TIDE_DDB_NAMED_AV_LISTS, /* object keyed by table names whose values are
                                AV_MAP_LIST (BatchGetItem Responses) */
};

/* Shape of a field's value, as the caller sees it. */
enum tide_ddb_shape {
    TIDE_DDB_SHAPE_SCALAR,
    TIDE_DDB_SHAPE_ARRAY,
    TIDE_DDB_SHAPE_OBJECT,
};

/* How to treat the value of the object member named key[0..len) whose value
 * has the given shape. Scalars are always PLAIN (e.g. Tags[i].Key). */
enum tide_ddb_field tide_ddb_field_kind(const char *key, size_t len, enum tide_ddb_shape shape);

#endif
