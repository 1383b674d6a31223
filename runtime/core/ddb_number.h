/*
 * ddb_number.h - DynamoDB numbers: validation, canonical text, comparison,
 * conversion from and to doubles, and their size in an item.
 *
 * A DynamoDB number has at most 38 significant digits and a magnitude of
 * zero or 1E-130 .. 9.99..9E+125. Numbers are kept as decimal digits so that
 * nothing is ever rounded; a double is produced only when it holds the value
 * exactly enough (see tide_ddb_number_to_lua). Pure: no Lua, no allocation,
 * independent of the C locale.
 */
#ifndef TIDE_DDB_NUMBER_H
#define TIDE_DDB_NUMBER_H

#include <stddef.h>

#include "error.h"

#define TIDE_DDB_NUMBER_DIGITS 38
#define TIDE_DDB_NUMBER_MIN_EXP (-130)
#define TIDE_DDB_NUMBER_MAX_EXP 125
/* Room for any canonical text, with its NUL. */
#define TIDE_DDB_NUMBER_BUFSIZE 96

/* value = (negative ? -1 : 1) * d0.d1d2...  * 10^exponent; zero has
 * ndigits == 0. digits are ASCII with no leading or trailing zeros. */
struct tide_ddb_number {
    int negative;
    int exponent;
    int ndigits;
    char digits[TIDE_DDB_NUMBER_DIGITS];
};

/* Parses s[0..len): [+-] digits [. digits] [(e|E) [+-] digits] (".5" and
 * "5." are accepted, like DynamoDB). Returns 0, or TIDE_EINVAL with a
 * message quoting the text when it is not a number DynamoDB can store. */
int tide_ddb_number_parse(const char *s, size_t len, struct tide_ddb_number *out,
                          struct tide_error *err);

/* Writes the canonical text of n to buf (TIDE_DDB_NUMBER_BUFSIZE bytes) and
 * returns its length: "-" only for negative values, plain notation when the
 * decimal exponent is within +-39 ("123", "0.001"), else "1.5E+125". Two
 * numbers are equal exactly when their canonical texts are equal. */
size_t tide_ddb_number_format(const struct tide_ddb_number *n, char *buf);

/* <0, 0 or >0 as a is less than, equal to or greater than b. */
int tide_ddb_number_compare(const struct tide_ddb_number *a, const struct tide_ddb_number *b);

/* The shortest decimal that reads back as x (integers up to 2^53 exactly).
 * Returns 0, or TIDE_EINVAL for NaN, infinities and magnitudes outside
 * DynamoDB's range (never rounds to zero). */
int tide_ddb_number_from_double(double x, struct tide_ddb_number *out, struct tide_error *err);

/* If the nearest double to n prints back (by tide_ddb_number_from_double)
 * as exactly n, stores it in *out and returns 1: the value survives the trip
 * to a Lua number and back. That holds for every n with at most 15
 * significant digits, integers up to 2^53, and the text of any double; it
 * fails for 2^53 + 1 or 0.12345678901234567. Else returns 0: keep the
 * decimal text. */
int tide_ddb_number_to_lua(const struct tide_ddb_number *n, double *out);

/* Bytes n takes in an item: 1 per two significant digits (rounded up),
 * plus 1, plus 1 when negative. */
size_t tide_ddb_number_size(const struct tide_ddb_number *n);

#endif
