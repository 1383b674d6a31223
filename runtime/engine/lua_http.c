/*
 * lua_http.c - binding of http.c into `tide.engine`:
 *
 *   local e = engine.new{max_connections=, connect_timeout_ms=, timeout_ms=,
 *                        ca_bundle=, verify_tls=true, gather_us=1000}
 *       -- gather_us: see tide_http_opts in http.h (0: off)
 *   local id = e:submit{method=, url=, headers={name=value}, body=, timeout_ms=,
 *                       response_headers={name...}}
 *       -- body: a string or a buffer of core.encode_request_buffer
 *       -- response_headers: when given, the completion's headers hold only
 *       -- these (names in any case, given back in lower case)
 *   for _, c in ipairs(e:poll(timeout_ms)) do ... end
 *       -- {id=, status=, headers={lowercase=value}, body=}
 *       -- or {id=, error={kind=, message=}}
 *   local done, ready = e:poll(timeout_ms, {fd, ...})
 *       -- also waits for the fds to be readable; ready = the fds that are
 *   e:watch(fd); e:unwatch(fd)
 *       -- fd joins the engine's own epoll set: every poll waits for it
 *       -- with no extra system call, and lists it in ready while readable
 *   e:pending(); e:cancel(id); e:close()
 *
 * Wrong argument types raise; a URL the client cannot use returns
 * nil, {kind="url", message=}.
 */
#include "lua_engine.h"

#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <string.h>

#include "http.h"
#include "lua_buffer.h"
#include "lua_handle.h"

#define ENGINE_MT "tide.engine"
#define ERROR_MT "tide.engine.error"

/* At most this many extra fds per poll (the scheduler passes a handful). */
#define POLL_MAX_FDS 1024

struct engine {
    struct tide_http *http;
    /* A result being turned into a table: if that raises (out of memory),
     * the next poll or close still releases it. */
    struct tide_http_result *cur;
};

static struct engine *check_engine(lua_State *L)
{
    return tide_lua_handle_check(L, ENGINE_MT, "tide.engine: engine is closed");
}

/* Pushes {kind=, message=} with a __tostring. */
static void push_error(lua_State *L, const char *kind, const char *message)
{
    lua_createtable(L, 0, 2); // [err]
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    luaL_getmetatable(L, ERROR_MT); // [err, mt]
    lua_setmetatable(L, -2);        // [err]
}

static int error_tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kind");    // [err, kind]
    lua_getfield(L, 1, "message"); // [err, kind, message]
    lua_pushfstring(L, "%s: %s", luaL_optstring(L, 2, "error"), luaL_optstring(L, 3, "?"));
    return 1;
}

/* The value on top as a whole count (a pool size, milliseconds,
 * microseconds): a non-negative number, rounded up, at most INT_MAX.
 * Raises naming `name` otherwise. Pops it. */
static long pop_count(lua_State *L, const char *name)
{
    // [.., v]
    if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) < 0)
        luaL_error(L, "tide.engine: %s must be a non-negative number", name);
    lua_Number n = lua_tonumber(L, -1);
    lua_pop(L, 1); // [..]
    /* clamped before the cast: a huge double does not fit a long */
    return n > INT_MAX ? INT_MAX : (long)ceil(n);
}

/* opts[name] (opts at idx) as a whole count (pop_count), or def when nil. */
static long opt_count(lua_State *L, int idx, const char *name, long def)
{
    lua_getfield(L, idx, name); // [.., v]
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return def;
    }
    return pop_count(L, name);
}

