/*
 * error.h - the error struct every fallible C function of tide fills.
 *
 * Convention (after libuv and Tarantool's diagnostics area): a fallible
 * function returns 0 on success or a negative TIDE_E* code, and on failure
 * writes a message naming what failed into the caller's struct tide_error.
 */
#ifndef TIDE_ERROR_H
#define TIDE_ERROR_H

#include <stddef.h>

enum tide_error_code {
    TIDE_OK = 0,
    TIDE_EINVAL = -1,    /* bad argument or malformed input */
    TIDE_ENOMEM = -2,    /* allocation failed */
    TIDE_ECRYPTO = -3,   /* OpenSSL reported a failure */
    TIDE_ENOTFOUND = -4, /* a file, profile or key that was asked for is absent */
    TIDE_EIO = -5,       /* reading a file or socket failed */
    TIDE_ELIMIT = -6,    /* a DynamoDB request limit would be exceeded */
    TIDE_EHTTP = -7,     /* the transport failed (libcurl) */
    TIDE_EURL = -8,      /* a URL that cannot be used (malformed, not http/https) */
    TIDE_ECONFLICT = -9, /* store: a version of the stream exists already */
    TIDE_EBUSY = -10,    /* store: the file stayed locked beyond the busy timeout */
    TIDE_ESTORE = -11,   /* store: any other SQLite failure (I/O, corrupt, full) */
    TIDE_ESCHEMA = -12,  /* store: the file is not a tide store, or a newer one */
    TIDE_EKAFKA = -13,   /* librdkafka refused a configuration or a message */
    TIDE_EFULL = -14,    /* a bounded queue is full: wait for it to drain, then retry */
};

struct tide_error {
    int code;
    char message[512];
};

/* Sets code and a printf-style message; returns code, so callers can write
 * `return tide_error_set(err, TIDE_EINVAL, "...")`. err may be NULL. */
int tide_error_set(struct tide_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears err to TIDE_OK with an empty message. */
void tide_error_clear(struct tide_error *err);

/* A short stable name for a code ("EINVAL", ...). */
const char *tide_error_name(int code);

#endif
