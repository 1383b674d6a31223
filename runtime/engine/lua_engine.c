/*
 * lua_engine.c - the `tide.engine` module: a thin binding of http.c.
 *
 *   local engine = require "tide.engine"
 *   local e = engine.new{max_connections=, connect_timeout_ms=, timeout_ms=,
 *                        ca_bundle=, verify_tls=true}
 *   local id = e:submit{method=, url=, headers={name=value}, body=, timeout_ms=}
 *   for _, c in ipairs(e:poll(timeout_ms)) do ... end
 *       -- {id=, status=, headers={lowercase=value}, body=}
 *       -- or {id=, error={kind=, message=}}
 *   local done, ready = e:poll(timeout_ms, {fd, ...})
 *       -- also waits for the fds to be readable; ready = the fds that are
 *   e:pending(); e:cancel(id); e:close()
 *   engine.now()  -- CLOCK_MONOTONIC seconds
 *   engine.read(fd [, max]) -> bytes ("" at end of file) | nil, message
 *       -- one read(2): call it once poll said fd is readable
 *   local w = engine.watch{sighup = true}       -- inotify + SIGHUP (watch.c)
 *   w:add(dir) -> id | nil, message; w:remove(id); w:fd()
 *   w:read() -> {{kind=, dir=, name=, signo=}, ...}   -- never waits
 *   w:close()
 *
 * Wrong argument types raise; a URL the client cannot use returns
 * nil, {kind="url", message=}. Nothing here yields or calls back into Lua:
 * the scheduler (lua/tide/sched.lua) owns the coroutines.
 */
#include "lua_engine.h"

#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "http.h"
#include "watch.h"

#define ENGINE_MT "tide.engine"
#define ERROR_MT "tide.engine.error"
#define WATCH_MT "tide.engine.watch"

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
    struct engine *e = luaL_checkudata(L, 1, ENGINE_MT);
    if (e->http == NULL)
        luaL_error(L, "tide.engine: engine is closed");
    return e;
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

/* Reads opts[name] as a non-negative integer, or def when absent. */
static long opt_ms(lua_State *L, int idx, const char *name, long def)
{
    lua_getfield(L, idx, name); // [.., v]
    long v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) < 0)
            luaL_error(L, "tide.engine: %s must be a non-negative number", name);
        lua_Number n = lua_tonumber(L, -1);
        /* clamped before the cast: a huge double does not fit a long */
        v = n > INT_MAX ? INT_MAX : (long)ceil(n);
    }
    lua_pop(L, 1);
    return v;
}

// engine.new([opts]) -> engine | nil, err
static int engine_new(lua_State *L)
{
    struct tide_http_opts opts;
    tide_http_opts_init(&opts);
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        opts.max_connections = opt_ms(L, 1, "max_connections", opts.max_connections);
        opts.connect_timeout_ms = opt_ms(L, 1, "connect_timeout_ms", opts.connect_timeout_ms);
        opts.timeout_ms = opt_ms(L, 1, "timeout_ms", opts.timeout_ms);
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
    struct engine *e = lua_newuserdata(L, sizeof(*e)); // [.., e]
    e->http = NULL;
    e->cur = NULL;
    luaL_getmetatable(L, ENGINE_MT);
    lua_setmetatable(L, -2);
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

/* Reads req[name] as a string (or nil when optional). */
static const char *field_string(lua_State *L, int idx, const char *name, bool required, size_t *len)
{
    lua_getfield(L, idx, name); // [.., v]   (left on the stack to anchor it)
    if (lua_isnil(L, -1) && !required)
        return NULL;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "tide.engine: submit: %s must be a string%s", name, required ? "" : " or nil");
    return lua_tolstring(L, -1, len);
}