// engine.new([opts]) -> engine | nil, err
static int engine_new(lua_State *L)
{
    struct tide_http_opts opts;
    tide_http_opts_init(&opts);
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        opts.max_connections = opt_count(L, 1, "max_connections", opts.max_connections);
        opts.connect_timeout_ms = opt_count(L, 1, "connect_timeout_ms", opts.connect_timeout_ms);
        opts.timeout_ms = opt_count(L, 1, "timeout_ms", opts.timeout_ms);
        opts.gather_us = opt_count(L, 1, "gather_us", opts.gather_us);
        lua_getfield(L, 1, "ca_bundle"); // [opts, ca]  (left there: keeps the string alive)
        if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "tide.engine: ca_bundle must be a string");
            opts.ca_bundle = lua_tostring(L, -1);
        }
        lua_getfield(L, 1, "verify_tls"); // [opts, ca, verify]
        if (!lua_isnil(L, -1)) {
            if (!lua_isboolean(L, -1))
                luaL_error(L, "tide.engine: verify_tls must be a boolean");
            opts.verify_tls = lua_toboolean(L, -1);
        }
        lua_pop(L, 1); // [opts, ca]
    }
    struct engine *e = tide_lua_handle_new(L, sizeof(*e), ENGINE_MT); // [.., e]
    struct tide_error err;
    tide_error_clear(&err);
    e->http = tide_http_new(&opts, &err);
    if (e->http == NULL) {
        lua_pushnil(L);
        push_error(L, "other", err.message);
        return 2;
    }
    return 1;
}

/* The field names submit reads and poll writes, interned once and kept as
 * upvalues of both: lua_getfield and lua_setfield would hash each name
 * again on every request. */
enum {
    K_METHOD, K_URL, K_BODY, K_TIMEOUT_MS, K_HEADERS, K_RESPONSE_HEADERS, K_ID, K_STATUS,
    K_ERROR, K_COUNT
};
static const char *const KEYS[K_COUNT] = {
    "method", "url", "body", "timeout_ms", "headers", "response_headers", "id", "status",
    "error",
};
#define KEY(k) lua_upvalueindex(1 + (k))

/* Headers of a request read into an array on the C stack; more go to a
 * GC-owned block. */
#define STACK_HEADERS 32
/* At most this many names in response_headers. */
#define MAX_KEEP_HEADERS 32

/* Pushes req[KEYS[k]] of the request table at index 2: raw for a plain
 * table (what the scheduler passes), through metamethods otherwise, as
 * lua_getfield would. Returns its type. */
static int req_field(lua_State *L, bool plain, int k)
{
    if (plain) {
        lua_pushvalue(L, KEY(k)); // [.., name]
        lua_rawget(L, 2);         // [.., v]
    } else {
        lua_getfield(L, 2, KEYS[k]); // [.., v]
    }
    return lua_type(L, -1);
}

/* Reads req[KEYS[k]] as a string (or nil when optional), left on the stack
 * to anchor it. */
static const char *req_string(lua_State *L, bool plain, int k, bool required)
{
    int t = req_field(L, plain, k); // [.., v]
    if (t == LUA_TNIL && !required)
        return NULL;
    if (t != LUA_TSTRING)
        luaL_error(L, "tide.engine: submit: %s must be a string%s", KEYS[k],
                   required ? "" : " or nil");
    return lua_tostring(L, -1);
}

/* Reads the headers table at hidx into hs (room for cap). Numeric values are
 * converted to strings kept on the stack below the iteration, so that the
 * GC keeps them. Returns the count, or cap + 1 when there are more. */
static size_t read_headers(lua_State *L, int hidx, struct tide_http_header *hs, size_t cap)
{
    size_t n = 0;
    lua_pushnil(L); // [.., headers, nil]
    while (lua_next(L, hidx)) { // [.., headers, strs.., k, v]
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNUMBER))
            luaL_error(L, "tide.engine: submit: headers must map strings to strings");
        if (n == cap) {
            lua_pop(L, 2); // [.., headers, strs..]
            return cap + 1;
        }
        hs[n].name = lua_tostring(L, -2);
        if (vt == LUA_TNUMBER) {
            luaL_checkstack(L, 3, "tide.engine: submit: too many headers");
            lua_pushvalue(L, -1);              // [.., k, v, v]
            hs[n].value = lua_tostring(L, -1); // converted copy
            lua_insert(L, -3);                 // [.., str, k, v]
        } else {
            hs[n].value = lua_tostring(L, -1);
        }
        n++;
        lua_pop(L, 1); // [.., headers, strs.., k]
    }
    return n;
}

