/*
 * lua_store.c - the `tide.sqlite` module: a thin binding of store.c.
 *
 *   local sqlite = require "tide.sqlite"
 *   local db, err = sqlite.open(path, {busy_timeout_ms = 10000, synchronous = "normal"})
 *   db:init()                          -- create the schema if missing
 *   db:begin()  db:commit()  db:rollback()          -- BEGIN IMMEDIATE ...
 *   db:savepoint()  db:release()  db:rollback_to()  -- one append's savepoint
 *   db:in_transaction() -> boolean
 *   db:max_version(stream) -> n (0 for a new stream)
 *   db:insert_events(stream, first_version, {{type=, data=, meta=}, ...}) -> true
 *   db:load(stream, after_version) -> {{position=, stream=, version=, type=, data=, meta=}, ...}
 *   db:read_all(after_position, limit) -> same shape, in position order
 *   db:get_snapshot(stream) -> {version=, state=, meta=} | false
 *   db:put_snapshot(stream, version, state, meta) -> true
 *   db:exec(sql) -> true                -- statements without parameters or rows (DDL)
 *   db:query(sql, ...) -> rows, changes -- one statement, cached; ... bound to ?1..?n
 *       (string, number: integer when integral, boolean: 0/1, nil: NULL);
 *       rows = { {col1, col2, ...}, ... } (NULL columns are nil); changes =
 *       rows changed by it when it writes. A UNIQUE/PRIMARY KEY violation
 *       fails with type "Conflict".
 *   db:path()  db:close()
 *   db:writer_start(group_max)  db:enqueue(item)  db:close_group()  db:run_here(max)
 *   db:collect()                        -- the writer thread (below)
 *   sqlite.cpus() -> n                  -- CPUs this process may run on
 *
 * Failures that happen in normal operation return nil, err with err a
 * tide.error: type "Conflict" | "Busy" | "StoreError", kind "conflict" or
 * "store", message, retryable, code ("ECONFLICT"...); wrong argument types
 * and use after close raise.
 * Transaction control stays with the caller (lua/tide/store/sqlite.lua runs
 * group commit); nothing here yields.
 */
#include "lua_store.h"

#include <lauxlib.h>
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "lua_handle.h"
#include "store.h"
#include "writer.h"

#define DB_MT "tide.sqlite.db"

struct db {
    struct tide_store *s; /* first: the handle (NULL once closed) */
    struct tide_store_writer *w; /* the writer thread, once started */
    int anchors;          /* registry ref of {[a->anchor] = item} while queued */
    struct tide_store *r; /* with the writer: a second connection for reads */
    struct tide_store_options opts; /* what r is opened with */
    int main_tx;          /* the caller's own transaction is open on s */
};

static struct db *check_handle(lua_State *L)
{
    return tide_lua_handle_check(L, DB_MT, "tide.sqlite: the store is closed");
}

/* The store, for a use on this thread: the writer's open group is
 * committed and the writer idle first (writer.h). */
static struct tide_store *check_db(lua_State *L)
{
    struct db *d = check_handle(L);
    if (d->w != NULL)
        tide_store_writer_quiesce(d->w);
    return d->s;
}

/* The connection for a read (load, read_all, get_snapshot): with the
 * writer thread, the second connection, which sees only what is committed
 * (WAL) and waits for nobody; else, or inside the caller's own
 * transaction (whose writes it must see), the store's. */
static struct tide_store *check_reader(lua_State *L)
{
    struct db *d = check_handle(L);
    if (d->r != NULL && !d->main_tx)
        return d->r;
    return check_db(L);
}

static const char *type_of(int code)
{
    switch (code) {
    case TIDE_ECONFLICT: return "Conflict";
    case TIDE_EBUSY: return "Busy";
    default: return "StoreError";
    }
}

/* tide's kind of a store failure (lua/tide/error.lua): a lost race is a
 * conflict, a locked database a store failure worth retrying. */
