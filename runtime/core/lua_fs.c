/* lua_fs.c - the little file-system access the Lua library needs in both
 * hosts: listing the aggregates/projections folders and reading a file's
 * modification time. Neither LuaJIT nor nginx's Lua module offers them. */
#include "lua_core.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <string.h>
#include <sys/stat.h>

/* core.list_dir(path) -> {names...} (sorted, without . and ..) | nil, err */
static int l_list_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR *dir = opendir(path);
    if (dir == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot list directory %s: %s", path, strerror(errno));
        return 2;
    }
    lua_newtable(L); // [names]
    int n = 0;
    struct dirent *ent;
    while ((ent = readdir(dir)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        /* lua_pushstring may raise on memory exhaustion; the DIR would leak,
         * which is acceptable next to an out-of-memory VM. */
        lua_pushstring(L, ent->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(dir);
    lua_getglobal(L, "table"); // [names, table]
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1); // [names]
    return 1;
}

/* core.stat(path) -> {type="file"|"directory"|"other", size=, mtime=} | nil, err
 * mtime is in seconds with nanosecond fraction. */
static int l_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot stat %s: %s", path, strerror(errno));
        return 2;
    }
    lua_createtable(L, 0, 3); // [info]
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
    lua_setfield(L, -2, "type");
    lua_pushnumber(L, (lua_Number)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + (lua_Number)st.st_mtim.tv_nsec / 1e9);
    lua_setfield(L, -2, "mtime");
    return 1;
}

void tide_lua_open_fs(lua_State *L)
{
    lua_pushcfunction(L, l_list_dir); // [core, fn]
    lua_setfield(L, -2, "list_dir");
    lua_pushcfunction(L, l_stat);
    lua_setfield(L, -2, "stat");
}
