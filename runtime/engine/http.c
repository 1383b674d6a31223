/*
 * http.c - asynchronous HTTP client over the libcurl multi interface.
 *
 * Every request is a `struct xfer` (an easy handle plus its buffers) that
 * sits in exactly one of four lists: free (recyclable), active (in the
 * multi handle), done (finished, waiting for tide_http_next) and taken
 * (handed out, waiting for tide_http_release). Connections live in the
 * multi handle's pool, so recycling easy handles never closes them.
 */
#include "http.h"

#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <curl/curl.h>

#define DEFAULT_MAX_CONNECTIONS 512
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_TIMEOUT_MS 30000
/* Buffers larger than this are freed on recycle, so one big response does
 * not pin memory in an idle handle forever. */
#define KEEP_BUFFER_MAX (256 * 1024)
/* Upper bound on the pre-allocation a Content-Length header may cause. */
#define RESERVE_MAX (64 * 1024 * 1024)
#define WAITFD_STACK 8
#define DEFAULT_GATHER_US 1000
/* In-flight requests from which the poll lets responses gather (see
 * gather_responses). */
#define GATHER_MIN_ACTIVE 16
/* Socket events taken per epoll_wait. */
#define EPOLL_BATCH 64

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

struct xfer;

struct list {
    struct xfer *head;
    struct xfer *tail;
    size_t n;
};

struct xfer {
    struct tide_http_result res; /* what the owner sees */
    struct tide_http *http;
    CURL *easy;
    struct curl_slist *req_headers; /* nodes of hdr_nodes, lines in hdr_lines */
    struct curl_slist *hdr_nodes;   /* reused from request to request */
    size_t hdr_nodes_cap;
    struct buf hdr_lines;           /* "Name: value\0" lines */
    bool configured;      /* the per-client options are set on easy */
    CURLU *url_handle;    /* the URL parsed, handed to curl as CURLOPT_CURLU */
    char *url;            /* the URL url_handle holds */
    struct buf req_body;  /* our copy of the request body */
    bool has_body;        /* a request that carries a body (POST, PUT, ...) */
    int attempts;         /* times curl was about to send it: see on_prereq */
    bool resend_refused;  /* curl wanted to re-send the body: see on_prereq */
    struct buf resp_body;
    struct buf resp_hdrs; /* "name\0value\0" pairs of the last response */
    bool keep_all_headers;
    struct buf keep_headers; /* "name\0" of each header to keep otherwise */
    struct tide_http_header *hdr_array;
    size_t hdr_cap;
    struct xfer *prev, *next;
    struct list *owner;   /* the list this xfer is in */
    bool write_failed;    /* a callback ran out of memory */
    char host[256];       /* for error messages: never headers or query */
    char errbuf[CURL_ERROR_SIZE];
    char message[CURL_ERROR_SIZE + 300];
};

/* What the epoll set holds for one fd. Connections that curl opened through
 * on_open_socket stay registered (parked) between requests, so a kept-alive
 * connection costs no epoll_ctl per request; on_close_socket forgets them. */
struct sock_state {
    uint32_t events;  /* registered epoll events, 0 when not registered */
    bool owned;       /* opened by on_open_socket: its close is seen */
    bool parked;      /* registered, but curl is not watching it */
};

struct tide_http {
    CURLM *multi;
    struct sock_state *socks; /* indexed by fd */
    size_t nsocks;
    struct tide_http_opts opts;
    char *ca_bundle;
    uint64_t next_id;
    struct list free_list, active, done, taken;
    /* curl's sockets are watched with epoll (curl_multi_socket_action), so
     * one event costs O(ready sockets), not O(connections) as poll(2) does. */
    int epfd;
    int wakefd;           /* eventfd for tide_http_wakeup */
    bool timer_armed;     /* curl asked to be called back at timer_at */
    int64_t timer_at;     /* CLOCK_MONOTONIC ms */
    bool no_proxy;        /* no proxy variable in the environment: skip curl's
                           * per-request getenv lookups */
    char *last_url;       /* the last URL check_url accepted, and its host */
    char last_host[256];
    /* descriptors of the owner's in the epoll set (tide_http_watch), and
     * those the last poll found readable */
    int watched[TIDE_HTTP_MAX_WATCHED];
    unsigned nwatched;
    int ready[TIDE_HTTP_MAX_WATCHED];
    unsigned nready;
};

/* ---- small helpers ------------------------------------------------------ */

static void list_push(struct list *l, struct xfer *x)
{
    x->prev = l->tail;
    x->next = NULL;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
    l->n++;
    x->owner = l;
}

static void list_remove(struct xfer *x)
{
    struct list *l = x->owner;
    if (x->prev)
        x->prev->next = x->next;
    else
        l->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        l->tail = x->prev;
    l->n--;
    x->prev = x->next = NULL;
    x->owner = NULL;
}

static void list_move(struct xfer *x, struct list *to)
{
    list_remove(x);
    list_push(to, x);
}

/* Grows b to hold at least need bytes plus a NUL; doubles so that appending
 * chunk by chunk stays linear. Returns false when out of memory. */
