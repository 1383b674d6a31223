#include "ddb_number.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longer texts are not numbers anyone means (1E-130 in plain notation is
 * 132 characters). */
#define MAX_TEXT 4096
/* Canonical text uses plain notation for exponents within +-PLAIN_EXP. */
#define PLAIN_EXP 39

static int fail(struct tide_error *err, const char *s, size_t len, const char *why)
{
    int shown = len > 64 ? 64 : (int)len;
    return tide_error_set(err, TIDE_EINVAL, "\"%.*s%s\" is not a valid DynamoDB number (%s)",
                          shown, s, len > 64 ? "..." : "", why);
}

int tide_ddb_number_parse(const char *s, size_t len, struct tide_ddb_number *out,
                          struct tide_error *err)
{
    size_t i = 0;
    int negative = 0;
    int ndig = 0;          /* mantissa digits seen */
    int point = -1;        /* mantissa digits before '.', -1 without '.' */
    int first = -1;        /* index of the first non-zero digit */
    int zeros = 0;         /* zeros after it not yet stored: trailing ones are dropped */
    int nsig = 0;

    if (len > MAX_TEXT)
        return fail(err, s, len, "too long");
    if (i < len && (s[i] == '+' || s[i] == '-'))
        negative = s[i++] == '-';
    for (; i < len; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (c == '0') {
                if (first >= 0)
                    zeros++;
            } else {
                if (first < 0)
                    first = ndig;
                if (nsig + zeros + 1 > TIDE_DDB_NUMBER_DIGITS)
                    return fail(err, s, len, "more than 38 significant digits");
                while (zeros > 0) {
                    out->digits[nsig++] = '0';
                    zeros--;
                }
                out->digits[nsig++] = c;
            }
            ndig++;
        } else if (c == '.' && point < 0) {
            point = ndig;
        } else {
            break;
        }
    }
    if (ndig == 0)
        return fail(err, s, len, "not a decimal number");
    if (point < 0)
        point = ndig;

    long exp = 0;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0;
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        size_t start = i;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            if (exp < 100000000) /* saturate: far out of range either way */
                exp = exp * 10 + (s[i] - '0');
        if (i == start)
            return fail(err, s, len, "exponent without digits");
        if (eneg)
            exp = -exp;
    }
    if (i != len)
        return fail(err, s, len, "not a decimal number");

    if (first < 0) { /* zero, whatever its sign and exponent */
        out->negative = 0;
        out->exponent = 0;
        out->ndigits = 0;
        return 0;
    }
    long e = (long)point - 1 - first + exp;
    if (e < TIDE_DDB_NUMBER_MIN_EXP || e > TIDE_DDB_NUMBER_MAX_EXP)
        return fail(err, s, len, "magnitude outside 1E-130 .. 9.9E+125");
    out->negative = negative;
    out->exponent = (int)e;
    out->ndigits = nsig;
    return 0;
}

