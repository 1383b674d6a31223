/*
 * lua_sigv4.c - binding of sigv4.c and credentials.c into `tide.core`:
 *
 *   core.sign(req, creds, opts)     -> headers [, debug]
 *   core.sha256_hex(s)              -> hex string
 *   core.credentials([opts])        -> {access_key_id=, secret_access_key=,
 *                                       session_token=, source=} | nil, err
 *   core.region([opts])             -> region | nil, err
 *
 * Wrong argument types raise (caller bugs); missing credentials or region
 * and unreadable files return nil, err. No message carries a secret.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "credentials.h"
#include "lua_core.h"
#include "sigv4.h"

#define SIGNER_MT "tide.sigv4.signer"

/* One per lua_State, an upvalue of sign and sha256_hex: the signer and the
 * header array handed to it, both reused from call to call. */
struct lsigner {
    struct tide_sigv4_signer *s;
    struct tide_sigv4_header *hdrs;
    size_t cap;
};

static int signer_gc(lua_State *L)
{
    struct lsigner *ls = lua_touserdata(L, 1);
    tide_sigv4_signer_delete(ls->s);
    free(ls->hdrs);
    ls->s = NULL;
    ls->hdrs = NULL;
    return 0;
}

/* The field names sign reads and writes, interned once and kept as
 * upvalues 2.. of sign: lua_getfield would hash and look up each name on
 * every call, which is a good part of the binding's cost. */
enum {
    K_METHOD, K_HOST, K_PATH, K_QUERY, K_BODY, K_HEADERS,
    K_ACCESS_KEY_ID, K_SECRET_ACCESS_KEY, K_SESSION_TOKEN,
    K_REGION, K_SERVICE, K_TIME, K_NORMALIZE_PATH, K_SIGN_BODY,
    K_SIGN_SESSION_TOKEN, K_DEBUG,
    K_AUTHORIZATION, K_X_AMZ_DATE, K_X_AMZ_SECURITY_TOKEN, K_X_AMZ_CONTENT_SHA256,
    K_COUNT
};
static const char *const KEYS[K_COUNT] = {
    "method", "host", "path", "query", "body", "headers",
    "access_key_id", "secret_access_key", "session_token",
    "region", "service", "time", "normalize_path", "sign_body",
    "sign_session_token", "debug",
    "authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256",
};
#define KEY_UPVALUE(k) lua_upvalueindex(2 + (k))

/* Pushes t[KEYS[k]] for the table at idx, raw: tables given to sign are
 * plain data, and no metamethod may run in the middle of a signature. */
static int field(lua_State *L, int idx, int k)
{
    lua_pushvalue(L, KEY_UPVALUE(k)); // [..., name]
    lua_rawget(L, idx);               // [..., value]
    return lua_type(L, -1);
}

/* The string field KEYS[k] (raises unless a string, or nil when optional).
 * The value is left on the stack, which keeps it alive and saves a pop per
 * field: l_sign resets the stack at the end. */
static const char *str_field(lua_State *L, int idx, const char *tname, int k,
                             bool optional, size_t *len)
{
    int t = field(L, idx, k); // [..., value]
    if (t == LUA_TSTRING)
        return lua_tolstring(L, -1, len);
    if (!(optional && t == LUA_TNIL))
        luaL_error(L, "sign: %s.%s must be a string%s", tname, KEYS[k],
                   optional ? " or nil" : "");
    return NULL;
}

static bool bool_field(lua_State *L, int idx, int k, bool dflt)
{
    int t = field(L, idx, k); // [..., value]
    if (t == LUA_TNIL)
        return dflt;
    if (t != LUA_TBOOLEAN)
        luaL_error(L, "sign: opts.%s must be a boolean or nil", KEYS[k]);
    return lua_toboolean(L, -1);
}

