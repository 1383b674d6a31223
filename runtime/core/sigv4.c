/*
 * sigv4.c - AWS Signature Version 4 header signing.
 *
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
 *
 * Hashing is Nettle's SHA-256 (Debian's nettle-dev, the library under
 * GnuTLS); this file only builds the canonical request and the string to
 * sign, and computes HMAC-SHA256 from digest calls so that the signing key's
 * padded blocks can be cached. Nettle's state is a plain struct: saving and
 * resuming one is a copy. OpenSSL 3's EVP allocates a new provider context
 * on every EVP_MD_CTX_copy_ex and dispatches every call through the
 * provider, which cost about a sixth of a signature (bench/README.md);
 * its block function and Nettle's (both SHA-NI or AVX2) run at the same
 * speed. OpenSSL still wipes secrets and compares them in constant time.
 *
 * Where the time goes: besides the body, a signature hashes the canonical
 * request (~650 bytes for DynamoDB with a session token) and the string to
 * sign twice over (HMAC). Consecutive requests share most of those texts
 * (method, path, host, date, token, target ...), so both are hashed through
 * a prefix cache (struct prefix_cache): the SHA-256 states after some
 * whole-block prefixes of the previous text are kept, and a text that
 * starts with one of those prefixes resumes from its state. The digest is
 * the one of the whole text: SHA-256 of a text is its state after the
 * prefix's blocks, continued with the rest.
 */
#include "sigv4.h"

#include <stdlib.h>
#include <string.h>

#include <nettle/sha2.h>
#include <openssl/crypto.h>

#if defined(__SSE2__)
#include <emmintrin.h> /* tide_sigv4_hex; SSE2 is part of every x86-64 */
#endif

#define ALGORITHM "AWS4-HMAC-SHA256"
#define HASH_LEN 32
#define BLOCK_LEN 64

/* The key cache is small: a process signs for a handful of (region, service,
 * credential) combinations, and a day changes the key for all of them. */
#define KEY_CACHE_SLOTS 4
#define KEY_FIELD_MAX 64
#define KEY_SECRET_MAX 128

/* Prefix caches. Canonical requests fall in families that share a prefix
 * (one per endpoint host, in practice: DynamoDB, DynamoDB Streams); a signer
 * keeps one cache per family, up to CREQ_SLOTS, the least recently used
 * one replaced. A cache keeps up to SNAPS states, at increasing offsets, so
 * that a request sharing less than the previous one (another operation, the
 * next second) still resumes from the deepest state it shares. Only the
 * first PREFIX_MAX bytes of a text are remembered. Memory per signer is
 * bounded: (CREQ_SLOTS + KEY_CACHE_SLOTS) * (PREFIX_MAX + SNAPS states). */
#define CREQ_SLOTS 4
#define SNAPS 4
#define PREFIX_MAX 4096

/* The last text hashed through the cache, and the digest states after the
 * first snap_at[i] bytes of it (from the cache's base state: a fresh
 * SHA-256, or a key's inner HMAC pad). Invariants: n_snaps <= SNAPS;
 * snap_at[] are increasing non-zero multiples of BLOCK_LEN, all <= prev_len;
 * snap[i] holds base + prev[0..snap_at[i]). */
struct prefix_cache {
    char *prev;
    size_t prev_len, prev_cap;
    size_t n_snaps;
    size_t snap_at[SNAPS];
    struct sha256_ctx snap[SNAPS];
    uint64_t last_use;
};

/* A derived signing key, kept as the two SHA-256 states after its HMAC pads
 * (key ^ ipad, key ^ opad) were absorbed: a signature copies them instead
 * of hashing two more blocks. sts caches the inner state continued with
 * the string to sign's first block, which is the same for every signature
 * of a second. */
struct key_entry {
    bool used;
    uint64_t last_use;
    char date[8];
    size_t region_len, service_len, secret_len;
    char region[KEY_FIELD_MAX];
    char service[KEY_FIELD_MAX];
    unsigned char secret[KEY_SECRET_MAX];
    struct sha256_ctx inner;
    struct sha256_ctx outer;
    struct prefix_cache sts;
};

/* Growable byte buffer; after a failed allocation it ignores writes and
 * keeps oom set, so builders check once at the end. */
struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

struct hdr {
    const char *name;   /* lower-case */
    size_t name_len;
    const char *value;  /* as given; canonicalised when written */
    size_t value_len;
    size_t order;       /* keeps duplicates in the order given */
    bool plain;         /* value known to have no byte below 0x21 */
};

/* Lengths of the request's NUL-terminated strings, measured once. */
struct lens {
    size_t method, host, key_id, token, region, service;
    bool token_plain;
};

struct qpair {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
};

struct tide_sigv4_signer {
    struct key_entry keys[KEY_CACHE_SLOTS];
    struct prefix_cache creq_cache[CREQ_SLOTS];
    uint64_t clock;
    uint64_t derivations;
    struct buf creq;     /* canonical request */
    struct buf sts;      /* string to sign */
    struct buf auth;     /* Authorization value */
    struct buf names;    /* lower-cased header names */
    struct buf signed_headers;
    struct buf path;     /* normalised path */
    struct buf query;    /* re-encoded query keys and values */
    struct hdr *hdrs;
    size_t hdrs_cap;
    struct qpair *pairs;
    size_t pairs_cap;
    bool date_ok;        /* amz_date holds the date of date_time */
    int64_t date_time;
    char amz_date[17];
    char payload_hash[65];
};

static const char HEX_UPPER[] = "0123456789ABCDEF";

/* ---- buffers ---------------------------------------------------------- */

/* memcpy for the short pieces a canonical request is made of (names,
 * values, separators): up to 32 bytes with overlapping word moves, which
 * costs less than a call to memcpy. */
