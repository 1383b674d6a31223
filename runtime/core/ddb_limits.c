#include "ddb_limits.h"

#include <string.h>

#include "ddb_number.h"
#include "ddb_text.h"

/* Guards the recursion on hand-made trees; the codec never builds deeper. */
#define MAX_LEVELS 64

static int value_size(const struct tide_json *av, int level, size_t *out, struct tide_error *err);

static int bad(struct tide_error *err, const char *what)
{
    return tide_error_set(err, TIDE_EINVAL, "item_size: %s", what);
}

static int map_size(const struct tide_json *map, int level, size_t per_item, size_t *out,
                    struct tide_error *err)
{
    size_t total = 0;

    if (map->type != TIDE_JSON_OBJECT)
        return bad(err, "expected an object of attribute name -> AttributeValue");
    for (const struct tide_json *v = map->u.kids.first; v; v = v->next) {
        size_t vs;
        int rc = value_size(v, level, &vs, err);
        if (rc < 0)
            return rc;
        total += per_item + v->klen + vs;
    }
    *out = total;
    return 0;
}

static int string_size(const struct tide_json *s, size_t *out, int binary, struct tide_error *err)
{
    if (s->type != TIDE_JSON_STRING)
        return bad(err, "expected a string in an AttributeValue");
    if (!binary) {
        *out = s->u.str.len;
        return 0;
    }
    long n = tide_ddb_base64_decoded_len(s->u.str.p, s->u.str.len);
    if (n < 0)
        return bad(err, "invalid base64 in a B value");
    *out = (size_t)n;
    return 0;
}

static int number_size(const struct tide_json *s, size_t *out, struct tide_error *err)
{
    struct tide_ddb_number n;
    if (s->type != TIDE_JSON_STRING)
        return bad(err, "expected a string in an N value");
    int rc = tide_ddb_number_parse(s->u.str.p, s->u.str.len, &n, err);
    if (rc < 0)
        return rc;
    *out = tide_ddb_number_size(&n);
    return 0;
}

static int value_size(const struct tide_json *av, int level, size_t *out, struct tide_error *err)
{
    if (level > MAX_LEVELS)
        return bad(err, "value nested too deeply");
    if (av->type != TIDE_JSON_OBJECT || av->u.kids.n != 1)
        return bad(err, "expected an AttributeValue (an object with one type key)");
    const struct tide_json *v = av->u.kids.first;
    /* the type key, NUL-terminated for the comparisons below */
    char t[8] = "";
    if (v->klen < sizeof(t) && memchr(v->key, '\0', v->klen) == NULL)
        memcpy(t, v->key, v->klen);
    size_t total = 0, part = 0;
    int rc;

    if (strcmp(t, "S") == 0)
        return string_size(v, out, 0, err);
    if (strcmp(t, "B") == 0)
        return string_size(v, out, 1, err);
    if (strcmp(t, "N") == 0)
        return number_size(v, out, err);
    if (strcmp(t, "BOOL") == 0 || strcmp(t, "NULL") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(t, "M") == 0) {
        rc = map_size(v, level + 1, 1, &part, err);
        *out = 3 + part;
        return rc;
    }
    if (strcmp(t, "L") == 0) {
        if (v->type != TIDE_JSON_ARRAY)
            return bad(err, "expected an array in an L value");
        for (const struct tide_json *e = v->u.kids.first; e; e = e->next) {
            if ((rc = value_size(e, level + 1, &part, err)) < 0)
                return rc;
            total += 1 + part;
        }
        *out = 3 + total;
        return 0;
    }
    if (strcmp(t, "SS") == 0 || strcmp(t, "NS") == 0 || strcmp(t, "BS") == 0) {
        if (v->type != TIDE_JSON_ARRAY)
            return bad(err, "expected an array in a set value");
        for (const struct tide_json *e = v->u.kids.first; e; e = e->next) {
            rc = t[0] == 'N' ? number_size(e, &part, err) : string_size(e, &part, t[0] == 'B', err);
            if (rc < 0)
                return rc;
            total += part;
        }
        *out = total;
        return 0;
    }
    return bad(err, "unknown AttributeValue type");
}

int tide_ddb_item_size(const struct tide_json *item, size_t *out, struct tide_error *err)
{
    return map_size(item, 0, 0, out, err);
}

int tide_ddb_value_size(const struct tide_json *av, size_t *out, struct tide_error *err)
{
    return value_size(av, 0, out, err);
}
