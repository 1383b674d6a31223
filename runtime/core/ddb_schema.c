#include "ddb_schema.h"

#include <string.h>

struct rule {
    const char *name;
    size_t len;
    enum tide_ddb_field object; /* when the value is an object */
    enum tide_ddb_field array;  /* when the value is an array */
};

#define RULE(n, o, a) {n, sizeof(n) - 1, TIDE_DDB_##o, TIDE_DDB_##a}

static const struct rule rules[] = {
    RULE("Item", AV_MAP, PLAIN),
    RULE("Key", AV_MAP, PLAIN),
    RULE("Items", PLAIN, AV_MAP_LIST),
    /* BatchGetItem: a list of keys; a Streams record: one key */
    RULE("Keys", AV_MAP, AV_MAP_LIST),
    RULE("ExpressionAttributeValues", AV_MAP, PLAIN),
    RULE("ExclusiveStartKey", AV_MAP, PLAIN),
    RULE("LastEvaluatedKey", AV_MAP, PLAIN),
    RULE("Attributes", AV_MAP, PLAIN),
    RULE("NewImage", AV_MAP, PLAIN),
    RULE("OldImage", AV_MAP, PLAIN),
    RULE("ItemCollectionKey", AV_MAP, PLAIN),
    RULE("Parameters", PLAIN, AV_LIST),
    /* BatchGetItem: by table; TransactGetItems, BatchExecuteStatement: a list */
    RULE("Responses", NAMED_AV_LISTS, PLAIN),
    RULE("RequestItems", NAMED, PLAIN),
    RULE("UnprocessedItems", NAMED, PLAIN),
    RULE("UnprocessedKeys", NAMED, PLAIN),
    /* ConsumedCapacity: by table and index name */
    RULE("Tables", NAMED, PLAIN),
    RULE("GlobalSecondaryIndexes", NAMED, PLAIN),
    RULE("LocalSecondaryIndexes", NAMED, PLAIN),
};

enum tide_ddb_field tide_ddb_field_kind(const char *key, size_t len, enum tide_ddb_shape shape)
{
    if (shape == TIDE_DDB_SHAPE_SCALAR)
        return TIDE_DDB_PLAIN;
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        const struct rule *r = &rules[i];
        if (r->len == len && memcmp(r->name, key, len) == 0)
            return shape == TIDE_DDB_SHAPE_ARRAY ? r->array : r->object;
    }
    return TIDE_DDB_PLAIN;
}

enum tide_ddb_mode tide_ddb_value_mode(enum tide_ddb_mode mode, const char *key, size_t len,
                                       enum tide_ddb_shape shape)
{
    switch (mode) {
    case TIDE_DDB_MODE_AV:
        return TIDE_DDB_MODE_AV;
    case TIDE_DDB_MODE_AV_MAP:
        return shape == TIDE_DDB_SHAPE_OBJECT ? TIDE_DDB_MODE_AV : TIDE_DDB_MODE_NOT_AV_MAP;
    case TIDE_DDB_MODE_AV_LISTS:
        if (shape == TIDE_DDB_SHAPE_ARRAY)
            return TIDE_DDB_MODE_AV_MAP;
        break;
    case TIDE_DDB_MODE_JSON:
        return TIDE_DDB_MODE_JSON;
    case TIDE_DDB_MODE_FIELD:
        switch (tide_ddb_field_kind(key, len, shape)) {
        case TIDE_DDB_AV_MAP: return TIDE_DDB_MODE_AV;
        case TIDE_DDB_AV_MAP_LIST: return TIDE_DDB_MODE_AV_MAP;
        case TIDE_DDB_AV_LIST: return TIDE_DDB_MODE_AV;
        case TIDE_DDB_NAMED: return TIDE_DDB_MODE_PLAIN;
        case TIDE_DDB_NAMED_AV_LISTS: return TIDE_DDB_MODE_AV_LISTS;
        case TIDE_DDB_PLAIN:
        default: break;
        }
        break;
    case TIDE_DDB_MODE_PLAIN:
    default:
        break;
    }
    return shape == TIDE_DDB_SHAPE_OBJECT ? TIDE_DDB_MODE_FIELD : TIDE_DDB_MODE_PLAIN;
}

enum tide_ddb_av_type tide_ddb_av_type(const unsigned char *k, size_t n)
{
    if (n == 1) {
        switch (k[0]) {
        case 'S': return TIDE_DDB_AV_S;
        case 'N': return TIDE_DDB_AV_N;
        case 'B': return TIDE_DDB_AV_B;
        case 'M': return TIDE_DDB_AV_M;
        case 'L': return TIDE_DDB_AV_L;
        default: return TIDE_DDB_AV_UNKNOWN;
        }
    }
    if (n == 2 && k[1] == 'S' && (k[0] == 'S' || k[0] == 'N' || k[0] == 'B'))
        return k[0] == 'S' ? TIDE_DDB_AV_SS : k[0] == 'N' ? TIDE_DDB_AV_NS : TIDE_DDB_AV_BS;
    if (n == 4 && memcmp(k, "BOOL", 4) == 0)
        return TIDE_DDB_AV_BOOL;
    if (n == 4 && memcmp(k, "NULL", 4) == 0)
        return TIDE_DDB_AV_NULL;
    return TIDE_DDB_AV_UNKNOWN;
}
