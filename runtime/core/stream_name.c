#include "stream_name.h"

#include <string.h>

struct tide_stream_name tide_stream_name_split(const char *s, size_t n)
{
    const char *hash = n > 0 ? memchr(s, '#', n) : NULL;
    struct tide_stream_name name;
    name.aggregate = s;
    name.aggregate_len = hash != NULL ? (size_t)(hash - s) : n;
    name.id = hash != NULL ? hash + 1 : "";
    name.id_len = hash != NULL ? n - name.aggregate_len - 1 : 0;
    return name;
}