static struct tide_sigv4_header *next_header(lua_State *L, struct lsigner *ls, size_t n)
{
    if (n == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 16;
        struct tide_sigv4_header *h = realloc(ls->hdrs, cap * sizeof(*h));
        if (h == NULL)
            luaL_error(L, "sign: out of memory for headers");
        ls->hdrs = h;
        ls->cap = cap;
    }
    return &ls->hdrs[n];
}

/* Reads req.headers (table at idx) into ls->hdrs. A value may be a string,
 * a number, or a list of strings (a header given several times). Numbers
 * are converted to strings that are left on the stack so that the GC
 * keeps them until the signature is done. Returns the count. */
static size_t read_headers(lua_State *L, int idx, struct lsigner *ls)
{
    size_t n = 0;
    lua_pushnil(L); // [..., nil]
    while (lua_next(L, idx) != 0) { // [..., key, value]
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "sign: req.headers keys must be strings (header names)");
        size_t name_len;
        const char *name = lua_tolstring(L, -2, &name_len);
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING || t == LUA_TNUMBER) {
            struct tide_sigv4_header *h = next_header(L, ls, n++);
            if (t == LUA_TNUMBER) {
                luaL_checkstack(L, 4, "sign: too many numeric headers");
                lua_pushvalue(L, -1);      // [..., key, value, value]
                lua_tolstring(L, -1, NULL); // [..., key, value, str]
                lua_insert(L, -3);         // [..., str, key, value]
            }
            h->name = name;
            h->name_len = name_len;
            h->value = lua_tolstring(L, t == LUA_TNUMBER ? -3 : -1, &h->value_len);
        } else if (t == LUA_TTABLE) {
            size_t count = lua_objlen(L, -1);
            if (count == 0)
                luaL_error(L, "sign: req.headers['%s'] is an empty list", name);
            for (size_t i = 1; i <= count; i++) {
                lua_rawgeti(L, -1, (int)i); // [..., key, list, item]
                if (lua_type(L, -1) != LUA_TSTRING)
                    luaL_error(L, "sign: req.headers['%s'][%d] must be a string", name, (int)i);
                struct tide_sigv4_header *h = next_header(L, ls, n++);
                h->name = name;
                h->name_len = name_len;
                h->value = lua_tolstring(L, -1, &h->value_len);
                lua_pop(L, 1); // [..., key, list] (item anchored in the list)
            }
        } else {
            luaL_error(L, "sign: req.headers['%s'] must be a string or a list of strings", name);
        }
        lua_pop(L, 1); // [..., key]
    }
    return n;
}

/* out[KEYS[k]] = s, for the table on top. */
static void set_key(lua_State *L, int k, const char *s, size_t len)
{
    lua_pushvalue(L, KEY_UPVALUE(k)); // [tbl, name]
    lua_pushlstring(L, s, len);       // [tbl, name, s]
    lua_rawset(L, -3);                // [tbl]
}

static void set_str(lua_State *L, const char *field, const char *s, size_t len)
{
    lua_pushlstring(L, s, len); // [tbl, s]
    lua_setfield(L, -2, field); // [tbl]
}

