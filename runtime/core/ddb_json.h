/*
 * ddb_json.h - the JSON text of the DynamoDB codec: a parser into an arena
 * tree and an appending writer. No Lua.
 *
 * Why not jansson: a DynamoDB response is parsed once and turned into Lua
 * tables at once, so a general-purpose tree (one malloc per node and per
 * string, a hash table per object, a byte-at-a-time lexer) costs several
 * times the useful work. Here the whole tree lives in one arena freed at
 * once, and strings without escapes point into the input text.
 *
 * What the parser accepts is what the codec accepted from jansson with
 * JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL: RFC 8259 JSON whose top level is
 * an object or an array, valid UTF-8 only, \u0000 allowed, no lone
 * surrogates, every number a double (an overflowing one is an error),
 * nesting at most 2048 levels. Duplicate object keys are kept in order
 * (the decoder lets the last one win, as jansson did).
 */
#ifndef TIDE_DDB_JSON_H
#define TIDE_DDB_JSON_H

#include <stdbool.h>
#include <stddef.h>

enum tide_json_type {
    TIDE_JSON_NULL,
    TIDE_JSON_FALSE,
    TIDE_JSON_TRUE,
    TIDE_JSON_NUMBER,
    TIDE_JSON_STRING,
    TIDE_JSON_ARRAY,
    TIDE_JSON_OBJECT,
};

/* One value. Members of an object carry their key; children of a container
 * are a singly linked list in text order. Strings are not NUL-terminated
 * and may contain NUL bytes. */
struct tide_json {
    enum tide_json_type type;
    const char *key; /* member of an object: its key, else NULL */
    size_t klen;
    struct tide_json *next;
    union {
        double number;
        struct {
            const char *p;
            size_t len;
        } str;
        struct {
            struct tide_json *first;
            size_t n;
        } kids;
    } u;
};

/* Where parsing failed: 1-based line and column (in bytes) and a short
 * reason ("unexpected token", ...). */
struct tide_json_error {
    int line;
    int column;
    char text[80];
};

struct tide_json_arena;

/* Parses text[0..len), which must stay alive and unchanged as long as the
 * tree is used (unescaped strings point into it). Returns the root, with
 * *arena set to what to pass to tide_json_free (also on failure, where it
 * may be NULL); NULL on failure with *err filled (out of memory included). */
struct tide_json *tide_json_parse(const char *text, size_t len, struct tide_json_arena **arena,
                                  struct tide_json_error *err);

/* Frees a tree's arena; NULL is a no-op. */
void tide_json_free(struct tide_json_arena *arena);

/* An appending output buffer. Start zeroed; free p with free(). Every
 * append returns false (and sets oom) when out of memory; later appends are
 * then no-ops, so a caller may check once at the end. */
struct tide_json_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

bool tide_json_add(struct tide_json_buf *b, const char *s, size_t n);
/* Makes room for more bytes at p + len (for writing in place). */
bool tide_json_reserve(struct tide_json_buf *b, size_t more);
bool tide_json_addc(struct tide_json_buf *b, char c);

/* Appends s[0..n) (valid UTF-8, may contain NUL) as a JSON string, quoted
 * and escaped exactly as jansson's compact dump does: \" \\ \b \f \n \r \t,
 * other bytes below 0x20 as \u00XX (upper-case hex), the rest as they are. */
bool tide_json_add_string(struct tide_json_buf *b, const char *s, size_t n);

#endif