static inline void copy_bytes(char *d, const char *s, size_t n)
{
    if (n >= 8 && n <= 32) {
        uint64_t a, b, c, e;
        if (n <= 16) {
            memcpy(&a, s, 8);
            memcpy(&b, s + n - 8, 8);
            memcpy(d, &a, 8);
            memcpy(d + n - 8, &b, 8);
        } else {
            memcpy(&a, s, 8);
            memcpy(&b, s + 8, 8);
            memcpy(&c, s + n - 16, 8);
            memcpy(&e, s + n - 8, 8);
            memcpy(d, &a, 8);
            memcpy(d + 8, &b, 8);
            memcpy(d + n - 16, &c, 8);
            memcpy(d + n - 8, &e, 8);
        }
    } else if (n < 8) {
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    } else {
        memcpy(d, s, n);
    }
}

static __attribute__((noinline)) bool buf_grow(struct buf *b, size_t extra)
{
    if (b->oom)
        return false;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

/* Room for extra bytes and a NUL. The fast path is inline: builders call
 * this for every piece. */
static inline bool buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->len > extra && !b->oom)
        return true;
    return buf_grow(b, extra);
}

static inline void buf_put(struct buf *b, const void *p, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    copy_bytes(b->p + b->len, p, n);
    b->len += n;
}

static inline void buf_putc(struct buf *b, char c)
{
    if (!buf_reserve(b, 1))
        return;
    b->p[b->len++] = c;
}

static inline void buf_puts(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

/* NUL-terminates without counting the NUL in len. */
static inline void buf_term(struct buf *b)
{
    if (buf_reserve(b, 1))
        b->p[b->len] = '\0';
}

static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- hashing ---------------------------------------------------------- */

/* Appends the hex of a digest, written in place: a 64-byte memcpy would be
 * one more call (or a slow `rep movs`) per signature. */
static inline void buf_put_hex(struct buf *b, const unsigned char md[HASH_LEN])
{
    if (buf_reserve(b, 2 * HASH_LEN)) {
        tide_sigv4_hex(md, b->p + b->len); /* NUL-terminates */
        b->len += 2 * HASH_LEN;
    }
}

/* Lower-case hex of a digest, NUL-terminated. */
void tide_sigv4_hex(const unsigned char in[HASH_LEN], char out[2 * HASH_LEN + 1])
{
#if defined(__SSE2__)
    /* 16 bytes per step: nibbles split and interleaved high first, then
     * each nibble n made '0' + n, plus 39 from 10 on ('a'..'f'). */
    const __m128i low = _mm_set1_epi8(0x0f), nine = _mm_set1_epi8(9);
    const __m128i digit0 = _mm_set1_epi8('0'), gap = _mm_set1_epi8('a' - '0' - 10);
    for (size_t i = 0; i < HASH_LEN; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), low);
        __m128i lo = _mm_and_si128(x, low);
        __m128i a = _mm_unpacklo_epi8(hi, lo), b = _mm_unpackhi_epi8(hi, lo);
        a = _mm_add_epi8(_mm_add_epi8(a, digit0), _mm_and_si128(_mm_cmpgt_epi8(a, nine), gap));
        b = _mm_add_epi8(_mm_add_epi8(b, digit0), _mm_and_si128(_mm_cmpgt_epi8(b, nine), gap));
        _mm_storeu_si128((__m128i *)(void *)(out + 2 * i), a);
        _mm_storeu_si128((__m128i *)(void *)(out + 2 * i + 16), b);
    }
#else
    for (size_t i = 0; i < HASH_LEN; i++) {
        out[2 * i] = "0123456789abcdef"[in[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[in[i] & 15];
    }
#endif
    out[2 * HASH_LEN] = '\0';
}

/* SHA-256 of a || b into out. */
static void sha256(const void *a, size_t na, const void *b, size_t nb, unsigned char out[HASH_LEN])
{
    struct sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, na, a);
    sha256_update(&c, nb, b);
    sha256_digest(&c, HASH_LEN, out);
    OPENSSL_cleanse(&c, sizeof(c)); /* it may have hashed a key */
}

/* Finishes c with data into out, and wipes c. */
static void sha256_finish(struct sha256_ctx *c, const void *data, size_t n, unsigned char out[HASH_LEN])
{
    sha256_update(c, n, data);
    sha256_digest(c, HASH_LEN, out);
    OPENSSL_cleanse(c, sizeof(*c));
}

/* HMAC pads for the key k1 || k2 (RFC 2104: keys longer than a block are
 * hashed first). */
static void hmac_pads(const void *k1, size_t n1, const void *k2, size_t n2,
                      unsigned char ipad[BLOCK_LEN], unsigned char opad[BLOCK_LEN])
{
    unsigned char key[BLOCK_LEN] = {0};
    if (n1 + n2 > BLOCK_LEN) {
        sha256(k1, n1, k2, n2, key);
    } else {
        memcpy(key, k1, n1);
        if (n2)
            memcpy(key + n1, k2, n2);
    }
    for (size_t i = 0; i < BLOCK_LEN; i++) {
        ipad[i] = key[i] ^ 0x36;
        opad[i] = key[i] ^ 0x5c;
    }
    OPENSSL_cleanse(key, sizeof(key));
}

/* HMAC-SHA256(key given by its pads, msg) = H(opad || H(ipad || msg)). */
static void hmac_with_pads(const unsigned char ipad[BLOCK_LEN], const unsigned char opad[BLOCK_LEN],
                           const void *msg, size_t len, unsigned char out[HASH_LEN])
{
    unsigned char inner[HASH_LEN];
    sha256(ipad, BLOCK_LEN, msg, len, inner);
    sha256(opad, BLOCK_LEN, inner, HASH_LEN, out);
    OPENSSL_cleanse(inner, sizeof(inner));
}

