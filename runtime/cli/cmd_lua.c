/*
 * cmd_lua.c - the subcommands written in Lua (lua/tide/cli.lua dispatches to
 * lua/tide/cli/<module>.lua): `tide NAME ARGS...` runs require("tide.cli").main(NAME, ARGS...)
 * inside the engine's scheduler and exits with the status it returns.
 */
#include "cli.h"

#include <lauxlib.h>
#include <stdio.h>

/* [name, args...] -> sched.run(cli.main, name, args...) -> status */
static int run_cli(lua_State *L)
{
    int n = lua_gettop(L);
    tide_cli_push_sched_run(L); // [name, args..., run]
    lua_insert(L, 1);           // [run, name, args...]
    lua_getglobal(L, "require");
    lua_pushliteral(L, "tide.cli");
    lua_call(L, 1, 1);           // [run, name, args..., cli]
    lua_getfield(L, -1, "main"); // [run, name, args..., cli, main]
    lua_replace(L, -2);          // [run, name, args..., main]
    lua_insert(L, 2);            // [run, main, name, args...]
    lua_call(L, n + 1, 1);       // [status]
    return 1;
}

int tide_cmd_lua(int argc, char **argv)
{
    lua_State *L = tide_cli_lua_new();
    if (L == NULL)
        return TIDE_EXIT_FAILURE;
    int status = TIDE_EXIT_FAILURE;
    if (!lua_checkstack(L, argc + 8)) {
        fprintf(stderr, "tide: too many arguments\n");
        lua_close(L);
        return TIDE_EXIT_USAGE;
    }
    lua_pushcfunction(L, run_cli); // [f]
    for (int i = 0; i < argc; i++)
        lua_pushstring(L, argv[i]); // [f, name, args...]
    if (lua_pcall(L, argc, 1, 0) != 0) {
        tide_cli_lua_report(L); /* a bug in tide's own Lua: report it whole */
    } else if (lua_isnumber(L, -1)) {
        status = (int)lua_tointeger(L, -1);
    }
    fflush(stdout);
    lua_close(L);
    return status;
}