size_t tide_ddb_number_format(const struct tide_ddb_number *n, char *buf)
{
    char *p = buf;
    int nd = n->ndigits, e = n->exponent;

    if (nd == 0) {
        memcpy(buf, "0", 2);
        return 1;
    }
    if (n->negative)
        *p++ = '-';
    if (e >= -PLAIN_EXP && e <= PLAIN_EXP) {
        if (e >= nd - 1) { /* integer */
            memcpy(p, n->digits, (size_t)nd);
            p += nd;
            memset(p, '0', (size_t)(e - (nd - 1)));
            p += e - (nd - 1);
        } else if (e >= 0) {
            memcpy(p, n->digits, (size_t)e + 1);
            p += e + 1;
            *p++ = '.';
            memcpy(p, n->digits + e + 1, (size_t)(nd - e - 1));
            p += nd - e - 1;
        } else {
            *p++ = '0';
            *p++ = '.';
            memset(p, '0', (size_t)(-e - 1));
            p += -e - 1;
            memcpy(p, n->digits, (size_t)nd);
            p += nd;
        }
        *p = '\0';
    } else {
        *p++ = n->digits[0];
        if (nd > 1) {
            *p++ = '.';
            memcpy(p, n->digits + 1, (size_t)nd - 1);
            p += nd - 1;
        }
        p += sprintf(p, "E%c%d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    return (size_t)(p - buf);
}

int tide_ddb_number_compare(const struct tide_ddb_number *a, const struct tide_ddb_number *b)
{
    int sa = a->ndigits == 0 ? 0 : a->negative ? -1 : 1;
    int sb = b->ndigits == 0 ? 0 : b->negative ? -1 : 1;
    if (sa != sb)
        return sa < sb ? -1 : 1;
    if (sa == 0)
        return 0;
    int mag; /* compare magnitudes, then apply the sign */
    if (a->exponent != b->exponent) {
        mag = a->exponent < b->exponent ? -1 : 1;
    } else {
        int n = a->ndigits < b->ndigits ? a->ndigits : b->ndigits;
        mag = memcmp(a->digits, b->digits, (size_t)n);
        if (mag == 0 && a->ndigits != b->ndigits)
            mag = a->ndigits < b->ndigits ? -1 : 1; /* no trailing zeros: longer is larger */
        mag = mag < 0 ? -1 : mag > 0;
    }
    return sa * mag;
}

/* The double nearest to the magnitude of n (correctly rounded). */
static double magnitude(const struct tide_ddb_number *n)
{
    static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    if (n->ndigits == 0)
        return 0.0;
    int k = n->exponent - (n->ndigits - 1); /* value = D * 10^k, D the digits as an integer */
    if (n->ndigits <= 15 && k >= -22 && k <= 22) {
        /* D < 10^15 and 10^|k| are exact doubles, so one IEEE operation
         * rounds correctly (Clinger's fast path). */
        int64_t d = 0;
        for (int i = 0; i < n->ndigits; i++)
            d = d * 10 + (n->digits[i] - '0');
        return k >= 0 ? (double)d * p10[k] : (double)d / p10[-k];
    }
    /* No decimal point in this text, so strtod's locale does not matter. */
    char buf[TIDE_DDB_NUMBER_DIGITS + 16];
    memcpy(buf, n->digits, (size_t)n->ndigits);
    snprintf(buf + n->ndigits, sizeof(buf) - (size_t)n->ndigits, "e%d", k);
    return strtod(buf, NULL);
}

static void from_digits(struct tide_ddb_number *out, int negative, const char *d, int nd, int e)
{
    while (nd > 0 && d[nd - 1] == '0')
        nd--;
    out->negative = negative;
    out->exponent = e;
    out->ndigits = nd;
    memcpy(out->digits, d, (size_t)nd);
}

int tide_ddb_number_from_double(double x, struct tide_ddb_number *out, struct tide_error *err)
{
    char buf[64];

    if (isnan(x) || isinf(x))
        return tide_error_set(err, TIDE_EINVAL, "NaN and infinity cannot be stored in DynamoDB");
    int negative = x < 0;
    double ax = fabs(x);
    if (ax == 0.0) {
        out->negative = 0;
        out->exponent = 0;
        out->ndigits = 0;
        return 0;
    }
    if (ax <= 9007199254740992.0 && ax == (double)(int64_t)ax) {
        /* The common case (counters, versions, timestamps): no printf. */
        uint64_t v = (uint64_t)ax;
        char *end = buf + sizeof(buf), *p = end;
        do {
            *--p = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        int len = (int)(end - p);
        from_digits(out, negative, p, len, len - 1);
        return 0;
    }
    /* Shortest of 15, 16, 17 significant digits that reads back as x; 17
     * always does. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*e", prec - 1, ax);
        char digits[20];
        int nd = 0;
        const char *p = buf;
        /* "d.ddde+XX"; the decimal point depends on the locale: skip any
         * non-digit before the 'e'. */
        for (; *p && *p != 'e'; p++)
            if (*p >= '0' && *p <= '9' && nd < (int)sizeof(digits))
                digits[nd++] = *p;
        int e = *p == 'e' ? atoi(p + 1) : 0;
        from_digits(out, negative, digits, nd, e);
        if (prec == 17 || magnitude(out) == ax)
            break;
    }
    if (out->exponent < TIDE_DDB_NUMBER_MIN_EXP || out->exponent > TIDE_DDB_NUMBER_MAX_EXP)
        return tide_error_set(err, TIDE_EINVAL,
                              "%.17g is outside DynamoDB's number range (1E-130 .. 9.9E+125)", x);
    return 0;
}

int tide_ddb_number_to_lua(const struct tide_ddb_number *n, double *out)
{
    double m;

    if (n->ndigits > 17)
        return 0; /* a double never needs more than 17 digits */
    m = magnitude(n);
    if (n->ndigits > 15) {
        /* Keep it as a double only if printing that double back (shortest
         * form) gives the very same digits: then nothing is lost. This
         * admits integers up to 2^53 and every double written by
         * tide_ddb_number_from_double, and refuses 2^53 + 1. */
        struct tide_ddb_number back;
        if (tide_ddb_number_from_double(m, &back, NULL) < 0 || back.exponent != n->exponent ||
            back.ndigits != n->ndigits || memcmp(back.digits, n->digits, (size_t)n->ndigits) != 0)
            return 0;
    }
    *out = n->negative ? -m : m;
    return 1;
}

size_t tide_ddb_number_size(const struct tide_ddb_number *n)
{
    return (size_t)(n->ndigits + 1) / 2 + 1 + (n->negative ? 1 : 0);
}
