#include "ddb_limits.h"

#include <string.h>

#include "ddb_number.h"
#include "ddb_text.h"

/* Guards the recursion on hand-made trees; the codec never builds deeper. */
#define MAX_LEVELS 64

static int value_size(const json_t *av, int level, size_t *out, struct tide_error *err);

static int bad(struct tide_error *err, const char *what)
{
    return tide_error_set(err, TIDE_EINVAL, "item_size: %s", what);
}

static int map_size(const json_t *map, int level, size_t per_item, size_t *out,
                    struct tide_error *err)
{
    size_t total = 0;

    if (!json_is_object(map))
        return bad(err, "expected an object of attribute name -> AttributeValue");
    /* jansson's iterator API takes a non-const object; nothing is changed */
    json_t *m = (json_t *)map;
    for (void *it = json_object_iter(m); it; it = json_object_iter_next(m, it)) {
        size_t vs;
        int rc = value_size(json_object_iter_value(it), level, &vs, err);
        if (rc < 0)
            return rc;
        total += per_item + json_object_iter_key_len(it) + vs;
    }
    *out = total;
    return 0;
}

static int string_size(const json_t *s, size_t *out, int binary, struct tide_error *err)
{
    if (!json_is_string(s))
        return bad(err, "expected a string in an AttributeValue");
    if (!binary) {
        *out = json_string_length(s);
        return 0;
    }
    long n = tide_ddb_base64_decoded_len(json_string_value(s), json_string_length(s));
    if (n < 0)
        return bad(err, "invalid base64 in a B value");
    *out = (size_t)n;
    return 0;
}

static int number_size(const json_t *s, size_t *out, struct tide_error *err)
{
    struct tide_ddb_number n;
    if (!json_is_string(s))
        return bad(err, "expected a string in an N value");
    int rc = tide_ddb_number_parse(json_string_value(s), json_string_length(s), &n, err);
    if (rc < 0)
        return rc;
    *out = tide_ddb_number_size(&n);
    return 0;
}

static int value_size(const json_t *av, int level, size_t *out, struct tide_error *err)
{
    if (level > MAX_LEVELS)
        return bad(err, "value nested too deeply");
    if (!json_is_object(av) || json_object_size(av) != 1)
        return bad(err, "expected an AttributeValue (an object with one type key)");
    void *it = json_object_iter((json_t *)av);
    const char *t = json_object_iter_key(it); /* jansson keys hold no NUL */
    const json_t *v = json_object_iter_value(it);
    size_t total = 0, idx, part = 0;
    json_t *e;
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
        if (!json_is_array(v))
            return bad(err, "expected an array in an L value");
        json_array_foreach(v, idx, e) {
            if ((rc = value_size(e, level + 1, &part, err)) < 0)
                return rc;
            total += 1 + part;
        }
        *out = 3 + total;
        return 0;
    }
    if (strcmp(t, "SS") == 0 || strcmp(t, "NS") == 0 || strcmp(t, "BS") == 0) {
        if (!json_is_array(v))
            return bad(err, "expected an array in a set value");
        json_array_foreach(v, idx, e) {
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

int tide_ddb_item_size(const json_t *item, size_t *out, struct tide_error *err)
{
    return map_size(item, 0, 0, out, err);
}

int tide_ddb_value_size(const json_t *av, size_t *out, struct tide_error *err)
{
    return value_size(av, 0, out, err);
}
