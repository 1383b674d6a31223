/*
 * lua_stream_records.c - core.decode_stream_records: a GetRecords response
 * of the events table's stream, straight to projector events.
 *
 *   local r, err = core.decode_stream_records(body)
 *   r = { events = { {stream=, aggregate=, id=, version=, type=, data=,
 *                     meta=, seq=, created=}, ... },
 *         records = <records in the response, events or not>,
 *         last_seq = <SequenceNumber of the last record> | nil,
 *         last_created = <its ApproximateCreationDateTime> | nil,
 *         NextShardIterator = ... | nil }
 *
 * The projection runner needs five attributes of each record's NewImage
 * and two fields of its envelope; core.decode_response would build a table
 * for every record, its envelope, its keys and its whole image. yajl's
 * callbacks drive a small state machine that keeps only what is needed and
 * skips the rest without building anything. An INSERT or MODIFY record
 * whose image has a string `stream` and a number `version` becomes an event
 * (data and meta stay JSON text, decoded by the projector only for the
 * events it applies); other records only move last_seq.
 */
#include "lua_codec.h"
#include "lua_core.h"

#include <lauxlib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#define MAX_DEPTH 64
/* Stack slots of l_decode_stream_records while it parses: [body, result,
 * events, guard]; the event being read sits on top of them. */
#define SLOT_RESULT 2
#define SLOT_EVENTS 3

/* Where the parser is: one entry per open object or array. */
enum where {
    IN_TOP,     /* the response object */
    IN_RECORDS, /* the Records array */
    IN_RECORD,  /* one record */
    IN_DDB,     /* its "dynamodb" object */
    IN_IMAGE,   /* its NewImage */
    IN_AV,      /* one wanted attribute's AttributeValue */
    IN_SKIP,    /* anything else: ignored to its end */
};

/* What the next value is, from the key before it. */
enum next {
    N_NONE,
    N_RECORDS,
    N_NEXT_ITERATOR,
    N_EVENT_NAME,
    N_DDB,
    N_CREATED,
    N_SEQ,
    N_IMAGE,
    N_ATTR,   /* an attribute of the image we keep: attr says which */
    N_AV_S,
    N_AV_N,
};

enum attr { A_STREAM, A_VERSION, A_TYPE, A_DATA, A_META, A_COUNT };
static const char *const ATTR_NAMES[A_COUNT] = {"stream", "version", "type", "data", "meta"};

struct reader {
    lua_State *L;        /* see SLOT_RESULT, SLOT_EVENTS */
    enum where stack[MAX_DEPTH];
    int depth;           /* entries in stack */
    int skip_depth;      /* levels opened inside an IN_SKIP entry */
    enum next next;
    enum attr attr;
    int nevents;
    int nrecords;
    bool is_change;      /* eventName INSERT or MODIFY */
    bool has_stream, has_version;
    char error[200];
};

static int fail(struct reader *r, const char *what)
{
    snprintf(r->error, sizeof(r->error), "GetRecords response: %s", what);
    return 0; /* stops yajl: yajl_status_client_canceled */
}

static bool key_is(const unsigned char *k, size_t n, const char *want)
{
    return strlen(want) == n && memcmp(k, want, n) == 0;
}

/* Sets field of the event on top of the stack to the value on top: // [event, v] -> [event] */
static void set_event_field(struct reader *r, const char *field)
{
    lua_setfield(r->L, -2, field);
}