static bool buf_reserve(struct buf *b, size_t need)
{
    if (need < b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap <= need) {
        if (cap > SIZE_MAX / 2)
            return false;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return false;
    b->data = p;
    b->cap = cap;
    return true;
}

static bool buf_append(struct buf *b, const char *data, size_t len)
{
    if (len > SIZE_MAX - b->len - 1 || !buf_reserve(b, b->len + len))
        return false;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return true;
}

/* Empties b; frees the memory too when it grew large. */
static void buf_clear(struct buf *b)
{
    if (b->cap > KEEP_BUFFER_MAX) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
    b->len = 0;
}

static void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = b->len = 0;
}

/* ---- libcurl global state ------------------------------------------------ */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

/* curl_global_init is not reentrant on every build; it is done once for the
 * life of the process and never undone (other clients may still run). */
static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CURLMOPT_TIMERFUNCTION: curl wants socket_action(CURL_SOCKET_TIMEOUT) in
 * timeout_ms (0: as soon as possible; -1: never). */
static int on_timer(CURLM *multi, long timeout_ms, void *ud)
{
    (void)multi;
    struct tide_http *http = ud;
    http->timer_armed = timeout_ms >= 0;
    if (timeout_ms >= 0)
        http->timer_at = timeout_ms == 0 ? 0 : now_ms() + timeout_ms;
    return 0;
}

static struct sock_state *sock_state(struct tide_http *http, curl_socket_t s, bool grow)
{
    if (s < 0)
        return NULL;
    size_t fd = (size_t)s;
    if (fd >= http->nsocks) {
        if (!grow)
            return NULL;
        size_t n = http->nsocks ? http->nsocks : 64;
        while (n <= fd)
            n *= 2;
        struct sock_state *a = realloc(http->socks, n * sizeof(*a));
        if (a == NULL)
            return NULL;
        memset(a + http->nsocks, 0, (n - http->nsocks) * sizeof(*a));
        http->socks = a;
        http->nsocks = n;
    }
    return &http->socks[fd];
}

/* CURLMOPT_SOCKETFUNCTION: keeps the epoll set in step with what curl
 * wants to know about socket s. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *ud, void *sockp)
{
    (void)easy;
    (void)sockp;
    struct tide_http *http = ud;
    struct sock_state *st = sock_state(http, s, true);
    if (what == CURL_POLL_REMOVE) {
        if (st && st->owned && st->events == EPOLLIN) {
            /* An idle kept-alive connection: leave it registered. If the
             * peer closes it meanwhile, tide_http_poll unregisters it. */
            st->parked = true;
            return 0;
        }
        epoll_ctl(http->epfd, EPOLL_CTL_DEL, s, NULL); /* may already be closed */
        if (st)
            st->events = 0, st->parked = false;
        return 0;
    }
    uint32_t want = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (st && st->events == want) {
        st->parked = false; /* already registered as wanted */
        return 0;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = want;
    ev.data.fd = s;
    int op = st && st->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(http->epfd, op, s, &ev) != 0) {
        /* the fd number was reused behind curl's back, or dropped by a close */
        op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(http->epfd, op, s, &ev) != 0)
            return -1;
    }
    if (st)
        st->events = want, st->parked = false;
    return 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: curl's own socket(2), marked as ours so that
 * its close is seen (on_close_socket) and it may be parked. */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct tide_http *http = ud;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    curl_socket_t s = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (s == CURL_SOCKET_BAD)
        return s;
    struct sock_state *st = sock_state(http, s, true);
    if (st == NULL) {
        close(s);
        return CURL_SOCKET_BAD;
    }
    st->owned = true;
    st->events = 0;
    st->parked = false;
    return s;
}

/* CURLOPT_CLOSESOCKETFUNCTION: forgets s before the fd number can be reused. */
static int on_close_socket(void *ud, curl_socket_t s)
{
    struct tide_http *http = ud;
    struct sock_state *st = sock_state(http, s, false);
    if (st) {
        if (st->events)
            epoll_ctl(http->epfd, EPOLL_CTL_DEL, s, NULL);
        memset(st, 0, sizeof(*st));
    }
    return close(s);
}

/* True when one of the variables curl reads for a proxy is set. */
static bool env_has_proxy(void)
{
    static const char *const names[] = {
        "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
        "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = getenv(names[i]);
        if (v && *v)
            return true;
    }
    return false;
}

/* ---- public API --------------------------------------------------------- */

void tide_http_opts_init(struct tide_http_opts *opts)
{
    opts->max_connections = DEFAULT_MAX_CONNECTIONS;
    opts->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    opts->timeout_ms = DEFAULT_TIMEOUT_MS;
    opts->ca_bundle = NULL;
    opts->verify_tls = true;
    opts->gather_us = DEFAULT_GATHER_US;
}

const char *tide_http_errkind_name(enum tide_http_errkind kind)
{
    switch (kind) {
    case TIDE_HTTP_OK: return "ok";
    case TIDE_HTTP_TIMEOUT: return "timeout";
    case TIDE_HTTP_CONNECT: return "connect";
    case TIDE_HTTP_RESOLVE: return "resolve";
    case TIDE_HTTP_RESET: return "reset";
    case TIDE_HTTP_TRUNCATED: return "truncated";
    case TIDE_HTTP_TLS: return "tls";
    case TIDE_HTTP_SEND: return "send";
    case TIDE_HTTP_URL: return "url";
    case TIDE_HTTP_OTHER: break;
    }
    return "other";
}