/* out may be key. */
static void hmac(const void *key, size_t key_len, const void *msg, size_t len,
                 unsigned char out[HASH_LEN])
{
    unsigned char ipad[BLOCK_LEN], opad[BLOCK_LEN];
    hmac_pads(key, key_len, NULL, 0, ipad, opad);
    hmac_with_pads(ipad, opad, msg, len, out);
    OPENSSL_cleanse(ipad, sizeof(ipad));
    OPENSSL_cleanse(opad, sizeof(opad));
}

/* ---- prefix caches ------------------------------------------------------ */

/* Length of the longest prefix of whole blocks that a and b share, within
 * their first n bytes. */
static size_t common_blocks(const char *a, const char *b, size_t n)
{
    size_t i = 0;
    for (; i + BLOCK_LEN <= n; i += BLOCK_LEN) {
        if (memcmp(a + i, b + i, BLOCK_LEN) != 0)
            break;
    }
    return i;
}

/* How much of text, in whole blocks, the cache can resume from. */
static size_t prefix_match(const struct prefix_cache *pc, const char *text, size_t n)
{
    size_t m = n < pc->prev_len ? n : pc->prev_len;
    if (m < BLOCK_LEN)
        return 0;
    /* Usually text shares at least the deepest state's prefix: one memcmp
     * for it, then block by block from there. */
    size_t from = 0;
    if (pc->n_snaps > 0) {
        size_t deepest = pc->snap_at[pc->n_snaps - 1];
        if (deepest <= m && memcmp(pc->prev, text, deepest) == 0)
            from = deepest;
    }
    return from + common_blocks(pc->prev + from, text + from, m - from);
}

/* Forgets the texts and states; allocations are kept for reuse. The text
 * may hold a session token, and a key's states derive from the key: both
 * are wiped. */
static void prefix_wipe(struct prefix_cache *pc)
{
    if (pc->prev != NULL)
        OPENSSL_cleanse(pc->prev, pc->prev_cap);
    OPENSSL_cleanse(pc->snap, sizeof(pc->snap));
    pc->prev_len = 0;
    pc->n_snaps = 0;
    pc->last_use = 0;
}

static void prefix_free(struct prefix_cache *pc)
{
    prefix_wipe(pc);
    free(pc->prev);
    memset(pc, 0, sizeof(*pc));
}

/* SHA-256 of base || text into out, where base is NULL (a fresh digest) or
 * a state to continue (a key's inner pad), the same for every call with
 * this cache; shared = prefix_match(pc, text, n). Resumes from the deepest
 * state of pc within the shared prefix, then keeps a state at its end for
 * the next call, and remembers text. *resumed is the length of text that
 * was not hashed. The cache only ever saves work: a failure to grow it
 * leaves it smaller, never wrong. */
static void digest_cached(struct prefix_cache *pc, size_t shared, const struct sha256_ctx *base,
                          const char *text, size_t n, unsigned char out[HASH_LEN],
                          size_t *resumed)
{
    /* States past the shared prefix hold bytes that text does not have. */
    while (pc->n_snaps > 0 && pc->snap_at[pc->n_snaps - 1] > shared)
        pc->n_snaps--;
    size_t done = 0;
    struct sha256_ctx c;
    if (pc->n_snaps > 0) {
        done = pc->snap_at[pc->n_snaps - 1];
        c = pc->snap[pc->n_snaps - 1];
    } else if (base != NULL) {
        c = *base;
    } else {
        sha256_init(&c);
    }
    *resumed = done;
    if (shared > done) {
        sha256_update(&c, shared - done, (const uint8_t *)text + done);
        /* the new state goes last; when all are taken, it replaces the
         * deepest (the shallower ones serve more requests) */
        size_t i = pc->n_snaps < SNAPS ? pc->n_snaps : SNAPS - 1;
        pc->snap[i] = c;
        pc->snap_at[i] = shared;
        pc->n_snaps = i + 1;
        done = shared;
    }
    sha256_finish(&c, text + done, n - done, out);
    /* Remember text; its first `shared` bytes are there already. */
    size_t keep = n < PREFIX_MAX ? n : PREFIX_MAX;
    if (keep > pc->prev_cap) {
        size_t cap = pc->prev_cap ? pc->prev_cap : 256;
        while (cap < keep)
            cap *= 2;
        char *p = malloc(cap);
        if (p == NULL) {
            /* prev[0..shared) is text's prefix: the states up to there
             * stay right */
            pc->prev_len = shared < pc->prev_len ? shared : pc->prev_len;
            return;
        }
        if (pc->prev != NULL) {
            memcpy(p, pc->prev, shared);
            OPENSSL_cleanse(pc->prev, pc->prev_cap);
            free(pc->prev);
        }
        pc->prev = p;
        pc->prev_cap = cap;
    }
    memcpy(pc->prev + shared, text + shared, keep - shared);
    if (keep < pc->prev_len) /* the rest of an older text (maybe a token) */
        OPENSSL_cleanse(pc->prev + keep, pc->prev_len - keep);
    pc->prev_len = keep;
}

/* ---- signing key cache ------------------------------------------------ */

/* Forgets the key: everything wiped, its states included; the
 * string-to-sign cache's allocations are kept for reuse. */