static int on_string(void *ud, const unsigned char *s, size_t n)
{
    struct reader *r = ud;
    lua_State *L = r->L;
    enum next next = r->next;
    r->next = N_NONE;
    if (r->skip_depth > 0)
        return 1;
    switch (next) {
    case N_NEXT_ITERATOR:
        lua_pushlstring(L, (const char *)s, n);
        lua_setfield(L, SLOT_RESULT, "NextShardIterator");
        break;
    case N_EVENT_NAME:
        r->is_change = key_is(s, n, "INSERT") || key_is(s, n, "MODIFY");
        break;
    case N_SEQ:
        lua_pushlstring(L, (const char *)s, n); // [event, seq]
        lua_pushvalue(L, -1);
        lua_setfield(L, SLOT_RESULT, "last_seq");
        set_event_field(r, "seq");
        break;
    case N_AV_S:
        if (r->attr == A_VERSION)
            break; /* a version must be a number */
        lua_pushlstring(L, (const char *)s, n);
        set_event_field(r, ATTR_NAMES[r->attr]);
        if (r->attr == A_STREAM) {
            /* "<aggregate>#<id>"; without a '#', the whole stream name */
            const unsigned char *hash = memchr(s, '#', n);
            size_t alen = hash ? (size_t)(hash - s) : n;
            lua_pushlstring(L, (const char *)s, alen);
            set_event_field(r, "aggregate");
            lua_pushlstring(L, hash ? (const char *)hash + 1 : "", hash ? n - alen - 1 : 0);
            set_event_field(r, "id");
            r->has_stream = true;
        }
        break;
    case N_AV_N:
        if (r->attr == A_VERSION) {
            char buf[48];
            if (n == 0 || n >= sizeof(buf))
                return fail(r, "an event's version is not a number");
            memcpy(buf, s, n);
            buf[n] = '\0';
            char *end;
            double v = strtod(buf, &end);
            if (*end != '\0')
                return fail(r, "an event's version is not a number");
            lua_pushnumber(L, v);
            set_event_field(r, "version");
            r->has_version = true;
        }
        break;
    default:
        break;
    }
    return 1;
}

static int on_number(void *ud, const char *s, size_t n)
{
    struct reader *r = ud;
    enum next next = r->next;
    r->next = N_NONE;
    if (r->skip_depth > 0 || next != N_CREATED)
        return 1;
    char buf[64];
    if (n >= sizeof(buf))
        return 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    lua_pushnumber(r->L, strtod(buf, NULL)); // [event, t]
    lua_pushvalue(r->L, -1);
    lua_setfield(r->L, SLOT_RESULT, "last_created");
    set_event_field(r, "created");
    return 1;
}

static int on_scalar(void *ud)
{
    struct reader *r = ud;
    r->next = N_NONE;
    return 1;
}

static int on_boolean(void *ud, int b)
{
    (void)b;
    return on_scalar(ud);
}

static int push_where(struct reader *r, enum where w)
{
    if (r->depth >= MAX_DEPTH)
        return fail(r, "nested too deeply");
    r->stack[r->depth++] = w;
    return 1;
}

/* An object or array opens: what it is follows from where we are and the
 * key before it. */
static int on_open(struct reader *r, bool is_map)
{
    enum next next = r->next;
    r->next = N_NONE;
    if (r->skip_depth > 0) {
        r->skip_depth++;
        return 1;
    }
    if (r->depth == 0) {
        if (!is_map)
            return fail(r, "not a JSON object");
        return push_where(r, IN_TOP);
    }
    enum where at = r->stack[r->depth - 1], w = IN_SKIP;
    if (at == IN_TOP && next == N_RECORDS) {
        if (is_map)
            return fail(r, "Records is not an array");
        w = IN_RECORDS;
    } else if (at == IN_RECORDS && is_map) {
        w = IN_RECORD;
        r->nrecords++;
        r->is_change = r->has_stream = r->has_version = false;
        if (!lua_checkstack(r->L, 4))
            return fail(r, "out of Lua stack");
        lua_createtable(r->L, 0, 10); /* the event, on top */
    } else if (at == IN_RECORD && next == N_DDB && is_map) {
        w = IN_DDB;
    } else if (at == IN_DDB && next == N_IMAGE && is_map) {
        w = IN_IMAGE;
    } else if (at == IN_IMAGE && next == N_ATTR && is_map) {
        w = IN_AV;
    }
    if (w == IN_SKIP)
        r->skip_depth = 1;
    return push_where(r, w);
}

static int on_close(struct reader *r)
{
    if (r->skip_depth > 1) {
        r->skip_depth--;
        return 1;
    }
    r->skip_depth = 0;
    enum where w = r->stack[--r->depth];
    if (w == IN_RECORD) {
        if (r->is_change && r->has_stream && r->has_version)
            lua_rawseti(r->L, SLOT_EVENTS, ++r->nevents);
        else
            lua_pop(r->L, 1);
    }
    return 1;
}

static int on_start_map(void *ud) { return on_open(ud, true); }
static int on_start_array(void *ud) { return on_open(ud, false); }
static int on_end(void *ud) { return on_close(ud); }