// e:submit(req) -> id | nil, err
static int engine_submit(lua_State *L)
{
    struct engine *e = check_engine(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    struct tide_http_request req;
    memset(&req, 0, sizeof(req));
    req.method = field_string(L, 2, "method", false, NULL);
    req.url = field_string(L, 2, "url", true, NULL);
    req.body = field_string(L, 2, "body", false, &req.body_len);
    req.timeout_ms = opt_ms(L, 2, "timeout_ms", 0);

    lua_getfield(L, 2, "headers"); // [e, req, method, url, body, headers]
    int hidx = lua_gettop(L);
    if (!lua_isnil(L, hidx)) {
        if (!lua_istable(L, hidx))
            return luaL_error(L, "tide.engine: submit: headers must be a table");
        size_t n = 0;
        lua_pushnil(L); // [.., headers, nil]
        while (lua_next(L, hidx)) { // [.., headers, k, v]
            int vt = lua_type(L, -1);
            if (lua_type(L, -2) != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNUMBER))
                return luaL_error(L, "tide.engine: submit: headers must map strings to strings");
            n++;
            lua_pop(L, 1); // [.., headers, k]
        }
        /* GC-owned scratch: nothing to free if a later step raises. Numeric
         * values are converted into `numbers` so their strings stay alive. */
        struct tide_http_header *hs = lua_newuserdata(L, (n ? n : 1) * sizeof(*hs)); // [.., headers, hs]
        lua_newtable(L); // [.., headers, hs, numbers]
        int numbers = lua_gettop(L);
        size_t i = 0;
        lua_pushnil(L);
        while (lua_next(L, hidx) && i < n) { // [.., numbers, k, v]
            hs[i].name = lua_tostring(L, -2);
            if (lua_type(L, -1) == LUA_TNUMBER) {
                lua_pushvalue(L, -1);              // [.., k, v, v]
                hs[i].value = lua_tostring(L, -1); // converted copy
                lua_rawseti(L, numbers, (int)i + 1); // [.., k, v]
            } else {
                hs[i].value = lua_tostring(L, -1);
            }
            i++;
            lua_pop(L, 1); // [.., numbers, k]
        }
        req.headers = hs;
        req.nheaders = i;
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

/* Pushes the completion table for res. */
static void push_result(lua_State *L, const struct tide_http_result *res)
{
    lua_createtable(L, 0, 4); // [c]
    lua_pushnumber(L, (lua_Number)res->id);
    lua_setfield(L, -2, "id");
    if (res->error != TIDE_HTTP_OK) {
        push_error(L, tide_http_errkind_name(res->error), res->error_message); // [c, err]
        lua_setfield(L, -2, "error");
        return;
    }
    lua_pushinteger(L, (lua_Integer)res->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)res->nheaders); // [c, hdrs]
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct tide_http_header *h = &res->headers[i];
        lua_getfield(L, -1, h->name); // [c, hdrs, old]
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushstring(L, h->value);
        } else {
            /* a repeated header: join as HTTP allows (RFC 9110 5.3) */
            lua_pushliteral(L, ", ");
            lua_pushstring(L, h->value);
            lua_concat(L, 3);
        } // [c, hdrs, value]
        lua_setfield(L, -2, h->name); // [c, hdrs]
    }
    lua_setfield(L, -2, "headers"); // [c]
    lua_pushlstring(L, res->body, res->body_len);
    lua_setfield(L, -2, "body");
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
    if (!want_fds)
        return 1;
    lua_newtable(L); // [.., list, ready]
    int r = 0;
    for (unsigned k = 0; k < nfds; k++) {
        /* POLLHUP/POLLERR count as ready: the read that follows reports it */
        if (wfds[k].revents != 0) {
            lua_pushinteger(L, wfds[k].fd);
            lua_rawseti(L, -2, ++r);
        }
    }
    return 2;
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

// engine.now() -> monotonic seconds
static int engine_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

// engine.read(fd [, max]) -> bytes ("" at end of file) | nil, message
static int engine_read(lua_State *L)
{
    lua_Number fdn = luaL_checknumber(L, 1);
    lua_Number maxn = luaL_optnumber(L, 2, 16384);
    if (fdn < 0 || fdn > INT_MAX)
        return luaL_error(L, "tide.engine: read: fd must be a file descriptor");
    if (maxn < 1 || maxn > 16 * 1024 * 1024)
        return luaL_error(L, "tide.engine: read: max must be between 1 and 16 MiB");
    size_t max = (size_t)maxn;
    /* the common case (stdin lines) on the C stack; more in a GC-owned block */
    char stackbuf[16384];
    char *buf = max <= sizeof(stackbuf) ? stackbuf : lua_newuserdata(L, max);
    ssize_t n;
    do {
        n = read((int)fdn, buf, max);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "read(fd %d): %s", (int)fdn, strerror(errno));
        return 2;
    }
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

// ---- watchers (watch.c) --------------------------------------------------