static void key_wipe(struct key_entry *e)
{
    prefix_wipe(&e->sts);
    struct prefix_cache sts = e->sts;
    OPENSSL_cleanse(e, sizeof(*e));
    e->sts = sts;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request"), stored in e as the states after its pads. */
static void key_derive(struct tide_sigv4_signer *s, struct key_entry *e,
                       const char date[8], const char *region, size_t region_len,
                       const char *service, size_t service_len,
                       const char *secret, size_t secret_len)
{
    unsigned char k[HASH_LEN];
    unsigned char ipad[BLOCK_LEN], opad[BLOCK_LEN];
    hmac_pads("AWS4", 4, secret, secret_len, ipad, opad);
    hmac_with_pads(ipad, opad, date, 8, k);
    hmac(k, HASH_LEN, region, region_len, k);
    hmac(k, HASH_LEN, service, service_len, k);
    hmac(k, HASH_LEN, "aws4_request", 12, k);
    hmac_pads(k, HASH_LEN, NULL, 0, ipad, opad);
    sha256_init(&e->inner);
    sha256_update(&e->inner, BLOCK_LEN, ipad);
    sha256_init(&e->outer);
    sha256_update(&e->outer, BLOCK_LEN, opad);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(ipad, sizeof(ipad));
    OPENSSL_cleanse(opad, sizeof(opad));
    s->derivations++;
}

/* HMAC-SHA256 of msg with a derived key: both halves resume from the
 * key's saved states, the inner one through the key's string-to-sign
 * cache when cached (not for the spare entry of an uncacheable key).
 * *resumed: bytes of msg not hashed. */
static void hmac_with_key(struct key_entry *e, bool cached, const char *msg, size_t len,
                          unsigned char out[HASH_LEN], size_t *resumed)
{
    unsigned char inner[HASH_LEN];
    struct sha256_ctx c;
    if (cached) {
        digest_cached(&e->sts, prefix_match(&e->sts, msg, len), &e->inner, msg, len, inner, resumed);
    } else {
        *resumed = 0;
        c = e->inner;
        sha256_finish(&c, msg, len, inner);
    }
    c = e->outer;
    sha256_finish(&c, inner, HASH_LEN, out);
    OPENSSL_cleanse(inner, sizeof(inner));
}

/* Returns the cached key for these inputs, deriving it on a miss. Inputs too
 * long to cache are derived into *spare (wiped by the caller). */
static struct key_entry *key_get(struct tide_sigv4_signer *s, struct key_entry *spare,
                                 const char date[8], const char *region, size_t region_len,
                                 const char *service, size_t service_len,
                                 const char *secret, size_t secret_len)
{
    bool cacheable = region_len <= KEY_FIELD_MAX && service_len <= KEY_FIELD_MAX
                  && secret_len <= KEY_SECRET_MAX;
    if (!cacheable) {
        memset(spare, 0, sizeof(*spare));
        key_derive(s, spare, date, region, region_len, service, service_len, secret, secret_len);
        return spare;
    }
    struct key_entry *victim = &s->keys[0];
    for (size_t i = 0; i < KEY_CACHE_SLOTS; i++) {
        struct key_entry *e = &s->keys[i];
        if (e->used && memcmp(e->date, date, 8) == 0
            && e->region_len == region_len && memcmp(e->region, region, region_len) == 0
            && e->service_len == service_len && memcmp(e->service, service, service_len) == 0
            && e->secret_len == secret_len
            && CRYPTO_memcmp(e->secret, secret, secret_len) == 0) {
            e->last_use = ++s->clock;
            return e;
        }
        if (!e->used || (victim->used && e->last_use < victim->last_use))
            victim = e;
    }
    key_wipe(victim);
    key_derive(s, victim, date, region, region_len, service, service_len, secret, secret_len);
    victim->used = true;
    victim->last_use = ++s->clock;
    memcpy(victim->date, date, 8);
    memcpy(victim->region, region, region_len);
    victim->region_len = region_len;
    memcpy(victim->service, service, service_len);
    victim->service_len = service_len;
    memcpy(victim->secret, secret, secret_len);
    victim->secret_len = secret_len;
    return victim;
}

/* ---- canonical request pieces ----------------------------------------- */

/* RFC 3986 unreserved characters, the only ones SigV4 leaves unencoded. */
static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
        || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Appends p percent-encoded; '/' is kept when keep_slash. Assumes the
 * caller reserved 3 * n bytes. */
static void encode_into(struct buf *b, const char *p, size_t n, bool keep_slash)
{
    char *o = b->p + b->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = HEX_UPPER[c >> 4];
            *o++ = HEX_UPPER[c & 15];
        }
    }
    b->len = (size_t)(o - b->p);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Appends a query component decoded (%XX) then encoded again, so that
 * "%E1%88%B4" and the raw UTF-8 bytes give the same canonical form. '+' is
 * taken literally. Assumes 3 * n bytes reserved. */
static void reencode_into(struct buf *b, const char *p, size_t n)
{
    char *o = b->p + b->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        int hi, lo;
        if (c == '%' && i + 2 < n && (hi = hexval(p[i + 1])) >= 0
            && (lo = hexval(p[i + 2])) >= 0) {
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (unreserved(c)) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = HEX_UPPER[c >> 4];
            *o++ = HEX_UPPER[c & 15];
        }
    }
    b->len = (size_t)(o - b->p);
}

/* Writes the path with empty and "." segments dropped and ".." resolved
 * (RFC 3986 section 5.2.4 plus merged slashes) into out. As botocore and
 * @smithy/signature-v4 do, the result ends in "/" only when the path does
 * (and keeps a segment): "/a/b/." and "/a/b/c/.." both give "/a/b". */
static void normalize_path(struct buf *out, const char *path)
{
    size_t n = strlen(path);
    out->len = 0;
    if (!buf_reserve(out, n + 2))
        return;
    const char *p = path, *end = path + n;
    while (p < end) {
        while (p < end && *p == '/')
            p++;
        const char *seg = p;
        while (p < end && *p != '/')
            p++;
        size_t len = (size_t)(p - seg);
        if (len == 0 || (len == 1 && seg[0] == '.'))
            continue;
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out->len > 0 && out->p[--out->len] != '/')
                ;
        } else {
            out->p[out->len++] = '/';
            memcpy(out->p + out->len, seg, len);
            out->len += len;
        }
    }
    if (out->len == 0 || path[n - 1] == '/')
        out->p[out->len++] = '/';
}