struct tide_http *tide_http_new(const struct tide_http_opts *opts, struct tide_error *err)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        tide_error_set(err, TIDE_EHTTP, "curl_global_init: %s", curl_easy_strerror(global_rc));
        return NULL;
    }
    struct tide_http *http = calloc(1, sizeof(*http));
    if (http == NULL) {
        tide_error_set(err, TIDE_ENOMEM, "out of memory");
        return NULL;
    }
    if (opts)
        http->opts = *opts;
    else
        tide_http_opts_init(&http->opts);
    if (http->opts.max_connections <= 0)
        http->opts.max_connections = DEFAULT_MAX_CONNECTIONS;
    if (http->opts.connect_timeout_ms <= 0)
        http->opts.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (http->opts.timeout_ms <= 0)
        http->opts.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (http->opts.ca_bundle) {
        http->ca_bundle = strdup(http->opts.ca_bundle);
        if (http->ca_bundle == NULL) {
            free(http);
            tide_error_set(err, TIDE_ENOMEM, "out of memory");
            return NULL;
        }
    }
    http->opts.ca_bundle = http->ca_bundle;
    http->next_id = 1;
    http->no_proxy = !env_has_proxy();

    http->epfd = epoll_create1(EPOLL_CLOEXEC);
    http->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event wev;
    memset(&wev, 0, sizeof(wev));
    wev.events = EPOLLIN;
    wev.data.fd = http->wakefd;
    if (http->epfd < 0 || http->wakefd < 0 ||
        epoll_ctl(http->epfd, EPOLL_CTL_ADD, http->wakefd, &wev) != 0) {
        tide_error_set(err, TIDE_EHTTP, "epoll/eventfd: %s", strerror(errno));
        if (http->epfd >= 0)
            close(http->epfd);
        if (http->wakefd >= 0)
            close(http->wakefd);
        free(http->ca_bundle);
        free(http);
        return NULL;
    }

    http->multi = curl_multi_init();
    if (http->multi == NULL) {
        close(http->epfd);
        close(http->wakefd);
        free(http->ca_bundle);
        free(http);
        tide_error_set(err, TIDE_EHTTP, "curl_multi_init failed");
        return NULL;
    }
    curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, (void *)http);
    curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, (void *)http);
    long n = http->opts.max_connections;
    /* Excess requests wait inside curl for a free connection rather than
     * opening more; the cache keeps as many idle ones alive for reuse. */
    curl_multi_setopt(http->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n);
    curl_multi_setopt(http->multi, CURLMOPT_MAX_HOST_CONNECTIONS, n);
    curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS, n);
    /* HTTP/1.1 only: never wait for a connection to learn if it multiplexes. */
    curl_multi_setopt(http->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    return http;
}

static void xfer_destroy(struct xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_url_cleanup(x->url_handle);
    free(x->url);
    free(x->hdr_nodes);
    buf_free(&x->hdr_lines);
    buf_free(&x->req_body);
    buf_free(&x->resp_body);
    buf_free(&x->resp_hdrs);
    buf_free(&x->keep_headers);
    free(x->hdr_array);
    free(x);
}

static void list_destroy(struct tide_http *http, struct list *l, bool in_multi)
{
    while (l->head) {
        struct xfer *x = l->head;
        list_remove(x);
        if (in_multi)
            curl_multi_remove_handle(http->multi, x->easy);
        xfer_destroy(x);
    }
}

void tide_http_delete(struct tide_http *http)
{
    if (http == NULL)
        return;
    list_destroy(http, &http->active, true);
    list_destroy(http, &http->done, false);
    list_destroy(http, &http->taken, false);
    list_destroy(http, &http->free_list, false);
    curl_multi_cleanup(http->multi); /* may still call on_socket: epfd open */
    close(http->epfd);
    close(http->wakefd);
    free(http->socks);
    free(http->last_url);
    free(http->ca_bundle);
    free(http);
}

/* Puts x back on the free list (or frees it when the list is full). */
static void xfer_recycle(struct tide_http *http, struct xfer *x)
{
    x->req_headers = NULL;
    buf_clear(&x->hdr_lines);
    buf_clear(&x->req_body);
    buf_clear(&x->resp_body);
    buf_clear(&x->resp_hdrs);
    buf_clear(&x->keep_headers);
    if (x->hdr_cap > 64) {
        free(x->hdr_array);
        x->hdr_array = NULL;
        x->hdr_cap = 0;
    }
    if (http->free_list.n >= (size_t)http->opts.max_connections) {
        list_remove(x);
        xfer_destroy(x);
        return;
    }
    list_move(x, &http->free_list);
}

/* libcurl write callback: appends a body chunk. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * nmemb;
    if (!buf_append(&x->resp_body, data, len)) {
        x->write_failed = true;
        return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
    }
    return len;
}

/* Whether the caller asked for the response header name. */
static bool is_kept(const struct xfer *x, const char *name, size_t nlen)
{
    for (size_t off = 0; off < x->keep_headers.len;) {
        const char *k = x->keep_headers.data + off;
        size_t klen = strlen(k);
        if (klen == nlen && strncasecmp(k, name, nlen) == 0)
            return true;
        off += klen + 1;
    }
    return false;
}

