/*
 * sigv4.h - AWS Signature Version 4 header signing, pure C (no I/O, no clock).
 *
 * A signer holds what is reused from one signature to the next: growable
 * scratch buffers, a
 * small cache of derived signing keys (one key per date, region, service and
 * secret), and prefix caches of the canonical requests and strings to sign:
 * the SHA-256 states after the whole 64-byte blocks they share with the
 * previous ones (method, path, host, date, session token ...), from which
 * the next signature resumes instead of hashing those bytes again. Results
 * are exactly those of hashing every byte. Memory is bounded (a few tens of
 * KB at most); after a few calls a signature allocates nothing (SHA-256 is
 * Nettle's, whose states are plain structs).
 *
 * A signer is not thread-safe: use one per thread or per lua_State. The
 * caches hold a copy of the last canonical requests (session token
 * included) and states derived from the signing keys; they are wiped when
 * replaced and when the signer is deleted.
 */
#ifndef TIDE_SIGV4_H
#define TIDE_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct tide_sigv4_signer;

/* One request header. Names are matched case-insensitively; a name given
 * several times is signed as one header whose values are joined with ','
 * in the order given. Values are trimmed and their runs of whitespace
 * (including folded lines) collapsed to one space, as SigV4 requires. */
struct tide_sigv4_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* The request to sign. Every pointer is borrowed for the call only. */
struct tide_sigv4_request {
    const char *method;        /* "GET", "POST", ... */
    const char *host;          /* Host header value, e.g. "dynamodb.eu-west-1.amazonaws.com" */
    const char *path;          /* path as sent; NULL or "" means "/" */
    const char *query;         /* raw query string without '?', or NULL */
    const struct tide_sigv4_header *headers;
    size_t n_headers;
    const char *body;          /* may be NULL when body_len is 0 */
    size_t body_len;
};

struct tide_sigv4_credentials {
    const char *access_key_id;
    const char *secret_access_key;
    size_t secret_len;
    const char *session_token; /* NULL when there is none */
};

struct tide_sigv4_options {
    const char *region;
    const char *service;
    int64_t time;              /* unix seconds of the signature */
    bool normalize_path;       /* resolve . and .. and duplicate slashes (false for S3) */
    bool sign_body;            /* add and sign x-amz-content-sha256 */
    bool sign_session_token;   /* false: add x-amz-security-token unsigned */
    bool debug;                /* keep the canonical request and string to sign */
};

/* What to add to the request. Every pointer is owned by the signer and
 * valid until its next call. */
struct tide_sigv4_result {
    const char *authorization;      /* Authorization header value */
    size_t authorization_len;
    const char *amz_date;           /* X-Amz-Date value, "YYYYMMDDTHHMMSSZ" */
    const char *session_token;      /* X-Amz-Security-Token value, or NULL */
    const char *content_sha256;     /* X-Amz-Content-Sha256 to add, or NULL */
    const char *signature;          /* hex signature */
    const char *canonical_request;  /* only with options.debug, else NULL */
    size_t canonical_request_len;
    const char *string_to_sign;     /* only with options.debug, else NULL */
    size_t string_to_sign_len;
    /* Leading bytes of the canonical request and of the string to sign
     * whose hashing resumed from a cached state: for tests and benchmarks. */
    size_t canonical_request_resumed;
    size_t string_to_sign_resumed;
};

/* Returns a new signer, or NULL (and err filled) when out of memory. Free it with tide_sigv4_signer_delete. */
struct tide_sigv4_signer *tide_sigv4_signer_new(struct tide_error *err);

/* Frees a signer and wipes the cached signing keys. NULL is allowed. */
void tide_sigv4_signer_delete(struct tide_sigv4_signer *s);

/* Signs req and fills out (pointers owned by s, valid until its next call).
 * Returns 0, or TIDE_EINVAL (bad header name, reserved header given,
 * host mismatch) or TIDE_ENOMEM with err filled. Messages
 * never contain the secret or the session token. */
int tide_sigv4_sign(struct tide_sigv4_signer *s,
                    const struct tide_sigv4_request *req,
                    const struct tide_sigv4_credentials *creds,
                    const struct tide_sigv4_options *opts,
                    struct tide_sigv4_result *out,
                    struct tide_error *err);

/* Writes the lowercase hex of a SHA-256 digest (64 chars and a NUL). */
void tide_sigv4_hex(const unsigned char digest[32], char hex[65]);

/* Number of signing keys derived so far (cache misses); for tests. */
uint64_t tide_sigv4_key_derivations(const struct tide_sigv4_signer *s);

#endif