static int pair_cmp(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c != 0) return c;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    n = x->value_len < y->value_len ? x->value_len : y->value_len;
    c = memcmp(x->value, y->value, n);
    if (c != 0) return c;
    return x->value_len < y->value_len ? -1 : x->value_len > y->value_len;
}

/* Appends the canonical query string: each key and value decoded and
 * re-encoded, pairs sorted by key then value. */
static int canonical_query(struct tide_sigv4_signer *s, const char *query,
                           struct tide_error *err)
{
    size_t n = strlen(query), count = 1;
    for (size_t i = 0; i < n; i++)
        count += query[i] == '&';
    if (count > s->pairs_cap) {
        struct qpair *p = realloc(s->pairs, count * sizeof(*p));
        if (p == NULL)
            return tide_error_set(err, TIDE_ENOMEM, "sigv4: out of memory for the query");
        s->pairs = p;
        s->pairs_cap = count;
    }
    /* Reserved up front so that pointers into s->query stay valid. */
    s->query.len = 0;
    if (!buf_reserve(&s->query, 3 * n + 1))
        return tide_error_set(err, TIDE_ENOMEM, "sigv4: out of memory for the query");
    size_t np = 0;
    const char *p = query, *end = query + n;
    while (p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (amp == NULL)
            amp = end;
        if (amp > p) {
            const char *eq = memchr(p, '=', (size_t)(amp - p));
            const char *kend = eq ? eq : amp;
            struct qpair *q = &s->pairs[np++];
            q->key = s->query.p + s->query.len;
            reencode_into(&s->query, p, (size_t)(kend - p));
            q->key_len = (size_t)(s->query.p + s->query.len - q->key);
            q->value = s->query.p + s->query.len;
            if (eq)
                reencode_into(&s->query, eq + 1, (size_t)(amp - eq - 1));
            q->value_len = (size_t)(s->query.p + s->query.len - q->value);
        }
        p = amp + 1;
    }
    qsort(s->pairs, np, sizeof(*s->pairs), pair_cmp);
    for (size_t i = 0; i < np; i++) {
        if (i)
            buf_putc(&s->creq, '&');
        buf_put(&s->creq, s->pairs[i].key, s->pairs[i].key_len);
        buf_putc(&s->creq, '=');
        buf_put(&s->creq, s->pairs[i].value, s->pairs[i].value_len);
    }
    return 0;
}

/* Header-name characters (RFC 7230 tokens) lower-cased; 0 for the
 * characters not allowed in a name. */
