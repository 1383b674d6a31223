/*
 * lua_watch.c - binding of watch.c (inotify + SIGHUP) into `tide.engine`:
 *
 *   local w = engine.watch{sighup = true}
 *   w:add(dir) -> id | nil, message; w:remove(id); w:fd()
 *   w:read() -> {{kind=, dir=, name=, signo=}, ...}   -- never waits
 *   w:close()
 */
#include "lua_engine.h"

#include <lauxlib.h>

#include "lua_handle.h"
#include "watch.h"

#define WATCH_MT "tide.engine.watch"

struct lwatch {
    struct tide_watch *w;
};

static struct lwatch *check_watch(lua_State *L)
{
    return tide_lua_handle_check(L, WATCH_MT, "tide.engine: watcher is closed");
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
    struct lwatch *lw = tide_lua_handle_new(L, sizeof(*lw), WATCH_MT); // [.., lw]
    struct tide_error err;
    tide_error_clear(&err);
    lw->w = tide_watch_new(sighup, &err);
    return lw->w != NULL ? 1 : tide_lua_handle_fail(L, err.message);
}

// w:add(path) -> id | nil, message
static int watch_add(lua_State *L)
{
    struct lwatch *lw = check_watch(L);
    const char *path = luaL_checkstring(L, 2);
    struct tide_error err;
    tide_error_clear(&err);
    int id = -1;
    if (tide_watch_add(lw->w, path, &id, &err) != 0)
        return tide_lua_handle_fail(L, err.message);
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
    return rc < 0 ? tide_lua_handle_fail(L, err.message) : 1;
}

// w:close() and __gc; idempotent
static int watch_close(lua_State *L)
{
    tide_watch_delete(tide_lua_handle_close(L, WATCH_MT));
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

void tide_lua_open_watch(lua_State *L)
{
    // [mod]
    tide_lua_handle_type(L, WATCH_MT, watch_methods, watch_close, NULL); // [mod]
    lua_pushcfunction(L, watch_new);
    lua_setfield(L, -2, "watch");
}
