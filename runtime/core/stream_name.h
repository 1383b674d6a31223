/*
 * stream_name.h - the name of an event stream: "<aggregate>#<id>"
 * ("account#a1"). The one C function that splits it; the Lua side has its
 * own module. No Lua.
 */
#ifndef TIDE_STREAM_NAME_H
#define TIDE_STREAM_NAME_H

#include <stddef.h>

struct tide_stream_name {
    const char *aggregate; /* borrowed from the name */
    size_t aggregate_len;
    const char *id;        /* borrowed from the name ("" without a '#') */
    size_t id_len;
};

/* Splits s[0..n) at its first '#'; without one, the whole name is the
 * aggregate and the id is empty. */
struct tide_stream_name tide_stream_name_split(const char *s, size_t n);

#endif