/* libcurl header callback: one complete header line per call, including the
 * status line and the blank line ending the block. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * nmemb;
    /* A new status line starts a new header block (100 Continue, ...): only
     * the last one describes the response. */
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        x->resp_hdrs.len = 0;
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line || line[0] == ' ' || line[0] == '\t')
        return len; /* blank line, folded continuation or junk: skip */
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);

    struct buf *b = &x->resp_hdrs;
    if (!buf_reserve(b, b->len + nlen + vlen + 2)) {
        x->write_failed = true;
        return 0;
    }
    char *name = b->data + b->len;
    for (size_t i = 0; i < nlen; i++)
        name[i] = (char)tolower((unsigned char)line[i]);
    name[nlen] = '\0';
    memcpy(name + nlen + 1, v, vlen);
    name[nlen + 1 + vlen] = '\0';
    if (x->keep_all_headers || is_kept(x, name, nlen))
        b->len += nlen + vlen + 2; /* else the next header overwrites it */

    /* Size the body buffer once from Content-Length instead of doubling up
     * to it; bounded so a lying server cannot make us allocate much. */
    if (nlen == 14 && memcmp(name, "content-length", 14) == 0) {
        unsigned long long cl = strtoull(name + nlen + 1, NULL, 10);
        if (cl > 0 && cl <= RESERVE_MAX && !buf_reserve(&x->resp_body, (size_t)cl)) {
            x->write_failed = true;
            return 0;
        }
    }
    return len;
}

/* libcurl pre-request callback: runs each time curl is about to send the
 * request on a connection. A second time means curl is re-sending it by
 * itself: a reused keep-alive connection died before any response byte, and
 * curl retries on a fresh one. The server may have acted on the first copy
 * (a write that went through before the connection dropped), so re-sending
 * a request with a body is the caller's decision, not curl's: refuse, and
 * the request fails as "reset". (The body is given as POSTFIELDS, so that
 * curl sends it in the same write as the headers; this hook, rather than a
 * refused rewind of a read callback, is what catches the re-send.) */
