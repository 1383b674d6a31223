/*
 * lua_stream_records.c - core.decode_stream_records: a GetRecords response
 * of the events table's stream, straight to projector events.
 *
 *   local r, err = core.decode_stream_records(body)
 *   r = { events = { {stream=, aggregate=, id=, version=, type=, data=,
 *                     meta=, as_stored=}, ... },
 *         records = <records in the response, events or not>,
 *         last_seq = <SequenceNumber of the last record> | nil,
 *         last_created = <its ApproximateCreationDateTime> | nil,
 *         NextShardIterator = ... | nil }
 *
 * The projection runner needs five attributes of each record's NewImage and
 * two fields of its envelope, out of about 110 JSON tokens a record; a page
 * holds up to 1000 records (~570 KB). Reading every token through yajl's
 * callbacks cost about 20,000 instructions a record, a third of the whole
 * runner's work, so the page is split into tokens by jsmn (Debian's
 * libjsmn-dev: offsets into the text, no allocation, no unescaping), and
 * only the tokens kept are read: keys are compared as raw bytes (a key
 * spelled with escapes is not recognised, and DynamoDB never writes one),
 * strings with a backslash are unescaped by yajl, numbers by strtod.
 * jsmn checks the structure (strict mode); it does not check UTF-8: the
 * texts that become Lua values are checked by yajl and the codec.
 *
 * An INSERT or MODIFY record whose image has an S `stream` and an N
 * `version` becomes an event; other records only move last_seq. data
 * (AttributeValue JSON) and meta (plain JSON) are stored as text and
 * decoded here by the codec's nested decoder (tide_codec_decode_nested):
 * the projector needs them for nearly every event, and no Lua string is
 * made of them. An event whose data was decoded has as_stored = true: the
 * data is as stored, not upcast yet (the projector does that). A text that
 * does not decode stays a string, for the projector to report.
 */
#include "lua_codec.h"

#include <lauxlib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

/* Stack slots of tide_codec_decode_stream_records while it reads: [body,
 * result, events, guard]; the event being built sits on top of them. */
#define SLOT_RESULT 2
#define SLOT_EVENTS 3


/* What to do with a string once unescaped. */
enum take { TAKE_STRING, TAKE_AV, TAKE_JSON };

struct reader {
    lua_State *L;
    struct guard *guard; /* the call's: owns the token array and parsers */
    const char *body;
    const jsmntok_t *t;
    int ntok;
    /* the string being unescaped by yajl (guard->parser's callback) */
    enum take take;
    bool taken, decoded;
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
    r->decoded = false;
    if (r->take != TAKE_STRING)
        r->decoded = tide_codec_decode_nested(r->L, r->guard, (const char *)s, n, r->take == TAKE_AV);
    if (!r->decoded)
        lua_pushlstring(r->L, (const char *)s, n);
    r->taken = true;
    return 1;
}

static const yajl_callbacks UNESCAPE_CALLBACKS = {.yajl_string = on_unescaped};

/* Pushes the string token i, unescaped, as a string or (take) decoded by the
 * codec; r->decoded says which. 0 on an invalid string. */
static int push_text(struct reader *r, int i, enum take take)
{
    const jsmntok_t *k = &r->t[i];
    const char *s = r->body + k->start;
    size_t n = (size_t)(k->end - k->start);
    if (memchr(s, '\\', n) == NULL) {
        r->take = take;
        return on_unescaped(r, (const unsigned char *)s, n);
    }
    /* yajl reads the token with its quotes as a JSON text: one parser for
     * the page (a string is complete at its closing quote) */
    struct guard *g = r->guard;
    if (g->parser == NULL) {
        g->parser = yajl_alloc(&UNESCAPE_CALLBACKS, &g->afs, r);
        if (g->parser == NULL)
            return fail(r, "out of memory");
        yajl_config(g->parser, yajl_allow_multiple_values, 1);
    }
    r->take = take;
    r->taken = false;
    int top = lua_gettop(r->L);
    yajl_status st = yajl_parse(g->parser, (const unsigned char *)s - 1, n + 2);
    if (st != yajl_status_ok || !r->taken) {
        yajl_free(g->parser);
        g->parser = NULL;
        lua_settop(r->L, top);
        snprintf(r->error, sizeof(r->error), "the string at byte %d is not valid (bad escape or UTF-8)",
                 k->start);
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

/* Sets field of the table on top to the value of the string token i
 * (decoded as take says). // [event] -> [event] */
static int set_text(struct reader *r, int i, enum take take, const char *field)
{
    if (!push_text(r, i, take))
        return 0;
    lua_setfield(r->L, -2, field);
    return 1;
}

/* Pushes the event of rec onto the events list. */
static int add_event(struct reader *r, const struct record *rec, int *nevents)
{
    lua_State *L = r->L;
    double version;
    if (!number_of(r, rec->version, &version))
        return fail(r, "an event's version is not a number");
    if (!lua_checkstack(L, 8))
        return fail(r, "out of Lua stack");
    lua_createtable(L, 0, 8);                           // [event]
    if (!push_text(r, rec->stream, TAKE_STRING))
        return 0;                                       // [event, stream]
    /* "<aggregate>#<id>"; without a '#', the whole stream name */
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    const char *hash = memchr(s, '#', n);
    size_t alen = hash ? (size_t)(hash - s) : n;
    lua_pushlstring(L, s, alen);
    lua_setfield(L, -3, "aggregate");
    lua_pushlstring(L, hash ? hash + 1 : "", hash ? n - alen - 1 : 0);
    lua_setfield(L, -3, "id");
    lua_setfield(L, -2, "stream");                      // [event]
    lua_pushnumber(L, version);
    lua_setfield(L, -2, "version");
    if (rec->type >= 0 && !set_text(r, rec->type, TAKE_STRING, "type"))
        return 0;
    if (rec->data >= 0) {
        if (!set_text(r, rec->data, TAKE_AV, "data"))
            return 0;
        if (r->decoded) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "as_stored");
        }
    }
    if (rec->meta >= 0 && !set_text(r, rec->meta, TAKE_JSON, "meta"))
        return 0;
    lua_rawseti(L, SLOT_EVENTS, ++*nevents);            // []
    return 1;
}

