/* yaml_doc.c - one YAML document as a tree (see yaml_doc.h). */
#include "yaml_doc.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Largest integer a double holds exactly, and with it every smaller one. */
#define EXACT_INT_MAX 9007199254740992ULL /* 2^53 */

struct anchor {
    char *name;
    struct tide_yaml_node *node;
    struct anchor *next;
};

struct tide_yaml_doc {
    struct tide_yaml_node *root;
    struct tide_yaml_node **nodes; /* every node, so one loop frees them all */
    size_t nnodes, capnodes;
    struct anchor **buckets;       /* anchor name -> node (hashed: many anchors stay linear) */
    size_t nbuckets, nanchors;
};

struct builder {
    struct tide_yaml_doc *doc;
    const char *source;
    const char *text;
    size_t len;
    struct tide_error *err;
    struct tide_yaml_node *stack[TIDE_YAML_MAX_DEPTH];
    size_t depth;
    int documents;
};

/* ---- errors ------------------------------------------------------------------ */

__attribute__((format(printf, 5, 6)))
static int fail_at(struct builder *b, int code, unsigned line, unsigned column,
                   const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return tide_error_set(b->err, code, "%s:%u:%u: %s", b->source, line, column, msg);
}

#define FAIL_MARK(b, mark, ...) \
    fail_at((b), TIDE_EINVAL, (unsigned)(mark).line + 1, (unsigned)(mark).column + 1, __VA_ARGS__)
#define FAIL_NODE(b, node, ...) fail_at((b), TIDE_EINVAL, (node)->line, (node)->column, __VA_ARGS__)

/* libyaml's reader errors carry a byte offset, not a mark. */
static void offset_position(const char *text, size_t len, size_t offset,
                            unsigned *line, unsigned *column)
{
    if (offset > len)
        offset = len;
    unsigned l = 1;
    size_t start = 0;
    for (size_t i = 0; i < offset; i++) {
        if (text[i] == '\n') {
            l++;
            start = i + 1;
        }
    }
    *line = l;
    *column = (unsigned)(offset - start) + 1;
}

static int parser_error(struct builder *b, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR)
        return tide_error_set(b->err, TIDE_ENOMEM, "%s: out of memory", b->source);
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_READER_ERROR) {
        unsigned line, column;
        offset_position(b->text, b->len, p->problem_offset, &line, &column);
        if (p->problem_value != -1)
            return fail_at(b, TIDE_EINVAL, line, column, "%s (byte 0x%02X)", problem,
                           (unsigned)p->problem_value & 0xFFu);
        return fail_at(b, TIDE_EINVAL, line, column, "%s", problem);
    }
    if (p->context != NULL)
        return FAIL_MARK(b, p->problem_mark, "%s (%s at line %u, column %u)", problem, p->context,
                         (unsigned)p->context_mark.line + 1, (unsigned)p->context_mark.column + 1);
    return FAIL_MARK(b, p->problem_mark, "%s", problem);
}

/* ---- nodes and anchors ------------------------------------------------------- */