static int on_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port,
                     int local_port)
{
    (void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
    struct xfer *x = ud;
    if (++x->attempts > 1 && x->has_body) {
        x->resend_refused = true;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* RFC 9110 token characters: what a method or header name may contain. */
static bool is_token(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* Parses url, checks its scheme and copies its host into x->host. A client
 * mostly sends to one URL: the last one accepted is remembered, so the
 * common case is a strcmp instead of a parse and four allocations. */
static int check_url(struct tide_http *http, struct xfer *x, const char *url,
                     struct tide_error *err)
{
    if (url == NULL || *url == '\0')
        return tide_error_set(err, TIDE_EURL, "malformed URL: empty");
    if (http->last_url && strcmp(url, http->last_url) == 0) {
        memcpy(x->host, http->last_host, sizeof(x->host));
        return 0;
    }
    CURLU *u = curl_url();
    if (u == NULL)
        return tide_error_set(err, TIDE_ENOMEM, "out of memory");
    int rc = 0;
    char *scheme = NULL, *host = NULL;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        /* The URL itself may carry secrets (presigned queries): not echoed. */
        rc = tide_error_set(err, TIDE_EURL, "malformed URL: %s", curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        rc = tide_error_set(err, TIDE_EURL, "unsupported URL scheme '%s' (http or https)",
                            scheme ? scheme : "");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
        rc = tide_error_set(err, TIDE_EURL, "malformed URL: no host");
        goto out;
    }
    snprintf(x->host, sizeof(x->host), "%s", host);
    char *copy = strdup(url);
    if (copy) { /* without it, the next call just parses again */
        free(http->last_url);
        http->last_url = copy;
        memcpy(http->last_host, x->host, sizeof(x->host));
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

int tide_http_check_method(const char *method, struct tide_error *err)
{
    if (!is_token(method))
        return tide_error_set(err, TIDE_EINVAL, "invalid HTTP method '%.32s'",
                              method ? method : "");
    return 0;
}

int tide_http_check_header(const char *name, const char *value, struct tide_error *err)
{
    if (!is_token(name))
        return tide_error_set(err, TIDE_EINVAL, "invalid header name '%.64s'", name ? name : "");
    if (value == NULL || has_crlf(value))
        return tide_error_set(err, TIDE_EINVAL, "invalid value for header '%.64s'", name);
    return 0;
}

/* Builds the curl header list: the caller's headers, plus blank overrides
 * that stop curl adding an Expect: 100-continue round trip, a form
 * Content-Type nobody asked for and an "Accept: any type" that says nothing. The lines and the list nodes live in
 * buffers of x reused from request to request (curl only reads the list),
 * rather than two mallocs per header with curl_slist_append. */
static int build_headers(struct xfer *x, const struct tide_http_request *req,
                         bool has_body, struct tide_error *err)
{
    bool have_ctype = false, have_expect = false, have_accept = false;
    struct buf *b = &x->hdr_lines;
    size_t n = 0;
    b->len = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        int rc = tide_http_check_header(name, value, err);
        if (rc != 0)
            return rc;
        if (!have_ctype && strcasecmp(name, "content-type") == 0)
            have_ctype = true;
        if (!have_expect && strcasecmp(name, "expect") == 0)
            have_expect = true;
        if (!have_accept && strcasecmp(name, "accept") == 0)
            have_accept = true;
        /* "Name;" is curl's way to send a header with an empty value. */
        bool ok = buf_append(b, name, strlen(name)) &&
                  (*value ? buf_append(b, ": ", 2) && buf_append(b, value, strlen(value))
                          : buf_append(b, ";", 1)) &&
                  buf_append(b, "", 1); /* keeps the NUL inside len */
        if (!ok)
            return tide_error_set(err, TIDE_ENOMEM, "out of memory");
        n++;
    }
    const char *extra[3] = {have_expect ? NULL : "Expect:",
                            (has_body && !have_ctype) ? "Content-Type:" : NULL,
                            have_accept ? NULL : "Accept:"};
    for (int i = 0; i < 3; i++) {
        if (extra[i] == NULL)
            continue;
        if (!buf_append(b, extra[i], strlen(extra[i]) + 1))
            return tide_error_set(err, TIDE_ENOMEM, "out of memory");
        n++;
    }
    if (n > x->hdr_nodes_cap) {
        size_t cap = n < 16 ? 16 : n;
        struct curl_slist *nodes = realloc(x->hdr_nodes, cap * sizeof(*nodes));
        if (nodes == NULL)
            return tide_error_set(err, TIDE_ENOMEM, "out of memory");
        x->hdr_nodes = nodes;
        x->hdr_nodes_cap = cap;
    }
    /* Only now: b->data no longer moves. */
    char *line = b->data;
    for (size_t i = 0; i < n; i++) {
        x->hdr_nodes[i].data = line;
        x->hdr_nodes[i].next = i + 1 < n ? &x->hdr_nodes[i + 1] : NULL;
        line += strlen(line) + 1;
    }
    x->req_headers = n ? x->hdr_nodes : NULL;
    return 0;
}

static struct xfer *xfer_get(struct tide_http *http)
{
    struct xfer *x = http->free_list.head;
    if (x) {
        /* No curl_easy_reset: the options that differ between requests are
         * all set again by setup_easy, the others stay as configured. */
        list_remove(x);
    } else {
        x = calloc(1, sizeof(*x));
        if (x == NULL)
            return NULL;
        x->easy = curl_easy_init();
        if (x->easy == NULL) {
            free(x);
            return NULL;
        }
        x->http = http;
    }
    x->write_failed = false;
    x->attempts = 0;
    x->has_body = false;
    x->resend_refused = false;
    x->errbuf[0] = '\0';
    x->message[0] = '\0';
    x->host[0] = '\0';
    memset(&x->res, 0, sizeof(x->res));
    return x;
}

/* The options every request of this client shares: set once per easy
 * handle, which is recycled without curl_easy_reset. */
static CURLcode configure_easy(struct tide_http *http, struct xfer *x)
{
    CURL *e = x->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts: we own signals */
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_TCP_KEEPIDLE, 60L);
    SET(CURLOPT_TCP_KEEPINTVL, 30L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, http->opts.connect_timeout_ms);
    SET(CURLOPT_ERRORBUFFER, x->errbuf);
    SET(CURLOPT_PRIVATE, (void *)x);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)x);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)x);
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, (void *)x);
    SET(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SET(CURLOPT_OPENSOCKETDATA, (void *)http);
    SET(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    SET(CURLOPT_CLOSESOCKETDATA, (void *)http); /* outlives every connection */
    SET(CURLOPT_SSL_VERIFYPEER, http->opts.verify_tls ? 1L : 0L);
    SET(CURLOPT_SSL_VERIFYHOST, http->opts.verify_tls ? 2L : 0L);
    if (http->ca_bundle)
        SET(CURLOPT_CAINFO, http->ca_bundle);
    /* No proxy variable was set when the client started: say so, or curl
     * looks them all up with getenv on every request. */
    if (http->no_proxy)
        SET(CURLOPT_NOPROXY, "*");
#undef SET
    return rc;
}

static int setup_easy(struct tide_http *http, struct xfer *x, const struct tide_http_request *req,
                      const char *method, bool body_path, struct tide_error *err)
{
    CURL *e = x->easy;
    long timeout = req->timeout_ms > 0 ? req->timeout_ms : http->opts.timeout_ms;
    CURLcode rc = CURLE_OK;
    if (!x->configured) {
        rc = configure_easy(http, x);
        x->configured = rc == CURLE_OK;
    }
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    /* The URL as a parsed handle: given a string, curl parses it again on
     * every transfer; given a handle it copies it. Each xfer owns its
     * handle (curl reads it when the transfer starts, after submit), parsed
     * again only when its URL changes. */
    if (x->url == NULL || strcmp(x->url, req->url) != 0) {
        free(x->url);
        x->url = strdup(req->url);
        if (x->url_handle == NULL)
            x->url_handle = curl_url();
        if (x->url == NULL || x->url_handle == NULL)
            return tide_error_set(err, TIDE_ENOMEM, "out of memory");
        CURLUcode uc = curl_url_set(x->url_handle, CURLUPART_URL, req->url, 0);
        if (uc != CURLUE_OK) { /* check_url accepted it: should not happen */
            free(x->url);
            x->url = NULL;
            return tide_error_set(err, TIDE_EURL, "malformed URL: %s", curl_url_strerror(uc));
        }
    }
    SET(CURLOPT_CURLU, x->url_handle);
    SET(CURLOPT_TIMEOUT_MS, timeout);
    SET(CURLOPT_HTTPHEADER, x->req_headers);
    bool head = strcmp(method, "HEAD") == 0;
    x->has_body = body_path && !head;
    if (!x->has_body) {
        /* POSTFIELDS first: setting it (even to NULL) selects POST, which
         * HTTPGET or NOBODY then override. */
        SET(CURLOPT_POSTFIELDS, (char *)NULL);
        if (head)
            SET(CURLOPT_NOBODY, 1L);
        else
            SET(CURLOPT_HTTPGET, 1L); /* also clears NOBODY */
        SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
    } else {
        /* POSTFIELDS (not copied: x->req_body lives until the transfer is
         * done) lets curl send a small body in the same write as the
         * headers; on_prereq refuses curl's silent re-send. */
        SET(CURLOPT_NOBODY, 0L);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->req_body.len);
        SET(CURLOPT_POSTFIELDS, x->req_body.data);
        SET(CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") != 0 ? method : (char *)NULL);
    }
#undef SET
    if (rc != CURLE_OK) {
        x->configured = false;
        curl_easy_reset(e); /* back to a known state for the next request */
        return tide_error_set(err, TIDE_EHTTP, "curl_easy_setopt: %s (host %s)",
                              curl_easy_strerror(rc), x->host);
    }
    return 0;
}

int tide_http_submit(struct tide_http *http, const struct tide_http_request *req,
                     uint64_t *id, struct tide_error *err)
{
    const char *method = req->method ? req->method : "GET";
    int rc = tide_http_check_method(method, err);
    if (rc != 0)
        return rc;
    if (req->body == NULL && req->body_len > 0)
        return tide_error_set(err, TIDE_EINVAL, "body is NULL but body_len is %zu", req->body_len);

    struct xfer *x = xfer_get(http);
    if (x == NULL)
        return tide_error_set(err, TIDE_ENOMEM, "out of memory");
    list_push(&http->taken, x); /* so that every error path can recycle it */

    bool body_path = req->body != NULL ||
                     (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0);
    rc = check_url(http, x, req->url, err);
    if (rc == 0)
        rc = build_headers(x, req, body_path, err);
    x->keep_all_headers = req->keep_headers == NULL;
    for (size_t i = 0; rc == 0 && !x->keep_all_headers && i < req->nkeep_headers; i++) {
        const char *k = req->keep_headers[i];
        if (!buf_append(&x->keep_headers, k, strlen(k) + 1)) /* NUL kept inside len */
            rc = tide_error_set(err, TIDE_ENOMEM, "out of memory");
    }
    if (rc == 0 && body_path) {
        /* Always a valid pointer, even for an empty body. */
        if (!buf_reserve(&x->req_body, req->body_len) ||
            (req->body_len > 0 && !buf_append(&x->req_body, req->body, req->body_len)))
            rc = tide_error_set(err, TIDE_ENOMEM, "out of memory");
    }
    if (rc == 0)
        rc = setup_easy(http, x, req, method, body_path, err);
    if (rc == 0) {
        CURLMcode mc = curl_multi_add_handle(http->multi, x->easy);
        if (mc != CURLM_OK)
            rc = tide_error_set(err, TIDE_EHTTP, "curl_multi_add_handle: %s (host %s)",
                                curl_multi_strerror(mc), x->host);
    }
    if (rc != 0) {
        xfer_recycle(http, x);
        return rc;
    }
    x->res.id = http->next_id++;
    list_move(x, &http->active);
    *id = x->res.id;
    return 0;
}

static enum tide_http_errkind classify(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK: return TIDE_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT: return TIDE_HTTP_TIMEOUT;
    case CURLE_COULDNT_CONNECT: return TIDE_HTTP_CONNECT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return TIDE_HTTP_RESOLVE;
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING: return TIDE_HTTP_RESET;
    case CURLE_PARTIAL_FILE: return TIDE_HTTP_TRUNCATED;
    case CURLE_SEND_ERROR: return TIDE_HTTP_SEND;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL: return TIDE_HTTP_URL;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT: return TIDE_HTTP_TLS;
    default: return TIDE_HTTP_OTHER;
    }
}