static int on_map_key(void *ud, const unsigned char *k, size_t n)
{
    struct reader *r = ud;
    r->next = N_NONE;
    if (r->skip_depth > 0 || r->depth == 0)
        return 1;
    switch (r->stack[r->depth - 1]) {
    case IN_TOP:
        if (key_is(k, n, "Records"))
            r->next = N_RECORDS;
        else if (key_is(k, n, "NextShardIterator"))
            r->next = N_NEXT_ITERATOR;
        break;
    case IN_RECORD:
        if (key_is(k, n, "eventName"))
            r->next = N_EVENT_NAME;
        else if (key_is(k, n, "dynamodb"))
            r->next = N_DDB;
        break;
    case IN_DDB:
        if (key_is(k, n, "SequenceNumber"))
            r->next = N_SEQ;
        else if (key_is(k, n, "NewImage"))
            r->next = N_IMAGE;
        else if (key_is(k, n, "ApproximateCreationDateTime"))
            r->next = N_CREATED;
        break;
    case IN_IMAGE:
        for (int a = 0; a < A_COUNT; a++) {
            if (key_is(k, n, ATTR_NAMES[a])) {
                r->attr = (enum attr)a;
                r->next = N_ATTR;
                break;
            }
        }
        break;
    case IN_AV:
        if (key_is(k, n, "S"))
            r->next = N_AV_S;
        else if (key_is(k, n, "N"))
            r->next = N_AV_N;
        break;
    default:
        break;
    }
    return 1;
}

static const yajl_callbacks CALLBACKS = {
    on_scalar,      /* null */
    on_boolean,
    NULL,           /* integer: on_number gets every number as text */
    NULL,           /* double */
    on_number,
    on_string,
    on_start_map,
    on_map_key,
    on_end,
    on_start_array,
    on_end,
};

static int l_decode_stream_records(lua_State *L)
{
    size_t len;
    const char *body = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);                                   // [body]
    lua_createtable(L, 0, 6);                           // [body, result]
    /* room for the events of a full page (~500 bytes a record); an empty
     * page, what an idle stream gives, allocates nothing */
    lua_createtable(L, (int)(len / 512 < 1000 ? len / 512 : 1000), 0); // [body, result, events]
    /* the guard owns the parser: freed even if a Lua error unwinds
     * through the parse (lua_codec.h) */
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(1), TIDE_CODEC_FRAME());
                                                        // [body, result, events, guard]
    struct reader r;
    memset(&r, 0, sizeof(r));
    r.L = L;
    yajl_handle h = g->parser = yajl_alloc(&CALLBACKS, &g->afs, &r);
    if (h == NULL) {
        tide_codec_guard_done(g);
        return luaL_error(L, "decode_stream_records: out of memory");
    }
    yajl_status st = yajl_parse(h, (const unsigned char *)body, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    if (st != yajl_status_ok) {
        char msg[400];
        if (r.error[0]) {
            snprintf(msg, sizeof(msg), "%s", r.error);
        } else {
            unsigned char *e = yajl_get_error(h, 0, (const unsigned char *)body, len);
            size_t elen = e ? strlen((const char *)e) : 0;
            while (elen > 0 && (e[elen - 1] == '\n' || e[elen - 1] == ' ' || e[elen - 1] == '.'))
                e[--elen] = '\0'; /* yajl ends its message with ".\n" */
            snprintf(msg, sizeof(msg), "GetRecords response: malformed JSON at byte %zu (%s)",
                     yajl_get_bytes_consumed(h), e ? (const char *)e : "?");
            if (e)
                yajl_free_error(h, e);
        }
        tide_codec_guard_done(g);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    tide_codec_guard_done(g);
    lua_settop(L, SLOT_EVENTS);                         // [body, result, events]
    lua_setfield(L, SLOT_RESULT, "events");             // [body, result]
    lua_pushinteger(L, r.nrecords);
    lua_setfield(L, SLOT_RESULT, "records");
    return 1;
}

void tide_lua_open_stream_records(lua_State *L)
{
    tide_codec_guard_push_shared(L);                    // [core, guard]
    lua_pushcclosure(L, l_decode_stream_records, 1);    // [core, fn]
    lua_setfield(L, -2, "decode_stream_records");
}