struct lwatch {
    struct tide_watch *w;
};

static struct lwatch *check_watch(lua_State *L)
{
    struct lwatch *lw = luaL_checkudata(L, 1, WATCH_MT);
    if (lw->w == NULL)
        luaL_error(L, "tide.engine: watcher is closed");
    return lw;
}

// engine.watch([{sighup = bool}]) -> watcher | nil, message
static int watch_new(lua_State *L)
{
    bool sighup = false;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_getfield(L, 1, "sighup"); // [opts, sighup]
        sighup = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    struct lwatch *lw = lua_newuserdata(L, sizeof(*lw)); // [.., lw]
    lw->w = NULL;
    luaL_getmetatable(L, WATCH_MT);
    lua_setmetatable(L, -2);
    struct tide_error err;
    tide_error_clear(&err);
    lw->w = tide_watch_new(sighup, &err);
    if (lw->w == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    return 1;
}

// w:add(path) -> id | nil, message
static int watch_add(lua_State *L)
{
    struct lwatch *lw = check_watch(L);
    const char *path = luaL_checkstring(L, 2);
    struct tide_error err;
    tide_error_clear(&err);
    int id = -1;
    if (tide_watch_add(lw->w, path, &id, &err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    lua_pushinteger(L, id);
    return 1;
}

// w:remove(id) -> true | false when id is unknown
static int watch_remove(lua_State *L)
{
    struct lwatch *lw = check_watch(L);
    int id = (int)luaL_checkinteger(L, 2);
    lua_pushboolean(L, tide_watch_remove(lw->w, id) == 0);
    return 1;
}

// w:fd() -> the descriptor to wait on
static int watch_fd(lua_State *L)
{
    struct lwatch *lw = check_watch(L);
    lua_pushinteger(L, tide_watch_fd(lw->w));
    return 1;
}

// w:read() -> {{kind=, dir=, name=, signo=}, ...} | nil, message
static int watch_read(lua_State *L)
{
    struct lwatch *lw = check_watch(L);
    struct tide_error err;
    tide_error_clear(&err);
    lua_newtable(L); // [w, list]
    int i = 0;
    struct tide_watch_event ev;
    int rc;
    while ((rc = tide_watch_next(lw->w, &ev, &err)) == 1) {
        lua_createtable(L, 0, 4); // [w, list, ev]
        lua_pushstring(L, tide_watch_kind_name(ev.kind));
        lua_setfield(L, -2, "kind");
        lua_pushinteger(L, ev.dir);
        lua_setfield(L, -2, "dir");
        lua_pushstring(L, ev.name);
        lua_setfield(L, -2, "name");
        if (ev.signo) {
            lua_pushinteger(L, ev.signo);
            lua_setfield(L, -2, "signo");
        }
        lua_rawseti(L, -2, ++i); // [w, list]
    }
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    return 1;
}

// w:close() and __gc; idempotent
static int watch_close(lua_State *L)
{
    struct lwatch *lw = luaL_checkudata(L, 1, WATCH_MT);
    tide_watch_delete(lw->w);
    lw->w = NULL;
    return 0;
}

static const luaL_Reg watch_methods[] = {
    {"add", watch_add},
    {"remove", watch_remove},
    {"fd", watch_fd},
    {"read", watch_read},
    {"close", watch_close},
    {NULL, NULL},
};

static const luaL_Reg engine_methods[] = {
    {"submit", engine_submit},
    {"poll", engine_poll},
    {"pending", engine_pending},
    {"cancel", engine_cancel},
    {"close", engine_close},
    {NULL, NULL},
};

static const luaL_Reg module_funcs[] = {
    {"new", engine_new},
    {"now", engine_now},
    {"read", engine_read},
    {"watch", watch_new},
    {NULL, NULL},
};

int luaopen_tide_engine(lua_State *L)
{
    if (luaL_newmetatable(L, ERROR_MT)) { // [emt]
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, ENGINE_MT)) { // [mt]
        lua_newtable(L); // [mt, methods]
        luaL_register(L, NULL, engine_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, engine_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, engine_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, WATCH_MT)) { // [wmt]
        lua_newtable(L); // [wmt, methods]
        luaL_register(L, NULL, watch_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, watch_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L); // [mod]
    luaL_register(L, NULL, module_funcs);
    tide_lua_open_signals(L);
    return 1;
}