static const char *kind_of(int code)
{
    return code == TIDE_ECONFLICT ? "conflict" : "store";
}

/* Pushes nil, err; returns 2. err is a tide.error (lua/tide/error.lua, the
 * one error type of tide's Lua) with kind, type, message, retryable and
 * code. Should tide's Lua library not be on package.path, err is the same
 * fields in a plain table. */
static int push_fail(lua_State *L, const struct tide_error *err)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 5); // [nil, fields]
    lua_pushstring(L, kind_of(err->code));
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, type_of(err->code));
    lua_setfield(L, -2, "type");
    lua_pushstring(L, err->message);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, err->code == TIDE_EBUSY);
    lua_setfield(L, -2, "retryable");
    lua_pushstring(L, tide_store_error_name(err->code));
    lua_setfield(L, -2, "code");
    lua_getglobal(L, "require");     // [nil, fields, require]
    lua_pushliteral(L, "tide.error"); // [nil, fields, require, name]
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_pop(L, 1); // [nil, fields]
        return 2;
    }
    lua_getfield(L, -1, "new");      // [nil, fields, terror, new]
    lua_pushvalue(L, -3);            // [nil, fields, terror, new, fields]
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 2); // [nil, fields]
        return 2;
    }                                // [nil, fields, terror, err]
    lua_replace(L, -3);              // [nil, err, terror]
    lua_pop(L, 1);                   // [nil, err]
    return 2;
}

/* Argument idx as an integer in [min, 2^53]; raises otherwise. */
static int64_t check_int(lua_State *L, int idx, const char *name, int64_t min)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "tide.sqlite: %s must be an integer, got %s", name, luaL_typename(L, idx));
    lua_Number n = lua_tonumber(L, idx);
    if (n != floor(n) || n < (lua_Number)min || n > 9007199254740992.0)
        luaL_error(L, "tide.sqlite: %s must be an integer >= %d, got %f", name, (int)min, n);
    return (int64_t)n;
}

/* Argument idx as a string (may hold NULs). */
static const char *check_string(lua_State *L, int idx, const char *name, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "tide.sqlite: %s must be a string, got %s", name, luaL_typename(L, idx));
    return lua_tolstring(L, idx, len);
}

/* Argument idx as a string or nil (NULL). */
static const char *opt_string(lua_State *L, int idx, const char *name, size_t *len)
{
    if (lua_isnoneornil(L, idx)) {
        *len = 0;
        return NULL;
    }
    return check_string(L, idx, name, len);
}

static void push_text(lua_State *L, const char *p, size_t len)
{
    if (p == NULL)
        lua_pushnil(L);
    else
        lua_pushlstring(L, p, len);
}

// sqlite.open(path [, opts]) -> db | nil, err
static int l_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct tide_store_options opts;
    tide_store_options_init(&opts);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "busy_timeout_ms"); // [path, opts, v]
        if (!lua_isnil(L, -1)) {
            int64_t ms = check_int(L, -1, "busy_timeout_ms", 0);
            opts.busy_timeout_ms = ms > 0x7fffffff ? 0x7fffffff : (int)ms;
        }
        lua_getfield(L, 2, "synchronous"); // [path, opts, v, sync]
        if (!lua_isnil(L, -1)) {
            const char *sync = lua_tostring(L, -1);
            if (lua_type(L, -1) != LUA_TSTRING || (strcmp(sync, "normal") != 0 && strcmp(sync, "full") != 0))
                return luaL_error(L, "tide.sqlite: synchronous must be \"normal\" or \"full\"");
            opts.synchronous = strcmp(sync, "full") == 0 ? TIDE_STORE_SYNC_FULL : TIDE_STORE_SYNC_NORMAL;
        }
        lua_settop(L, 2); // [path, opts]
    }
    /* the userdata first, so that nothing can raise between open and the
     * moment __gc owns the store */
    struct db *d = tide_lua_handle_new(L, sizeof(*d), DB_MT); // [.., db]
    struct tide_error err;
    tide_error_clear(&err);
    d->opts = opts;
    if (tide_store_open(&d->s, path, &opts, &err) < 0)
        return push_fail(L, &err);
    return 1;
}

