/*
 * lua_httpd.c - binding of httpd.c (the operators' HTTP server) into
 * `tide.engine`, and the process figures its /metrics page reports:
 *
 *   local s = engine.httpd("127.0.0.1:9464") -> server | nil, message
 *   s:port() -> the port it listens on; s:fd() -> the descriptor to wait on
 *   s:timeout() -> seconds the loop may wait before s:run, or nil (no limit)
 *   s:run(handler) -> true | nil, message: answers what is ready, never
 *       waits; handler(method, path) -> status, content_type, body, called
 *       for each complete request inside a pcall (an error answers 500;
 *       the handler must not yield)
 *   s:close()
 *   engine.process() -> {cpu_seconds=, resident_bytes=, open_fds=,
 *       start_time=, curl=}   (Linux /proc; fields absent when unknown)
 */
#include "lua_engine.h"

#include <curl/curl.h>
#include <dirent.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "lua_handle.h"

#define HTTPD_MT "tide.engine.httpd"

struct lhttpd {
    struct tide_httpd *h;
};

static struct lhttpd *check_httpd(lua_State *L)
{
    return tide_lua_handle_check(L, HTTPD_MT, "tide.engine: metrics server is closed");
}

// engine.httpd(addr) -> server | nil, message
static int httpd_new(lua_State *L)
{
    const char *addr = luaL_checkstring(L, 1);
    struct lhttpd *lh = tide_lua_handle_new(L, sizeof(*lh), HTTPD_MT); // [addr, lh]
    struct tide_error err;
    tide_error_clear(&err);
    lh->h = tide_httpd_new(addr, &err);
    return lh->h != NULL ? 1 : tide_lua_handle_fail(L, err.message);
}

static int httpd_port(lua_State *L)
{
    lua_pushinteger(L, tide_httpd_port(check_httpd(L)->h));
    return 1;
}

static int httpd_fd(lua_State *L)
{
    lua_pushinteger(L, tide_httpd_fd(check_httpd(L)->h));
    return 1;
}

static int httpd_timeout(lua_State *L)
{
    long ms = tide_httpd_timeout_ms(check_httpd(L)->h);
    if (ms < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, (lua_Number)ms / 1000.0);
    return 1;
}

/* Calls the Lua handler at stack index 2 for one request. Its results
 * stay on the stack until s:run returns (the server copies them after
 * this returns); s:run drops them. */
static int call_handler(void *ud, const char *method, const char *path, struct tide_httpd_reply *reply)
{
    lua_State *L = ud;
    if (!lua_checkstack(L, 4))
        return -1;
    int top = lua_gettop(L);
    lua_pushvalue(L, 2); // [.., handler]
    lua_pushstring(L, method);
    lua_pushstring(L, path); // [.., handler, method, path]
    if (lua_pcall(L, 2, 3, 0) != 0) {
        lua_settop(L, top);
        return -1;
    }
    // [.., status, content_type, body]
    if (!lua_isnumber(L, -3) || !lua_isstring(L, -1)) {
        lua_settop(L, top);
        return -1;
    }
    reply->status = (int)lua_tointeger(L, -3);
    reply->content_type = lua_isstring(L, -2) ? lua_tostring(L, -2) : NULL;
    reply->body = lua_tolstring(L, -1, &reply->body_len);
    return 0;
}

// s:run(handler) -> true | nil, message
static int httpd_run(lua_State *L)
{
    struct lhttpd *lh = check_httpd(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2); // [s, handler]
    struct tide_error err;
    tide_error_clear(&err);
    int rc = tide_httpd_run(lh->h, call_handler, L, &err);
    lua_settop(L, 2);
    if (rc != 0)
        return tide_lua_handle_fail(L, err.message);
    lua_pushboolean(L, 1);
    return 1;
}

static int httpd_close(lua_State *L)
{
    tide_httpd_delete(tide_lua_handle_close(L, HTTPD_MT));
    return 0;
}

/* The process's start in seconds since the epoch: field 22 of
 * /proc/self/stat (clock ticks since boot) plus the boot time. */
static double start_time(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); // the command name may hold spaces
    if (p == NULL)
        return -1;
    unsigned long long ticks = 0;
    /* after ")": state (field 3) ... starttime (field 22) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &ticks) != 1)
        return -1;
    struct timespec now_real, now_boot;
    clock_gettime(CLOCK_REALTIME, &now_real);
    clock_gettime(CLOCK_BOOTTIME, &now_boot);
    double boot = (double)now_real.tv_sec + now_real.tv_nsec / 1e9 -
                  ((double)now_boot.tv_sec + now_boot.tv_nsec / 1e9);
    return boot + (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

// engine.process() -> {cpu_seconds=, resident_bytes=, open_fds=, start_time=, curl=}
static int process_figures(lua_State *L)
{
    lua_createtable(L, 0, 5); // [t]
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        lua_pushnumber(L, cpu);
        lua_setfield(L, -2, "cpu_seconds");
    }
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        unsigned long size = 0, resident = 0;
        if (fscanf(f, "%lu %lu", &size, &resident) == 2) {
            lua_pushnumber(L, (lua_Number)resident * (lua_Number)sysconf(_SC_PAGESIZE));
            lua_setfield(L, -2, "resident_bytes");
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        lua_pushinteger(L, n - 1); // not the one opendir holds
        lua_setfield(L, -2, "open_fds");
    }
    double st = start_time();
    if (st > 0) {
        lua_pushnumber(L, st);
        lua_setfield(L, -2, "start_time");
    }
    const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    if (cv != NULL && cv->version != NULL) {
        lua_pushstring(L, cv->version);
        lua_setfield(L, -2, "curl");
    }
    return 1;
}

static const luaL_Reg httpd_methods[] = {
    {"port", httpd_port},
    {"fd", httpd_fd},
    {"timeout", httpd_timeout},
    {"run", httpd_run},
    {"close", httpd_close},
    {NULL, NULL},
};

void tide_lua_open_httpd(lua_State *L)
{
    // [mod]
    tide_lua_handle_type(L, HTTPD_MT, httpd_methods, httpd_close, NULL);
    lua_pushcfunction(L, httpd_new);
    lua_setfield(L, -2, "httpd");
    lua_pushcfunction(L, process_figures);
    lua_setfield(L, -2, "process");
}
