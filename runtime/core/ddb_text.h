/*
 * ddb_text.h - UTF-8 validation and base64 for the DynamoDB codec.
 *
 * DynamoDB strings (S, SS, attribute names) must be valid UTF-8, and binary
 * values (B, BS) travel as base64 in DynamoDB JSON. Pure functions: no Lua,
 * no allocation.
 */
#ifndef TIDE_DDB_TEXT_H
#define TIDE_DDB_TEXT_H

#include <stddef.h>

/* 1 if s[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF; NUL bytes are allowed), else 0. */
int tide_ddb_utf8_valid(const char *s, size_t len);

/* The largest length <= n that does not cut a UTF-8 sequence of s (s[n]
 * is read: n < the length of s). */
size_t tide_ddb_utf8_cut(const char *s, size_t n);

/* Length of the base64 text for n bytes (without the terminating NUL). */
size_t tide_ddb_base64_encoded_len(size_t n);

/* Writes the standard, padded base64 of in[0..n) to out, which must hold
 * tide_ddb_base64_encoded_len(n) + 1 bytes, and NUL-terminates it.
 * Returns the text length. */
size_t tide_ddb_base64_encode(const unsigned char *in, size_t n, char *out);

/* Number of bytes that the base64 text in[0..n) decodes to, or -1 when it is
 * not standard padded base64 (alphabet A-Z a-z 0-9 + /, length a multiple of
 * 4, at most two '=' at the end). */
long tide_ddb_base64_decoded_len(const char *in, size_t n);

/* Decodes in[0..n), which tide_ddb_base64_decoded_len must have accepted,
 * into out (room for n / 4 * 3 bytes). Returns the number of bytes written,
 * or -1 if OpenSSL refused the text. */
long tide_ddb_base64_decode(const char *in, size_t n, unsigned char *out);

#endif
