/*
 * ffi_layout.c - the layouts lua/tide/ffi.lua checks its declarations
 * against when it loads (see tide_ffi.h): a struct declared to the FFI with
 * another layout than the C compiler's would read and write the wrong
 * bytes, silently.
 */
#include <stddef.h>

#include "lua_buffer.h"
#include "tide_ffi.h"

#define FIELD(type, name) {#type, #name, (double)offsetof(type, name)},
#define SIZE(type) {#type, "", (double)sizeof(type)},
#define SIGV4_IN(ftype, name) FIELD(struct tide_ffi_sigv4_in, name)
#define SIGV4_OUT(ftype, name) FIELD(struct tide_ffi_sigv4_out, name)

static const struct tide_ffi_layout LAYOUT[] = {
    FIELD(struct tide_error, code)
    FIELD(struct tide_error, message)
    SIZE(struct tide_error)
    FIELD(struct tide_sigv4_header, name)
    FIELD(struct tide_sigv4_header, name_len)
    FIELD(struct tide_sigv4_header, value)
    FIELD(struct tide_sigv4_header, value_len)
    SIZE(struct tide_sigv4_header)
    FIELD(struct tide_buffer, len)
    FIELD(struct tide_buffer, data)
    TIDE_FFI_SIGV4_IN_FIELDS(SIGV4_IN)
    SIZE(struct tide_ffi_sigv4_in)
    TIDE_FFI_SIGV4_OUT_FIELDS(SIGV4_OUT)
    SIZE(struct tide_ffi_sigv4_out)
    FIELD(struct tide_ffi_layout, type)
    FIELD(struct tide_ffi_layout, field)
    FIELD(struct tide_ffi_layout, value)
    SIZE(struct tide_ffi_layout)
    {NULL, NULL, 0},
};

const struct tide_ffi_layout *tide_ffi_layout(void)
{
    return LAYOUT;
}
