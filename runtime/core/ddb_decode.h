/*
 * ddb_decode.h - the DynamoDB JSON decoder: reads a response (or one
 * AttributeValue, or plain JSON) and hands each value to a visitor, with
 * the marshalling rules applied. No Lua: the binding (lua_decode.c) is one
 * visitor, which builds Lua values; a C test is another.
 *
 * yajl parses the text and calls back for every token; the decoder keeps a
 * stack of frames (one per open object or array, plus one per
 * AttributeValue object) that says how the next value is to be read: the
 * schema's modes (ddb_schema.h), an AttributeValue's type, a set's kind.
 * The visitor sees values, not AttributeValues: {"N":"5"} arrives as the
 * number 5, {"M":{...}} as an object, {"SS":[...]} as a set.
 *
 * Errors: JSON that is not well-formed stops the parse at once ("malformed
 * JSON at line L, column C (why); the text begins: ..."). A value error
 * ("Item.a: an S value must be a string") stops the visitor's calls but
 * not the parse: the rest of the text is still checked, so that malformed
 * JSON anywhere wins over a value error.
 *
 * Checks on top of yajl's (jansson made them before, and the specs hold the
 * decoder to them): strings and keys must be strict UTF-8 (yajl lets
 * overlong forms and encoded surrogates through), a \u escape must not be
 * half of a surrogate pair, numbers must fit a double, the top level must
 * be an object or an array, and nesting stops at 2048 levels of JSON and
 * TIDE_DDB_PATH_MAX path elements.
 */
#ifndef TIDE_DDB_DECODE_H
#define TIDE_DDB_DECODE_H

#include <stdbool.h>
#include <stddef.h>

#include <yajl/yajl_parse.h>

#include "ddb_path.h"
#include "ddb_schema.h"
#include "error.h"

/* What the visitor opens. */
enum tide_ddb_container {
    TIDE_DDB_OBJECT, /* a plain object, an M value, or an object of AttributeValues */
    TIDE_DDB_ARRAY,  /* a plain array or an L value: a list */
    TIDE_DDB_SET_S,  /* SS, NS and BS values */
    TIDE_DDB_SET_N,
    TIDE_DDB_SET_B,
};

/* Where a finished value goes: the visitor's store callback is told. */
enum tide_ddb_into {
    TIDE_DDB_INTO_MEMBER, /* the innermost open object, under the last key */
    TIDE_DDB_INTO_ITEM,   /* the innermost open array or set, at index (from 1) */
};

/* The visitor: callbacks in the order of the text. A value is announced by
 * one call (string, number, ...) or by open ... close around its contents;
 * then, unless it is the top-level value or the value of an
 * AttributeValue, store says where it goes. Within an AttributeValue whose
 * type key comes twice the last value wins: drop discards the previous
 * one. After a value error no more calls come. Every callback is required. */
struct tide_ddb_visitor {
    /* An object, array or set starts; hint: entries expected (the size of
     * the last one closed at the same depth). Returns NULL, or a message
     * (out of room for one more level) that stops the decoding with a
     * TIDE_ENOMEM value error. */
    const char *(*open)(void *ud, enum tide_ddb_container c, size_t hint);
    void (*close)(void *ud, enum tide_ddb_container c);
    /* The key of the next member of the innermost object. */
    void (*key)(void *ud, const char *k, size_t n);
    void (*string)(void *ud, const char *s, size_t n);
    /* A plain JSON number, or an N value a double holds exactly enough
     * (tide_ddb_number_to_lua). */
    void (*number)(void *ud, double x);
    /* An N value beyond a double: its canonical text. */
    void (*big_number)(void *ud, const char *text, size_t n);
    /* A B value (or BS member): b64[0..n) is valid padded base64, the
     * visitor decodes it (tide_ddb_base64_decode). Returns false when that
     * fails (the value error then says the base64 is invalid). */
    bool (*binary)(void *ud, const char *b64, size_t n);
    void (*boolean)(void *ud, bool b);
    void (*null)(void *ud);
    void (*store)(void *ud, enum tide_ddb_into into, size_t index);
    void (*drop)(void *ud);
};

struct tide_ddb_decoder; /* below */

