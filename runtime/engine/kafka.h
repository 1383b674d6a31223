/*
 * kafka.h - the tide process's Kafka producer, over librdkafka, for sink
 * projections (docs/projections.md, "Sinks").
 *
 * No Lua here (lua_kafka.c is the binding) and no thread of tide's: the
 * producer's main queue (delivery reports, errors, logs) signals a pipe
 * when it becomes non-empty (rd_kafka_queue_io_event_enable), the owner's
 * event loop waits on that pipe (tide_kafka_fd) and calls tide_kafka_poll,
 * which serves the queue without waiting and calls the owner's callback,
 * on the owner's thread, once per report. librdkafka's own threads never
 * run an owner's callback: its logs go to the same queue (log.queue).
 *
 * Each message carries a token (the owner's batch number) that comes back
 * with its delivery report.
 *
 * Not thread-safe: one producer per thread.
 */
#ifndef TIDE_KAFKA_H
#define TIDE_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct tide_kafka;

/* What tide_kafka_poll reports. */
enum tide_kafka_event {
    TIDE_KAFKA_DELIVERED, /* a message is durable on its partition's leader (and its ISR, acks=all) */
    TIDE_KAFKA_FAILED,    /* a message failed for good: code and message say why */
    TIDE_KAFKA_ERROR,     /* a client error (a broker down, ...): code, message; fatal when the
                           * producer can no longer deliver anything (re-create it) */
    TIDE_KAFKA_LOG,       /* a librdkafka log line of level warning or worse */
};

struct tide_kafka_report {
    enum tide_kafka_event event;
    uint64_t token;      /* DELIVERED, FAILED: the message's */
    int32_t partition;   /* DELIVERED: where it went, and its offset */
    int64_t offset;
    int fatal;           /* ERROR */
    const char *code;    /* FAILED, ERROR: librdkafka's error name; LOG: the facility */
    const char *message; /* borrowed until the callback returns */
};

typedef void (*tide_kafka_report_cb)(void *ud, const struct tide_kafka_report *report);

/* One message header; value may hold any bytes. */
struct tide_kafka_header {
    const char *name;
    const void *value;
    size_t value_len;
};

/* A producer configured by nprops (name, value) pairs of librdkafka
 * properties, set in order after tide's defaults (so they win). Returns
 * NULL with err filled (TIDE_EKAFKA: the message names the property, never
 * its value: it may be a secret). Free with tide_kafka_delete(). */
struct tide_kafka *tide_kafka_new(const char *const *names, const char *const *values, size_t nprops,
                                  struct tide_error *err);

/* Drops what was not delivered and closes the connections. NULL is a no-op. */
void tide_kafka_delete(struct tide_kafka *k);

/* The descriptor that becomes readable when tide_kafka_poll has reports. */
int tide_kafka_fd(const struct tide_kafka *k);

/* Queues one message for topic (by key: librdkafka's partitioner). Returns
 * 0; TIDE_EFULL when the local queue is full (poll, then retry);
 * TIDE_EKAFKA with err filled otherwise (unknown topic is not an error
 * here: its delivery report says so). */
int tide_kafka_produce(struct tide_kafka *k, const char *topic, const void *key, size_t key_len,
                       const void *value, size_t value_len, const struct tide_kafka_header *headers,
                       size_t nheaders, uint64_t token, struct tide_error *err);

/* Serves the producer's queue without waiting: calls cb once per report.
 * Returns the number of reports. */
int tide_kafka_poll(struct tide_kafka *k, tide_kafka_report_cb cb, void *ud);

/* Messages queued or in flight, not yet reported. */
int tide_kafka_outq(const struct tide_kafka *k);

/* The fatal error's text when the producer can deliver nothing more, else NULL. */
const char *tide_kafka_fatal(struct tide_kafka *k);

#endif
