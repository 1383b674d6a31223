/*
 * main.c - the `tide` binary: subcommand dispatch and the Lua state every
 * subcommand starts from.
 *
 *   tide <command> [args...]     see `tide --help`
 *
 * Add a command: write cmd_<name>.c with tide_cmd_<name>(), declare it in
 * cli.h and add a row to `commands` below.
 */
#include "cli.h"

#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>

#include <curl/curl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua_core.h"
#include "lua_engine.h"
#include "lua_store.h"

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

/* The commands written in C; every other name goes to the Lua dispatcher
 * (lua/tide/cli.lua), which lists the commands (tide help) and says when a
 * name is unknown. */
static const struct tide_cli_command commands[] = {
    {"script", "run Lua code inside the engine (like OpenResty's resty)", tide_cmd_script},
    {"version", "print the versions of tide, LuaJIT and libcurl", cmd_version},
    {"help", "show the commands, or a command's help: tide help <command>", cmd_help},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct tide_cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int cmd_version(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: tide version\n       tide --version\n\n"
               "Prints the versions of tide, LuaJIT and libcurl.\n\n"
               "Options:\n  -h, --help  show this help\n\n"
               "Examples:\n  tide --version\n  tide version | cut -d' ' -f2\n\n"
               "Output (stdout), one line:\n  tide %s (%s, libcurl %s)\n\n"
               "Exit status: 0; 2 with arguments.\n",
               TIDE_VERSION, LUAJIT_VERSION, curl_version_info(CURLVERSION_NOW)->version);
        return TIDE_EXIT_OK;
    }
    if (argc > 1) {
        fprintf(stderr, "tide version: takes no arguments; usage: tide version\n");
        return TIDE_EXIT_USAGE;
    }
    printf("tide %s (%s, libcurl %s)\n", TIDE_VERSION, LUAJIT_VERSION, curl_version_info(CURLVERSION_NOW)->version);
    return TIDE_EXIT_OK;
}

/* tide help [COMMAND]: a C command's own help, else the Lua dispatcher's
 * (the list, or a Lua command's help). */
static int cmd_help(int argc, char **argv)
{
    if (argc >= 2) {
        const struct tide_cli_command *cmd = find_command(argv[1]);
        if (cmd != NULL && cmd->run != cmd_help && argc == 2) {
            char *sub[] = {argv[1], "--help", NULL};
            return cmd->run(2, sub);
        }
    }
    char *sub[] = {"help", argc >= 2 ? argv[1] : NULL, argc >= 3 ? argv[2] : NULL, NULL};
    return tide_cmd_lua(argc >= 3 ? 3 : argc, sub);
}

/* ---- the Lua state ---------------------------------------------------------- */

/* Directory of the running executable, from /proc/self/exe; "." if unknown. */
static void exe_dir(char *out, size_t size)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (n <= 0) {
        snprintf(out, size, ".");
        return;
    }
    path[n] = '\0';
    snprintf(out, size, "%s", dirname(path));
}

/* package[field] = prefix .. package[field], unless env is set (then
 * LuaJIT already took the path from the environment). */
static void prepend_path(lua_State *L, const char *field, const char *env, const char *prefix)
{
    if (getenv(env) != NULL)
        return;
    lua_getglobal(L, "package");      // [package]
    lua_pushstring(L, prefix);        // [package, prefix]
    lua_getfield(L, -2, field);       // [package, prefix, old]
    lua_concat(L, 2);                 // [package, new]
    lua_setfield(L, -2, field);       // [package]
    lua_pop(L, 1);                    // []
}

/* os.exit(code): LuaJIT's os.exit (upvalue 1) with close = true, after
 * flushing stdout and stderr: closing the state runs every __gc (the engine
 * aborts its transfers) and frees the heap. */
static int exit_closing_state(lua_State *L)
{
    lua_settop(L, 1);                     // [code]
    fflush(stdout);
    fflush(stderr);
    lua_pushvalue(L, lua_upvalueindex(1)); // [code, exit]
    lua_insert(L, 1);                     // [exit, code]
    lua_pushboolean(L, 1);                // [exit, code, true]
    lua_call(L, 2, 0);
    return 0;
}

