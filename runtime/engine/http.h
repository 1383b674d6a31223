/*
 * http.h - tide's asynchronous HTTP client over the libcurl multi interface.
 *
 * No Lua here (lua_http.c is the binding). The model is pull-style, after
 * Tarantool's httpc.c: the owner submits requests (each gets an id), calls
 * tide_http_poll() from its event loop, then takes completed results one by
 * one with tide_http_next() and hands each back with tide_http_release().
 * Nothing is ever called back into the owner, so a single-threaded loop
 * (the Lua scheduler) can drive it without re-entrancy.
 *
 * Connections are kept alive and pooled by the multi handle; easy handles
 * and their buffers are recycled through a free list, keeping their options
 * (only what differs per request is set again). curl's sockets are watched
 * with epoll through curl_multi_socket_action, so a wake-up costs O(ready
 * sockets), not O(connections). HTTP/1.1 only.
 *
 * Not thread-safe: one client per thread (tide_http_wakeup() excepted).
 */
#ifndef TIDE_HTTP_H
#define TIDE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct tide_http;

/* Client options. Start from tide_http_opts_init() and change fields. */
struct tide_http_opts {
    long max_connections;    /* pool size: total, per host and cached (default 512) */
    long connect_timeout_ms; /* TCP + TLS handshake (default 10000) */
    long timeout_ms;         /* whole request when the request gives none (default 30000) */
    const char *ca_bundle;   /* PEM CA file (CURLOPT_CAINFO); NULL: system default. Copied. */
    bool verify_tls;         /* verify peer and host name (default true) */
    /* With 16 or more requests in flight and no response ready, the poll
     * first lets responses gather for this long, so that one wake-up takes
     * several (default 1000; 0: wake up for each). See tide_http_poll. */
    long gather_us;
};

/* Fills opts with the defaults above. */
void tide_http_opts_init(struct tide_http_opts *opts);

/* One request header. Name and value must not contain CR or LF. */
struct tide_http_header {
    const char *name;
    const char *value;
};

/* A request to submit. Every pointer is borrowed for the duration of
 * tide_http_submit() only: the client copies what it keeps (URL, headers,
 * body). */
struct tide_http_request {
    const char *method;  /* "GET", "POST", ...; NULL means GET */
    const char *url;     /* absolute http:// or https:// URL */
    const struct tide_http_header *headers;
    size_t nheaders;
    const char *body;    /* may be NULL; may contain NUL bytes */
    size_t body_len;
    long timeout_ms;     /* 0: the client's default */
    /* The response headers the caller wants (names in any case); the
     * result holds only those. NULL keeps every header. */
    const char *const *keep_headers;
    size_t nkeep_headers;
};

/* Why a request failed, derived from its CURLcode. */
enum tide_http_errkind {
    TIDE_HTTP_OK = 0,
    TIDE_HTTP_TIMEOUT,   /* the request or connect timeout expired */
    TIDE_HTTP_CONNECT,   /* TCP connect failed (refused, unreachable) */
    TIDE_HTTP_RESOLVE,   /* host name did not resolve */
    TIDE_HTTP_RESET,     /* connection reset or closed without a response */
    TIDE_HTTP_TRUNCATED, /* body shorter than its Content-Length */
    TIDE_HTTP_TLS,       /* handshake or certificate verification failed */
    TIDE_HTTP_SEND,      /* sending the request failed */
    TIDE_HTTP_URL,       /* malformed or unsupported URL */
    TIDE_HTTP_OTHER,
};

/* A short stable name for kind: "timeout", "connect", "resolve", "reset",
 * "truncated", "tls", "send", "url", "other". */
const char *tide_http_errkind_name(enum tide_http_errkind kind);

/* A completed request, owned by the client until tide_http_release(). */
struct tide_http_result {
    uint64_t id;
    enum tide_http_errkind error;    /* TIDE_HTTP_OK when a response arrived */
    const char *error_message;       /* "" when error == TIDE_HTTP_OK */
    long status;                     /* HTTP status; 0 on error */
    const struct tide_http_header *headers; /* names lower-cased, values trimmed */
    size_t nheaders;
    const char *body;                /* NUL-terminated for convenience; may hold NULs */
    size_t body_len;
};

