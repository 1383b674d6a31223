/*
 * lua_fd.c - `engine.read(fd [, max])`: one read(2) of a descriptor the
 * loop said is readable (`tide batch` reads its commands from stdin so,
 * beside its requests).
 *
 *   engine.read(fd [, max]) -> bytes ("" at end of file) | nil, message
 */
#include "lua_engine.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

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

void tide_lua_open_fd(lua_State *L)
{
    // [mod]
    lua_pushcfunction(L, engine_read);
    lua_setfield(L, -2, "read");
}
