/*
 * ddb_stream_records.c - a GetRecords page read with jsmn (see
 * ddb_stream_records.h).
 */
#include "ddb_stream_records.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

struct reader {
    const struct tide_ddb_records_visitor *v;
    void *ud;
    yajl_handle *unescape;
    const yajl_alloc_funcs *afs;
    const char *body;
    const jsmntok_t *t;
    int ntok;
    /* the string being unescaped by yajl (its callback) */
    enum tide_ddb_record_text what;
    bool taken;
    const char *failed; /* the visitor's message */
    char error[200];
};

/* The index of the token after token i and everything inside it. */
static int skip(const struct reader *r, int i)
{
    int end = r->t[i].end;
    for (i++; i < r->ntok && r->t[i].start < end; i++)
        ;
    return i;
}

static bool is_key(const struct reader *r, int i, const char *want, size_t n)
{
    const jsmntok_t *k = &r->t[i];
    return (size_t)(k->end - k->start) == n && memcmp(r->body + k->start, want, n) == 0;
}
#define KEY(r, i, lit) is_key(r, i, lit, sizeof(lit) - 1)

static bool is_type(const struct reader *r, int i, jsmntype_t type)
{
    return i >= 0 && i < r->ntok && r->t[i].type == type;
}

static int fail(struct reader *r, const char *msg)
{
    snprintf(r->error, sizeof(r->error), "%s", msg);
    return 0;
}

static int fail_at(struct reader *r, unsigned pos, const char *why)
{
    snprintf(r->error, sizeof(r->error), "malformed JSON at byte %u (%s)", pos, why);
    return 0;
}

/* ---- strings ---------------------------------------------------------------- */

static int on_unescaped(void *ud, const unsigned char *s, size_t n)
{
    struct reader *r = ud;
    r->failed = r->v->text(r->ud, r->what, (const char *)s, n);
    r->taken = true;
    return r->failed == NULL;
}

static const yajl_callbacks UNESCAPE_CALLBACKS = {.yajl_string = on_unescaped};

/* Hands the string token i over as `what`, unescaped. 0 on an invalid
 * string or when the visitor stops. */
static int hand_text(struct reader *r, int i, enum tide_ddb_record_text what)
{
    const jsmntok_t *k = &r->t[i];
    const char *s = r->body + k->start;
    size_t n = (size_t)(k->end - k->start);
    r->what = what;
    r->failed = NULL;
    if (memchr(s, '\\', n) == NULL) {
        if (!on_unescaped(r, (const unsigned char *)s, n))
            return fail(r, r->failed);
        return 1;
    }
    /* yajl reads the token with its quotes as a JSON text: one parser for
     * the page (a string is complete at its closing quote) */
    if (*r->unescape == NULL) {
        *r->unescape = yajl_alloc(&UNESCAPE_CALLBACKS, (yajl_alloc_funcs *)r->afs, r);
        if (*r->unescape == NULL)
            return fail(r, "out of memory");
        yajl_config(*r->unescape, yajl_allow_multiple_values, 1);
    }
    r->taken = false;
    yajl_status st = yajl_parse(*r->unescape, (const unsigned char *)s - 1, n + 2);
    if (st != yajl_status_ok || !r->taken) {
        yajl_free(*r->unescape);
        *r->unescape = NULL;
        if (r->failed != NULL)
            return fail(r, r->failed);
        snprintf(r->error, sizeof(r->error),
                 "the string at byte %d is not valid (bad escape or UTF-8)", k->start);
        return 0;
    }
    return 1;
}

/* The number in token i (a string or a primitive) into *out. */
static bool number_of(const struct reader *r, int i, double *out)
{
    const jsmntok_t *k = &r->t[i];
    size_t n = (size_t)(k->end - k->start);
    char buf[48];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, r->body + k->start, n);
    buf[n] = '\0';
    char *end;
    *out = strtod(buf, &end);
    return *end == '\0';
}

/* ---- records ---------------------------------------------------------------- */

/* Token indices of what a record holds (-1: absent). */
struct record {
    int event_name, seq, created;
    int stream, version, type, data, meta; /* the AttributeValues' S or N */
};