static const unsigned char TOKEN_LOWER[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, '!', 0, '#', '$', '%', '&', '\'', 0, 0, '*', '+', 0, '-', '.', 0,
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 0, 0, 0, 0, 0, 0,
    0, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 0, 0, 0, '^', '_',
    '`', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 0, '|', 0, '~', 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* Character classes, one bit each: access-key-id characters (printable
 * ASCII but ',', '/', '=', which would break the Authorization header),
 * scope-part characters (printable ASCII but '/', which splits the scope,
 * and ','). */
enum { CC_KEY_ID = 2, CC_SCOPE = 4 };
static const unsigned char CHAR_CLASS[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 0, 6, 6, 0,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 4, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* True when some byte of p[0..n) is below 0x21 (space or control): such
 * values need the slow canonicalisation. 32 bytes per step, since session
 * tokens run to hundreds of bytes; "some byte < 0x21" is exact with this
 * test (the classic hasless(x, n) of Bit Twiddling Hacks), and stays exact
 * OR-ed over words. */
static bool has_space_or_ctl(const char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    const uint64_t k = ones * 0x21;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t a, b, c, d;
        memcpy(&a, p + i, 8);
        memcpy(&b, p + i + 8, 8);
        memcpy(&c, p + i + 16, 8);
        memcpy(&d, p + i + 24, 8);
        if ((((a - k) & ~a) | ((b - k) & ~b) | ((c - k) & ~c) | ((d - k) & ~d)) & highs)
            return true;
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        if ((x - k) & ~x & highs)
            return true;
    }
    for (; i < n; i++)
        if ((unsigned char)p[i] < 0x21)
            return true;
    return false;
}

/* Appends v trimmed, with each run of whitespace made one space; plain:
 * v is known to have no byte below 0x21. */
static void put_header_value(struct buf *b, const char *v, size_t n, bool plain)
{
    if (!buf_reserve(b, n))
        return;
    if (plain || !has_space_or_ctl(v, n)) {
        copy_bytes(b->p + b->len, v, n);
        b->len += n;
        return;
    }
    char *o = b->p + b->len;
    bool space = false, any = false;
    for (size_t i = 0; i < n; i++) {
        if (is_space(v[i])) {
            space = true;
            continue;
        }
        if (space && any)
            *o++ = ' ';
        *o++ = v[i];
        space = false;
        any = true;
    }
    b->len = (size_t)(o - b->p);
}

/* Value trimmed of surrounding whitespace, for comparisons. */
static void trim(const char **v, size_t *n)
{
    while (*n > 0 && is_space(**v)) {
        (*v)++;
        (*n)--;
    }
    while (*n > 0 && is_space((*v)[*n - 1]))
        (*n)--;
}

/* Order of names, then of the order given. Names are short: a loop beats
 * a call to memcmp. */
static int hdr_cmp(const struct hdr *x, const struct hdr *y)
{
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    for (size_t i = 0; i < n; i++)
        if (x->name[i] != y->name[i])
            return (unsigned char)x->name[i] < (unsigned char)y->name[i] ? -1 : 1;
    if (x->name_len != y->name_len) return x->name_len < y->name_len ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static bool name_is(const struct hdr *h, const char *lit)
{
    size_t n = strlen(lit);
    return h->name_len == n && memcmp(h->name, lit, n) == 0;
}

/* Length of an access key id, or 0 when it is empty or has a character
 * not allowed in one (CC_KEY_ID). */
static size_t key_id_len(const char *k)
{
    size_t n = 0;
    for (; k[n]; n++)
        if (!(CHAR_CLASS[(unsigned char)k[n]] & CC_KEY_ID))
            return 0;
    return n;
}

/* Length of a scope part (region, service), or 0 when it is empty or has a
 * character not allowed in one (CC_SCOPE). */
static size_t scope_part_len(const char *p)
{
    size_t n = 0;
    for (; p[n]; n++)
        if (!(CHAR_CLASS[(unsigned char)p[n]] & CC_SCOPE))
            return 0;
    return n;
}

/* Session tokens: no control characters, which would split or forge
 * headers. Returns TOKEN_BAD, or TOKEN_PLAIN when the token has no byte
 * below 0x21 either (the usual case: its canonical form is itself), else
 * TOKEN_OK. */
enum { TOKEN_BAD, TOKEN_OK, TOKEN_PLAIN };
static int check_token(const char *t, size_t n)
{
    if (!has_space_or_ctl(t, n))
        return TOKEN_PLAIN;
    for (; *t; t++)
        if ((unsigned char)*t < ' ' || *t == 127)
            return TOKEN_BAD;
    return TOKEN_OK;
}

/* Collects the headers to sign into s->hdrs, sorted: the caller's, plus
 * host, x-amz-date, and the token and content hash when they are signed.
 * Sets *payload_hash to a caller-given x-amz-content-sha256, if any. */
static int collect_headers(struct tide_sigv4_signer *s,
                           const struct tide_sigv4_request *req,
                           const struct tide_sigv4_credentials *creds,
                           const struct tide_sigv4_options *opts,
                           const struct lens *ln,
                           size_t *n_out, const char **payload_hash,
                           size_t *payload_hash_len, struct tide_error *err)
{
    size_t cap = req->n_headers + 4, names_len = 0;
    if (cap > s->hdrs_cap) {
        struct hdr *h = realloc(s->hdrs, cap * sizeof(*h));
        if (h == NULL)
            return tide_error_set(err, TIDE_ENOMEM, "sigv4: out of memory for headers");
        s->hdrs = h;
        s->hdrs_cap = cap;
    }
    for (size_t i = 0; i < req->n_headers; i++)
        names_len += req->headers[i].name_len;
    /* Reserved up front so that pointers into s->names stay valid. */
    s->names.len = 0;
    if (!buf_reserve(&s->names, names_len + 1))
        return tide_error_set(err, TIDE_ENOMEM, "sigv4: out of memory for headers");

    size_t n = 0;
    *payload_hash = NULL;
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct tide_sigv4_header *in = &req->headers[i];
        if (in->name_len == 0)
            return tide_error_set(err, TIDE_EINVAL, "sign: a header name is empty");
        struct hdr *h = &s->hdrs[n];
        char *lower = s->names.p + s->names.len;
        for (size_t j = 0; j < in->name_len; j++) {
            unsigned char c = TOKEN_LOWER[(unsigned char)in->name[j]];
            if (c == 0)
                return tide_error_set(err, TIDE_EINVAL,
                                      "sign: header name '%.*s' has a character not allowed in a name",
                                      (int)(in->name_len > 64 ? 64 : in->name_len), in->name);
            lower[j] = (char)c;
        }
        s->names.len += in->name_len;
        *h = (struct hdr){lower, in->name_len, in->value, in->value_len, n, false};
        if (name_is(h, "authorization") || name_is(h, "x-amz-date"))
            return tide_error_set(err, TIDE_EINVAL,
                                  "sign: header '%.*s' is set by the signer; do not pass it",
                                  (int)h->name_len, h->name);
        if (name_is(h, "host")) {
            const char *v = in->value;
            size_t vn = in->value_len;
            trim(&v, &vn);
            if (vn != ln->host || memcmp(v, req->host, vn) != 0)
                return tide_error_set(err, TIDE_EINVAL,
                                      "sign: the host header differs from req.host");
            continue; /* signed once below, from req->host */
        }
        if (name_is(h, "x-amz-security-token") && creds->session_token != NULL)
            return tide_error_set(err, TIDE_EINVAL,
                                  "sign: x-amz-security-token given both as a header and in creds.session_token");
        if (name_is(h, "x-amz-content-sha256")) {
            if (*payload_hash != NULL)
                return tide_error_set(err, TIDE_EINVAL,
                                      "sign: header x-amz-content-sha256 given twice");
            *payload_hash = in->value;
            *payload_hash_len = in->value_len;
            trim(payload_hash, payload_hash_len);
        }
        n++;
    }
    s->hdrs[n] = (struct hdr){"host", 4, req->host, ln->host, n, false};
    n++;
    s->hdrs[n] = (struct hdr){"x-amz-date", 10, s->amz_date, 16, n, true};
    n++;
    if (creds->session_token != NULL && opts->sign_session_token) {
        s->hdrs[n] = (struct hdr){"x-amz-security-token", 20, creds->session_token,
                                  ln->token, n, ln->token_plain};
        n++;
    }
    if (opts->sign_body && *payload_hash == NULL) {
        s->hdrs[n] = (struct hdr){"x-amz-content-sha256", 20, s->payload_hash, 64, n, true};
        n++;
    }
    /* Insertion sort: a request has a handful of headers, and this keeps
     * no call per comparison and no allocation (glibc's qsort may malloc). */
    for (size_t i = 1; i < n; i++) {
        struct hdr h = s->hdrs[i];
        size_t j = i;
        for (; j > 0 && hdr_cmp(&s->hdrs[j - 1], &h) > 0; j--)
            s->hdrs[j] = s->hdrs[j - 1];
        s->hdrs[j] = h;
    }
    *n_out = n;
    return 0;
}

/* Appends canonical headers to creq and the signed-header list to
 * s->signed_headers; equal names become one line, values joined by ','. */
static void write_headers(struct tide_sigv4_signer *s, size_t n)
{
    struct buf *c = &s->creq, *sh = &s->signed_headers;
    sh->len = 0;
    /* Room for everything at once (a value only shrinks when
     * canonicalised), then plain stores. */
    size_t need = 1, names = 0;
    for (size_t i = 0; i < n; i++) {
        need += s->hdrs[i].name_len + s->hdrs[i].value_len + 2;
        names += s->hdrs[i].name_len + 1;
    }
    if (!buf_reserve(c, need) || !buf_reserve(sh, names))
        return;
    char *o = c->p + c->len, *so = sh->p;
    for (size_t i = 0; i < n; i++) {
        const struct hdr *h = &s->hdrs[i];
        bool same = i > 0 && h->name_len == h[-1].name_len
                 && memcmp(h->name, h[-1].name, h->name_len) == 0;
        if (same) {
            *o++ = ',';
        } else {
            if (i > 0) {
                *o++ = '\n';
                *so++ = ';';
            }
            copy_bytes(o, h->name, h->name_len);
            o += h->name_len;
            *o++ = ':';
            copy_bytes(so, h->name, h->name_len);
            so += h->name_len;
        }
        c->len = (size_t)(o - c->p);
        put_header_value(c, h->value, h->value_len, h->plain);
        o = c->p + c->len;
    }
    *o++ = '\n';
    c->len = (size_t)(o - c->p);
    sh->len = (size_t)(so - sh->p);
    sh->p[sh->len] = '\0';
}

static void put_digits(char *o, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* "YYYYMMDDTHHMMSSZ" of unix time t, by arithmetic (Howard Hinnant's
 * civil_from_days): gmtime_r + strftime cost more than the rest of the
 * request's formatting. Years 0..9999 only. */
static bool format_date(int64_t t, char out[17])
{
    if (t < -62167219200LL || t > 253402300799LL)
        return false;
    int64_t days = t / 86400, secs = t % 86400;
    if (secs < 0) {
        secs += 86400;
        days--;
    }
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    put_digits(out, y, 4);
    put_digits(out + 4, m, 2);
    put_digits(out + 6, d, 2);
    out[8] = 'T';
    put_digits(out + 9, secs / 3600, 2);
    put_digits(out + 11, secs / 60 % 60, 2);
    put_digits(out + 13, secs % 60, 2);
    out[15] = 'Z';
    out[16] = '\0';
    return true;
}

/* ---- public API ------------------------------------------------------- */

struct tide_sigv4_signer *tide_sigv4_signer_new(struct tide_error *err)
{
    struct tide_sigv4_signer *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        tide_error_set(err, TIDE_ENOMEM, "sigv4: out of memory for the signer");
        return NULL;
    }
    return s;
}

void tide_sigv4_signer_delete(struct tide_sigv4_signer *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < KEY_CACHE_SLOTS; i++) {
        key_wipe(&s->keys[i]);
        prefix_free(&s->keys[i].sts);
    }
    for (size_t i = 0; i < CREQ_SLOTS; i++)
        prefix_free(&s->creq_cache[i]);
    /* The string to sign and canonical request hold no secret, but the
     * token may sit in creq: wipe what was used. */
    if (s->creq.p)
        OPENSSL_cleanse(s->creq.p, s->creq.cap);
    buf_free(&s->creq);
    buf_free(&s->sts);
    buf_free(&s->auth);
    buf_free(&s->names);
    buf_free(&s->signed_headers);
    buf_free(&s->path);
    buf_free(&s->query);
    free(s->hdrs);
    free(s->pairs);
    free(s);
}

