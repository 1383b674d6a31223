/*
 * lua_signals.c - binding of signals.c into tide.engine:
 *
 *   local s = engine.signals{"TERM", "INT"}   -- blocks them; nil, message on failure
 *   s:fd()      -> the descriptor to wait on (sched.wait_readable)
 *   s:read()    -> {"TERM", ...}: the signals received since the last read
 *   s:close()   -- restores the previous signal mask (also on __gc)
 */
#include "lua_engine.h"
#include "lua_handle.h"
#include "signals.h"

#include <lauxlib.h>
#include <signal.h>
#include <string.h>

#define SIGNALS_MT "tide.engine.signals"

static const struct {
    const char *name;
    int signo;
} known[] = {
    {"TERM", SIGTERM}, {"INT", SIGINT}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
};
#define NKNOWN (int)(sizeof(known) / sizeof(known[0]))

struct lsignals {
    struct tide_signals *s;
};

static struct lsignals *check_signals(lua_State *L)
{
    return tide_lua_handle_check(L, SIGNALS_MT, "tide.engine: signals object is closed");
}

// engine.signals({"TERM", "INT", ...}) -> signals | nil, message
static int signals_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int signos[NKNOWN], n = 0;
    int count = (int)lua_objlen(L, 1);
    luaL_argcheck(L, count >= 1 && count <= NKNOWN, 1, "a list of 1 to 6 signal names");
    for (int i = 1; i <= count; i++) {
        lua_rawgeti(L, 1, i); // [list, name]
        const char *name = lua_tostring(L, -1);
        int found = -1;
        for (int k = 0; name != NULL && k < NKNOWN; k++)
            if (strcmp(known[k].name, name) == 0)
                found = known[k].signo;
        if (found < 0)
            return luaL_argerror(L, 1, "signal names are TERM, INT, HUP, QUIT, USR1, USR2");
        signos[n++] = found;
        lua_pop(L, 1);
    }
    struct lsignals *ls = tide_lua_handle_new(L, sizeof(*ls), SIGNALS_MT); // [list, ls]
    struct tide_error err;
    tide_error_clear(&err);
    ls->s = tide_signals_new(signos, n, &err);
    return ls->s != NULL ? 1 : tide_lua_handle_fail(L, err.message);
}

static int signals_fd(lua_State *L)
{
    lua_pushinteger(L, tide_signals_fd(check_signals(L)->s));
    return 1;
}

// s:read() -> {"TERM", ...} | nil, message
static int signals_read(lua_State *L)
{
    struct lsignals *ls = check_signals(L);
    lua_newtable(L); // [s, list]
    int n = 0, signo = 0, rc;
    struct tide_error err;
    tide_error_clear(&err);
    while ((rc = tide_signals_next(ls->s, &signo, &err)) == 1) {
        const char *name = "OTHER";
        for (int k = 0; k < NKNOWN; k++)
            if (known[k].signo == signo)
                name = known[k].name;
        lua_pushstring(L, name);
        lua_rawseti(L, -2, ++n);
    }
    return rc < 0 ? tide_lua_handle_fail(L, err.message) : 1;
}

static int signals_close(lua_State *L)
{
    tide_signals_delete(tide_lua_handle_close(L, SIGNALS_MT));
    return 0;
}

void tide_lua_open_signals(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"fd", signals_fd}, {"read", signals_read}, {"close", signals_close}, {NULL, NULL}};
    tide_lua_handle_type(L, SIGNALS_MT, methods, signals_close, NULL); // [mod]
    lua_pushcfunction(L, signals_new);
    lua_setfield(L, -2, "signals");
}
