/* lua_random.c - core.random_bytes / core.random_hex from OpenSSL's CSPRNG:
 * ClientRequestTokens and jitter seeds must not repeat across processes
 * started in the same second, which math.randomseed(os.time()) would do. */
#include "lua_core.h"

#include <lauxlib.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

#define RANDOM_MAX_BYTES 256

/* core.random_hex draws from a pool of CSPRNG bytes refilled 4 KiB at a
 * time: a command id per command asked RAND_bytes for 16 bytes each time,
 * and each such call costs about as much as the 4 KiB (OpenSSL's DRBG
 * locks, looks up its parameters and checks the pid per call). The pool is
 * per thread, and emptied in a forked child (pthread_atfork), so that no
 * two processes hand out the same bytes. */
#define POOL_BYTES 4096
#define POOL_MAX_TAKE 64
static _Thread_local unsigned char pool[POOL_BYTES];
static _Thread_local size_t pool_left;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_forget(void) { pool_left = 0; }
static void pool_init(void) { pthread_atfork(NULL, NULL, pool_forget); }

static int pool_take(unsigned char *out, size_t n)
{
    pthread_once(&pool_once, pool_init);
    if (pool_left < n) {
        if (RAND_bytes(pool, POOL_BYTES) != 1)
            return 0;
        pool_left = POOL_BYTES;
    }
    unsigned char *p = pool + (POOL_BYTES - pool_left);
    memcpy(out, p, n);
    memset(p, 0, n); /* handed out once */
    pool_left -= n;
    return 1;
}

static int push_random(lua_State *L, int hex)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= RANDOM_MAX_BYTES, 1, "must be 1..256 bytes");
    unsigned char buf[RANDOM_MAX_BYTES];
    int ok = hex && n <= POOL_MAX_TAKE ? pool_take(buf, (size_t)n) : RAND_bytes(buf, (int)n);
    if (ok != 1)
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
