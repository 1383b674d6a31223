/*
 * httpd.c - see httpd.h. libmicrohttpd in its external-loop epoll mode
 * (MHD_USE_EPOLL without MHD_USE_INTERNAL_POLLING_THREAD): MHD starts no
 * thread; the owner's loop waits on MHD's epoll descriptor and calls
 * MHD_run, which calls on_request below on the owner's thread.
 */
#include "httpd.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct tide_httpd {
    struct MHD_Daemon *daemon;
    int port;
    /* set for the duration of tide_httpd_run only */
    tide_httpd_handler handler;
    void *ud;
};

/* Marks a connection whose headers were seen (MHD's first call). */
static int seen_headers;

static enum MHD_Result answer(struct MHD_Connection *conn, int status, const char *content_type,
                              const char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    enum MHD_Result r = MHD_queue_response(conn, (unsigned int)status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)version;
    (void)upload_data;
    struct tide_httpd *h = cls;
    if (*req_cls == NULL) {
        /* MHD calls first with the headers alone: answer once the body (if
         * any) has been read and dropped, as MHD expects. */
        *req_cls = &seen_headers;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* no route takes a body */
        return MHD_YES;
    }
    static const char failed[] = "internal error\n";
    if (h->handler == NULL)
        return answer(conn, 500, "text/plain; charset=utf-8", failed, sizeof(failed) - 1);
    struct tide_httpd_reply reply = {.status = 500, .content_type = "text/plain; charset=utf-8"};
    if (h->handler(h->ud, method, url, &reply) != 0 || reply.status < 100 || reply.status > 599)
        return answer(conn, 500, "text/plain; charset=utf-8", failed, sizeof(failed) - 1);
    return answer(conn, reply.status,
                  reply.content_type ? reply.content_type : "text/plain; charset=utf-8",
                  reply.body ? reply.body : "", reply.body ? reply.body_len : 0);
}

/* Splits "HOST:PORT" / "[V6]:PORT" / ":PORT" into host (NULL: any) and
 * port, in buf. Returns 0 or TIDE_EINVAL. */
static int split_addr(const char *addr, char *buf, size_t size, const char **host,
                      const char **port, struct tide_error *err)
{
    size_t len = strlen(addr);
    if (len == 0 || len >= size)
        return tide_error_set(err, TIDE_EINVAL, "metrics address '%s': expected HOST:PORT", addr);
    memcpy(buf, addr, len + 1);
    char *colon = strrchr(buf, ':');
    if (colon == NULL || colon[1] == '\0')
        return tide_error_set(err, TIDE_EINVAL, "metrics address '%s': expected HOST:PORT", addr);
    *colon = '\0';
    *port = colon + 1;
    for (const char *p = *port; *p; p++)
        if (*p < '0' || *p > '9')
            return tide_error_set(err, TIDE_EINVAL, "metrics address '%s': the port must be a number",
                                  addr);
    if (atol(*port) > 65535)
        return tide_error_set(err, TIDE_EINVAL, "metrics address '%s': the port must be at most 65535",
                              addr);
    char *h = buf;
    if (h[0] == '[') {
        size_t hl = strlen(h);
        if (hl < 2 || h[hl - 1] != ']')
            return tide_error_set(err, TIDE_EINVAL, "metrics address '%s': unclosed '['", addr);
        h[hl - 1] = '\0';
        h++;
    }
    *host = h[0] ? h : NULL;
    return 0;
}

struct tide_httpd *tide_httpd_new(const char *addr, struct tide_error *err)
{
    char buf[256];
    const char *host = NULL, *port = NULL;
    if (split_addr(addr, buf, sizeof(buf), &host, &port, err) != 0)
        return NULL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0 || ai == NULL) {
        tide_error_set(err, TIDE_EINVAL, "metrics address '%s': %s", addr, gai_strerror(rc));
        return NULL;
    }
    struct tide_httpd *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        freeaddrinfo(ai);
        tide_error_set(err, TIDE_ENOMEM, "metrics server: out of memory");
        return NULL;
    }
    unsigned int flags = MHD_USE_EPOLL;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                                 MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
                                 MHD_OPTION_END);
    freeaddrinfo(ai);
    if (h->daemon == NULL) {
        free(h);
        tide_error_set(err, TIDE_EIO, "metrics server: cannot listen on %s (in use, or not an address of this host)",
                       addr);
        return NULL;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = pi ? (int)pi->port : 0;
    return h;
}

void tide_httpd_delete(struct tide_httpd *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}

int tide_httpd_port(const struct tide_httpd *h) { return h->port; }

int tide_httpd_fd(const struct tide_httpd *h)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    return i ? i->epoll_fd : -1;
}

long tide_httpd_timeout_ms(const struct tide_httpd *h)
{
    MHD_UNSIGNED_LONG_LONG t = 0;
    if (MHD_get_timeout(h->daemon, &t) != MHD_YES)
        return -1;
    return t > 86400000ULL ? 86400000L : (long)t;
}

int tide_httpd_run(struct tide_httpd *h, tide_httpd_handler handler, void *ud, struct tide_error *err)
{
    h->handler = handler;
    h->ud = ud;
    enum MHD_Result r = MHD_run(h->daemon);
    h->handler = NULL;
    h->ud = NULL;
    if (r != MHD_YES)
        return tide_error_set(err, TIDE_EIO, "metrics server: MHD_run failed");
    return 0;
}