static struct tide_yaml_node *new_node(struct builder *b, enum tide_yaml_kind kind,
                                       yaml_mark_t mark)
{
    struct tide_yaml_doc *d = b->doc;
    if (d->nnodes == d->capnodes) {
        size_t cap = d->capnodes ? d->capnodes * 2 : 64;
        struct tide_yaml_node **n = realloc(d->nodes, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        d->nodes = n;
        d->capnodes = cap;
    }
    struct tide_yaml_node *node = calloc(1, sizeof(*node));
    if (node == NULL)
        return NULL;
    node->kind = kind;
    node->line = (unsigned)mark.line + 1;
    node->column = (unsigned)mark.column + 1;
    d->nodes[d->nnodes++] = node;
    return node;
}

static uint32_t hash_name(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct anchor *find_anchor(const struct tide_yaml_doc *d, const char *name)
{
    if (d->nbuckets == 0)
        return NULL;
    for (struct anchor *a = d->buckets[hash_name(name) & (d->nbuckets - 1)]; a; a = a->next)
        if (strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

/* Registers (or, as YAML allows, redefines) an anchor. 0 or TIDE_ENOMEM. */
static int set_anchor(struct tide_yaml_doc *d, const char *name, struct tide_yaml_node *node)
{
    node->anchored = true;
    struct anchor *a = find_anchor(d, name);
    if (a != NULL) {
        a->node = node;
        return 0;
    }
    if (d->nanchors >= d->nbuckets) {
        size_t n = d->nbuckets ? d->nbuckets * 2 : 16;
        struct anchor **nb = calloc(n, sizeof(*nb));
        if (nb == NULL)
            return TIDE_ENOMEM;
        for (size_t i = 0; i < d->nbuckets; i++) {
            for (struct anchor *x = d->buckets[i], *next; x; x = next) {
                next = x->next;
                size_t h = hash_name(x->name) & (n - 1);
                x->next = nb[h];
                nb[h] = x;
            }
        }
        free(d->buckets);
        d->buckets = nb;
        d->nbuckets = n;
    }
    a = malloc(sizeof(*a));
    if (a == NULL || (a->name = strdup(name)) == NULL) {
        free(a);
        return TIDE_ENOMEM;
    }
    a->node = node;
    size_t h = hash_name(name) & (d->nbuckets - 1);
    a->next = d->buckets[h];
    d->buckets[h] = a;
    d->nanchors++;
    return 0;
}

static int push_item(struct tide_yaml_node *parent, struct tide_yaml_node *child)
{
    if (parent->count == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        struct tide_yaml_node **n = realloc(parent->items, cap * sizeof(*n));
        if (n == NULL)
            return TIDE_ENOMEM;
        parent->items = n;
        parent->cap = cap;
    }
    parent->items[parent->count++] = child;
    return 0;
}

const struct tide_yaml_node *tide_yaml_resolve(const struct tide_yaml_node *node)
{
    return node != NULL && node->kind == TIDE_YAML_ALIAS ? node->target : node;
}

/* ---- the core schema --------------------------------------------------------- */

static bool text_is(const struct tide_yaml_node *n, const char *a, const char *b, const char *c)
{
    const char *opts[] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (n->len == strlen(opts[i]) && memcmp(n->text, opts[i], n->len) == 0)
            return true;
    return false;
}

static int digit_value(char c, int base)
{
    int v = c >= '0' && c <= '9' ? c - '0'
          : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 99;
    return v < base ? v : -1;
}

/* 1 if s[0..n) is all digits of base (at least one); the value, capped just
 * above 2^53, in *out. */
static int parse_digits(const char *s, size_t n, int base, unsigned long long *out)
{
    if (n == 0)
        return 0;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = digit_value(s[i], base);
        if (d < 0)
            return 0;
        if (v <= EXACT_INT_MAX)
            v = v * (unsigned)base + (unsigned)d;
    }
    *out = v;
    return 1;
}

static size_t count_digits(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static bool is_core_float(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    size_t d = count_digits(s + i, n - i);
    i += d;
    if (i < n && s[i] == '.') {
        i++;
        size_t f = count_digits(s + i, n - i);
        if (d == 0 && f == 0)
            return false;
        i += f;
    } else if (d == 0) {
        return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t e = count_digits(s + i, n - i);
        if (e == 0)
            return false;
        i += e;
    }
    return i == n;
}

int tide_yaml_resolve_plain(struct tide_yaml_node *node, struct tide_error *err)
{
    const char *s = node->text;
    size_t n = node->len;
    node->type = TIDE_YAML_STRING;
    if (n == 0 || text_is(node, "~", "null", "Null") || text_is(node, "NULL", "NULL", "NULL")) {
        node->type = TIDE_YAML_NULL;
        return 0;
    }
    if (text_is(node, "true", "True", "TRUE") || text_is(node, "false", "False", "FALSE")) {
        node->type = TIDE_YAML_BOOL;
        node->boolean = s[0] == 't' || s[0] == 'T';
        return 0;
    }
    unsigned long long v;
    bool neg = false, is_int = false;
    if (n > 2 && s[0] == '0' && s[1] == 'x')
        is_int = parse_digits(s + 2, n - 2, 16, &v);
    else if (n > 2 && s[0] == '0' && s[1] == 'o')
        is_int = parse_digits(s + 2, n - 2, 8, &v);
    else {
        size_t sign = (s[0] == '-' || s[0] == '+') ? 1 : 0;
        neg = s[0] == '-';
        is_int = parse_digits(s + sign, n - sign, 10, &v);
    }
    if (is_int) {
        if (v > EXACT_INT_MAX)
            return tide_error_set(err, TIDE_EINVAL,
                                  "integer %.*s is too large for a Lua number (beyond 2^53); "
                                  "quote it to keep it as a string",
                                  (int)(n > 40 ? 40 : n), s);
        node->type = TIDE_YAML_INT;
        node->number = v == 0 ? 0.0 : neg ? -(double)v : (double)v;
        return 0;
    }
    if (is_core_float(s, n)) {
        node->type = TIDE_YAML_FLOAT;
        node->number = strtod(s, NULL); /* text is NUL-terminated */
        return 0;
    }
    const char *t = s + ((s[0] == '-' || s[0] == '+') ? 1 : 0);
    size_t tn = n - (size_t)(t - s);
    struct tide_yaml_node tmp = {.text = (char *)t, .len = tn};
    if (text_is(&tmp, ".inf", ".Inf", ".INF")) {
        node->type = TIDE_YAML_FLOAT;
        node->number = s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
        return 0;
    }
    if (t == s && text_is(node, ".nan", ".NaN", ".NAN")) {
        node->type = TIDE_YAML_FLOAT;
        node->number = NAN;
        return 0;
    }
    return 0;
}

#define TAG_PREFIX "tag:yaml.org,2002:"

/* Resolves a scalar from its style and tag. */
static int resolve_scalar(struct builder *b, struct tide_yaml_node *node, const yaml_event_t *ev)
{
    const char *tag = (const char *)ev->data.scalar.tag;
    struct tide_error e;
    if (tag == NULL) {
        node->type = TIDE_YAML_STRING;
        if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
            return 0;
        if (tide_yaml_resolve_plain(node, &e) != 0)
            return FAIL_NODE(b, node, "%s", e.message);
        return 0;
    }
    if (strcmp(tag, "!") == 0 || strcmp(tag, YAML_STR_TAG) == 0) {
        node->type = TIDE_YAML_STRING;
        return 0;
    }
    enum tide_yaml_type want;
    if (strcmp(tag, YAML_NULL_TAG) == 0)
        want = TIDE_YAML_NULL;
    else if (strcmp(tag, YAML_BOOL_TAG) == 0)
        want = TIDE_YAML_BOOL;
    else if (strcmp(tag, YAML_INT_TAG) == 0)
        want = TIDE_YAML_INT;
    else if (strcmp(tag, YAML_FLOAT_TAG) == 0)
        want = TIDE_YAML_FLOAT;
    else
        return FAIL_NODE(b, node, "unsupported tag '%s' (only the core schema's !!str, !!int, "
                                  "!!float, !!bool and !!null)", tag);
    if (tide_yaml_resolve_plain(node, &e) != 0)
        return FAIL_NODE(b, node, "%s", e.message);
    if (want == TIDE_YAML_FLOAT && node->type == TIDE_YAML_INT)
        node->type = TIDE_YAML_FLOAT;
    if (node->type != want)
        return FAIL_NODE(b, node, "'%.*s' is not a valid !!%s", (int)(node->len > 60 ? 60 : node->len),
                         node->text, tag + strlen(TAG_PREFIX));
    return 0;
}

static int check_collection_tag(struct builder *b, const struct tide_yaml_node *node,
                                const char *tag, const char *expected)
{
    if (tag == NULL || strcmp(tag, "!") == 0 || strcmp(tag, expected) == 0)
        return 0;
    return FAIL_NODE(b, node, "unsupported tag '%s' on a %s", tag,
                     node->kind == TIDE_YAML_MAPPING ? "mapping" : "sequence");
}

/* ---- duplicate keys ---------------------------------------------------------- */

struct key_ref {
    const struct tide_yaml_node *key; /* resolved scalar */
    size_t index;                     /* pair index in the mapping */
};

/* Keys compare as the Lua values they become: 1, 0x1 and 1.0 are one key. */
static int key_class(const struct tide_yaml_node *k)
{
    return k->type == TIDE_YAML_FLOAT ? TIDE_YAML_INT : (int)k->type;
}

static int key_cmp(const void *pa, const void *pb)
{
    const struct key_ref *a = pa, *b = pb;
    int ca = key_class(a->key), cb = key_class(b->key);
    int c = (ca > cb) - (ca < cb);
    if (c == 0) {
        if (ca == TIDE_YAML_STRING) {
            size_t n = a->key->len < b->key->len ? a->key->len : b->key->len;
            c = memcmp(a->key->text, b->key->text, n);
            if (c == 0)
                c = (a->key->len > b->key->len) - (a->key->len < b->key->len);
            else
                c = c > 0 ? 1 : -1;
        } else if (ca == TIDE_YAML_INT) {
            c = (a->key->number > b->key->number) - (a->key->number < b->key->number);
        } else if (ca == TIDE_YAML_BOOL) {
            c = (int)a->key->boolean - (int)b->key->boolean;
        }
    }
    if (c == 0)
        c = (a->index > b->index) - (a->index < b->index);
    return c;
}

static bool same_key(const struct key_ref *a, const struct key_ref *b)
{
    struct key_ref x = *a, y = *b;
    x.index = y.index = 0;
    return key_cmp(&x, &y) == 0;
}

static int check_duplicates(struct builder *b, const struct tide_yaml_node *map)
{
    size_t pairs = map->count / 2;
    if (pairs < 2)
        return 0;
    struct key_ref *refs = malloc(pairs * sizeof(*refs));
    if (refs == NULL)
        return tide_error_set(b->err, TIDE_ENOMEM, "%s: out of memory", b->source);
    for (size_t i = 0; i < pairs; i++) {
        refs[i].key = tide_yaml_resolve(map->items[2 * i]);
        refs[i].index = i;
    }
    qsort(refs, pairs, sizeof(*refs), key_cmp);
    /* Report the duplicate that comes first in the text. */
    size_t dup = SIZE_MAX, first = 0;
    for (size_t i = 1; i < pairs; i++) {
        if (same_key(&refs[i - 1], &refs[i])) {
            size_t g = i - 1; /* the group's first occurrence sorts first */
            while (g > 0 && same_key(&refs[g - 1], &refs[i]))
                g--;
            if (refs[i].index < dup) {
                dup = refs[i].index;
                first = refs[g].index;
            }
        }
    }
    free(refs);
    if (dup == SIZE_MAX)
        return 0;
    const struct tide_yaml_node *k = map->items[2 * dup];
    const struct tide_yaml_node *rk = tide_yaml_resolve(k);
    return FAIL_NODE(b, k, "duplicate key '%.*s' (first defined at line %u)",
                     (int)(rk->len > 60 ? 60 : rk->len), rk->text, map->items[2 * first]->line);
}

/* ---- the event loop ---------------------------------------------------------- */

/* Hangs a finished (or, for collections, just opened) node on its parent. */
static int attach(struct builder *b, struct tide_yaml_node *node)
{
    if (b->depth == 0) {
        b->doc->root = node;
        return 0;
    }
    struct tide_yaml_node *parent = b->stack[b->depth - 1];
    if (parent->kind == TIDE_YAML_MAPPING && parent->count % 2 == 0) {
        const struct tide_yaml_node *k = tide_yaml_resolve(node);
        if (k->kind != TIDE_YAML_SCALAR)
            return FAIL_NODE(b, node, "a %s as a mapping key is not supported",
                             k->kind == TIDE_YAML_MAPPING ? "mapping" : "sequence");
        if (k->type == TIDE_YAML_NULL)
            return FAIL_NODE(b, node, "a null mapping key is not supported (quote it: \"%.*s\")",
                             (int)k->len, k->text);
        if (k->type == TIDE_YAML_FLOAT && isnan(k->number))
            return FAIL_NODE(b, node, "a NaN mapping key is not supported");
    }
    if (push_item(parent, node) != 0)
        return tide_error_set(b->err, TIDE_ENOMEM, "%s: out of memory", b->source);
    return 0;
}

static int anchor_node(struct builder *b, const yaml_char_t *anchor, struct tide_yaml_node *node)
{
    if (anchor != NULL && set_anchor(b->doc, (const char *)anchor, node) != 0)
        return tide_error_set(b->err, TIDE_ENOMEM, "%s: out of memory", b->source);
    return 0;
}

static int on_event(struct builder *b, const yaml_event_t *ev)
{
    struct tide_yaml_node *node;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->documents > 1)
            return FAIL_MARK(b, ev->start_mark,
                             "expected a single YAML document, found a second one");
        return 0;

    case YAML_SCALAR_EVENT: {
        node = new_node(b, TIDE_YAML_SCALAR, ev->start_mark);
        if (node == NULL || (node->text = malloc(ev->data.scalar.length + 1)) == NULL)
            return tide_error_set(b->err, TIDE_ENOMEM, "%s: out of memory", b->source);
        memcpy(node->text, ev->data.scalar.value, ev->data.scalar.length);
        node->text[ev->data.scalar.length] = '\0';
        node->len = ev->data.scalar.length;
        node->complete = true;
        int rc = resolve_scalar(b, node, ev);
        if (rc == 0)
            rc = anchor_node(b, ev->data.scalar.anchor, node);
        return rc != 0 ? rc : attach(b, node);
    }

    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        struct anchor *a = find_anchor(b->doc, name);
        if (a == NULL)
            return FAIL_MARK(b, ev->start_mark, "undefined alias '*%s'", name);
        if (!a->node->complete)
            return FAIL_MARK(b, ev->start_mark,
                             "recursive alias '*%s' (it refers to a node that contains it)", name);
        node = new_node(b, TIDE_YAML_ALIAS, ev->start_mark);
        if (node == NULL)
            return tide_error_set(b->err, TIDE_ENOMEM, "%s: out of memory", b->source);
        node->target = a->node;
        node->complete = true;
        return attach(b, node);
    }

    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool map = ev->type == YAML_MAPPING_START_EVENT;
        if (b->depth == TIDE_YAML_MAX_DEPTH)
            return FAIL_MARK(b, ev->start_mark, "nesting deeper than %d levels", TIDE_YAML_MAX_DEPTH);
        node = new_node(b, map ? TIDE_YAML_MAPPING : TIDE_YAML_SEQUENCE, ev->start_mark);
        if (node == NULL)
            return tide_error_set(b->err, TIDE_ENOMEM, "%s: out of memory", b->source);
        const yaml_char_t *tag = map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
        const yaml_char_t *anchor = map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
        int rc = check_collection_tag(b, node, (const char *)tag, map ? YAML_MAP_TAG : YAML_SEQ_TAG);
        if (rc == 0)
            rc = anchor_node(b, anchor, node);
        if (rc == 0)
            rc = attach(b, node);
        if (rc == 0)
            b->stack[b->depth++] = node;
        return rc;
    }

    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        node = b->stack[--b->depth];
        if (node->kind == TIDE_YAML_MAPPING) {
            int rc = check_duplicates(b, node);
            if (rc != 0)
                return rc;
            node->count /= 2;
        }
        node->complete = true;
        return 0;

    default: /* stream start/end, document end */
        return 0;
    }
}