/* The methods that take no argument and return true | nil, err. */
#define SIMPLE(name, fn)                                   \
    static int name(lua_State *L)                          \
    {                                                      \
        struct tide_store *s = check_db(L);                \
        struct tide_error err;                             \
        tide_error_clear(&err);                            \
        if (fn(s, &err) < 0)                               \
            return push_fail(L, &err);                     \
        lua_pushboolean(L, 1);                             \
        return 1;                                          \
    }

SIMPLE(l_init, tide_store_init)

/* begin/commit/rollback: the caller's own transaction; the writer thread
 * starts no group while one is open. */
#define TX(name, fn)                                                \
    static int name(lua_State *L)                                   \
    {                                                               \
        struct db *d = check_handle(L);                             \
        struct tide_store *s = check_db(L);                         \
        struct tide_error err;                                      \
        tide_error_clear(&err);                                     \
        int rc = fn(s, &err);                                       \
        d->main_tx = tide_store_in_transaction(s);                  \
        if (d->w != NULL)                                           \
            tide_store_writer_main_tx(d->w, d->main_tx);            \
        if (rc < 0)                                                 \
            return push_fail(L, &err);                              \
        lua_pushboolean(L, 1);                                      \
        return 1;                                                   \
    }

TX(l_begin, tide_store_begin)
TX(l_commit, tide_store_commit)
TX(l_rollback, tide_store_rollback)
SIMPLE(l_savepoint, tide_store_savepoint)
SIMPLE(l_release, tide_store_release)
SIMPLE(l_rollback_to, tide_store_rollback_to)

static int l_in_transaction(lua_State *L)
{
    lua_pushboolean(L, tide_store_in_transaction(check_db(L)));
    return 1;
}

// db:max_version(stream) -> n | nil, err
static int l_max_version(lua_State *L)
{
    struct tide_store *s = check_db(L);
    size_t len;
    const char *stream = check_string(L, 2, "stream", &len);
    struct tide_error err;
    tide_error_clear(&err);
    int64_t v = 0;
    if (tide_store_max_version(s, stream, len, &v, &err) < 0)
        return push_fail(L, &err);
    lua_pushnumber(L, (lua_Number)v);
    return 1;
}

/* events[i][name] onto the stack (left there, so the string stays alive),
 * checked to be a string (or nil when optional). */
static const char *event_field(lua_State *L, int ev, int i, const char *name, int optional, size_t *len)
{
    lua_getfield(L, ev, name); // [.., v]
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING)
        return lua_tolstring(L, -1, len);
    if (t == LUA_TNIL && optional) {
        *len = 0;
        return NULL;
    }
    luaL_error(L, "tide.sqlite: insert_events: events[%d].%s must be a string%s, got %s", i, name,
               optional ? " or nil" : "", luaL_typename(L, -1));
    return NULL;
}

