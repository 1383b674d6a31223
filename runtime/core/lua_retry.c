/* lua_retry.c - binding of retry.h: core.classify_error, core.backoff. */
#include "lua_core.h"
#include "retry.h"

#include <lauxlib.h>

/* core.classify_error(status, aws_type, transport_kind)
 *   -> "throttled" | "transient" | "never" */
static int l_classify_error(lua_State *L)
{
    int status = (int)luaL_optinteger(L, 1, 0);
    const char *type = luaL_optstring(L, 2, NULL);
    const char *kind = luaL_optstring(L, 3, NULL);
    lua_pushstring(L, tide_retry_class_name(tide_retry_classify(status, type, kind)));
    return 1;
}

/* core.backoff(attempt, base_seconds, cap_seconds, unit01) -> seconds */
static int l_backoff(lua_State *L)
{
    lua_Integer attempt = luaL_checkinteger(L, 1);
    double base = luaL_checknumber(L, 2);
    double cap = luaL_checknumber(L, 3);
    double unit = luaL_checknumber(L, 4);
    luaL_argcheck(L, attempt >= 0, 1, "attempt must be >= 0");
    luaL_argcheck(L, unit >= 0 && unit < 1, 4, "must be in [0, 1)");
    lua_pushnumber(L, tide_retry_backoff_ms((unsigned)attempt, base * 1000, cap * 1000, unit) / 1000);
    return 1;
}

/* core.short_error_type("com.amazonaws...#ThrottlingException") -> "ThrottlingException" */
static int l_short_error_type(lua_State *L)
{
    lua_pushstring(L, tide_retry_short_type(luaL_checkstring(L, 1)));
    return 1;
}

void tide_lua_open_retry(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"classify_error", l_classify_error},
        {"backoff", l_backoff},
        {"short_error_type", l_short_error_type},
        {NULL, NULL},
    };
    for (const luaL_Reg *f = fns; f->name != NULL; f++) { // [core]
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
}