// e:submit(req) -> id | nil, err
static int engine_submit(lua_State *L)
{
    struct engine *e = check_engine(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    bool plain = !lua_getmetatable(L, 2); // [e, req (, mt)]
    lua_settop(L, 2);
    struct tide_http_request req;
    memset(&req, 0, sizeof(req));
    req.method = req_string(L, plain, K_METHOD, false); // [e, req, method]
    req.url = req_string(L, plain, K_URL, true);        // [.., url]
    int bt = req_field(L, plain, K_BODY);                 // [.., body]  (anchors it)
    if (bt == LUA_TSTRING) {
        req.body = lua_tolstring(L, -1, &req.body_len);
    } else if (bt != LUA_TNIL) {
        /* a buffer of core.encode_request_buffer: copied like a string */
        req.body = tide_codec_tobuffer(L, lua_gettop(L), &req.body_len);
        if (req.body == NULL)
            return luaL_error(L, "tide.engine: submit: body must be a string, a core buffer or nil");
    }
    if (req_field(L, plain, K_TIMEOUT_MS) != LUA_TNIL) // [.., timeout]
        req.timeout_ms = pop_count(L, "timeout_ms"); // [..]
    else
        lua_pop(L, 1);

    struct tide_http_header stack_headers[STACK_HEADERS];
    req.headers = stack_headers;
    int ht = req_field(L, plain, K_HEADERS); // [e, req, method, url, body, headers]
    if (ht != LUA_TNIL) {
        if (ht != LUA_TTABLE)
            return luaL_error(L, "tide.engine: submit: headers must be a table");
        int hidx = lua_gettop(L);
        size_t n = read_headers(L, hidx, stack_headers, STACK_HEADERS);
        if (n > STACK_HEADERS) {
            /* Many headers: count them, then read them again into a GC-owned
             * block (nothing to free if a later step raises). */
            lua_settop(L, hidx);
            size_t count = 0;
            lua_pushnil(L);
            while (lua_next(L, hidx)) {
                count++;
                lua_pop(L, 1);
            }
            struct tide_http_header *hs = lua_newuserdata(L, count * sizeof(*hs)); // [.., headers, hs]
            lua_insert(L, hidx); // [.., hs, headers]
            hidx++;
            n = read_headers(L, hidx, hs, count);
            req.headers = hs;
        }
        req.nheaders = n;
    }

    /* Only these response headers are wanted: the others are not kept,
     * nor made Lua strings. */
    const char *keep[MAX_KEEP_HEADERS];
    int kt = req_field(L, plain, K_RESPONSE_HEADERS); // [.., keep]  (anchors the names)
    if (kt != LUA_TNIL) {
        size_t n = kt == LUA_TTABLE ? lua_objlen(L, -1) : 0;
        if (kt != LUA_TTABLE || n > MAX_KEEP_HEADERS)
            return luaL_error(L, "tide.engine: submit: response_headers must be a list of at"
                                 " most %d header names", MAX_KEEP_HEADERS);
        int kidx = lua_gettop(L);
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, kidx, (int)i + 1); // [.., keep, name]
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "tide.engine: submit: response_headers[%d] must be a string",
                                  (int)i + 1);
            keep[i] = lua_tostring(L, -1); /* anchored by the list */
            lua_pop(L, 1);
        }
        req.keep_headers = keep;
        req.nkeep_headers = n;
    }

    struct tide_error err;
    tide_error_clear(&err);
    uint64_t id = 0;
    int rc = tide_http_submit(e->http, &req, &id, &err);
    if (rc == TIDE_EINVAL)
        return luaL_error(L, "tide.engine: submit: %s", err.message);
    if (rc != 0) {
        lua_pushnil(L);
        push_error(L, rc == TIDE_EURL ? "url" : "other", err.message);
        return 2;
    }
    lua_pushnumber(L, (lua_Number)id);
    return 1;
}

/* Headers are checked for repeats name against name up to this count; a
 * longer list is merged through the table. */
#define SMALL_HEADER_LIST 16

/* Pushes the completion table for res (from engine_poll: its upvalues are
 * the KEYS). */
