/*
 * lua_kafka.c - binding of kafka.c (the Kafka producer of sink
 * projections) into `tide.engine`:
 *
 *   local p = engine.kafka{ ["bootstrap.servers"] = "...", ... } -> producer | nil, message
 *   p:fd() -> the descriptor to wait on (sched.watch, then wait_readable)
 *   p:produce(topic, key, value, headers, token) -> true | nil, "full" | nil, message
 *       headers: a flat list {name1, value1, name2, value2, ...}; token: an
 *       integer that comes back with the message's delivery report
 *   p:poll() -> delivered, failed, events: serves what is ready, never waits.
 *       delivered: {[token] = count}; failed: a list of {token=, code=,
 *       message=}; events: a list of {kind = "error" | "log", code=,
 *       message=, fatal=}
 *   p:outq() -> messages not yet reported
 *   p:fatal() -> the text of the fatal error, or nil
 *   p:close()
 *
 * Nothing here calls Lua: the reports are gathered into tables.
 */
#include "lua_engine.h"

#include <dlfcn.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "lua_handle.h"

#define KAFKA_MT "tide.engine.kafka"
#define MAX_HEADERS 64

struct lkafka {
    struct tide_kafka *k;
};

static struct lkafka *check_kafka(lua_State *L)
{
    return tide_lua_handle_check(L, KAFKA_MT, "tide.engine: kafka producer is closed");
}

// engine.kafka(props) -> producer | nil, message
static int kafka_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) { // [props, k, v]
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
            return luaL_error(L, "engine.kafka: properties must be name = string pairs");
        n++;
        lua_pop(L, 1);
    }
    struct lkafka *lk = tide_lua_handle_new(L, sizeof(*lk), KAFKA_MT); // [props, lk]
    const char **names = calloc(n + 1, sizeof(*names));
    const char **values = calloc(n + 1, sizeof(*values));
    if (names == NULL || values == NULL) {
        free(names);
        free(values);
        return tide_lua_handle_fail(L, "kafka: out of memory");
    }
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) { // [props, lk, k, v]: both stay referenced by props
        names[i] = lua_tostring(L, -2);
        values[i] = lua_tostring(L, -1);
        i++;
        lua_pop(L, 1);
    }
    struct tide_error err;
    tide_error_clear(&err);
    lk->k = tide_kafka_new(names, values, n, &err);
    free(names);
    free(values);
    return lk->k != NULL ? 1 : tide_lua_handle_fail(L, err.message);
}

static int kafka_fd(lua_State *L)
{
    lua_pushinteger(L, tide_kafka_fd(check_kafka(L)->k));
    return 1;
}

// p:produce(topic, key, value, headers, token) -> true | nil, "full" | nil, message
static int kafka_produce(lua_State *L)
{
    struct lkafka *lk = check_kafka(L);
    const char *topic = luaL_checkstring(L, 2);
    size_t klen = 0, vlen = 0;
    const char *key = luaL_optlstring(L, 3, NULL, &klen);
    const char *value = luaL_checklstring(L, 4, &vlen);
    struct tide_kafka_header h[MAX_HEADERS];
    size_t nh = 0;
    if (!lua_isnoneornil(L, 5)) {
        luaL_checktype(L, 5, LUA_TTABLE);
        size_t len = lua_objlen(L, 5);
        if (len % 2 != 0 || len / 2 > MAX_HEADERS)
            return luaL_error(L, "p:produce: headers must be a flat list of name, value pairs (at most %d)",
                              MAX_HEADERS);
        for (size_t j = 0; j < len; j += 2) {
            lua_rawgeti(L, 5, (int)j + 1);
            lua_rawgeti(L, 5, (int)j + 2); // [.., name, value]: strings held by the headers table
            if (!lua_isstring(L, -2) || !lua_isstring(L, -1))
                return luaL_error(L, "p:produce: header names and values must be strings");
            h[nh].name = lua_tostring(L, -2);
            h[nh].value = lua_tolstring(L, -1, &h[nh].value_len);
            nh++;
            lua_pop(L, 2);
        }
    }
    lua_Number tok = luaL_checknumber(L, 6);
    struct tide_error err;
    tide_error_clear(&err);
    int rc = tide_kafka_produce(lk->k, topic, key, klen, value, vlen, h, nh, (uint64_t)tok, &err);
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    return tide_lua_handle_fail(L, rc == TIDE_EFULL ? "full" : err.message);
}

