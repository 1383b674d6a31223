/*
 * httpd.h - the tide process's small HTTP server for operators (GET
 * /metrics, /health, /ready), over libmicrohttpd.
 *
 * No Lua here (lua_httpd.c is the binding) and no thread: the daemon runs
 * in MHD's external-loop epoll mode, so the owner's event loop waits on one
 * descriptor (tide_httpd_fd) for at most tide_httpd_timeout_ms, then calls
 * tide_httpd_run, which accepts, reads and answers whatever is ready and
 * calls the handler, synchronously, once per complete request. The owner's
 * thread is the only one that ever runs the handler.
 *
 * Not thread-safe: one server per thread.
 */
#ifndef TIDE_HTTPD_H
#define TIDE_HTTPD_H

#include <stddef.h>

#include "error.h"

struct tide_httpd;

/* What the handler answers. content_type and body are borrowed until
 * tide_httpd_run returns (the server copies them before). */
struct tide_httpd_reply {
    int status;
    const char *content_type;
    const char *body;
    size_t body_len;
};

/* Called once per request with its method ("GET", ...) and path (without
 * the query string). Fills reply; returns 0, or a negative code to answer
 * 500. ud is tide_httpd_run's. */
typedef int (*tide_httpd_handler)(void *ud, const char *method, const char *path,
                                  struct tide_httpd_reply *reply);

/* Listens on addr, "HOST:PORT" (an IPv4 literal, "[IPv6]" or a name that
 * resolves, e.g. localhost; PORT 0 picks a free port). Returns the server,
 * or NULL with err filled (TIDE_EINVAL for a malformed address, TIDE_EIO
 * when it cannot listen: the message names the address). Free with
 * tide_httpd_delete(). */
struct tide_httpd *tide_httpd_new(const char *addr, struct tide_error *err);

/* Stops listening and closes every connection. NULL is a no-op. */
void tide_httpd_delete(struct tide_httpd *httpd);

/* The port the server listens on (the one picked when addr said 0). */
int tide_httpd_port(const struct tide_httpd *httpd);

/* The descriptor that becomes readable when tide_httpd_run has work
 * (MHD's epoll descriptor). */
int tide_httpd_fd(const struct tide_httpd *httpd);

/* How long the loop may wait before calling tide_httpd_run even if the
 * descriptor stays quiet (connection timeouts; 0 when MHD already holds
 * data to process): milliseconds, or -1 for no limit. */
long tide_httpd_timeout_ms(const struct tide_httpd *httpd);

/* Does what is ready without waiting; handler answers complete requests.
 * Returns 0, or TIDE_EIO with err filled. */
int tide_httpd_run(struct tide_httpd *httpd, tide_httpd_handler handler, void *ud,
                   struct tide_error *err);

#endif