/* Fills x->res once curl is done with x. */
static void finish(struct xfer *x, CURLcode rc)
{
    struct tide_http_result *res = &x->res;
    res->error = x->resend_refused ? TIDE_HTTP_RESET : classify(rc);
    if (rc == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        res->status = status;
        res->error_message = "";
    } else {
        const char *what = x->write_failed ? "out of memory"
                           : x->resend_refused ? "connection closed before any response"
                                                 " (request not re-sent)"
                           : x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
        snprintf(x->message, sizeof(x->message), "%s (host %s)", what, x->host);
        res->status = 0;
        res->error_message = x->message;
        x->resp_hdrs.len = 0;
        x->resp_body.len = 0;
    }

    /* Point the header array into resp_hdrs, which no longer grows. */
    size_t n = 0;
    for (size_t off = 0; off < x->resp_hdrs.len; n++) {
        off += strlen(x->resp_hdrs.data + off) + 1;
        off += strlen(x->resp_hdrs.data + off) + 1;
    }
    if (n > x->hdr_cap) {
        struct tide_http_header *a = realloc(x->hdr_array, n * sizeof(*a));
        if (a == NULL) {
            n = 0; /* degrade to no headers rather than lose the response */
        } else {
            x->hdr_array = a;
            x->hdr_cap = n;
        }
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        x->hdr_array[i].name = x->resp_hdrs.data + off;
        off += strlen(x->resp_hdrs.data + off) + 1;
        x->hdr_array[i].value = x->resp_hdrs.data + off;
        off += strlen(x->resp_hdrs.data + off) + 1;
    }
    res->headers = x->hdr_array;
    res->nheaders = n;
    res->body = x->resp_body.data ? x->resp_body.data : "";
    res->body_len = x->resp_body.len;
}

