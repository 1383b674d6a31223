/*
 * lua_clock.c - the tide process's clocks, in `tide.engine`:
 *
 *   engine.now()     -> seconds (CLOCK_MONOTONIC): timers, timeouts, lag
 *   engine.wall_ms() -> milliseconds since the epoch (CLOCK_REALTIME): event
 *                       timestamps (os.time has only seconds)
 *
 * lua/tide/clock.lua is the one clock tide's Lua reads; in the tide process
 * it reads these.
 */
#include "lua_engine.h"

#include <time.h>

// engine.now() -> monotonic seconds
static int engine_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

// engine.wall_ms() -> milliseconds since the epoch (CLOCK_REALTIME)
static int wall_ms(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec * 1000 + (lua_Number)(ts.tv_nsec / 1000000));
    return 1;
}

void tide_lua_open_clock(lua_State *L)
{
    // [mod]
    lua_pushcfunction(L, engine_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, wall_ms);
    lua_setfield(L, -2, "wall_ms");
}
