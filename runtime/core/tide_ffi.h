/*
 * tide_ffi.h - the C functions tide's Lua code calls through LuaJIT's FFI.
 *
 * The C half of lua/tide/ffi.lua, which declares all of this to the FFI
 * once. The Lua C API is for what builds Lua values, yields or runs the
 * loop (tide.core, tide.engine, tide.sqlite); leaf functions that do none of
 * that and are called often (signing) are exported here instead, in the
 * manner of lua-nginx-module's ngx_http_lua_ffi_* functions:
 *
 * - every name starts with tide_ffi_, and none takes a lua_State;
 * - a fallible function returns 0 or a negative TIDE_E* code and fills the
 *   caller's struct tide_error (error.h) with the message;
 * - pointers are borrowed for the call unless said otherwise: the Lua side
 *   keeps what backs them reachable until the call returns;
 * - nothing here calls back into Lua.
 *
 * The layouts of the structs below, of struct tide_error, struct
 * tide_sigv4_header and struct tide_buffer are checked against the FFI's
 * declarations when lua/tide/ffi.lua loads (tide_ffi_layout). Lengths going
 * to Lua are doubles: a size_t field would come out as a boxed 64-bit cdata.
 */
#ifndef TIDE_FFI_H
#define TIDE_FFI_H

#include <stddef.h>

#include "error.h"
#include "sigv4.h"

/* ---- layouts --------------------------------------------------------------- */

/* One entry of the layout table: the offset of `field` in `type`, or its
 * size when field is "". */
struct tide_ffi_layout {
    const char *type;
    const char *field;
    double value;
};

/* The layout table, ended by an entry whose type is NULL. Static. */
const struct tide_ffi_layout *tide_ffi_layout(void);

/* ---- SigV4 (ffi_sigv4.c; lua/tide/sigv4.lua is core.sign) ---------------- */

/* What core.sign passes besides the strings (the strings are arguments:
 * the FFI keeps a string argument alive for the call), and what it gets
 * back. Field lists as X-macros, for the structs and their layout entries. */
#define TIDE_FFI_SIGV4_IN_FIELDS(F)                        \
    F(double, time)                                        \
    F(size_t, body_len)                                    \
    F(size_t, secret_len)                                  \
    F(const struct tide_sigv4_header *, headers)           \
    F(size_t, n_headers)                                   \
    F(int, normalize_path)                                 \
    F(int, sign_body)                                      \
    F(int, sign_session_token)                             \
    F(int, debug)

#define TIDE_FFI_SIGV4_OUT_FIELDS(F)                       \
    F(const char *, authorization)                         \
    F(double, authorization_len)                           \
    F(const char *, amz_date)                              \
    F(const char *, content_sha256)                        \
    F(const char *, signature)                             \
    F(const char *, canonical_request)                     \
    F(double, canonical_request_len)                       \
    F(const char *, string_to_sign)                        \
    F(double, string_to_sign_len)                          \
    F(double, canonical_request_resumed)                   \
    F(double, string_to_sign_resumed)                      \
    F(double, key_derivations)

#define TIDE_FFI_DECLARE_FIELD(type, name) type name;

struct tide_ffi_sigv4_in {
    TIDE_FFI_SIGV4_IN_FIELDS(TIDE_FFI_DECLARE_FIELD)
};

/* Every pointer is owned by the signer and valid until its next call; the
 * debug fields (canonical_request .. key_derivations) are set only with
 * in->debug. */
struct tide_ffi_sigv4_out {
    TIDE_FFI_SIGV4_OUT_FIELDS(TIDE_FFI_DECLARE_FIELD)
};

/* Stores a new signer in *out (free it with tide_ffi_sigv4_signer_delete).
 * Returns 0, or TIDE_ENOMEM with err filled. */
int tide_ffi_sigv4_signer_new(struct tide_sigv4_signer **out, struct tide_error *err);

/* Frees a signer (NULL is allowed): the finalizer of the FFI's handle. */
void tide_ffi_sigv4_signer_delete(struct tide_sigv4_signer *s);

/* tide_sigv4_sign with the request, credentials and options spread over
 * in and the string arguments (path, query, body and session_token may be
 * NULL). Returns 0 with out filled, or a negative TIDE_E* code with err
 * filled ("sign: ..."; never the secret or the token). */
int tide_ffi_sigv4_sign(struct tide_sigv4_signer *s, const struct tide_ffi_sigv4_in *in,
                        const char *method, const char *host, const char *path,
                        const char *query, const char *body, const char *access_key_id,
                        const char *secret_access_key, const char *session_token,
                        const char *region, const char *service,
                        struct tide_ffi_sigv4_out *out, struct tide_error *err);

/* ---- untrusted input (input_check.h) ------------------------------------------ */

/* Returns 0 when s[0..len) is valid UTF-8, else TIDE_EINVAL with *bad the
 * offset of the first invalid byte. */
int tide_ffi_utf8_check(const char *s, size_t len, double *bad);

/* An id or a name: returns 0 when s[0..len) is valid UTF-8 without control
 * characters (U+0000..U+001F, U+007F); 1 when it is not valid UTF-8 (*at:
 * the offset of the first invalid byte), else 2 (*at: the offset of the
 * first control character). */
int tide_ffi_text_check(const char *s, size_t len, double *at);

/* Returns 0 when s[0..len) is exactly one strict JSON value, else a
 * negative TIDE_E* code with err's message and *offset the byte offset
 * (0-based) where the text stops being JSON. */
int tide_ffi_json_check(const char *s, size_t len, double *offset, struct tide_error *err);

#endif