static void push_result(lua_State *L, const struct tide_http_result *res)
{
    lua_createtable(L, 0, 4); // [c]
    lua_pushvalue(L, KEY(K_ID));
    lua_pushnumber(L, (lua_Number)res->id);
    lua_rawset(L, -3);
    if (res->error != TIDE_HTTP_OK) {
        lua_pushvalue(L, KEY(K_ERROR));
        push_error(L, tide_http_errkind_name(res->error), res->error_message); // [c, "error", err]
        lua_rawset(L, -3);
        return;
    }
    lua_pushvalue(L, KEY(K_STATUS));
    lua_pushinteger(L, (lua_Integer)res->status);
    lua_rawset(L, -3);
    lua_pushvalue(L, KEY(K_HEADERS));
    lua_createtable(L, 0, (int)res->nheaders); // [c, "headers", hdrs]
    bool small = res->nheaders <= SMALL_HEADER_LIST;
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct tide_http_header *h = &res->headers[i];
        bool repeated = !small;
        for (size_t j = 0; small && j < i && !repeated; j++)
            repeated = strcmp(res->headers[j].name, h->name) == 0;
        lua_pushstring(L, h->name); // [.., hdrs, name]
        if (repeated) {
            lua_pushvalue(L, -1);   // [.., hdrs, name, name]
            lua_rawget(L, -3);      // [.., hdrs, name, old]
        }
        if (repeated && !lua_isnil(L, -1)) {
            /* a repeated header: join as HTTP allows (RFC 9110 5.3) */
            lua_pushliteral(L, ", ");
            lua_pushstring(L, h->value);
            lua_concat(L, 3);
        } else {
            if (repeated)
                lua_pop(L, 1);
            lua_pushstring(L, h->value);
        } // [.., hdrs, name, value]
        lua_rawset(L, -3); // [.., hdrs]
    }
    lua_rawset(L, -3); // [c]
    lua_pushvalue(L, KEY(K_BODY));
    lua_pushlstring(L, res->body, res->body_len);
    lua_rawset(L, -3);
}

// e:poll([timeout_ms [, fds]]) -> {completion...} [, {ready fd...}] | nil, err
static int engine_poll(lua_State *L)
{
    struct engine *e = check_engine(L);
    int timeout = 0;
    if (!lua_isnoneornil(L, 2)) {
        lua_Number t = luaL_checknumber(L, 2);
        /* round up: waking early would make the caller spin until due */
        timeout = t < 0 ? -1 : t > 86400000 ? 86400000 : (int)ceil(t);
    }
    /* Extra fds to wait for (readable), in a GC-owned array: nothing to free
     * if something below raises. */
    struct tide_http_waitfd *wfds = NULL;
    unsigned nfds = 0;
    bool want_fds = !lua_isnoneornil(L, 3);
    if (want_fds) {
        luaL_checktype(L, 3, LUA_TTABLE);
        size_t n = lua_objlen(L, 3);
        if (n > POLL_MAX_FDS)
            return luaL_error(L, "tide.engine: poll: at most %d fds", POLL_MAX_FDS);
        nfds = (unsigned)n;
        wfds = lua_newuserdata(L, (n ? n : 1) * sizeof(*wfds)); // [e, t, fds, wfds]
        for (unsigned i = 0; i < nfds; i++) {
            lua_rawgeti(L, 3, (int)i + 1); // [.., wfds, fd]
            if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) < 0 ||
                lua_tonumber(L, -1) > INT_MAX)
                return luaL_error(L, "tide.engine: poll: fds[%d] must be a file descriptor", (int)i + 1);
            wfds[i].fd = (int)lua_tointeger(L, -1);
            wfds[i].events = POLLIN;
            wfds[i].revents = 0;
            lua_pop(L, 1); // [.., wfds]
        }
    }
    if (e->cur) {
        tide_http_release(e->http, e->cur);
        e->cur = NULL;
    }
    struct tide_error err;
    tide_error_clear(&err);
    int n = tide_http_poll(e->http, timeout, wfds, nfds, &err);
    if (n < 0) {
        lua_pushnil(L);
        push_error(L, "other", err.message);
        return 2;
    }
    lua_createtable(L, n, 0); // [.., list]
    int i = 0;
    while ((e->cur = tide_http_next(e->http)) != NULL) {
        push_result(L, e->cur); // [.., list, c]
        lua_rawseti(L, -2, ++i);
        tide_http_release(e->http, e->cur);
        e->cur = NULL;
    }
    unsigned nwatched = 0;
    const int *watched = tide_http_ready(e->http, &nwatched);
    if (!want_fds && nwatched == 0)
        return 1;
    lua_newtable(L); // [.., list, ready]
    int r = 0;
    for (unsigned k = 0; k < nwatched; k++) {
        lua_pushinteger(L, watched[k]);
        lua_rawseti(L, -2, ++r);
    }
    for (unsigned k = 0; k < nfds; k++) {
        /* POLLHUP/POLLERR count as ready: the read that follows reports it */
        if (wfds[k].revents != 0) {
            lua_pushinteger(L, wfds[k].fd);
            lua_rawseti(L, -2, ++r);
        }
    }
    return 2;
}

