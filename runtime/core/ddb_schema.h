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

/* How the values inside an object or an array are read or written: the
 * encoder and the decoder walk a request or response with one mode per
 * open object or array. */
enum tide_ddb_mode {
    TIDE_DDB_MODE_FIELD,    /* plain; an object member's key is matched (tide_ddb_field_kind) */
    TIDE_DDB_MODE_PLAIN,    /* plain; the key is not matched (table names) */
    TIDE_DDB_MODE_AV,       /* each value is one AttributeValue */
    TIDE_DDB_MODE_AV_MAP,   /* each value is an object of attribute name -> AttributeValue */
    TIDE_DDB_MODE_AV_LISTS, /* an array is a list of AV_MAPs; anything else is plain */
    TIDE_DDB_MODE_JSON,     /* plain JSON all the way down: no key means anything */
    TIDE_DDB_MODE_NOT_AV_MAP, /* (a result only) the value should have been an AV_MAP */
    TIDE_DDB_MODE_JSON_EXACT, /* (tide_ddb_decode's argument only) JSON, with its numbers read as
                               * N values are: a double when it holds them exactly, else their text */
};

/* The mode of the values inside a value of the given shape that stands
 * where `mode` expects one (key[0..len): its member name, for
 * TIDE_DDB_MODE_FIELD), or TIDE_DDB_MODE_NOT_AV_MAP when an object of
 * AttributeValues belongs there and the value is not an object. Where mode
 * is AV the value is itself an AttributeValue (that is the caller's to
 * see), and an M or L inside holds AttributeValues: AV. For a scalar the
 * result only tells NOT_AV_MAP from the rest. E.g. (FIELD, "Item",
 * object) -> AV: Item's members are AttributeValues; (FIELD, "Items",
 * array) -> AV_MAP; (PLAIN, -, object) -> FIELD. */
enum tide_ddb_mode tide_ddb_value_mode(enum tide_ddb_mode mode, const char *key, size_t len,
                                       enum tide_ddb_shape shape);

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
