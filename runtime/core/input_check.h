/*
 * input_check.h - checks of untrusted text before tide uses it (pure C, no
 * Lua): UTF-8 validity, and strict JSON (RFC 8259) by yajl.
 *
 * lua-cjson accepts more than JSON (0x10, 007, +5, 5., NaN, Infinity,
 * and stops at a NUL byte): tide's JSON input is read by yajl, which
 * builds the Lua values as it checks (core.decode_input, lua_input.c);
 * tide_json_check is the same check without the values.
 */
#ifndef TIDE_INPUT_CHECK_H
#define TIDE_INPUT_CHECK_H

#include <stddef.h>

#include <yajl/yajl_parse.h>

#include "error.h"

/* Returns 0 when s[0..n) is valid UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF), else TIDE_EINVAL with *bad set to the offset of
 * the first byte that is not part of a valid sequence. */
int tide_utf8_check(const char *s, size_t n, size_t *bad);

/* Returns 0 when s[0..n) is exactly one JSON value (whitespace around it
 * allowed; strings valid UTF-8, no raw control characters or NUL bytes),
 * else TIDE_EINVAL (TIDE_ENOMEM) with err's message saying what is wrong
 * and *offset set to the byte offset (0-based) where it was found. */
int tide_json_check(const char *s, size_t n, size_t *offset, struct tide_error *err);

/* tide_json_check with a parser of the caller's: runs h (made by
 * yajl_alloc with default options, its callbacks and allocator the
 * caller's) over s[0..n) to the end of the text, then leaves it to the
 * caller to free. Returns 0, or TIDE_EINVAL with the message and offset of
 * tide_json_check. A callback that returns 0 makes the text fail. For the
 * numbers' range, h needs the yajl_integer and yajl_double callbacks (yajl
 * converts numbers only for those) and no yajl_number. */
int tide_json_parse(yajl_handle h, const char *s, size_t n, size_t *offset,
                    struct tide_error *err);

#endif