uint64_t tide_sigv4_key_derivations(const struct tide_sigv4_signer *s)
{
    return s->derivations;
}


/* The canonical-request cache for text: the one sharing the longest prefix
 * with it, else the least recently used one (which text then takes over). */
static struct prefix_cache *creq_cache_for(struct tide_sigv4_signer *s, const char *text,
                                           size_t n, size_t *shared)
{
    struct prefix_cache *best = NULL, *lru = &s->creq_cache[0];
    size_t best_len = 0;
    for (size_t i = 0; i < CREQ_SLOTS; i++) {
        struct prefix_cache *pc = &s->creq_cache[i];
        size_t m = prefix_match(pc, text, n);
        if (m > best_len) {
            best = pc;
            best_len = m;
        }
        if (pc->last_use < lru->last_use)
            lru = pc;
    }
    if (best == NULL)
        best = lru;
    best->last_use = ++s->clock;
    *shared = best_len;
    return best;
}

static void reset_bufs(struct tide_sigv4_signer *s)
{
    s->creq.len = s->sts.len = s->auth.len = 0;
    s->creq.oom = s->sts.oom = s->auth.oom = s->names.oom = false;
    s->signed_headers.oom = s->path.oom = s->query.oom = false;
}

int tide_sigv4_sign(struct tide_sigv4_signer *s,
                    const struct tide_sigv4_request *req,
                    const struct tide_sigv4_credentials *creds,
                    const struct tide_sigv4_options *opts,
                    struct tide_sigv4_result *out,
                    struct tide_error *err)
{
    memset(out, 0, sizeof(*out));
    reset_bufs(s);
    struct lens ln = {0};
    if (req->method == NULL || (ln.method = strlen(req->method)) == 0)
        return tide_error_set(err, TIDE_EINVAL, "sign: req.method is empty");
    if (req->host == NULL || (ln.host = strlen(req->host)) == 0)
        return tide_error_set(err, TIDE_EINVAL, "sign: req.host is empty");
    if (creds->access_key_id == NULL || (ln.key_id = key_id_len(creds->access_key_id)) == 0)
        return tide_error_set(err, TIDE_EINVAL,
                              "sign: creds.access_key_id is empty or has characters not allowed in a key id");
    if (creds->secret_access_key == NULL || creds->secret_len == 0)
        return tide_error_set(err, TIDE_EINVAL, "sign: creds.secret_access_key is empty");
    if (creds->session_token != NULL) {
        ln.token = strlen(creds->session_token);
        int t = check_token(creds->session_token, ln.token);
        if (t == TOKEN_BAD)
            return tide_error_set(err, TIDE_EINVAL,
                                  "sign: creds.session_token has control characters");
        ln.token_plain = t == TOKEN_PLAIN;
    }
    if (opts->region == NULL || (ln.region = scope_part_len(opts->region)) == 0)
        return tide_error_set(err, TIDE_EINVAL,
                              "sign: opts.region is empty or has characters not allowed in a region");
    if (opts->service == NULL || (ln.service = scope_part_len(opts->service)) == 0)
        return tide_error_set(err, TIDE_EINVAL,
                              "sign: opts.service is empty or has characters not allowed in a service name");
    /* One date per second: formatted once for all the signatures in it. */
    if (!s->date_ok || s->date_time != opts->time) {
        s->date_ok = false;
        if (!format_date(opts->time, s->amz_date))
            return tide_error_set(err, TIDE_EINVAL, "sign: opts.time is out of range");
        s->date_time = opts->time;
        s->date_ok = true;
    }

