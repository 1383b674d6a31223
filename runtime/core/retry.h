/*
 * retry.h - which DynamoDB failures are worth retrying, and how long to wait.
 *
 * Pure functions: the caller supplies the randomness, so the same inputs
 * give the same answer in tests and in both hosts.
 */
#ifndef TIDE_RETRY_H
#define TIDE_RETRY_H

#include <stdint.h>

enum tide_retry_class {
    TIDE_RETRY_NEVER = 0,  /* a definite answer: conditional failure, validation... */
    TIDE_RETRY_THROTTLED,  /* the service asked us to slow down */
    TIDE_RETRY_TRANSIENT,  /* 5xx, dropped connection, timeout */
};

/*
 * Classifies one failed attempt. http_status is 0 when no response arrived;
 * aws_type is the short AWS error type ("ThrottlingException", without the
 * "com.amazonaws...#" prefix) or NULL; transport_kind is the transport's
 * error kind ("reset", "timeout", "connect", "truncated", ...) or NULL.
 */
enum tide_retry_class tide_retry_classify(int http_status, const char *aws_type,
                                          const char *transport_kind);

/* "never", "throttled" or "transient". */
const char *tide_retry_class_name(enum tide_retry_class c);

/*
 * Capped exponential backoff with full jitter (the AWS architecture blog's
 * "Full Jitter"): a delay uniform in [0, min(cap_ms, base_ms * 2^attempt)].
 * attempt counts from 0 (the first retry); unit01 is a uniform random number
 * in [0, 1). Returns milliseconds.
 */
double tide_retry_backoff_ms(unsigned attempt, double base_ms, double cap_ms, double unit01);

/* Strips the "namespace#" prefix DynamoDB puts on __type values; returns a
 * pointer into type (borrowed). */
const char *tide_retry_short_type(const char *type);

#endif
