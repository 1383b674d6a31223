#include "retry.h"

#include <math.h>
#include <string.h>

/* Error types DynamoDB and the AWS SDKs treat as "slow down".
 * LimitExceededException is DynamoDB Streams' answer to more than 5
 * GetRecords per second on a shard, a third reader of a shard or more than
 * 10 DescribeStream per second (botocore retries it as throttling too). */
static const char *const throttling_types[] = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    NULL,
};

/* Types that name a passing condition on the service side. Retrying
 * TransactionInProgressException is safe because TransactWriteItems carries
 * a ClientRequestToken: a replay returns the first outcome. */
static const char *const transient_types[] = {
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "TransactionInProgressException",
    "RequestTimeout",
    "RequestTimeoutException",
    NULL,
};

/* Transport failures where the request may not have reached DynamoDB, or
 * the answer was lost: all safe to replay for DynamoDB's idempotent-by-design
 * conditional writes. "url" and "tls" are configuration errors. */
static const char *const transient_kinds[] = {
    "timeout", "connect", "reset", "truncated", "send", "resolve", NULL,
};

static int in_list(const char *const *list, const char *s)
{
    for (; *list != NULL; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

const char *tide_retry_short_type(const char *type)
{
    const char *hash = strrchr(type, '#');
    return hash ? hash + 1 : type;
}

enum tide_retry_class tide_retry_classify(int http_status, const char *aws_type,
                                          const char *transport_kind)
{
    if (aws_type != NULL && aws_type[0] != '\0') {
        const char *t = tide_retry_short_type(aws_type);
        if (in_list(throttling_types, t))
            return TIDE_RETRY_THROTTLED;
        if (in_list(transient_types, t))
            return TIDE_RETRY_TRANSIENT;
        /* A typed 4xx is a definite answer (ConditionalCheckFailed,
         * Validation, ResourceNotFound...); a typed 5xx is not. */
        return http_status >= 500 ? TIDE_RETRY_TRANSIENT : TIDE_RETRY_NEVER;
    }
    if (transport_kind != NULL && transport_kind[0] != '\0')
        return in_list(transient_kinds, transport_kind) ? TIDE_RETRY_TRANSIENT
                                                        : TIDE_RETRY_NEVER;
    if (http_status == 429)
        return TIDE_RETRY_THROTTLED;
    if (http_status >= 500 || http_status == 0)
        return TIDE_RETRY_TRANSIENT;
    return TIDE_RETRY_NEVER;
}

const char *tide_retry_class_name(enum tide_retry_class c)
{
    switch (c) {
    case TIDE_RETRY_THROTTLED: return "throttled";
    case TIDE_RETRY_TRANSIENT: return "transient";
    default: return "never";
    }
}

double tide_retry_backoff_ms(unsigned attempt, double base_ms, double cap_ms, double unit01)
{
    if (base_ms < 0)
        base_ms = 0;
    if (unit01 < 0)
        unit01 = 0;
    if (unit01 >= 1)
        unit01 = nextafter(1.0, 0.0);
    /* 2^attempt overflows nothing: ldexp saturates to inf, and fmin caps. */
    double ceiling = fmin(cap_ms, ldexp(base_ms, attempt > 1000 ? 1000 : (int)attempt));
    return ceiling * unit01;
}