/* Moves every transfer curl reports finished to the done queue. */
static void collect(struct tide_http *http)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(http->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result; /* msg is invalid after remove_handle */
        struct xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(http->multi, easy);
        finish(x, rc);
        list_move(x, &http->done);
    }
}

/* Runs curl's timer if it is due. */
static int run_timer(struct tide_http *http, struct tide_error *err)
{
    if (!http->timer_armed || (http->timer_at > 0 && http->timer_at > now_ms()))
        return 0;
    http->timer_armed = false; /* curl re-arms it from inside the call */
    int running;
    CURLMcode mc = curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (mc != CURLM_OK)
        return tide_error_set(err, TIDE_EHTTP, "curl_multi_socket_action: %s",
                              curl_multi_strerror(mc));
    return 0;
}

/* With many requests in flight and none answered yet, waking up for each
 * response as it comes costs more than handling it: two context switches
 * (and, on a machine the server shares, being preempted by it more often)
 * for a few microseconds of work. So instead of blocking on the sockets,
 * the poll sleeps up to opts.gather_us, then takes every response that came
 * meanwhile in one wake-up; under that load a response already waits at
 * the server much longer than that. The wake-up fd and the extra fds end
 * the sleep at once; it never outlasts wait (ms, negative: no limit).
 * Returns what is left of wait. */
static int gather_responses(struct tide_http *http, int wait,
                            const struct tide_http_waitfd *extra, unsigned nextra)
{
    if (nextra > WAITFD_STACK)
        return wait;
    long us = http->opts.gather_us;
    if (wait > 0 && (long)wait * 1000 < us)
        us = (long)wait * 1000;
    struct pollfd fds[WAITFD_STACK + 1];
    fds[0].fd = http->wakefd;
    fds[0].events = POLLIN;
    for (unsigned i = 0; i < nextra; i++) {
        fds[i + 1].fd = extra[i].fd;
        fds[i + 1].events = extra[i].events;
    }
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    int64_t t0 = now_ms();
    ppoll(fds, nextra + 1, &ts, NULL);
    if (wait < 0)
        return wait;
    int64_t left = wait - (now_ms() - t0);
    return left > 0 ? (int)left : 0;
}

static bool is_watched(const struct tide_http *http, int fd)
{
    for (unsigned i = 0; i < http->nwatched; i++)
        if (http->watched[i] == fd)
            return true;
    return false;
}

