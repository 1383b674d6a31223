/*
 * cmd_script.c - `tide script FILE.lua [ARGS...]`: runs a Lua file inside
 * the engine, as `resty` does for OpenResty.
 *
 * The file's chunk runs as the main thread of tide.sched's loop, so its top
 * level may do HTTP requests, spawn, wait and sleep directly. The global
 * `arg` holds arg[0] = FILE and arg[1..] = ARGS (also passed as `...`).
 */
#include "cli.h"

#include <lauxlib.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void script_usage(FILE *out)
{
    fprintf(out,
            "usage: tide script [--config FILE] FILE.lua [ARGS...]\n"
            "\n"
            "Runs FILE.lua inside tide's event loop: top-level code can call\n"
            "require \"tide.sched\" functions (request, spawn, wait, sleep)\n"
            "directly. arg[0] is FILE, arg[1..] the ARGS (also passed as ...).\n"
            "With --config, require(\"tide\").open() in the script reads that\n"
            "file (it is set as TIDE_CONFIG for the script).\n"
            "\n"
            "Lua modules are found through $LUA_PATH when it is set, otherwise\n"
            "in the lua/ folder beside the tide binary and in " TIDE_LUA_LDIR ".\n"
            "\n"
            "exit status: 0 success, 1 the script raised an error (message and\n"
            "traceback on stderr), 2 bad usage or FILE cannot be read.\n");
}

/* Sets the global `arg` table. */
static void set_arg(lua_State *L, const char *self, int nargs, char **args)
{
    lua_createtable(L, nargs, 2); // [arg]
    lua_pushstring(L, self);
    lua_rawseti(L, -2, -1);
    for (int i = 0; i <= nargs; i++) { /* args[0] is the script */
        lua_pushstring(L, args[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg"); // []
}

/* Runs in protected mode: [chunk, args...] -> sched.run(chunk, args...). */
static int run_in_sched(lua_State *L)
{
    int n = lua_gettop(L);      // [chunk, args...]
    tide_cli_push_sched_run(L); // [chunk, args..., run]
    lua_insert(L, 1);           // [run, chunk, args...]
    lua_call(L, n, 0);              // []
    return 0;
}

int tide_cmd_script(int argc, char **argv)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            script_usage(stdout);
            return TIDE_EXIT_OK;
        }
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        const char *config = NULL;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config = argv[i] + 9;
        if (config != NULL) {
            /* checked here: a script that never opens tide would not notice */
            if (access(config, R_OK) != 0) {
                fprintf(stderr, "tide script: cannot read the config file '%s': %s\n", config, strerror(errno));
                return TIDE_EXIT_USAGE;
            }
            setenv("TIDE_CONFIG", config, 1);
            continue;
        }
        fprintf(stderr, "tide script: unknown option '%s'\n", argv[i]);
        script_usage(stderr);
        return TIDE_EXIT_USAGE;
    }
    if (i >= argc) {
        fprintf(stderr, "tide script: missing FILE\n");
        script_usage(stderr);
        return TIDE_EXIT_USAGE;
    }
    const char *file = argv[i];
    int nargs = argc - i - 1;

    lua_State *L = tide_cli_lua_new();
    if (L == NULL)
        return TIDE_EXIT_FAILURE;

    int status = TIDE_EXIT_OK;
    int rc = luaL_loadfile(L, file); // [chunk] or [msg]
    if (rc == LUA_ERRFILE) {
        /* LuaJIT's message: "cannot open FILE" (+ the reason) */
        tide_cli_lua_report(L);
        status = TIDE_EXIT_USAGE;
        goto out;
    }
    if (rc != 0) {
        tide_cli_lua_report(L); /* "FILE:LINE: ... near ..." */
        status = TIDE_EXIT_FAILURE;
        goto out;
    }
    lua_pushcfunction(L, run_in_sched); // [chunk, f]
    lua_insert(L, -2);                  // [f, chunk]
    if (!lua_checkstack(L, nargs + 4)) {
        fprintf(stderr, "tide: too many arguments\n");
        status = TIDE_EXIT_USAGE;
        goto out;
    }
    for (int a = 0; a < nargs; a++)
        lua_pushstring(L, argv[i + 1 + a]); // [f, chunk, args...]
    set_arg(L, "tide", nargs, argv + i);
    if (lua_pcall(L, 1 + nargs, 0, 0) != 0) {
        /* sched.run re-raises the script's error with its own traceback */
        tide_cli_lua_report(L);
        status = TIDE_EXIT_FAILURE;
    }
out:
    fflush(stdout);
    lua_close(L);
    return status;
}