/* The S (want_n: N) string of the AttributeValue object at i, or -1. */
static int av_string(const struct reader *r, int i, bool want_n)
{
    if (!is_type(r, i, JSMN_OBJECT))
        return -1;
    int found = -1, m = r->t[i].size;
    for (int k = i + 1; m-- > 0; k = skip(r, k + 1)) {
        if (is_type(r, k + 1, JSMN_STRING) && (want_n ? KEY(r, k, "N") : KEY(r, k, "S")))
            found = k + 1; /* a repeated key: the last one wins */
    }
    return found;
}

static void read_image(const struct reader *r, int i, struct record *rec)
{
    int m = r->t[i].size;
    for (int k = i + 1; m-- > 0; k = skip(r, k + 1)) {
        int v = k + 1;
        if (KEY(r, k, "stream"))
            rec->stream = av_string(r, v, false);
        else if (KEY(r, k, "version"))
            rec->version = av_string(r, v, true);
        else if (KEY(r, k, "type"))
            rec->type = av_string(r, v, false);
        else if (KEY(r, k, "data"))
            rec->data = av_string(r, v, false);
        else if (KEY(r, k, "meta"))
            rec->meta = av_string(r, v, false);
    }
}

static void read_record(const struct reader *r, int i, struct record *rec)
{
    int m = r->t[i].size;
    for (int k = i + 1; m-- > 0; k = skip(r, k + 1)) {
        int v = k + 1;
        if (KEY(r, k, "eventName")) {
            rec->event_name = is_type(r, v, JSMN_STRING) ? v : -1;
        } else if (KEY(r, k, "dynamodb") && is_type(r, v, JSMN_OBJECT)) {
            int dm = r->t[v].size;
            for (int d = v + 1; dm-- > 0; d = skip(r, d + 1)) {
                int dv = d + 1;
                if (KEY(r, d, "SequenceNumber"))
                    rec->seq = is_type(r, dv, JSMN_STRING) ? dv : -1;
                else if (KEY(r, d, "ApproximateCreationDateTime"))
                    rec->created = is_type(r, dv, JSMN_PRIMITIVE) ? dv : -1;
                else if (KEY(r, d, "NewImage") && is_type(r, dv, JSMN_OBJECT))
                    read_image(r, dv, rec);
            }
        }
    }
}

static bool is_change(const struct reader *r, int i)
{
    return i >= 0 && (KEY(r, i, "INSERT") || KEY(r, i, "MODIFY"));
}

/* Hands the event of rec over. */
static int hand_event(struct reader *r, const struct record *rec)
{
    double version;
    if (!number_of(r, rec->version, &version))
        return fail(r, "an event's version is not a number");
    const char *why = r->v->event(r->ud, version);
    if (why != NULL)
        return fail(r, why);
    const struct {
        int token;
        enum tide_ddb_record_text what;
    } texts[] = {
        {rec->stream, TIDE_DDB_REC_STREAM},
        {rec->type, TIDE_DDB_REC_TYPE},
        {rec->data, TIDE_DDB_REC_DATA},
        {rec->meta, TIDE_DDB_REC_META},
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (texts[i].token >= 0 && !hand_text(r, texts[i].token, texts[i].what))
            return 0;
    }
    why = r->v->event_end(r->ud);
    return why == NULL ? 1 : fail(r, why);
}