/* Readies d, whose parser is allocated with afs (NULL: malloc) when a
 * decode first needs it and kept in d until tide_ddb_decoder_close. With
 * reuse, one parser reads one text after the other (yajl's
 * allow_multiple_values): a text that is not one whole object or array
 * drops it, the next decode makes a new one. Nothing is allocated here. */
void tide_ddb_decoder_init(struct tide_ddb_decoder *d, const yajl_alloc_funcs *afs, bool reuse);

/* Frees d's parser (idempotent); d can decode again. Safe to call on a
 * decoder a longjmp left in the middle of a decode. */
void tide_ddb_decoder_close(struct tide_ddb_decoder *d);

/* Decodes text[0..len), read in mode (TIDE_DDB_MODE_PLAIN: a response,
 * names matched; AV: one AttributeValue; JSON: plain JSON; JSON_EXACT:
 * plain JSON whose numbers are handed over as N values are, exact), calling v with
 * ud. root names the value itself in error paths (shown before the
 * elements too with prefix). Returns 0; TIDE_EINVAL with a message when
 * the text is malformed or a value is wrong; TIDE_ENOMEM when memory (or
 * the visitor's room) ran out. Without reuse, the parser stays in d until
 * tide_ddb_decoder_close. */
int tide_ddb_decode(struct tide_ddb_decoder *d, const char *text, size_t len,
                    enum tide_ddb_mode mode, const char *root, bool prefix,
                    const struct tide_ddb_visitor *v, void *ud, struct tide_error *err);

/* ---- the decoder's state (read only through the functions above) ---- */

/* Frames: each path element is at most one object or array frame, plus an
 * AttributeValue frame above it, plus the root and a skip frame. */
#define TIDE_DDB_DEC_FRAMES (2 * TIDE_DDB_PATH_MAX + 8)
/* Bytes kept of a key that had escapes (for paths and the schema). */
#define TIDE_DDB_DEC_KEY_KEPT 64
/* The first bytes of an unknown type key kept for the message. */
#define TIDE_DDB_DEC_UNKNOWN_KEPT 64

struct tide_ddb_dframe {
    unsigned char kind;   /* enum in ddb_decode.c */
    unsigned char mode;   /* objects, arrays: enum tide_ddb_mode of the values inside */
    unsigned char active; /* a member or item is being decoded: a path element */
    unsigned char type;   /* AttributeValue: its type; set: its container */
    unsigned char av;     /* see ddb_decode.c */
    unsigned char key_kept; /* objects: key points into the frame's copy */
    int n;                /* items, members so far; skip frames: levels open */
    const char *key;      /* objects: the current member's key */
    size_t klen;          /* its full length */
};

struct tide_ddb_decoder {
    yajl_handle h;
    const yajl_alloc_funcs *afs;
    bool reuse;
    const struct tide_ddb_visitor *v;
    void *ud;
    const char *text;
    size_t len;
    const char *root;
    bool prefix;
    enum tide_ddb_mode root_mode;
    int nframes;
    int npath;            /* frames with active set */
    int av_depth;         /* nested L/M levels */
    int json_depth;       /* open objects and arrays */
    size_t root_end;      /* offset just past the top-level value, once read */
    bool finishing;       /* inside yajl_complete_parse */
    bool failed;          /* a value error is in err: no more visitor calls */
    bool oom;
    bool exact;           /* TIDE_DDB_MODE_JSON_EXACT: plain numbers as N values */
    const char *json_why; /* set when a callback stopped the parse: why */
    size_t json_pos;      /* and where */
    size_t unknown_len;   /* the unknown type key of the AttributeValue that has one */
    char unknown[TIDE_DDB_DEC_UNKNOWN_KEPT];
    struct tide_error err;
    struct tide_ddb_dframe f[TIDE_DDB_DEC_FRAMES];
    /* sizes of the last object and array closed at each depth; only the
     * first hint_top entries are set (a small text touches a few) */
    int hint_top;
    unsigned short hint_map[TIDE_DDB_DEC_FRAMES], hint_arr[TIDE_DDB_DEC_FRAMES];
    /* copies of keys that had escapes, per path element */
    char kept[TIDE_DDB_PATH_MAX][TIDE_DDB_DEC_KEY_KEPT];
};

#endif