// db:insert_events(stream, first_version, events) -> true | nil, err
static int l_insert_events(lua_State *L)
{
    struct tide_store *s = check_db(L);
    size_t stream_len;
    const char *stream = check_string(L, 2, "stream", &stream_len);
    int64_t first = check_int(L, 3, "first_version", 1);
    luaL_checktype(L, 4, LUA_TTABLE);
    int n = (int)lua_objlen(L, 4);
    /* every event is read and checked before any is written (a raise must
     * not leave half an append behind), into a stack array for the usual
     * few, else a userdata (freed by the collector, even after a raise);
     * the strings stay alive in the events table, argument 4 */
    struct tide_store_event few[8];
    struct tide_store_event *evs = few;
    if (n > 8)
        evs = lua_newuserdata(L, (size_t)n * sizeof(*evs)); // [.., scratch]
    int top = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 4, i); // [.., ev]
        if (!lua_istable(L, -1))
            return luaL_error(L, "tide.sqlite: insert_events: events[%d] must be a table", i);
        struct tide_store_event *ev = &evs[i - 1];
        memset(ev, 0, sizeof(*ev));
        ev->stream = stream;
        ev->stream_len = stream_len;
        ev->version = first + i - 1;
        ev->type = event_field(L, -1, i, "type", 0, &ev->type_len); // [.., ev, type]
        ev->data = event_field(L, -2, i, "data", 1, &ev->data_len); // [.., ev, type, data]
        ev->meta = event_field(L, -3, i, "meta", 1, &ev->meta_len); // [.., ev, type, data, meta]
        lua_settop(L, top);
    }
    struct tide_error err;
    tide_error_clear(&err);
    for (int i = 0; i < n; i++) {
        if (tide_store_insert_event(s, &evs[i], &err) < 0)
            return push_fail(L, &err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes the array of the rows of the read begun on s. */
static int push_rows(lua_State *L, struct tide_store *s)
{
    struct tide_error err;
    tide_error_clear(&err);
    struct tide_store_event ev;
    lua_newtable(L); // [.., list]
    int n = 0, rc;
    while ((rc = tide_store_next(s, &ev, &err)) == 1) {
        lua_createtable(L, 0, 6); // [.., list, ev]
        lua_pushnumber(L, (lua_Number)ev.position);
        lua_setfield(L, -2, "position");
        push_text(L, ev.stream, ev.stream_len);
        lua_setfield(L, -2, "stream");
        lua_pushnumber(L, (lua_Number)ev.version);
        lua_setfield(L, -2, "version");
        push_text(L, ev.type, ev.type_len);
        lua_setfield(L, -2, "type");
        push_text(L, ev.data, ev.data_len);
        lua_setfield(L, -2, "data");
        push_text(L, ev.meta, ev.meta_len);
        lua_setfield(L, -2, "meta");
        lua_rawseti(L, -2, ++n); // [.., list]
    }
    if (rc < 0)
        return push_fail(L, &err);
    return 1;
}

// db:load(stream, after_version) -> events | nil, err
static int l_load(lua_State *L)
{
    struct tide_store *s = check_reader(L);
    size_t len;
    const char *stream = check_string(L, 2, "stream", &len);
    int64_t after = lua_isnoneornil(L, 3) ? 0 : check_int(L, 3, "after_version", 0);
    struct tide_error err;
    tide_error_clear(&err);
    if (tide_store_load(s, stream, len, after, &err) < 0)
        return push_fail(L, &err);
    return push_rows(L, s);
}

// db:read_all(after_position, limit) -> events | nil, err
static int l_read_all(lua_State *L)
{
    struct tide_store *s = check_reader(L);
    int64_t after = check_int(L, 2, "after_position", 0);
    int64_t limit = check_int(L, 3, "limit", 1);
    struct tide_error err;
    tide_error_clear(&err);
    if (tide_store_read_all(s, after, limit, &err) < 0)
        return push_fail(L, &err);
    return push_rows(L, s);
}

// db:get_snapshot(stream) -> {version=, state=, meta=} | false | nil, err
static int l_get_snapshot(lua_State *L)
{
    struct tide_store *s = check_reader(L);
    size_t len;
    const char *stream = check_string(L, 2, "stream", &len);
    struct tide_error err;
    tide_error_clear(&err);
    struct tide_store_snapshot snap;
    int rc = tide_store_get_snapshot(s, stream, len, &snap, &err);
    if (rc < 0)
        return push_fail(L, &err);
    if (rc == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_createtable(L, 0, 3); // [.., snap]
    lua_pushnumber(L, (lua_Number)snap.version);
    lua_setfield(L, -2, "version");
    push_text(L, snap.state, snap.state_len);
    lua_setfield(L, -2, "state");
    push_text(L, snap.meta, snap.meta_len);
    lua_setfield(L, -2, "meta");
    tide_store_end_read(s);
    return 1;
}

// db:put_snapshot(stream, version, state, meta) -> true | nil, err
static int l_put_snapshot(lua_State *L)
{
    struct tide_store *s = check_db(L);
    size_t slen, stlen, mlen;
    const char *stream = check_string(L, 2, "stream", &slen);
    int64_t version = check_int(L, 3, "version", 0);
    const char *state = opt_string(L, 4, "state", &stlen);
    const char *meta = opt_string(L, 5, "meta", &mlen);
    struct tide_error err;
    tide_error_clear(&err);
    if (tide_store_put_snapshot(s, stream, slen, version, state, stlen, meta, mlen, &err) < 0)
        return push_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

// db:exec(sql) -> true | nil, err
static int l_exec(lua_State *L)
{
    struct tide_store *s = check_db(L);
    const char *sql = luaL_checkstring(L, 2);
    struct tide_error err;
    tide_error_clear(&err);
    if (tide_store_exec(s, sql, &err) < 0)
        return push_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

#define QUERY_MAX_PARAMS 32
#define QUERY_MAX_COLS 32

// db:query(sql, ...) -> rows, changes | nil, err
static int l_query(lua_State *L)
{
    struct tide_store *s = check_db(L);
    size_t sql_len;
    const char *sql = check_string(L, 2, "sql", &sql_len);
    int n = lua_gettop(L) - 2;
    if (n > QUERY_MAX_PARAMS)
        return luaL_error(L, "tide.sqlite: query: at most %d parameters", QUERY_MAX_PARAMS);
    struct tide_store_value params[QUERY_MAX_PARAMS];
    for (int i = 0; i < n; i++) {
        int idx = 3 + i; /* stays on the stack: its text outlives the query */
        struct tide_store_value *v = &params[i];
        memset(v, 0, sizeof(*v));
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            v->type = TIDE_SV_NULL;
            break;
        case LUA_TBOOLEAN:
            v->type = TIDE_SV_INT;
            v->i = lua_toboolean(L, idx);
            break;
        case LUA_TNUMBER: {
            lua_Number x = lua_tonumber(L, idx);
            if (x == floor(x) && x >= -9007199254740992.0 && x <= 9007199254740992.0) {
                v->type = TIDE_SV_INT;
                v->i = (int64_t)x;
            } else {
                v->type = TIDE_SV_REAL;
                v->d = x;
            }
            break;
        }
        case LUA_TSTRING:
            v->type = TIDE_SV_TEXT;
            v->p = lua_tolstring(L, idx, &v->len);
            break;
        default:
            return luaL_error(L, "tide.sqlite: query: parameter %d must be a string, number, boolean or nil, got %s",
                              i + 1, luaL_typename(L, idx));
        }
    }
    struct tide_error err;
    tide_error_clear(&err);
    if (tide_store_query(s, sql, sql_len, params, n, &err) < 0)
        return push_fail(L, &err);
    struct tide_store_value cols[QUERY_MAX_COLS];
    int ncols = 0, rc, nrows = 0;
    lua_newtable(L); // [.., rows]
    while ((rc = tide_store_query_next(s, cols, QUERY_MAX_COLS, &ncols, &err)) == 1) {
        lua_createtable(L, ncols, 0); // [.., rows, row]
        for (int i = 0; i < ncols; i++) {
            switch (cols[i].type) {
            case TIDE_SV_INT: lua_pushnumber(L, (lua_Number)cols[i].i); break;
            case TIDE_SV_REAL: lua_pushnumber(L, cols[i].d); break;
            case TIDE_SV_TEXT: lua_pushlstring(L, cols[i].p, cols[i].len); break;
            default: continue; /* NULL: leave nil */
            }
            lua_rawseti(L, -2, i + 1);
        }
        lua_rawseti(L, -2, ++nrows); // [.., rows]
    }
    if (rc < 0)
        return push_fail(L, &err);
    lua_pushnumber(L, (lua_Number)tide_store_changes(s)); // [.., rows, changes]
    return 2;
}

/* ---- group commit: appends as one C call, on the writer thread ----------- */

/* An append item {stream=, expected=, reached=, events={{type=, data=, meta=}...}}
 * or a snapshot item {snapshot=true, stream=, version=, state=, meta=} at
 * idx as a new struct tide_store_append (malloc'd with its events; free
 * it with free_append) whose strings are borrowed from the item: keep it
 * anchored. Raises on wrong types before allocating anything. */
static struct tide_store_append *make_append(lua_State *L, int idx)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int top = lua_gettop(L);
    size_t slen;
    lua_getfield(L, idx, "stream"); // [.., stream]
    const char *stream = check_string(L, -1, "stream", &slen);
    lua_getfield(L, idx, "snapshot"); // [.., stream, snapshot]
    int snapshot = lua_toboolean(L, -1);
    struct tide_store_append *a;
    if (snapshot) {
        lua_getfield(L, idx, "version"); // [.., stream, snapshot, version]
        int64_t version = check_int(L, -1, "version", 0);
        lua_getfield(L, idx, "state");   // [.., version, state]
        lua_getfield(L, idx, "meta");    // [.., version, state, meta]
        size_t stlen, mlen;
        const char *state = opt_string(L, -2, "state", &stlen);
        const char *meta = opt_string(L, -1, "meta", &mlen);
        a = calloc(1, sizeof(*a));
        if (a == NULL)
            luaL_error(L, "tide.sqlite: out of memory");
        a->snapshot = 1;
        a->expected = version;
        a->state = state;
        a->state_len = stlen;
        a->meta = meta;
        a->meta_len = mlen;
    } else {
        lua_getfield(L, idx, "expected"); // [.., stream, snapshot, expected]
        int64_t expected = check_int(L, -1, "expected", 0);
        lua_getfield(L, idx, "events");   // [.., expected, events]
        luaL_checktype(L, -1, LUA_TTABLE);
        int ev = lua_gettop(L);
        size_t n = lua_objlen(L, ev);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, ev, (int)i); // [.., events, e]
            if (!lua_istable(L, -1))
                luaL_error(L, "tide.sqlite: append: events[%d] must be a table", (int)i);
            size_t len;
            event_field(L, -1, (int)i, "type", 0, &len); // [.., events, e, type]
            event_field(L, -2, (int)i, "data", 1, &len); // [.., events, e, type, data]
            event_field(L, -3, (int)i, "meta", 1, &len); // [.., events, e, type, data, meta]
            lua_pop(L, 4);                               // [.., events]
        }
        a = calloc(1, sizeof(*a) + n * sizeof(struct tide_store_event));
        if (a == NULL)
            luaL_error(L, "tide.sqlite: out of memory");
        struct tide_store_event *events = (struct tide_store_event *)(a + 1);
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, ev, (int)i + 1); // [.., events, e]
            /* the strings stay alive: the events table holds them */
            events[i].type = event_field(L, -1, (int)i + 1, "type", 0, &events[i].type_len);
            events[i].data = event_field(L, -2, (int)i + 1, "data", 1, &events[i].data_len);
            events[i].meta = event_field(L, -3, (int)i + 1, "meta", 1, &events[i].meta_len);
            lua_pop(L, 4); // [.., events]
        }
        a->expected = expected;
        lua_getfield(L, idx, "reached"); // [.., events, reached]
        a->reached = lua_toboolean(L, -1);
        a->events = events;
        a->nevents = n;
    }
    a->stream = stream;
    a->stream_len = slen;
    a->current = -1;
    lua_settop(L, top);
    return a;
}