int tide_yaml_parse(const char *text, size_t len, const char *source,
                    struct tide_yaml_doc **out, struct tide_error *err)
{
    *out = NULL;
    struct builder *b = calloc(1, sizeof(*b));
    struct tide_yaml_doc *doc = calloc(1, sizeof(*doc));
    if (b == NULL || doc == NULL) {
        free(b);
        free(doc);
        return tide_error_set(err, TIDE_ENOMEM, "%s: out of memory", source ? source : "<string>");
    }
    b->doc = doc;
    b->source = source ? source : "<string>";
    b->text = text;
    b->len = len;
    b->err = err;

    int rc = 0;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        rc = tide_error_set(err, TIDE_ENOMEM, "%s: out of memory", b->source);
        free(b);
        tide_yaml_doc_delete(doc);
        return rc;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = parser_error(b, &parser);
            break;
        }
        rc = on_event(b, &ev);
        bool end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (rc != 0 || end)
            break;
    }
    yaml_parser_delete(&parser);
    free(b);
    if (rc != 0) {
        tide_yaml_doc_delete(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

const struct tide_yaml_node *tide_yaml_doc_root(const struct tide_yaml_doc *doc)
{
    return doc ? doc->root : NULL;
}

void tide_yaml_doc_delete(struct tide_yaml_doc *doc)
{
    if (doc == NULL)
        return;
    for (size_t i = 0; i < doc->nnodes; i++) {
        free(doc->nodes[i]->text);
        free(doc->nodes[i]->items);
        free(doc->nodes[i]);
    }
    free(doc->nodes);
    for (size_t i = 0; i < doc->nbuckets; i++) {
        for (struct anchor *a = doc->buckets[i], *next; a; a = next) {
            next = a->next;
            free(a->name);
            free(a);
        }
    }
    free(doc->buckets);
    free(doc);
}