/* core.sign(req, creds, opts) -> headers [, debug]  (see lua_core.h) */
static int l_sign(lua_State *L)
{
    struct lsigner *ls = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_type(L, 1) != LUA_TTABLE)
        return luaL_error(L, "sign: req must be a table");
    if (lua_type(L, 2) != LUA_TTABLE)
        return luaL_error(L, "sign: creds must be a table");
    if (lua_type(L, 3) != LUA_TTABLE)
        return luaL_error(L, "sign: opts must be a table");
    lua_settop(L, 3); // [req, creds, opts]
    /* the 20 fields read below stay on the stack until the end */
    luaL_checkstack(L, 24, "sign: stack overflow");

    struct tide_sigv4_request req = {0};
    struct tide_sigv4_credentials creds = {0};
    struct tide_sigv4_options opts = {0};
    req.method = str_field(L, 1, "req", K_METHOD, false, NULL);
    req.host = str_field(L, 1, "req", K_HOST, false, NULL);
    req.path = str_field(L, 1, "req", K_PATH, true, NULL);
    req.query = str_field(L, 1, "req", K_QUERY, true, NULL);
    req.body = str_field(L, 1, "req", K_BODY, true, &req.body_len);
    if (req.body == NULL)
        req.body_len = 0;

    creds.access_key_id = str_field(L, 2, "creds", K_ACCESS_KEY_ID, false, NULL);
    creds.secret_access_key = str_field(L, 2, "creds", K_SECRET_ACCESS_KEY, false,
                                        &creds.secret_len);
    creds.session_token = str_field(L, 2, "creds", K_SESSION_TOKEN, true, NULL);
    int token_idx = lua_gettop(L); /* returned as is: no copy of a long string */

    opts.region = str_field(L, 3, "opts", K_REGION, false, NULL);
    opts.service = str_field(L, 3, "opts", K_SERVICE, false, NULL);
    if (field(L, 3, K_TIME) != LUA_TNUMBER) // [req, creds, opts, fields..., time]
        return luaL_error(L, "sign: opts.time must be a number (unix seconds)");
    double t = floor(lua_tonumber(L, -1));
    if (!(t > -1e15 && t < 1e15))
        return luaL_error(L, "sign: opts.time is out of range");
    opts.time = (int64_t)t;
    opts.normalize_path = bool_field(L, 3, K_NORMALIZE_PATH, true);
    opts.sign_body = bool_field(L, 3, K_SIGN_BODY, false);
    opts.sign_session_token = bool_field(L, 3, K_SIGN_SESSION_TOKEN, true);
    opts.debug = bool_field(L, 3, K_DEBUG, false);

    int ht = field(L, 1, K_HEADERS); // [req, creds, opts, fields..., headers]
    int hidx = lua_gettop(L);
    if (ht == LUA_TTABLE)
        req.n_headers = read_headers(L, hidx, ls); // [..., headers, numstr...]
    else if (ht != LUA_TNIL)
        return luaL_error(L, "sign: req.headers must be a table or nil");
    req.headers = ls->hdrs;

    struct tide_sigv4_result r;
    struct tide_error err;
    if (tide_sigv4_sign(ls->s, &req, &creds, &opts, &r, &err) != 0)
        return luaL_error(L, "%s", err.message);

    lua_createtable(L, 0, 4); // [..., out]
    set_key(L, K_AUTHORIZATION, r.authorization, strlen(r.authorization));
    set_key(L, K_X_AMZ_DATE, r.amz_date, 16);
    if (r.session_token != NULL) {
        lua_pushvalue(L, KEY_UPVALUE(K_X_AMZ_SECURITY_TOKEN)); // [..., out, name]
        lua_pushvalue(L, token_idx);                           // [..., out, name, token]
        lua_rawset(L, -3);                                     // [..., out]
    }
    if (r.content_sha256 != NULL)
        set_key(L, K_X_AMZ_CONTENT_SHA256, r.content_sha256, 64);
    if (!opts.debug)
        return 1;
    lua_createtable(L, 0, 4); // [..., out, debug]
    set_str(L, "canonical_request", r.canonical_request, r.canonical_request_len);
    set_str(L, "string_to_sign", r.string_to_sign, r.string_to_sign_len);
    set_str(L, "signature", r.signature, 64);
    /* how many signing keys this lua_State derived so far: lets specs see
     * the cache hit or miss */
    lua_pushnumber(L, (lua_Number)tide_sigv4_key_derivations(ls->s));
    lua_setfield(L, -2, "key_derivations");
    return 2;
}

/* core.sha256_hex(s) -> lowercase hex SHA-256 of s */
static int l_sha256_hex(lua_State *L)
{
    struct lsigner *ls = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "sha256_hex: argument must be a string");
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    char hex[65];
    struct tide_error err;
    if (tide_sigv4_sha256_hex(ls->s, s, len, hex, &err) != 0)
        return luaL_error(L, "%s", err.message);
    lua_pushlstring(L, hex, 64);
    return 1;
}

