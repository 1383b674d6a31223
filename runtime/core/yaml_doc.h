/*
 * yaml_doc.h - one YAML document as a tree of typed nodes (over libyaml).
 *
 * Pure C, no Lua: libyaml's event parser builds a tree that owns all its
 * memory, so a caller (the Lua binding) can turn it into values at leisure
 * with no libyaml state alive. Plain scalars are resolved with the YAML 1.2
 * core schema (null, booleans, integers, floats); everything else is a
 * string. The parser checks what libyaml leaves to its callers: duplicate
 * keys, undefined and recursive aliases, unsupported tags, nesting depth and
 * a single document per text.
 */
#ifndef TIDE_YAML_DOC_H
#define TIDE_YAML_DOC_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Deepest nesting of sequences and mappings accepted; deeper texts are
 * refused (the tree is walked recursively). */
#define TIDE_YAML_MAX_DEPTH 512

enum tide_yaml_kind {
    TIDE_YAML_SCALAR = 1,
    TIDE_YAML_SEQUENCE,
    TIDE_YAML_MAPPING,
    TIDE_YAML_ALIAS, /* a *name reference: target is the anchored node */
};

/* The resolved type of a scalar. */
enum tide_yaml_type {
    TIDE_YAML_STRING = 1, /* quoted, tagged !!str, or plain text matching nothing else */
    TIDE_YAML_NULL,       /* null Null NULL ~ or empty */
    TIDE_YAML_BOOL,       /* true True TRUE false False FALSE */
    TIDE_YAML_INT,        /* 123 -4 0x1F 0o17, exact in a double (|n| <= 2^53) */
    TIDE_YAML_FLOAT,      /* 1.5 1e3 .5 .inf -.Inf .nan */
};

struct tide_yaml_node {
    enum tide_yaml_kind kind;
    unsigned line, column;           /* 1-based position where the node starts */

    /* TIDE_YAML_SCALAR */
    enum tide_yaml_type type;
    char *text;                      /* the scalar's text, NUL-terminated (may hold NULs) */
    size_t len;
    double number;                   /* TIDE_YAML_INT and TIDE_YAML_FLOAT */
    bool boolean;                    /* TIDE_YAML_BOOL */

    /* TIDE_YAML_SEQUENCE: items[0..count); TIDE_YAML_MAPPING: count pairs,
     * key items[2i] (always a scalar, or an alias of one) and value items[2i+1] */
    struct tide_yaml_node **items;
    size_t count;

    /* TIDE_YAML_ALIAS: the anchored node (owned by the document, shared) */
    struct tide_yaml_node *target;
    bool anchored;                   /* some alias may refer to this node */

    /* private */
    size_t cap;
    bool complete;
};

struct tide_yaml_doc;

/*
 * Parses text[0..len), which must hold at most one YAML document. On success
 * returns 0 and sets *out to a new document (free it with
 * tide_yaml_doc_delete); its root is NULL for an empty text (only comments or
 * blanks). On failure returns TIDE_EINVAL (a syntax error or an unsupported
 * construct) or TIDE_ENOMEM, sets *out to NULL, and err->message reads
 * "SOURCE:LINE:COLUMN: problem", e.g.
 * "tide.yaml:3:5: mapping values are not allowed in this context".
 * source names the text in messages (borrowed; "<string>" when NULL).
 */
int tide_yaml_parse(const char *text, size_t len, const char *source,
                    struct tide_yaml_doc **out, struct tide_error *err);

/* The root node, or NULL for an empty document. Borrowed from doc. */
const struct tide_yaml_node *tide_yaml_doc_root(const struct tide_yaml_doc *doc);

/* Frees doc and every node in it. doc may be NULL. */
void tide_yaml_doc_delete(struct tide_yaml_doc *doc);

/* Follows an alias to its target; returns node itself otherwise. */
const struct tide_yaml_node *tide_yaml_resolve(const struct tide_yaml_node *node);

/*
 * Resolves a plain scalar's text with the YAML 1.2 core schema into
 * node->type, node->number and node->boolean. Returns 0, or TIDE_EINVAL with
 * a message (without position) for an integer that a double cannot hold
 * exactly. Exposed for tests and for other formats' plain values.
 */
int tide_yaml_resolve_plain(struct tide_yaml_node *node, struct tide_error *err);

#endif
