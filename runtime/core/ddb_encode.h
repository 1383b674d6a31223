/*
 * ddb_encode.h - the DynamoDB JSON encoder: a walker over the host's values
 * (lua_encode.c walks Lua tables) says what it finds, value by value, and
 * the encoder writes compact JSON text with the marshalling rules applied.
 * No Lua.
 *
 * Where a value is, decides what it becomes (ddb_schema.h): the members of
 * Item, Key, ExpressionAttributeValues, ... are AttributeValues ({"S":..},
 * {"N":..}, {"M":..}, ...), the rest of a request is plain JSON. The rules:
 * strings and keys must be UTF-8; numbers are DynamoDB numbers in an
 * AttributeValue (38 digits, 1E-130 .. 9.9E+125) and finite JSON numbers
 * elsewhere; binary values are base64; sets have members of their kind, no
 * duplicates and at least one member, and exist only in AttributeValues;
 * M and L nest at most TIDE_DDB_MAX_DEPTH levels, and anything at most
 * TIDE_DDB_PATH_MAX. A value error leaves a message naming its path
 * ("Item.tags[3]: empty sets cannot be stored in DynamoDB"); messages name
 * values as tide's Lua API does (core.binary, tide.number).
 *
 * The walk: for the top-level value, then for each member (tide_ddb_enc_key
 * first) or item (tide_ddb_enc_item first), one call of tide_ddb_enc_scalar,
 * or tide_ddb_enc_open / tide_ddb_enc_open_set, the members or items, and
 * tide_ddb_enc_close. Every call returns 0, or a negative TIDE_E* code with
 * the message in e->err; the walk stops at the first error.
 */
#ifndef TIDE_DDB_ENCODE_H
#define TIDE_DDB_ENCODE_H

#include <stdbool.h>
#include <stddef.h>

#include "ddb_json_writer.h"
#include "ddb_number.h"
#include "ddb_path.h"
#include "ddb_schema.h"
#include "error.h"

/* What a scalar of the host is. */
enum tide_ddb_scalar_type {
    TIDE_DDB_SCALAR_STRING,  /* p[0..len) */
    TIDE_DDB_SCALAR_NUMBER,  /* x */
    TIDE_DDB_SCALAR_DECIMAL, /* the decimal text p[0..len) of a tide.number */
    TIDE_DDB_SCALAR_BOOL,    /* b */
    TIDE_DDB_SCALAR_NULL,
    TIDE_DDB_SCALAR_BINARY,  /* the bytes p[0..len) */
    TIDE_DDB_SCALAR_OTHER,   /* a value JSON has no form for (a function, ...) */
};

struct tide_ddb_scalar {
    enum tide_ddb_scalar_type type;
    const char *type_name; /* the host's name of its type, for messages ("string", "table") */
    const char *p;         /* borrowed until the value's set (if any) is closed */
    size_t len;
    double x;
    bool b;
};

/* A member of the set being written, kept to find duplicates. */
struct tide_ddb_set_member {
    const char *p;
    size_t len;
    struct tide_ddb_number num;
};

/* Sets up to this size are checked for duplicates without the scratch
 * buffer. */
#define TIDE_DDB_ENC_SMALL_SET 16

struct tide_ddb_eframe {
    unsigned char kind; /* object, array or set (ddb_encode.c) */
    unsigned char mode; /* enum tide_ddb_mode of the values inside */
    unsigned char av;   /* an M or L value (counted in av_depth) */
    char set;           /* a set's kind: 'S', 'N' or 'B' */
    size_t count;       /* members or items so far */
};

struct tide_ddb_encoder {
    struct tide_json_buf *out;     /* the text is appended here */
    struct tide_json_buf *scratch; /* room for the members of large sets */
    enum tide_ddb_mode root_mode;
    int av_depth;
    int n; /* open objects, arrays and sets */
    struct tide_ddb_eframe f[TIDE_DDB_PATH_MAX + 1];
    struct tide_ddb_path path;
    struct tide_ddb_set_member small[TIDE_DDB_ENC_SMALL_SET];
    struct tide_error err;
};

/* Readies e to write one value, read in mode (TIDE_DDB_MODE_PLAIN: a
 * request; AV: one AttributeValue; AV_MAP: an item), at the end of out.
 * root names the value in error paths (shown before the elements too with
 * prefix; borrowed). out and scratch are the caller's (start them zeroed;
 * free their p with free()); running out of memory is sticky in out and
 * reported by tide_ddb_enc_finish. */
void tide_ddb_encoder_init(struct tide_ddb_encoder *e, struct tide_json_buf *out,
                           struct tide_json_buf *scratch, enum tide_ddb_mode mode,
                           const char *root, bool prefix);

/* The next member of the innermost object: its key k[0..n), borrowed until
 * the member's value is complete. */
int tide_ddb_enc_key(struct tide_ddb_encoder *e, const char *k, size_t n);
/* The next item of the innermost array or set. */
int tide_ddb_enc_item(struct tide_ddb_encoder *e);

int tide_ddb_enc_scalar(struct tide_ddb_encoder *e, const struct tide_ddb_scalar *v);
/* An object (shape TIDE_DDB_SHAPE_OBJECT: a map) or an array (ARRAY: a
 * list) starts; type_name as for scalars. */
int tide_ddb_enc_open(struct tide_ddb_encoder *e, enum tide_ddb_shape shape, const char *type_name);
/* A set of kind k[0..n) ("SS", "NS" or "BS") starts. */
int tide_ddb_enc_open_set(struct tide_ddb_encoder *e, const char *k, size_t n,
                          const char *type_name);
/* The innermost object, array or set ends. */
int tide_ddb_enc_close(struct tide_ddb_encoder *e);

/* The walker's own error about the value at the current path (e.g. a
 * table whose keys are neither a map's nor a list's). */
int tide_ddb_enc_fail(struct tide_ddb_encoder *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* After the walk: 0, or TIDE_ENOMEM when the output ran out of memory. */
int tide_ddb_enc_finish(struct tide_ddb_encoder *e);

#endif
