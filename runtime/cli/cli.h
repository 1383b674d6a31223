/*
 * cli.h - the `tide` command line: the subcommand table (main.c) and what
 * every subcommand shares. Each subcommand lives in its own cmd_<name>.c
 * and is one `int tide_cmd_<name>(int argc, char **argv)` entry, where
 * argv[0] is the subcommand's name; it returns the process exit status.
 */
#ifndef TIDE_CLI_H
#define TIDE_CLI_H

#include <lua.h>

#include "error.h"

#include "version.h"

/* Exit statuses of every subcommand. */
enum {
    TIDE_EXIT_OK = 0,
    TIDE_EXIT_FAILURE = 1, /* the work failed (script error, request failed) */
    TIDE_EXIT_USAGE = 2,   /* bad command line, bad input, missing file */
    TIDE_EXIT_REJECTED = 3, /* the aggregate rejected the command */
    TIDE_EXIT_CONFLICT = 4, /* still conflicting after the retries */
    TIDE_EXIT_STORE = 5,    /* the store or the network failed */
    TIDE_EXIT_NOT_FOUND = 6, /* what was asked for does not exist (tide read, state, events) */
    TIDE_EXIT_IDEMPOTENCY_MISMATCH = 7, /* a command id sent again with a different command */
};

/* One subcommand of the dispatch table in main.c. */
struct tide_cli_command {
    const char *name;
    const char *summary; /* one line for `tide --help` */
    int (*run)(int argc, char **argv);
};

/* Subcommands. */
int tide_cmd_script(int argc, char **argv);
/* init, exec, batch, events, state, run, project, read, status, replay:
 * implemented in lua/tide/cli.lua */
int tide_cmd_lua(int argc, char **argv);

/* The Lua collector's pause in a tide process until tide.yaml's
 * lua.gc_pause says otherwise (LuaJIT's own default is 200). */
#define TIDE_GC_PAUSE_DEFAULT 400

/* LuaJIT's thresholds in a tide process until tide.yaml's lua.jit_hotloop
 * and lua.jit_hotexit say otherwise (LuaJIT's own: 56 and 10). */
#define TIDE_JIT_HOTLOOP_DEFAULT 1000
#define TIDE_JIT_HOTEXIT_DEFAULT 100

/* Creates a LuaJIT state ready for tide code: standard libraries opened,
 * `tide.core`, `tide.engine` and `tide.sqlite` in package.preload (the
 * copies linked into this binary), package.path/cpath pointing at the project's lua/ next to
 * the executable and at the installed TIDE_LUA_LDIR/TIDE_LUA_CDIR (unless
 * LUA_PATH/LUA_CPATH are set), os.exit closing the state before the
 * process exits (so leak checkers see a clean heap), the collector's
 * pause at TIDE_GC_PAUSE_DEFAULT and the JIT's thresholds at
 * TIDE_JIT_HOTLOOP_DEFAULT and TIDE_JIT_HOTEXIT_DEFAULT.
 * Returns the state (caller owns it: lua_close), or NULL after printing
 * "tide: <why>" to stderr. */
lua_State *tide_cli_lua_new(void);

/* Pushes require("tide.sched").run: // [..] -> [.., run]. Raises as
 * require does. */
void tide_cli_push_sched_run(lua_State *L);

/* Prints "tide: <error value>" to stderr, for the error on top of L's stack
 * (strings as they are, other values through __tostring when they have
 * one). Leaves the stack unchanged. */
void tide_cli_lua_report(lua_State *L);

#endif