int tide_http_watch(struct tide_http *http, int fd, struct tide_error *err)
{
    if (fd < 0 || is_watched(http, fd) || http->nwatched >= TIDE_HTTP_MAX_WATCHED)
        return tide_error_set(err, TIDE_EINVAL, "watch fd %d: already watched, or too many", fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(http->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return tide_error_set(err, TIDE_EIO, "watch fd %d: epoll_ctl: %s", fd, strerror(errno));
    http->watched[http->nwatched++] = fd;
    return 0;
}

int tide_http_unwatch(struct tide_http *http, int fd)
{
    for (unsigned i = 0; i < http->nwatched; i++) {
        if (http->watched[i] == fd) {
            epoll_ctl(http->epfd, EPOLL_CTL_DEL, fd, NULL);
            http->watched[i] = http->watched[--http->nwatched];
            return 0;
        }
    }
    return TIDE_ENOTFOUND;
}

const int *tide_http_ready(const struct tide_http *http, unsigned *n)
{
    *n = http->nready;
    return http->ready;
}

int tide_http_poll(struct tide_http *http, int timeout_ms,
                   struct tide_http_waitfd *extra, unsigned nextra,
                   struct tide_error *err)
{
    http->nready = 0;
    /* New requests arm a 0 ms timer: start them before waiting. */
    int rc = run_timer(http, err);
    if (rc != 0)
        return rc;
    collect(http);

    /* Wait at most until curl's next timer; with nothing queued, a negative
     * timeout means "until something happens". */
    int wait = http->done.n > 0 ? 0 : timeout_ms < 0 ? -1 : timeout_ms;
    if (wait != 0 && http->timer_armed) {
        int64_t left = http->timer_at - now_ms();
        if (left < 0)
            left = 0;
        if (wait < 0 || left < wait)
            wait = left > INT_MAX ? INT_MAX : (int)left;
    }

    struct epoll_event evs[EPOLL_BATCH];
    int n = 0;
    bool collected = false; /* evs holds what epoll_wait returned */
    if (wait != 0 && http->opts.gather_us > 0 && http->active.n >= GATHER_MIN_ACTIVE) {
        /* Gather only when no socket is ready: what is ready goes first. */
        n = epoll_wait(http->epfd, evs, EPOLL_BATCH, 0);
        if (n < 0 && errno != EINTR)
            return tide_error_set(err, TIDE_EHTTP, "epoll_wait: %s", strerror(errno));
        collected = n > 0;
        wait = collected ? 0 : gather_responses(http, wait, extra, nextra);
    }

    if (nextra > 0) {
        /* The extra fds and the epoll fd together, through poll(2). */
        struct pollfd stack_fds[WAITFD_STACK + 1], *fds = stack_fds;
        if (nextra > WAITFD_STACK) {
            fds = calloc(nextra + 1, sizeof(*fds));
            if (fds == NULL)
                return tide_error_set(err, TIDE_ENOMEM, "out of memory");
        }
        fds[0].fd = http->epfd;
        fds[0].events = POLLIN;
        fds[0].revents = 0;
        for (unsigned i = 0; i < nextra; i++) {
            fds[i + 1].fd = extra[i].fd;
            fds[i + 1].events = extra[i].events;
            fds[i + 1].revents = 0;
        }
        int n = poll(fds, nextra + 1, wait);
        for (unsigned i = 0; i < nextra; i++)
            extra[i].revents = n > 0 ? fds[i + 1].revents : 0;
        if (fds != stack_fds)
            free(fds);
        wait = 0; /* the epoll_wait below only collects what is ready */
    }

    if (!collected)
        n = epoll_wait(http->epfd, evs, EPOLL_BATCH, wait);
    if (n < 0 && errno != EINTR)
        return tide_error_set(err, TIDE_EHTTP, "epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == http->wakefd) {
            uint64_t v;
            while (read(fd, &v, sizeof(v)) > 0)
                ;
            continue;
        }
        if (http->nwatched > 0 && is_watched(http, fd)) {
            if (http->nready < TIDE_HTTP_MAX_WATCHED)
                http->ready[http->nready++] = fd;
            continue;
        }
        uint32_t e = evs[i].events;
        struct sock_state *st = sock_state(http, fd, false);
        if (st && st->parked) {
            /* The peer closed (or wrote to) an idle connection: stop
             * watching it; curl finds it dead when it next looks. */
            epoll_ctl(http->epfd, EPOLL_CTL_DEL, fd, NULL);
            st->events = 0;
            st->parked = false;
            continue;
        }
        int mask = (e & (EPOLLIN | EPOLLHUP | EPOLLRDHUP) ? CURL_CSELECT_IN : 0) |
                   (e & EPOLLOUT ? CURL_CSELECT_OUT : 0) | (e & EPOLLERR ? CURL_CSELECT_ERR : 0);
        int running;
        CURLMcode mc = curl_multi_socket_action(http->multi, fd, mask, &running);
        if (mc != CURLM_OK)
            return tide_error_set(err, TIDE_EHTTP, "curl_multi_socket_action: %s",
                                  curl_multi_strerror(mc));
    }
    rc = run_timer(http, err);
    if (rc != 0)
        return rc;
    collect(http);
    return (int)(http->done.n > INT_MAX ? INT_MAX : http->done.n);
}

struct tide_http_result *tide_http_next(struct tide_http *http)
{
    struct xfer *x = http->done.head;
    if (x == NULL)
        return NULL;
    list_move(x, &http->taken);
    return &x->res;
}

void tide_http_release(struct tide_http *http, struct tide_http_result *res)
{
    if (res == NULL)
        return;
    /* res is the first member of its xfer */
    struct xfer *x = (struct xfer *)(void *)res;
    xfer_recycle(http, x);
}

static struct xfer *find(struct list *l, uint64_t id)
{
    for (struct xfer *x = l->head; x; x = x->next)
        if (x->res.id == id)
            return x;
    return NULL;
}

int tide_http_cancel(struct tide_http *http, uint64_t id)
{
    struct xfer *x = find(&http->active, id);
    if (x) {
        curl_multi_remove_handle(http->multi, x->easy);
        xfer_recycle(http, x);
        return 0;
    }
    x = find(&http->done, id);
    if (x) {
        xfer_recycle(http, x);
        return 0;
    }
    return TIDE_ENOTFOUND;
}

size_t tide_http_pending(const struct tide_http *http)
{
    return http->active.n + http->done.n;
}

void tide_http_wakeup(struct tide_http *http)
{
    uint64_t one = 1;
    ssize_t n = write(http->wakefd, &one, sizeof(one)); /* async-signal-safe */
    (void)n; /* EAGAIN: a wake-up is already pending */
}