/* Checks that method is an HTTP token (what tide_http_submit accepts).
 * Returns 0 or TIDE_EINVAL with err filled. */
int tide_http_check_method(const char *method, struct tide_error *err);

/* Checks one request header: name an HTTP token, value without CR/LF.
 * Returns 0 or TIDE_EINVAL; the message names the header, never its value
 * (values carry signatures and tokens). */
int tide_http_check_header(const char *name, const char *value, struct tide_error *err);

/* Creates a client. Initializes libcurl once per process (thread-safe).
 * Returns the client, or NULL with err filled (TIDE_ENOMEM, TIDE_EHTTP).
 * opts may be NULL for the defaults. Free with tide_http_delete(). */
struct tide_http *tide_http_new(const struct tide_http_opts *opts, struct tide_error *err);

/* Aborts every request in flight, frees every result not yet released and
 * closes the pooled connections. NULL is a no-op. */
void tide_http_delete(struct tide_http *http);

/* Starts a request. On success returns 0 and stores its id (> 0, unique
 * per client) in *id; its result comes out of tide_http_next() later.
 * Returns TIDE_EINVAL for a malformed method or header (see the checks
 * above), TIDE_EURL for a malformed URL or a scheme other than http/https
 * (the message does not echo the URL), TIDE_ENOMEM, or TIDE_EHTTP if
 * libcurl refused it. A failed submit produces no result. */
int tide_http_submit(struct tide_http *http, const struct tide_http_request *req,
                     uint64_t *id, struct tide_error *err);

/* An extra file descriptor for tide_http_poll() to wait on beside curl's
 * sockets (inotify, signalfd, ...). events/revents are poll(2) bits. */
struct tide_http_waitfd {
    int fd;
    short events;
    short revents;
};

/* Runs the transfers: waits at most timeout_ms (0: don't wait; negative:
 * until something happens) for socket activity, a curl timer, one of the
 * extra fds or tide_http_wakeup(), then moves finished requests to the
 * result queue. Does not wait when results are already queued. Fills the
 * revents of extra (may be NULL when nextra is 0). Under load (see
 * opts.gather_us) it may sleep that long before looking at the sockets.
 * Returns the number of results queued (>= 0), or TIDE_EHTTP. */
int tide_http_poll(struct tide_http *http, int timeout_ms,
                   struct tide_http_waitfd *extra, unsigned nextra,
                   struct tide_error *err);

/* At most this many descriptors watched with tide_http_watch. */
#define TIDE_HTTP_MAX_WATCHED 8

/* Adds fd to the client's own epoll set (level-triggered, readable), so
 * that every tide_http_poll also waits for it without a poll(2) of its
 * own, and reports it through tide_http_ready while it is readable. For a
 * descriptor epoll takes (a socket, an eventfd, another epoll's fd: the
 * metrics server's), never a regular file. Returns 0, TIDE_EINVAL (already
 * watched, or TIDE_HTTP_MAX_WATCHED are) or TIDE_EIO (epoll_ctl failed). */
int tide_http_watch(struct tide_http *http, int fd, struct tide_error *err);

/* Stops watching fd (before it is closed). Returns 0, or TIDE_ENOTFOUND. */
int tide_http_unwatch(struct tide_http *http, int fd);

/* The watched descriptors the last tide_http_poll found readable: *n of
 * them, valid until the next poll. */
const int *tide_http_ready(const struct tide_http *http, unsigned *n);

/* Takes the oldest queued result, or NULL when none is queued. The result
 * stays valid until tide_http_release(). */
struct tide_http_result *tide_http_next(struct tide_http *http);

/* Hands a result from tide_http_next() back; its handle is recycled. */
void tide_http_release(struct tide_http *http, struct tide_http_result *res);

/* Aborts request id whether in flight or queued as a result; it will not be
 * delivered. Returns 0, or TIDE_ENOTFOUND if id is unknown or already taken. */
int tide_http_cancel(struct tide_http *http, uint64_t id);

/* Requests submitted whose result has not been taken yet. */
size_t tide_http_pending(const struct tide_http *http);

/* Makes a tide_http_poll() in progress return early. The one call that is
 * safe from another thread or a signal-free context while poll runs. */
void tide_http_wakeup(struct tide_http *http);

#endif