static void free_append(struct tide_store_append *a)
{
    free(a->message);
    free(a);
}

/* Writes a's outcome into the item table at idx: done = true, and result =
 * the last version, or code ("ECONFLICT"...), message and, for a Conflict
 * found by the version check, current_version. */
static void set_outcome(lua_State *L, int idx, const struct tide_store_append *a)
{
    if (a->code == 0) {
        lua_pushnumber(L, (lua_Number)a->last);
        lua_setfield(L, idx, "result");
    } else {
        lua_pushstring(L, tide_store_error_name(a->code));
        lua_setfield(L, idx, "code");
        if (a->message != NULL) {
            lua_pushstring(L, a->message);
            lua_setfield(L, idx, "message");
        }
        if (a->current >= 0) {
            lua_pushnumber(L, (lua_Number)a->current);
            lua_setfield(L, idx, "current_version");
        }
    }
    lua_pushboolean(L, 1);
    lua_setfield(L, idx, "done");
}

// db:writer_start(group_max) -> fd | nil, err: starts the writer thread (once).
static int l_writer_start(lua_State *L)
{
    struct db *d = check_handle(L);
    int64_t group_max = check_int(L, 2, "group_max", 1);
    if (d->w == NULL) {
        struct tide_error err;
        tide_error_clear(&err);
        if (tide_store_writer_new(&d->w, d->s, group_max > 0x7fffffff ? 0x7fffffff : (int)group_max, &err) < 0)
            return push_fail(L, &err);
        lua_newtable(L);
        d->anchors = luaL_ref(L, LUA_REGISTRYINDEX);
        /* reads on a connection of their own: they neither wait for the
         * writer nor end its group early (without one, they go on s) */
        const char *path = tide_store_path(d->s);
        if (strcmp(path, ":memory:") == 0 || tide_store_open(&d->r, path, &d->opts, &err) < 0)
            d->r = NULL; /* a database in memory is this connection's alone */
    }
    lua_pushinteger(L, tide_store_writer_fd(d->w));
    return 1;
}

