/*
 * lua_sigv4.c - binding of sigv4.c and credentials.c into `tide.core`:
 *
 *   core.sign(req, creds, opts)     -> headers [, debug]
 *   core.sha256_hex(s)              -> hex string (OpenSSL's SHA-256: the
 *                                      floor the signing bench compares with)
 *   core.aws_ini(path)              -> {[section] = {key = value}} | false
 *                                      (no such file) | nil, err: one of the
 *                                      shared AWS files, for tide.credentials
 *   core.sha1_hex(s)                -> hex SHA-1 of s (the SSO token cache's
 *                                      file names; not for security)
 *
 * Wrong argument types raise (caller bugs); unreadable or malformed files
 * return nil, err. No message carries a secret.
 *
 * core.sign is a leaf called for every request, so it goes through the FFI
 * (tide_ffi.h): lua/tide/sigv4.lua reads and checks the arguments, which the
 * JIT turns into a few instructions each, then makes one FFI call to
 * tide_ffi_sigv4_sign (~0.05 us; the Lua C API took ~0.5 us for the ~80
 * calls of reading three tables). tide_lua_open_sign only installs it.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <openssl/evp.h>

#include "credentials.h"
#include "lua_buffer.h"
#include "lua_core.h"
#include "sigv4.h"

#define SHA256_MT "tide.sigv4.sha256"

/* An upvalue of sha256_hex: OpenSSL's digest and context, fetched once per
 * Lua state rather than per digest. */
struct lsha256 {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
};

static int sha256_gc(lua_State *L)
{
    struct lsha256 *h = lua_touserdata(L, 1);
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    h->ctx = NULL;
    h->md = NULL;
    return 0;
}

/* core.sha256_hex(s) -> lowercase hex SHA-256 of s */
static int l_sha256_hex(lua_State *L)
{
    struct lsha256 *h = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "sha256_hex: argument must be a string");
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    unsigned char md[32];
    if (EVP_DigestInit_ex2(h->ctx, h->md, NULL) != 1 || EVP_DigestUpdate(h->ctx, s, len) != 1
        || EVP_DigestFinal_ex(h->ctx, md, NULL) != 1)
        return luaL_error(L, "sha256_hex: OpenSSL's SHA-256 digest failed");
    char hex[65];
    tide_sigv4_hex(md, hex);
    lua_pushlstring(L, hex, 64);
    return 1;
}

/* visitor of core.aws_ini: the result table is at index 2, the current
 * section's table (if any) at index 3 */
static int ini_visit(void *ud, const char *section, const char *key, const char *value,
                     struct tide_error *err)
{
    lua_State *L = ud;
    (void)err;
    if (key == NULL) {
        lua_settop(L, 2);                 // [path, out]
        lua_getfield(L, 2, section);      // [path, out, sec|nil]
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);              // [path, out, sec]
            lua_pushvalue(L, -1);
            lua_setfield(L, 2, section);  // [path, out, sec]
        }
        return 0;
    }
    lua_pushstring(L, value);             // [path, out, sec, value]
    lua_setfield(L, 3, key);              // [path, out, sec]
    return 0;
}

/* core.aws_ini(path) -> sections | false | nil, err */
static int l_aws_ini(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_newtable(L); // [path, out]
    bool exists = false;
    struct tide_error err;
    if (tide_aws_ini_read(path, ini_visit, L, &exists, &err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    lua_settop(L, 2);
    if (!exists)
        lua_pushboolean(L, 0);
    return 1;
}

/* core.sha1_hex(s) -> lowercase hex SHA-1 of s */
static int l_sha1_hex(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(s, len, md, &n, EVP_sha1(), NULL) != 1 || n != 20)
        return luaL_error(L, "sha1_hex: OpenSSL's SHA-1 digest failed");
    static const char digits[] = "0123456789abcdef";
    char hex[41];
    for (unsigned i = 0; i < n; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    lua_pushlstring(L, hex, 40);
    return 1;
}

void tide_lua_open_sigv4(lua_State *L)
{
    // [core]
    struct lsha256 *h = lua_newuserdata(L, sizeof(*h)); // [core, ud]
    memset(h, 0, sizeof(*h));
    luaL_newmetatable(L, SHA256_MT); // [core, ud, mt]
    lua_pushcfunction(L, sha256_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2); // [core, ud]
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = EVP_MD_CTX_new();
    if (h->md == NULL || h->ctx == NULL)
        luaL_error(L, "tide.core: OpenSSL has no SHA-256 or is out of memory");
    lua_pushcclosure(L, l_sha256_hex, 1); // [core, sha256_hex]
    lua_setfield(L, -2, "sha256_hex");    // [core]
    lua_pushcfunction(L, l_aws_ini);
    lua_setfield(L, -2, "aws_ini");
    lua_pushcfunction(L, l_sha1_hex);
    lua_setfield(L, -2, "sha1_hex");
}

void tide_lua_open_sign(lua_State *L)
{
    // [core]
    lua_getglobal(L, "require");          // [core, require]
    lua_pushliteral(L, "tide.sigv4");     // [core, require, name]
    if (lua_pcall(L, 1, 1, 0) != 0)       // [core, sigv4 | message]
        luaL_error(L, "tide.core: core.sign is lua/tide/sigv4.lua: put tide's Lua library on "
                      "package.path (%s)", lua_tostring(L, -1));
    lua_getfield(L, -1, "new");           // [core, sigv4, new]
    luaL_getmetatable(L, TIDE_BUFFER_MT); // [core, sigv4, new, buffer_mt]
    lua_call(L, 1, 1);                    // [core, sigv4, sign]
    lua_setfield(L, -3, "sign");          // [core, sigv4]
    lua_pop(L, 1);                        // [core]
}
