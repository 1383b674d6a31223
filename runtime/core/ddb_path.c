/*
 * ddb_path.c - the path of a value error (see ddb_path.h).
 */
#include "ddb_path.h"

#include <stdio.h>
#include <string.h>

#include "ddb_text.h"

/* Keys longer than this are shown quoted, cut, with "...". */
#define KEY_SHOWN 40

void tide_ddb_path_init(struct tide_ddb_path *p, const char *root, bool prefix)
{
    p->root = root;
    p->prefix = prefix;
    p->n = 0;
}

static bool is_ident(const char *k, size_t n)
{
    if (n == 0 || !((k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z') || k[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* A bounded string builder: what does not fit is dropped. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (n > b->cap - 1 - b->len)
        n = b->cap - 1 - b->len;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void add_elem(struct sbuf *b, const struct tide_ddb_path_elem *f)
{
    char num[32];
    if (f->key == NULL) {
        sb_add(b, num, (size_t)snprintf(num, sizeof(num), "[%zu]", f->index));
        return;
    }
    if (!f->cut && is_ident(f->key, f->len)) {
        if (b->len > 0)
            sb_add(b, ".", 1);
        sb_add(b, f->key, f->len);
        return;
    }
    size_t n = f->len > KEY_SHOWN ? tide_ddb_utf8_cut(f->key, KEY_SHOWN) : f->len;
    sb_add(b, "[\"", 2);
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)f->key[k];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            sb_add(b, num, (size_t)snprintf(num, sizeof(num), "\\x%02X", c));
        else
            sb_add(b, (const char *)&c, 1);
    }
    bool more = n < f->len || f->cut;
    sb_add(b, more ? "...\"]" : "\"]", more ? 5 : 2);
}

/* Writes the path, eliding the middle of very long ones. */
static void format_path(const struct tide_ddb_path *p, char *out, size_t cap)
{
    char full[2048];
    struct sbuf b = {full, 0, sizeof(full)};
    full[0] = '\0';
    if (p->prefix || p->n == 0)
        sb_add(&b, p->root, strlen(p->root));
    for (int i = 0; i < p->n; i++)
        add_elem(&b, &p->e[i]);
    if (b.len < cap) {
        memcpy(out, full, b.len + 1);
        return;
    }
    size_t half = (cap - 4) / 2;
    size_t head = tide_ddb_utf8_cut(full, half);
    size_t tail = b.len - half;
    while (tail < b.len && ((unsigned char)full[tail] & 0xC0) == 0x80)
        tail++;
    snprintf(out, cap, "%.*s...%s", (int)head, full, full + tail);
}

int tide_ddb_path_failv(const struct tide_ddb_path *p, struct tide_error *err, int code,
                        const char *fmt, va_list ap)
{
    char msg[320], path[180];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    format_path(p, path, sizeof(path));
    return tide_error_set(err, code, "%s: %s", path, msg);
}

int tide_ddb_path_fail(const struct tide_ddb_path *p, struct tide_error *err, int code,
                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tide_ddb_path_failv(p, err, code, fmt, ap);
    va_end(ap);
    return code;
}