static struct db *check_writer(lua_State *L)
{
    struct db *d = check_handle(L);
    if (d->w == NULL)
        luaL_error(L, "tide.sqlite: the writer thread is not started (db:writer_start)");
    return d;
}

// db:enqueue(item): queues the item's append (or snapshot) for the writer
// thread; db:collect sets its outcome once its group ended.
static int l_enqueue(lua_State *L)
{
    struct db *d = check_writer(L);
    struct tide_store_append *a = make_append(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->anchors); // [db, item, anchors]
    /* a reference, not the ever-growing seq, as the key: references are
     * reused, so the anchors stay a small array instead of a hash of new
     * keys that rehashes as the appends go by */
    lua_pushvalue(L, 2);
    a->anchor = luaL_ref(L, -2); // anchors[a->anchor] = item
    tide_store_writer_add(d->w, a);
    return 0;
}

// db:close_group(): COMMIT once what is queued is in.
static int l_close_group(lua_State *L)
{
    tide_store_writer_close_group(check_writer(L)->w);
    return 0;
}

// db:run_here(max) -> true when the group was committed on this thread (the
// writer idle, at most max appends queued: see tide_store_writer_run_here;
// db:collect then takes the outcomes), false when it is left to the writer
// (then db:close_group).
static int l_run_here(lua_State *L)
{
    struct db *d = check_writer(L);
    int64_t max = check_int(L, 2, "max", 0);
    lua_pushboolean(L, tide_store_writer_run_here(d->w, max > 0x7fffffff ? 0x7fffffff : (int)max));
    return 1;
}