/* Reads the response object (token 0) into the result table. */
static int read_page(struct reader *r)
{
    lua_State *L = r->L;
    if (!is_type(r, 0, JSMN_OBJECT))
        return fail(r, "not a JSON object");
    int nrecords = 0, nevents = 0, last_seq = -1, last_created = -1;
    int m = r->t[0].size;
    for (int k = 1; m-- > 0; k = skip(r, k + 1)) {
        int v = k + 1;
        if (KEY(r, k, "NextShardIterator") && is_type(r, v, JSMN_STRING)) {
            if (!push_text(r, v, TAKE_STRING))
                return 0;
            lua_setfield(L, SLOT_RESULT, "NextShardIterator");
        } else if (KEY(r, k, "Records")) {
            if (!is_type(r, v, JSMN_ARRAY))
                return fail(r, "Records is not an array");
            int n = r->t[v].size;
            for (int i = v + 1; n-- > 0; i = skip(r, i)) {
                if (r->t[i].type != JSMN_OBJECT)
                    continue;
                nrecords++;
                struct record rec = {-1, -1, -1, -1, -1, -1, -1, -1};
                read_record(r, i, &rec);
                if (rec.seq >= 0)
                    last_seq = rec.seq;
                if (rec.created >= 0)
                    last_created = rec.created;
                if (is_change(r, rec.event_name) && rec.stream >= 0 && rec.version >= 0 &&
                    !add_event(r, &rec, &nevents))
                    return 0;
            }
        }
    }
    lua_pushinteger(L, nrecords);
    lua_setfield(L, SLOT_RESULT, "records");
    if (last_seq >= 0) {
        if (!push_text(r, last_seq, TAKE_STRING))
            return 0;
        lua_setfield(L, SLOT_RESULT, "last_seq");
    }
    double created;
    if (last_created >= 0 && number_of(r, last_created, &created)) {
        lua_pushnumber(L, created);
        lua_setfield(L, SLOT_RESULT, "last_created");
    }
    return 1;
}

/* Splits body into tokens in g's token array (grown as needed). Returns the
 * number of tokens, or 0 with r->error set. */
static int tokenize(struct reader *r, struct guard *g, const char *body, size_t len)
{
    if (len > (size_t)INT32_MAX)
        return fail(r, "the response is too large");
    jsmn_parser p;
    jsmn_init(&p);
    if (g->tokens_cap == 0) {
        /* a record takes about one token per 5 bytes */
        size_t want = len / 4 + 64;
        g->tokens = malloc(want * sizeof(jsmntok_t));
        if (g->tokens == NULL)
            return fail(r, "out of memory");
        g->tokens_cap = want;
    }
    for (;;) {
        int n = jsmn_parse(&p, body, len, g->tokens, (unsigned)g->tokens_cap);
        if (n == JSMN_ERROR_NOMEM) { /* jsmn goes on from where it stopped */
            size_t cap = g->tokens_cap * 2;
            void *more = realloc(g->tokens, cap * sizeof(jsmntok_t));
            if (more == NULL)
                return fail(r, "out of memory");
            g->tokens = more;
            g->tokens_cap = cap;
            continue;
        }
        if (n == JSMN_ERROR_INVAL)
            return fail_at(r, p.pos, "an unexpected character");
        if (n == JSMN_ERROR_PART || n == 0)
            return fail_at(r, p.pos, "the text ends too soon");
        return n;
    }
}

int tide_codec_decode_stream_records(lua_State *L)
{
    size_t len;
    const char *body = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);                                   // [body]
    lua_createtable(L, 0, 6);                           // [body, result]
    /* room for the events of a full page (~500 bytes a record); an empty
     * page, what an idle stream gives, allocates nothing */
    lua_createtable(L, (int)(len / 512 < 1000 ? len / 512 : 1000), 0); // [body, result, events]
    /* the guard owns the tokens and parsers: freed even if a Lua error
     * unwinds through the call (lua_codec.h) */
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), TIDE_CODEC_FRAME());
                                                        // [body, result, events, guard]
    struct reader r;
    memset(&r, 0, sizeof(r));
    r.L = L;
    r.guard = g;
    r.body = body;
    int n = tokenize(&r, g, body, len);
    if (n > 0) {
        r.t = g->tokens;
        r.ntok = n;
        /* one value, and nothing after it but white space */
        if (skip(&r, 0) != n)
            n = fail(&r, "malformed JSON: more than one value");
    }
    int ok = n > 0 && read_page(&r);
    tide_codec_guard_done(g);
    if (!ok) {
        char msg[260];
        snprintf(msg, sizeof(msg), "GetRecords response: %s", r.error);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    lua_settop(L, SLOT_EVENTS);                         // [body, result, events]
    lua_setfield(L, SLOT_RESULT, "events");             // [body, result]
    return 1;
}