/* Reads the options table of credentials()/region() (argument 1, may be
 * nil). Strings stay anchored in the table for the call. */
static void cred_opts(lua_State *L, const char *fn, struct tide_credentials_options *o)
{
    static const char *const names[] = {
        "access_key_id", "secret_access_key", "session_token", "region",
        "profile", "credentials_file", "config_file",
    };
    const char **slots[] = {
        &o->access_key_id, &o->secret_access_key, &o->session_token, &o->region,
        &o->profile, &o->credentials_file, &o->config_file,
    };
    memset(o, 0, sizeof(*o));
    int t = lua_type(L, 1);
    if (t == LUA_TNIL || t == LUA_TNONE)
        return;
    if (t != LUA_TTABLE)
        luaL_error(L, "%s: opts must be a table or nil", fn);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        lua_getfield(L, 1, names[i]); // [opts, value]
        int vt = lua_type(L, -1);
        if (vt == LUA_TSTRING)
            *slots[i] = lua_tostring(L, -1);
        else if (vt != LUA_TNIL)
            luaL_error(L, "%s: opts.%s must be a string or nil", fn, names[i]);
        lua_pop(L, 1); // [opts]
    }
}

/* core.credentials([opts]) -> creds | nil, err */
static int l_credentials(lua_State *L)
{
    struct tide_credentials_options o;
    lua_settop(L, 1); // [opts]
    cred_opts(L, "credentials", &o);
    struct tide_credentials c;
    struct tide_error err;
    if (tide_credentials_resolve(&o, &c, &err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    /* Only memory exhaustion can raise below; the C copies would then
     * leak unwiped, which is accepted for a process that is out of memory. */
    lua_createtable(L, 0, 4); // [opts, out]
    lua_pushstring(L, c.access_key_id);
    lua_setfield(L, -2, "access_key_id");
    lua_pushstring(L, c.secret_access_key);
    lua_setfield(L, -2, "secret_access_key");
    if (c.session_token != NULL) {
        lua_pushstring(L, c.session_token);
        lua_setfield(L, -2, "session_token");
    }
    lua_pushstring(L, c.source);
    lua_setfield(L, -2, "source");
    tide_credentials_clear(&c);
    return 1;
}

/* core.region([opts]) -> region | nil, err */
static int l_region(lua_State *L)
{
    struct tide_credentials_options o;
    lua_settop(L, 1); // [opts]
    cred_opts(L, "region", &o);
    char *region = NULL;
    struct tide_error err;
    if (tide_region_resolve(&o, &region, &err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    lua_pushstring(L, region); // [opts, region]
    free(region);
    return 1;
}

void tide_lua_open_sigv4(lua_State *L)
{
    // [core]
    struct lsigner *ls = lua_newuserdata(L, sizeof(*ls)); // [core, ud]
    memset(ls, 0, sizeof(*ls));
    luaL_newmetatable(L, SIGNER_MT); // [core, ud, mt]
    lua_pushcfunction(L, signer_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2); // [core, ud]
    struct tide_error err;
    ls->s = tide_sigv4_signer_new(&err);
    if (ls->s == NULL)
        luaL_error(L, "%s", err.message); /* the ud's __gc frees the rest */

    lua_pushvalue(L, -1);              // [core, ud, ud]
    for (int k = 0; k < K_COUNT; k++)
        lua_pushstring(L, KEYS[k]);    // [core, ud, ud, names...]
    lua_pushcclosure(L, l_sign, 1 + K_COUNT); // [core, ud, sign]
    lua_setfield(L, -3, "sign");       // [core, ud]
    lua_pushcclosure(L, l_sha256_hex, 1); // [core, sha256_hex]
    lua_setfield(L, -2, "sha256_hex"); // [core]
    lua_pushcfunction(L, l_credentials);
    lua_setfield(L, -2, "credentials");
    lua_pushcfunction(L, l_region);
    lua_setfield(L, -2, "region");
}
