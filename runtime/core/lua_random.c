/* lua_random.c - core.random_bytes / core.random_hex from OpenSSL's CSPRNG:
 * ClientRequestTokens and jitter seeds must not repeat across processes
 * started in the same second, which math.randomseed(os.time()) would do. */
#include "lua_core.h"

#include <lauxlib.h>
#include <openssl/rand.h>

#define RANDOM_MAX_BYTES 256

static int push_random(lua_State *L, int hex)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= RANDOM_MAX_BYTES, 1, "must be 1..256 bytes");
    unsigned char buf[RANDOM_MAX_BYTES];
    if (RAND_bytes(buf, (int)n) != 1)
        return luaL_error(L, "random_bytes: OpenSSL RAND_bytes failed");
    if (!hex) {
        lua_pushlstring(L, (const char *)buf, (size_t)n);
        return 1;
    }
    static const char digits[] = "0123456789abcdef";
    char out[RANDOM_MAX_BYTES * 2];
    for (lua_Integer i = 0; i < n; i++) {
        out[2 * i] = digits[buf[i] >> 4];
        out[2 * i + 1] = digits[buf[i] & 15];
    }
    lua_pushlstring(L, out, (size_t)n * 2);
    return 1;
}

/* core.random_bytes(n) -> n random bytes */
static int l_random_bytes(lua_State *L) { return push_random(L, 0); }

/* core.random_hex(n) -> 2n hex digits of n random bytes */
static int l_random_hex(lua_State *L) { return push_random(L, 1); }

void tide_lua_open_random(lua_State *L)
{
    lua_pushcfunction(L, l_random_bytes); // [core, fn]
    lua_setfield(L, -2, "random_bytes");
    lua_pushcfunction(L, l_random_hex);
    lua_setfield(L, -2, "random_hex");
}
