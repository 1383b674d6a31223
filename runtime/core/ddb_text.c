#include "ddb_text.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

int tide_ddb_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < len) {
        /* Most text is ASCII: skip it eight bytes at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* UTF-16 surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return 0; /* continuation byte, C0/C1, F5..FF */
        }
        if (len - i <= need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

size_t tide_ddb_utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

size_t tide_ddb_base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* EVP_EncodeBlock/DecodeBlock take an int length: feed them chunks that keep
 * the 3-byte/4-char grouping. */
#define ENC_CHUNK ((size_t)3 << 20)
#define DEC_CHUNK ((size_t)4 << 20)

size_t tide_ddb_base64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t done = 0, w = 0;
    out[0] = '\0';
    while (done < n) {
        size_t k = n - done < ENC_CHUNK ? n - done : ENC_CHUNK;
        w += (size_t)EVP_EncodeBlock((unsigned char *)out + w, in + done, (int)k);
        done += k;
    }
    return w;
}

static int b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

long tide_ddb_base64_decoded_len(const char *in, size_t n)
{
    if (n % 4 != 0 || n / 4 * 3 > (size_t)LONG_MAX)
        return -1;
    size_t pad = 0;
    if (n > 0 && in[n - 1] == '=')
        pad++;
    if (n > 1 && in[n - 2] == '=')
        pad++;
    /* EVP_DecodeBlock skips whitespace and is lax about '=': check strictly. */
    for (size_t i = 0; i < n - pad; i++)
        if (!b64_char((unsigned char)in[i]))
            return -1;
    return (long)(n / 4 * 3 - pad);
}

long tide_ddb_base64_decode(const char *in, size_t n, unsigned char *out)
{
    size_t done = 0, w = 0;
    while (done < n) {
        size_t k = n - done < DEC_CHUNK ? n - done : DEC_CHUNK;
        int r = EVP_DecodeBlock(out + w, (const unsigned char *)in + done, (int)k);
        if (r < 0)
            return -1;
        w += (size_t)r;
        done += k;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    size_t pad = 0;
    if (n > 0 && in[n - 1] == '=')
        pad++;
    if (n > 1 && in[n - 2] == '=')
        pad++;
    return (long)(w - pad);
}
