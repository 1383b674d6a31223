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

/* The type keys of an AttributeValue ({"S": ...}, {"BOOL": ...}, ...). */
enum tide_ddb_av_type {
    TIDE_DDB_AV_NONE,    /* no type key (yet): never returned by tide_ddb_av_type */
    TIDE_DDB_AV_S, TIDE_DDB_AV_N, TIDE_DDB_AV_B, TIDE_DDB_AV_BOOL, TIDE_DDB_AV_NULL,
    TIDE_DDB_AV_M, TIDE_DDB_AV_L, TIDE_DDB_AV_SS, TIDE_DDB_AV_NS, TIDE_DDB_AV_BS,
    TIDE_DDB_AV_UNKNOWN, /* not a type key DynamoDB has */
};

/* The type named by the key k[0..n) of an AttributeValue object. */
enum tide_ddb_av_type tide_ddb_av_type(const unsigned char *k, size_t n);

#endif