/* Reads the response object (token 0). */
static int read_page(struct reader *r, struct tide_ddb_records_page *page)
{
    if (!is_type(r, 0, JSMN_OBJECT))
        return fail(r, "not a JSON object");
    int last_seq = -1, last_created = -1;
    int m = r->t[0].size;
    for (int k = 1; m-- > 0; k = skip(r, k + 1)) {
        int v = k + 1;
        if (KEY(r, k, "NextShardIterator") && is_type(r, v, JSMN_STRING)) {
            if (!hand_text(r, v, TIDE_DDB_REC_NEXT_ITERATOR))
                return 0;
        } else if (KEY(r, k, "Records")) {
            if (!is_type(r, v, JSMN_ARRAY))
                return fail(r, "Records is not an array");
            int n = r->t[v].size;
            for (int i = v + 1; n-- > 0; i = skip(r, i)) {
                if (r->t[i].type != JSMN_OBJECT)
                    continue;
                page->records++;
                struct record rec = {-1, -1, -1, -1, -1, -1, -1, -1};
                read_record(r, i, &rec);
                if (rec.seq >= 0)
                    last_seq = rec.seq;
                if (rec.created >= 0)
                    last_created = rec.created;
                if (is_change(r, rec.event_name) && rec.stream >= 0 && rec.version >= 0 &&
                    !hand_event(r, &rec))
                    return 0;
            }
        }
    }
    if (last_seq >= 0 && !hand_text(r, last_seq, TIDE_DDB_REC_LAST_SEQ))
        return 0;
    page->has_created = last_created >= 0 && number_of(r, last_created, &page->last_created);
    return 1;
}

/* Splits body into tokens in the reader's token array (grown as needed).
 * Returns the number of tokens, or 0 with r->error set. */
static int tokenize(struct reader *r, struct tide_ddb_records_reader *rr, const char *body,
                    size_t len)
{
    if (len > (size_t)INT32_MAX)
        return fail(r, "the response is too large");
    jsmn_parser p;
    jsmn_init(&p);
    if (rr->tokens_cap == 0) {
        /* a record takes about one token per 5 bytes */
        size_t want = len / 4 + 64;
        rr->tokens = malloc(want * sizeof(jsmntok_t));
        if (rr->tokens == NULL)
            return fail(r, "out of memory");
        rr->tokens_cap = want;
    }
    for (;;) {
        int n = jsmn_parse(&p, body, len, rr->tokens, (unsigned)rr->tokens_cap);
        if (n == JSMN_ERROR_NOMEM) { /* jsmn goes on from where it stopped */
            size_t cap = rr->tokens_cap * 2;
            void *more = realloc(rr->tokens, cap * sizeof(jsmntok_t));
            if (more == NULL)
                return fail(r, "out of memory");
            rr->tokens = more;
            rr->tokens_cap = cap;
            continue;
        }
        if (n == JSMN_ERROR_INVAL)
            return fail_at(r, p.pos, "an unexpected character");
        if (n == JSMN_ERROR_PART || n == 0)
            return fail_at(r, p.pos, "the text ends too soon");
        return n;
    }
}

void tide_ddb_records_reader_init(struct tide_ddb_records_reader *r, const yajl_alloc_funcs *afs)
{
    r->tokens = NULL;
    r->tokens_cap = 0;
    r->unescape = NULL;
    r->afs = afs;
}

void tide_ddb_records_reader_close(struct tide_ddb_records_reader *r)
{
    if (r->unescape != NULL) {
        yajl_free(r->unescape);
        r->unescape = NULL;
    }
}

void tide_ddb_records_reader_free(struct tide_ddb_records_reader *r)
{
    tide_ddb_records_reader_close(r);
    free(r->tokens);
    r->tokens = NULL;
    r->tokens_cap = 0;
}

int tide_ddb_read_records(struct tide_ddb_records_reader *rr, const char *body, size_t len,
                          const struct tide_ddb_records_visitor *v, void *ud,
                          struct tide_ddb_records_page *page, struct tide_error *err)
{
    struct reader r;
    memset(&r, 0, sizeof(r));
    r.v = v;
    r.ud = ud;
    r.unescape = &rr->unescape;
    r.afs = rr->afs;
    r.body = body;
    memset(page, 0, sizeof(*page));
    int n = tokenize(&r, rr, body, len);
    if (n > 0) {
        r.t = rr->tokens;
        r.ntok = n;
        /* one value, and nothing after it but white space */
        if (skip(&r, 0) != n)
            n = fail(&r, "malformed JSON: more than one value");
    }
    if (n > 0 && read_page(&r, page))
        return 0;
    bool oom = strcmp(r.error, "out of memory") == 0;
    return tide_error_set(err, oom ? TIDE_ENOMEM : TIDE_EINVAL, "GetRecords response: %s", r.error);
}