    size_t n_hdrs = 0, given_hash_len = 0;
    const char *given_hash = NULL;
    int rc = collect_headers(s, req, creds, opts, &ln, &n_hdrs, &given_hash,
                             &given_hash_len, err);
    if (rc != 0)
        return rc;
    /* s->payload_hash is referenced by the x-amz-content-sha256 entry:
     * fill it before the headers are written. */
    if (given_hash == NULL) {
        unsigned char md[HASH_LEN];
        sha256(req->body, req->body_len, NULL, 0, md);
        tide_sigv4_hex(md, s->payload_hash);
        given_hash = s->payload_hash;
        given_hash_len = 64;
    }

    /* Canonical request. */
    struct buf *c = &s->creq;
    buf_put(c, req->method, ln.method);
    buf_putc(c, '\n');
    const char *path = req->path && req->path[0] ? req->path : "/";
    if (path[0] == '/' && path[1] == '\0') {
        buf_putc(c, '/'); /* every DynamoDB request: nothing to resolve or encode */
    } else if (opts->normalize_path) {
        normalize_path(&s->path, path);
        if (buf_reserve(c, 3 * s->path.len + 1))
            encode_into(c, s->path.p, s->path.len, true);
    } else {
        size_t pn = strlen(path);
        if (buf_reserve(c, 3 * pn + 1))
            encode_into(c, path, pn, true);
    }
    buf_putc(c, '\n');
    if (req->query != NULL && req->query[0] != '\0') {
        rc = canonical_query(s, req->query, err);
        if (rc != 0)
            return rc;
    }
    buf_putc(c, '\n');
    write_headers(s, n_hdrs);
    buf_putc(c, '\n');
    buf_put(c, s->signed_headers.p, s->signed_headers.len);
    buf_putc(c, '\n');
    buf_put(c, given_hash, given_hash_len);
    buf_term(c);
    if (c->oom || s->signed_headers.oom || s->path.oom || s->query.oom)
        return tide_error_set(err, TIDE_ENOMEM, "sign: out of memory for the canonical request");

    /* String to sign: algorithm, date, scope, hash of the canonical request. */
    unsigned char md[HASH_LEN];
    size_t shared;
    struct prefix_cache *pc = creq_cache_for(s, c->p, c->len, &shared);
    digest_cached(pc, shared, NULL, c->p, c->len, md, &out->canonical_request_resumed);
    struct buf *t = &s->sts;
    buf_puts(t, ALGORITHM "\n");
    buf_put(t, s->amz_date, 16);
    buf_putc(t, '\n');
    size_t scope_at = t->len;
    buf_put(t, s->amz_date, 8);
    buf_putc(t, '/');
    buf_put(t, opts->region, ln.region);
    buf_putc(t, '/');
    buf_put(t, opts->service, ln.service);
    buf_puts(t, "/aws4_request");
    size_t scope_len = t->len - scope_at;
    buf_putc(t, '\n');
    buf_put_hex(t, md);
    if (t->oom)
        return tide_error_set(err, TIDE_ENOMEM, "sign: out of memory for the string to sign");

    /* Signature with the cached signing key. */
    struct key_entry spare; /* set up by key_get only when used */
    struct key_entry *key = key_get(s, &spare, s->amz_date, opts->region, ln.region,
                                    opts->service, ln.service,
                                    creds->secret_access_key, creds->secret_len);
    hmac_with_key(key, key != &spare, t->p, t->len, md, &out->string_to_sign_resumed);
    if (key == &spare)
        key_wipe(&spare);

    struct buf *a = &s->auth;
    buf_puts(a, ALGORITHM " Credential=");
    buf_put(a, creds->access_key_id, ln.key_id);
    buf_putc(a, '/');
    buf_put(a, t->p + scope_at, scope_len);
    buf_puts(a, ", SignedHeaders=");
    buf_put(a, s->signed_headers.p, s->signed_headers.len);
    buf_puts(a, ", Signature=");
    buf_put_hex(a, md);
    if (a->oom)
        return tide_error_set(err, TIDE_ENOMEM, "sign: out of memory for the authorization");

    out->authorization = a->p;
    out->authorization_len = a->len;
    out->amz_date = s->amz_date;
    out->session_token = creds->session_token;
    out->content_sha256 = opts->sign_body && given_hash == s->payload_hash ? s->payload_hash : NULL;
    out->signature = a->p + a->len - 64; /* the end of the Authorization value */
    if (opts->debug) {
        out->canonical_request = c->p;
        out->canonical_request_len = c->len;
        out->string_to_sign = t->p;
        out->string_to_sign_len = t->len;
    }
    return 0;
}
