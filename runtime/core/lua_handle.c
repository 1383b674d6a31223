/*
 * lua_handle.c - userdata owning one C object (see lua_handle.h).
 */
#include "lua_handle.h"

#include <string.h>

void tide_lua_handle_type(lua_State *L, const char *mt, const luaL_Reg *methods,
                          lua_CFunction close, lua_CFunction tostring)
{
    if (luaL_newmetatable(L, mt)) { // [.., mt]
        lua_newtable(L);            // [.., mt, methods]
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index"); // [.., mt]
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__gc");
        if (tostring != NULL) {
            lua_pushcfunction(L, tostring);
            lua_setfield(L, -2, "__tostring");
        }
    }
    lua_pop(L, 1); // [..]
}

void *tide_lua_handle_new(lua_State *L, size_t size, const char *mt)
{
    void *ud = lua_newuserdata(L, size); // [.., ud]
    memset(ud, 0, size);
    luaL_getmetatable(L, mt);            // [.., ud, mt]
    lua_setmetatable(L, -2);             // [.., ud]
    return ud;
}

void *tide_lua_handle_check(lua_State *L, const char *mt, const char *closed)
{
    void *ud = luaL_checkudata(L, 1, mt);
    void *handle;
    memcpy(&handle, ud, sizeof(handle)); /* the struct's first field */
    if (handle == NULL)
        luaL_error(L, "%s", closed);
    return ud;
}

void *tide_lua_handle_close(lua_State *L, const char *mt)
{
    void *ud = luaL_checkudata(L, 1, mt);
    void *handle;
    memcpy(&handle, ud, sizeof(handle));
    memset(ud, 0, sizeof(handle));
    return handle;
}

int tide_lua_handle_fail(lua_State *L, const char *message)
{
    lua_pushnil(L);
    lua_pushstring(L, message);
    return 2;
}