/* Sets the outcome of every finished append into its item and drops its
 * anchor. stats: where {transactions, largest group} go. Returns how many. */
static int collect(lua_State *L, struct db *d, int64_t stats[2])
{
    struct tide_store_append *a = tide_store_writer_take(d->w, stats);
    int n = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->anchors); // [.., anchors]
    while (a != NULL) {
        struct tide_store_append *next = a->next;
        lua_rawgeti(L, -1, a->anchor); // [.., anchors, item]
        if (lua_istable(L, -1))
            set_outcome(L, lua_gettop(L), a);
        lua_pop(L, 1);
        luaL_unref(L, -1, a->anchor);
        free_append(a);
        a = next;
        n++;
    }
    lua_pop(L, 1);
    return n;
}

// db:collect() -> finished, transactions, largest_group: the outcomes of
// the appends whose group ended, into their items.
static int l_collect(lua_State *L)
{
    struct db *d = check_writer(L);
    int64_t stats[2] = {0, 0};
    int n = collect(L, d, stats);
    lua_pushinteger(L, n);
    lua_pushnumber(L, (lua_Number)stats[0]);
    lua_pushnumber(L, (lua_Number)stats[1]);
    return 3;
}

static int l_path(lua_State *L)
{
    lua_pushstring(L, tide_store_path(check_db(L)));
    return 1;
}

