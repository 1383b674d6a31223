/*
 * ffi_input.c - the FFI entry points of input_check.h (tide_ffi.h): called
 * by lua/tide/input.lua for every id, name and JSON text tide takes in.
 */
#include "input_check.h"
#include "tide_ffi.h"

int tide_ffi_utf8_check(const char *s, size_t len, double *bad)
{
    size_t at = 0;
    int rc = tide_utf8_check(s, len, &at);
    if (rc != 0 && bad != NULL)
        *bad = (double)at;
    return rc;
}

int tide_ffi_text_check(const char *s, size_t len, double *at)
{
    size_t bad = 0;
    if (tide_utf8_check(s, len, &bad) != 0) {
        *at = (double)bad;
        return 1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F) {
            *at = (double)i;
            return 2;
        }
    }
    return 0;
}

int tide_ffi_json_check(const char *s, size_t len, double *offset, struct tide_error *err)
{
    size_t at = 0;
    int rc = tide_json_check(s, len, &at, err);
    if (rc != 0 && offset != NULL)
        *offset = (double)at;
    return rc;
}