// e:watch(fd) -> true | nil, message: fd joins the engine's epoll set
// (see tide_http_watch); poll lists it in ready while it is readable
static int engine_watch(lua_State *L)
{
    struct engine *e = check_engine(L);
    lua_Integer fd = luaL_checkinteger(L, 2);
    if (fd < 0 || fd > INT_MAX)
        return luaL_error(L, "tide.engine: watch: fd must be a file descriptor");
    struct tide_error err;
    tide_error_clear(&err);
    if (tide_http_watch(e->http, (int)fd, &err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

// e:unwatch(fd) -> true | false when fd was not watched
static int engine_unwatch(lua_State *L)
{
    struct engine *e = check_engine(L);
    lua_Integer fd = luaL_checkinteger(L, 2);
    lua_pushboolean(L, fd >= 0 && fd <= INT_MAX && tide_http_unwatch(e->http, (int)fd) == 0);
    return 1;
}

// e:pending() -> number of requests submitted and not yet returned by poll
static int engine_pending(lua_State *L)
{
    struct engine *e = check_engine(L);
    lua_pushinteger(L, (lua_Integer)tide_http_pending(e->http));
    return 1;
}

// e:cancel(id) -> true if it was pending
static int engine_cancel(lua_State *L)
{
    struct engine *e = check_engine(L);
    lua_Number id = luaL_checknumber(L, 2);
    lua_pushboolean(L, id >= 1 && id <= 9007199254740992.0 && tide_http_cancel(e->http, (uint64_t)id) == 0);
    return 1;
}

// e:close() and __gc: aborts what is in flight; idempotent
static int engine_close(lua_State *L)
{
    struct engine *e = luaL_checkudata(L, 1, ENGINE_MT);
    if (e->http) {
        tide_http_delete(e->http); /* also frees e->cur */
        e->http = NULL;
        e->cur = NULL;
    }
    return 0;
}

static int engine_tostring(lua_State *L)
{
    struct engine *e = luaL_checkudata(L, 1, ENGINE_MT);
    if (e->http)
        lua_pushfstring(L, "tide.engine (%d pending)", (int)tide_http_pending(e->http));
    else
        lua_pushliteral(L, "tide.engine (closed)");
    return 1;
}

static const luaL_Reg engine_methods[] = {
    {"pending", engine_pending},
    {"watch", engine_watch},
    {"unwatch", engine_unwatch},
    {"cancel", engine_cancel},
    {"close", engine_close},
    {NULL, NULL},
};

void tide_lua_open_http(lua_State *L)
{
    // [mod]
    if (luaL_newmetatable(L, ERROR_MT)) { // [mod, emt]
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, ENGINE_MT)) { // [mod, mt]
        lua_newtable(L); // [mt, methods]
        luaL_register(L, NULL, engine_methods);
        /* submit and poll with the interned field names as upvalues */
        static const struct { const char *name; lua_CFunction fn; } keyed[] = {
            {"submit", engine_submit}, {"poll", engine_poll}};
        for (size_t i = 0; i < sizeof(keyed) / sizeof(keyed[0]); i++) {
            for (int k = 0; k < K_COUNT; k++)
                lua_pushstring(L, KEYS[k]);        // [mt, methods, keys...]
            lua_pushcclosure(L, keyed[i].fn, K_COUNT); // [mt, methods, fn]
            lua_setfield(L, -2, keyed[i].name);    // [mt, methods]
        }
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, engine_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, engine_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, engine_new);
    lua_setfield(L, -2, "new");
}
