/*
 * ddb_path.h - where in a value an error is: the path that starts every
 * value error of the DynamoDB codec ("Item.tags[3]: ...",
 * "ExpressionAttributeValues[\":v\"]: ..."). No Lua.
 *
 * The encoder (ddb_encode.c) and the decoder (ddb_decode.c) keep one
 * element per member or item they are inside; the text is put together only
 * when an error happens. Paths use Lua's view of a value: indices count
 * from 1, and keys that are not identifiers are quoted.
 */
#ifndef TIDE_DDB_PATH_H
#define TIDE_DDB_PATH_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Bound on nesting (tables inside tables, plain or AttributeValue), in path
 * elements: DynamoDB's 32 levels plus the request's own wrappers fit easily;
 * a cyclic table or absurd input stops here. */
#define TIDE_DDB_PATH_MAX 100

/* One element: a key of an object, or an index into an array. */
struct tide_ddb_path_elem {
    const char *key; /* NULL for an index; borrowed while the element is in use */
    size_t len;      /* bytes of key */
    size_t index;    /* 1-based */
    bool cut;        /* key holds only the first len bytes of a longer key */
};

struct tide_ddb_path {
    const char *root; /* name shown for the value itself ("params", "item", ...) */
    bool prefix;      /* show root before the elements too */
    int n;
    struct tide_ddb_path_elem e[TIDE_DDB_PATH_MAX];
};

void tide_ddb_path_init(struct tide_ddb_path *p, const char *root, bool prefix);

/* Sets err to "<path>: <message>" with the given code (the path elided in
 * the middle when it is very long); returns code. */
int tide_ddb_path_fail(const struct tide_ddb_path *p, struct tide_error *err, int code,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int tide_ddb_path_failv(const struct tide_ddb_path *p, struct tide_error *err, int code,
                        const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

#endif