// db:close(); also __gc. Closing twice is fine.
static int l_close(lua_State *L)
{
    struct db *d = luaL_checkudata(L, 1, DB_MT);
    if (d->w != NULL) {
        /* closed groups commit; an open one fails: its leader has not
         * asked for COMMIT yet. Every queued item gets its outcome. */
        tide_store_writer_stop(d->w, "group commit failed: tide.sqlite: the store is closed");
        collect(L, d, NULL);
        tide_store_writer_delete(d->w);
        d->w = NULL;
        luaL_unref(L, LUA_REGISTRYINDEX, d->anchors);
        tide_store_close(d->r);
        d->r = NULL;
    }
    tide_store_close(tide_lua_handle_close(L, DB_MT));
    return 0;
}

static int l_tostring(lua_State *L)
{
    struct db *d = luaL_checkudata(L, 1, DB_MT);
    if (d->s == NULL)
        lua_pushliteral(L, "tide.sqlite.db (closed)");
    else
        lua_pushfstring(L, "tide.sqlite.db (%s)", tide_store_path(d->s));
    return 1;
}

static const luaL_Reg db_methods[] = {
    {"init", l_init},
    {"begin", l_begin},
    {"commit", l_commit},
    {"rollback", l_rollback},
    {"savepoint", l_savepoint},
    {"release", l_release},
    {"rollback_to", l_rollback_to},
    {"in_transaction", l_in_transaction},
    {"max_version", l_max_version},
    {"insert_events", l_insert_events},
    {"load", l_load},
    {"read_all", l_read_all},
    {"get_snapshot", l_get_snapshot},
    {"put_snapshot", l_put_snapshot},
    {"exec", l_exec},
    {"query", l_query},
    {"writer_start", l_writer_start},
    {"enqueue", l_enqueue},
    {"close_group", l_close_group},
    {"run_here", l_run_here},
    {"collect", l_collect},
    {"path", l_path},
    {"close", l_close},
    {NULL, NULL},
};

// sqlite.cpus() -> the CPUs this process may run on (its affinity mask;
// 1 when it cannot be read): whether a writer thread has a core of its own.
static int l_cpus(lua_State *L)
{
    cpu_set_t set;
    int n = 1;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set);
    lua_pushinteger(L, n);
    return 1;
}

int luaopen_tide_sqlite(lua_State *L)
{
    tide_lua_handle_type(L, DB_MT, db_methods, l_close, l_tostring); // []
    lua_newtable(L); // [M]
    lua_pushcfunction(L, l_open);
    lua_setfield(L, -2, "open");
    lua_pushcfunction(L, l_cpus);
    lua_setfield(L, -2, "cpus");
    lua_pushinteger(L, TIDE_STORE_SCHEMA_VERSION);
    lua_setfield(L, -2, "schema_version");
    lua_pushinteger(L, TIDE_STORE_BUSY_TIMEOUT_MS);
    lua_setfield(L, -2, "busy_timeout_ms");
    return 1;
}