/* The stack while p:poll serves: [p, delivered, failed, events]. */
static void on_report(void *ud, const struct tide_kafka_report *r)
{
    lua_State *L = ud;
    switch (r->event) {
    case TIDE_KAFKA_DELIVERED: {
        lua_pushnumber(L, (lua_Number)r->token); // [.., token]
        lua_pushvalue(L, -1);
        lua_rawget(L, 2); // [.., token, count|nil]
        lua_Number c = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
        lua_pop(L, 1);
        lua_pushnumber(L, c + 1);
        lua_rawset(L, 2);
        break;
    }
    case TIDE_KAFKA_FAILED:
        lua_createtable(L, 0, 3);
        lua_pushnumber(L, (lua_Number)r->token);
        lua_setfield(L, -2, "token");
        lua_pushstring(L, r->code ? r->code : "");
        lua_setfield(L, -2, "code");
        lua_pushstring(L, r->message ? r->message : "");
        lua_setfield(L, -2, "message");
        lua_rawseti(L, 3, (int)lua_objlen(L, 3) + 1);
        break;
    case TIDE_KAFKA_ERROR:
    case TIDE_KAFKA_LOG:
        lua_createtable(L, 0, 4);
        lua_pushstring(L, r->event == TIDE_KAFKA_ERROR ? "error" : "log");
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, r->code ? r->code : "");
        lua_setfield(L, -2, "code");
        lua_pushstring(L, r->message ? r->message : "");
        lua_setfield(L, -2, "message");
        lua_pushboolean(L, r->fatal);
        lua_setfield(L, -2, "fatal");
        lua_rawseti(L, 4, (int)lua_objlen(L, 4) + 1);
        break;
    }
}

// p:poll() -> delivered, failed, events
static int kafka_poll(lua_State *L)
{
    struct lkafka *lk = check_kafka(L);
    lua_settop(L, 1);
    lua_newtable(L);
    lua_newtable(L);
    lua_newtable(L); // [p, delivered, failed, events]
    if (!lua_checkstack(L, 8))
        return luaL_error(L, "p:poll: no Lua stack left");
    tide_kafka_poll(lk->k, on_report, L);
    return 3;
}

static int kafka_outq(lua_State *L)
{
    lua_pushinteger(L, tide_kafka_outq(check_kafka(L)->k));
    return 1;
}

static int kafka_fatal(lua_State *L)
{
    const char *f = tide_kafka_fatal(check_kafka(L)->k);
    if (f == NULL)
        lua_pushnil(L);
    else
        lua_pushstring(L, f);
    return 1;
}

static int kafka_close(lua_State *L)
{
    tide_kafka_delete(tide_lua_handle_close(L, KAFKA_MT));
    return 0;
}

static const luaL_Reg kafka_methods[] = {
    {"fd", kafka_fd},       {"produce", kafka_produce}, {"poll", kafka_poll},
    {"outq", kafka_outq},   {"fatal", kafka_fatal},     {"close", kafka_close},
    {NULL, NULL},
};

void tide_lua_open_kafka(lua_State *L)
{
    /* librdkafka stays loaded once tide.engine was: its global state
     * (SASL, TLS) outlives the module, and a library unloaded by lua_close
     * (a host that loads engine.so) would leave that state unmapped, which
     * the leak checker reports. The tide binary never unloads it. */
    (void)dlopen("librdkafka.so.1", RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    // [mod]
    tide_lua_handle_type(L, KAFKA_MT, kafka_methods, kafka_close, NULL);
    lua_pushcfunction(L, kafka_new);
    lua_setfield(L, -2, "kafka");
}
