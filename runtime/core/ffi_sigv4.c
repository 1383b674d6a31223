/*
 * ffi_sigv4.c - sigv4.c exported for LuaJIT's FFI (see tide_ffi.h); the
 * Lua side, with the argument checks, is lua/tide/sigv4.lua.
 */
#include "tide_ffi.h"

#include <math.h>

int tide_ffi_sigv4_signer_new(struct tide_sigv4_signer **out, struct tide_error *err)
{
    *out = tide_sigv4_signer_new(err);
    return *out != NULL ? 0 : err->code;
}

void tide_ffi_sigv4_signer_delete(struct tide_sigv4_signer *s)
{
    tide_sigv4_signer_delete(s);
}

int tide_ffi_sigv4_sign(struct tide_sigv4_signer *s, const struct tide_ffi_sigv4_in *in,
                        const char *method, const char *host, const char *path,
                        const char *query, const char *body, const char *access_key_id,
                        const char *secret_access_key, const char *session_token,
                        const char *region, const char *service,
                        struct tide_ffi_sigv4_out *out, struct tide_error *err)
{
    double t = floor(in->time);
    /* checked before the cast: a huge double does not fit an int64_t */
    if (!(t > -1e15 && t < 1e15))
        return tide_error_set(err, TIDE_EINVAL, "sign: opts.time is out of range");
    struct tide_sigv4_request req = {
        .method = method, .host = host, .path = path, .query = query,
        .headers = in->headers, .n_headers = in->n_headers,
        .body = body, .body_len = body ? in->body_len : 0,
    };
    struct tide_sigv4_credentials creds = {
        .access_key_id = access_key_id, .secret_access_key = secret_access_key,
        .secret_len = in->secret_len, .session_token = session_token,
    };
    struct tide_sigv4_options opts = {
        .region = region, .service = service, .time = (int64_t)t,
        .normalize_path = in->normalize_path != 0, .sign_body = in->sign_body != 0,
        .sign_session_token = in->sign_session_token != 0, .debug = in->debug != 0,
    };
    struct tide_sigv4_result r;
    int rc = tide_sigv4_sign(s, &req, &creds, &opts, &r, err);
    if (rc != 0)
        return rc;
    out->authorization = r.authorization;
    out->authorization_len = (double)r.authorization_len;
    out->amz_date = r.amz_date;
    out->content_sha256 = r.content_sha256;
    out->signature = r.signature;
    if (opts.debug) {
        out->canonical_request = r.canonical_request;
        out->canonical_request_len = (double)r.canonical_request_len;
        out->string_to_sign = r.string_to_sign;
        out->string_to_sign_len = (double)r.string_to_sign_len;
        out->canonical_request_resumed = (double)r.canonical_request_resumed;
        out->string_to_sign_resumed = (double)r.string_to_sign_resumed;
        out->key_derivations = (double)tide_sigv4_key_derivations(s);
    }
    return 0;
}
