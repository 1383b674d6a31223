/*
 * cmd_script.c - `tide script FILE.lua [ARGS...]`: runs a Lua file inside
 * the engine, as `resty` does for OpenResty; `tide script -e CODE [ARGS...]`
 * runs CODE, `tide script - [ARGS...]` the code read from stdin.
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
            "       tide script [--config FILE] -e CODE [ARGS...]\n"
            "       tide script [--config FILE] - [ARGS...]      (the code on stdin)\n"
            "\n"
            "Runs Lua code inside tide's event loop, as OpenResty's resty does:\n"
            "top-level code can call require \"tide.sched\" functions (request,\n"
            "spawn, wait, sleep) directly. arg[0] is FILE (\"-e\" or \"-\"),\n"
            "arg[1..] the ARGS (also passed as ...).\n"
            "\n"
            "options:\n"
            "  --config FILE  require(\"tide\").open() in the script reads FILE\n"
            "                 (it is set as TIDE_CONFIG for the script)\n"
            "  -e CODE        run CODE instead of a file\n"
            "  -h, --help     show this help\n"
            "\n"
            "Lua modules are found through $LUA_PATH when it is set, otherwise\n"
            "in the lua/ folder beside the tide binary and in " TIDE_LUA_LDIR ".\n"
            "\n"
            "examples:\n"
            "  tide script -e 'print(require(\"tide\").open():state(\"account\", \"a1\").version)'\n"
            "  echo 'print(#arg, ...)' | tide script - x y\n"
            "  tide script tools/report.lua 2026-12\n"
            "\n"
            "output: what the code prints. exit status: 0 success, 1 the code\n"
            "raised an error (message and traceback on stderr), 2 bad usage or\n"
            "FILE cannot be read.\n");
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
    const char *code = NULL;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        if (strcmp(argv[i], "-e") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tide script: -e needs CODE (tide script --help)\n");
                return TIDE_EXIT_USAGE;
            }
            code = argv[++i];
            i++;
            break; /* what follows is ARGS */
        }
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
        fprintf(stderr, "tide script: unknown option '%s' (tide script --help)\n", argv[i]);
        return TIDE_EXIT_USAGE;
    }
    if (code == NULL && i >= argc) {
        fprintf(stderr, "tide script: missing FILE, -e CODE or - (stdin) (tide script --help)\n");
        return TIDE_EXIT_USAGE;
    }
    /* args: [self, ARGS...] with self FILE, "-" or "-e" */
    char *self_e = "-e";
    char **args = code != NULL ? argv + i - 1 : argv + i;
    int nargs = code != NULL ? argc - i : argc - i - 1;
    const char *file = code != NULL ? NULL : argv[i];

    lua_State *L = tide_cli_lua_new();
    if (L == NULL)
        return TIDE_EXIT_FAILURE;

    int status = TIDE_EXIT_OK;
    int rc;
    if (code != NULL)
        rc = luaL_loadbuffer(L, code, strlen(code), "=(command line)"); // [chunk] or [msg]
    else
        rc = luaL_loadfile(L, strcmp(file, "-") == 0 ? NULL : file); // NULL: stdin
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
        lua_pushstring(L, args[1 + a]); // [f, chunk, args...]
    if (code != NULL)
        args[0] = self_e;
    set_arg(L, "tide", nargs, args);
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
