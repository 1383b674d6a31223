/*
 * ddb_limits.h - DynamoDB's request limits and its item size rules.
 *
 * Used to refuse an oversized item or request before it is sent. Pure: works
 * on the DynamoDB JSON text of an item, read in one pass with yajl's
 * callbacks (no tree); no Lua.
 */
#ifndef TIDE_DDB_LIMITS_H
#define TIDE_DDB_LIMITS_H

#include <stddef.h>

#include "error.h"

#define TIDE_DDB_ITEM_BYTES 409600           /* one item, 400 KB */
#define TIDE_DDB_TRANSACT_ITEMS 100          /* TransactWrite/GetItems */
#define TIDE_DDB_TRANSACT_BYTES 4194304      /* one transaction, 4 MB */
#define TIDE_DDB_BATCH_WRITE_ITEMS 25        /* BatchWriteItem */
#define TIDE_DDB_BATCH_WRITE_BYTES 16777216  /* BatchWriteItem, 16 MB */
#define TIDE_DDB_BATCH_GET_KEYS 100          /* BatchGetItem */
#define TIDE_DDB_QUERY_PAGE_BYTES 1048576    /* one Query/Scan page, 1 MB */
#define TIDE_DDB_MAX_DEPTH 32                /* nested L/M levels in a value */

/* Size in bytes of the item whose DynamoDB JSON text is json[0..len) (an
 * object of attribute name -> AttributeValue), by DynamoDB's rules: each
 * attribute counts its name's UTF-8 bytes plus its value's size, where
 *   S: UTF-8 bytes; N: tide_ddb_number_size; B: raw bytes; BOOL, NULL: 1;
 *   L, M: 3 + for each element 1 + its size (M elements add their name);
 *   SS, NS, BS: the sum of their members' sizes.
 * Names and strings are measured as decoded (escapes undone, NUL bytes
 * included). Stores the size in *out and returns 0; TIDE_EINVAL when the
 * text is not well-formed DynamoDB JSON, TIDE_ENOMEM when memory ran out
 * (message says which). */
int tide_ddb_item_size(const char *json, size_t len, size_t *out, struct tide_error *err);

/* Size of the one AttributeValue json[0..len) by the same rules (without
 * any name). */
int tide_ddb_value_size(const char *json, size_t len, size_t *out, struct tide_error *err);

#endif