/* Run by lua_cpcall: setup allocates, and a memory error must be reported. */
static int setup_state(lua_State *L)
{
    luaL_openlibs(L);
    /* the binary's own copies: never load the build/lua/tide .so files beside them */
    static const luaL_Reg preload[] = {
        {"tide.core", luaopen_tide_core},
        {"tide.engine", luaopen_tide_engine},
        {"tide.sqlite", luaopen_tide_sqlite},
    };
    lua_getglobal(L, "package");        // [package]
    lua_getfield(L, -1, "preload");     // [package, preload]
    for (size_t i = 0; i < sizeof(preload) / sizeof(preload[0]); i++) {
        lua_pushcfunction(L, preload[i].func);
        lua_setfield(L, -2, preload[i].name);
    }
    lua_pop(L, 2);                      // []

    char dir[PATH_MAX], buf[4 * PATH_MAX + 256];
    exe_dir(dir, sizeof(dir));
    snprintf(buf, sizeof(buf), "%s/../lua/?.lua;%s/../lua/?/init.lua;%s/?.lua;%s/?/init.lua;",
             dir, dir, TIDE_LUA_LDIR, TIDE_LUA_LDIR);
    prepend_path(L, "path", "LUA_PATH", buf);
    snprintf(buf, sizeof(buf), "%s/lua/?.so;%s/?.so;", dir, TIDE_LUA_CDIR);
    prepend_path(L, "cpath", "LUA_CPATH", buf);

    lua_getglobal(L, "os");                      // [os]
    lua_getfield(L, -1, "exit");                 // [os, exit]
    lua_pushcclosure(L, exit_closing_state, 1);  // [os, exit_closing_state]
    lua_setfield(L, -2, "exit");                 // [os]
    lua_pop(L, 1);                               // []

    /* A command runs through many short paths, each a few times: at
     * LuaJIT's own thresholds the first thousands of commands compile
     * hundreds of traces and side traces (each two mprotect calls, whose
     * TLB flush interrupts every core), which a run of a few thousand
     * commands never earns back. tide.yaml's lua.jit_hotloop and
     * lua.jit_hotexit set them (docs/configuration.md). */
    lua_getglobal(L, "jit");                     // [jit]
    lua_getfield(L, -1, "opt");                  // [jit, opt]
    lua_getfield(L, -1, "start");                // [jit, opt, start]
    lua_pushfstring(L, "hotloop=%d", TIDE_JIT_HOTLOOP_DEFAULT);
    lua_pushfstring(L, "hotexit=%d", TIDE_JIT_HOTEXIT_DEFAULT);
    lua_call(L, 2, 0);                           // [jit, opt]
    lua_pop(L, 2);                               // []
    return 0;
}

lua_State *tide_cli_lua_new(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "tide: cannot create a Lua state (out of memory)\n");
        return NULL;
    }
    if (lua_cpcall(L, setup_state, NULL) != 0) {
        fprintf(stderr, "tide: cannot set up the Lua state: %s\n",
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_close(L);
        return NULL;
    }
    /* A tide process's live heap is small (a few MB) and it allocates a
     * lot per event: at LuaJIT's default pause (200) the collector marks
     * the live heap again every few MB, a tenth of a Streams projection's
     * CPU. tide.yaml's lua.gc_pause sets it (docs/configuration.md). */
    lua_gc(L, LUA_GCSETPAUSE, TIDE_GC_PAUSE_DEFAULT);
    return L;
}

void tide_cli_push_sched_run(lua_State *L)
{
    lua_getglobal(L, "require");    // [.., require]
    lua_pushliteral(L, "tide.sched");
    lua_call(L, 1, 1);              // [.., sched]
    lua_getfield(L, -1, "run");     // [.., sched, run]
    lua_replace(L, -2);             // [.., run]
}

void tide_cli_lua_report(lua_State *L)
{
    const char *msg;
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        lua_pushvalue(L, -1);
    } else if (!luaL_callmeta(L, -1, "__tostring")) {
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
    } // [.., err, text]
    msg = lua_tostring(L, -1);
    fprintf(stderr, "tide: %s\n", msg ? msg : "(error)");
    lua_pop(L, 1);
}

int main(int argc, char **argv)
{
    /* The engine sets CURLOPT_NOSIGNAL, so libcurl leaves SIGPIPE to us: a
     * peer that closes a connection while a request is being written must
     * fail that request (EPIPE), never end the process. Writes to a closed
     * stdout fail the same way (lua/tide/cli.lua stops on them). */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        char *sub[] = {"help", "--missing", NULL};
        return tide_cmd_lua(2, sub);
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0)
        name = "help";
    else if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0)
        name = "version";
    const struct tide_cli_command *cmd = find_command(name);
    if (cmd == NULL)
        return tide_cmd_lua(argc - 1, argv + 1); /* a Lua command, or unknown there */
    if (cmd->run == cmd_help && name != argv[1]) /* -h, --help */
        return cmd_help(1, (char *[]){"help", NULL});
    return cmd->run(argc - 1, argv + 1);
}
