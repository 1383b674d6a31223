/*
 * kafka.c - see kafka.h. librdkafka does the protocol, batching, retries
 * and idempotence; this file only wires its main queue to a pipe the
 * owner's loop waits on, and hands delivery reports over on the owner's
 * thread.
 */
#include "kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

struct tide_kafka {
    rd_kafka_t *rk;
    rd_kafka_queue_t *main_q;
    int pipe_rd, pipe_wr;
    /* the callback of the tide_kafka_poll in progress */
    tide_kafka_report_cb cb;
    void *ud;
    int served;
    char fatal[512];
};

/* tide's defaults, before the owner's properties (which may change them):
 * per-partition order and no duplicates from librdkafka's own retries
 * (idempotence, with a fatal error rather than a gap), no local timeout
 * (a message waits for the broker as long as it takes: the sink's reading
 * waits with it), the Java client's partitioner (a key lands on the same
 * partition as other producers put it), logs to the queue we poll. */
static const char *const DEFAULTS[][2] = {
    {"enable.idempotence", "true"},
    {"enable.gapless.guarantee", "true"},
    {"acks", "all"},
    {"message.timeout.ms", "0"},
    {"partitioner", "murmur2_random"},
    {"log.queue", "true"},
    {"client.id", "tide"},
};

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct tide_kafka *k = opaque;
    if (k->cb == NULL)
        return;
    struct tide_kafka_report r = {
        .event = m->err ? TIDE_KAFKA_FAILED : TIDE_KAFKA_DELIVERED,
        .token = (uint64_t)(uintptr_t)m->_private,
        .partition = m->partition,
        .offset = m->offset,
        .code = m->err ? rd_kafka_err2name(m->err) : NULL,
        .message = m->err ? rd_kafka_err2str(m->err) : NULL,
    };
    k->served++;
    k->cb(k->ud, &r);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct tide_kafka *k = opaque;
    int fatal = 0;
    const char *code = rd_kafka_err2name((rd_kafka_resp_err_t)err);
    char buf[400];
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        snprintf(k->fatal, sizeof(k->fatal), "%s: %s", rd_kafka_err2name(orig), buf);
        fatal = 1;
        code = rd_kafka_err2name(orig);
        reason = buf;
    }
    if (k->cb == NULL)
        return;
    struct tide_kafka_report r = {.event = TIDE_KAFKA_ERROR, .fatal = fatal, .code = code, .message = reason};
    k->served++;
    k->cb(k->ud, &r);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct tide_kafka *k = rd_kafka_opaque(rk);
    if (k == NULL || k->cb == NULL || level > LOG_WARNING)
        return;
    struct tide_kafka_report r = {.event = TIDE_KAFKA_LOG, .code = fac, .message = buf};
    k->cb(k->ud, &r);
}

static int set_prop(rd_kafka_conf_t *conf, const char *name, const char *value, struct tide_error *err)
{
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK)
        /* the reason may quote the value: name only the property */
        return tide_error_set(err, TIDE_EKAFKA, "kafka property '%s' is not accepted by librdkafka %s",
                              name, rd_kafka_version_str());
    return 0;
}

struct tide_kafka *tide_kafka_new(const char *const *names, const char *const *values, size_t nprops,
                                  struct tide_error *err)
{
    struct tide_kafka *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        tide_error_set(err, TIDE_ENOMEM, "kafka: out of memory");
        return NULL;
    }
    k->pipe_rd = k->pipe_wr = -1;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        tide_error_set(err, TIDE_EIO, "kafka: pipe: %s", strerror(errno));
        free(k);
        return NULL;
    }
    k->pipe_rd = fds[0];
    k->pipe_wr = fds[1];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t i = 0; i < sizeof(DEFAULTS) / sizeof(DEFAULTS[0]); i++)
        if (set_prop(conf, DEFAULTS[i][0], DEFAULTS[i][1], err) != 0)
            goto fail;
    for (size_t i = 0; i < nprops; i++)
        if (set_prop(conf, names[i], values[i], err) != 0)
            goto fail;
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    char why[512];
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why)); /* takes conf on success */
    if (k->rk == NULL) {
        tide_error_set(err, TIDE_EKAFKA, "kafka: cannot create the producer: %s", why);
        goto fail;
    }
    rd_kafka_set_log_queue(k->rk, NULL); /* logs to the main queue, served by poll */
    k->main_q = rd_kafka_queue_get_main(k->rk);
    rd_kafka_queue_io_event_enable(k->main_q, k->pipe_wr, "1", 1);
    /* the event fires when the queue turns non-empty: what is queued
     * already (a configuration warning at start) would hold it back */
    if (rd_kafka_queue_length(k->main_q) > 0 && write(k->pipe_wr, "1", 1) < 0)
        (void)0; /* a full pipe is as good: the loop wakes anyway */
    return k;
fail:
    if (k->rk == NULL)
        rd_kafka_conf_destroy(conf);
    close(k->pipe_rd);
    close(k->pipe_wr);
    free(k);
    return NULL;
}

void tide_kafka_delete(struct tide_kafka *k)
{
    if (k == NULL)
        return;
    k->cb = NULL;
    if (k->rk != NULL) {
        rd_kafka_queue_io_event_enable(k->main_q, -1, NULL, 0);
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(k->rk, 0); /* the purged messages' reports, to no one */
        rd_kafka_queue_destroy(k->main_q);
        rd_kafka_destroy(k->rk);
    }
    close(k->pipe_rd);
    close(k->pipe_wr);
    free(k);
}

int tide_kafka_fd(const struct tide_kafka *k)
{
    return k->pipe_rd;
}

int tide_kafka_produce(struct tide_kafka *k, const char *topic, const void *key, size_t key_len,
                       const void *value, size_t value_len, const struct tide_kafka_header *headers,
                       size_t nheaders, uint64_t token, struct tide_error *err)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(nheaders > 0 ? nheaders : 1);
    for (size_t i = 0; i < nheaders; i++)
        rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value, (ssize_t)headers[i].value_len);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE((void *)(uintptr_t)token), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0; /* hdrs belongs to the message now */
    rd_kafka_headers_destroy(hdrs);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return tide_error_set(err, TIDE_EFULL, "kafka: the producer's queue is full");
    return tide_error_set(err, TIDE_EKAFKA, "kafka: producing to topic '%s' failed: %s: %s", topic,
                          rd_kafka_err2name(e), rd_kafka_err2str(e));
}

int tide_kafka_poll(struct tide_kafka *k, tide_kafka_report_cb cb, void *ud)
{
    char buf[256];
    /* drain the wake-up first: what arrives while we serve writes again */
    while (read(k->pipe_rd, buf, sizeof(buf)) > 0)
        ;
    k->cb = cb;
    k->ud = ud;
    k->served = 0;
    while (rd_kafka_poll(k->rk, 0) > 0)
        ;
    k->cb = NULL;
    k->ud = NULL;
    return k->served;
}

int tide_kafka_outq(const struct tide_kafka *k)
{
    return rd_kafka_outq_len(k->rk);
}

const char *tide_kafka_fatal(struct tide_kafka *k)
{
    if (k->fatal[0] == '\0') {
        char buf[400];
        rd_kafka_resp_err_t e = rd_kafka_fatal_error(k->rk, buf, sizeof(buf));
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            return NULL;
        snprintf(k->fatal, sizeof(k->fatal), "%s: %s", rd_kafka_err2name(e), buf);
    }
    return k->fatal;
}
