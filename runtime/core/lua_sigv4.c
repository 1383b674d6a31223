/*
 * lua_sigv4.c - binding of sigv4.c and credentials.c into `tide.core`:
 *
 *   core.sign(req, creds, opts)     -> headers [, debug]
 *   core.sha256_hex(s)              -> hex string (OpenSSL's SHA-256: the
 *                                      floor the signing bench compares with)
 *   core.credentials([opts])        -> {access_key_id=, secret_access_key=,
 *                                       session_token=, source=} | nil, err
 *   core.region([opts])             -> region | nil, err
 *
 * Wrong argument types raise (caller bugs); missing credentials or region
 * and unreadable files return nil, err. No message carries a secret.
 *
 * core.sign has two bindings with the same behaviour:
 *
 * - l_sign, on the Lua C API: reads the three tables with lua_rawget and
 *   lua_next and builds the result with lua_rawset. About 80 API calls per
 *   signature: ~0.5 us, more than a quarter of the signature of a 1 KB
 *   DynamoDB request.
 * - a LuaJIT FFI fast path (SIGN_FFI_LUA below, compiled when the module
 *   opens): the same raw reads and type checks in Lua, which the JIT turns
 *   into a few instructions each, then one FFI call to ffi_sign: ~0.05 us
 *   once compiled. Whatever it does not expect (a wrong type, an empty
 *   header list) it hands to l_sign, so that every argument error is
 *   raised by the same code, with the same message and the caller's
 *   position. Errors found by the signer itself come back as a message
 *   and are raised with error(msg, 2), as luaL_error would.
 *
 * The fast path is used unless the FFI is missing, the JIT is off when the
 * module opens (interpreted FFI calls cost more than the C API), the
 * structs' layouts disagree with the C compiler's, or TIDE_SIGV4_FFI=0 is
 * in the environment (a switch for tests and for ruling it out).
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <openssl/evp.h>

#include "credentials.h"
#include "lua_codec.h"
#include "lua_core.h"
#include "sigv4.h"

#define SIGNER_MT "tide.sigv4.signer"

/* One per lua_State, an upvalue of sign and sha256_hex: the signer and the
 * header array handed to it, both reused from call to call. The signer's
 * caches (signing keys, prefix states) are thus per Lua VM: per nginx
 * worker, each a process of its own, and per tide process, where one
 * thread runs Lua. Nothing else shares them, and no lock is needed. */
struct lsigner {
    struct tide_sigv4_signer *s;
    struct tide_sigv4_header *hdrs;
    size_t cap;
    EVP_MD *sha256; /* for sha256_hex; fetched once, not per digest */
    EVP_MD_CTX *ctx;
};

static int signer_gc(lua_State *L)
{
    struct lsigner *ls = lua_touserdata(L, 1);
    tide_sigv4_signer_delete(ls->s);
    free(ls->hdrs);
    EVP_MD_CTX_free(ls->ctx);
    EVP_MD_free(ls->sha256);
    ls->s = NULL;
    ls->hdrs = NULL;
    ls->ctx = NULL;
    ls->sha256 = NULL;
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

/* req.body: a string, a buffer of core.encode_request_buffer (signed in
 * place, see lua_codec.h) or nil. Left on the stack like str_field's. */
static const char *body_field(lua_State *L, int idx, size_t *len)
{
    int t = field(L, idx, K_BODY); // [..., body]
    if (t == LUA_TSTRING)
        return lua_tolstring(L, -1, len);
    if (t == LUA_TNIL)
        return NULL;
    const char *p = t == LUA_TUSERDATA ? tide_codec_tobuffer(L, lua_gettop(L), len) : NULL;
    if (p == NULL)
        luaL_error(L, "sign: req.body must be a string or nil (or a core.encode_request_buffer buffer)");
    return p;
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
    req.body = body_field(L, 1, &req.body_len);
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
    set_key(L, K_AUTHORIZATION, r.authorization, r.authorization_len);
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
    /* how much of the canonical request and of the string to sign resumed
     * from the signer's prefix caches instead of being hashed */
    lua_pushnumber(L, (lua_Number)r.canonical_request_resumed);
    lua_setfield(L, -2, "canonical_request_resumed");
    lua_pushnumber(L, (lua_Number)r.string_to_sign_resumed);
    lua_setfield(L, -2, "string_to_sign_resumed");
    return 2;
}

/* ---- FFI fast path of core.sign ------------------------------------------ */

/* What the fast path passes besides the strings, and what it gets back.
 * The FFI sees these structs through the declarations in SIGN_FFI_CDEF,
 * made from the same field lists; at load, the Lua side also checks every
 * offset against the C compiler's (push_ffi_layout) and keeps l_sign when
 * one differs. Lengths going to Lua are doubles: a size_t field would come out
 * as a boxed 64-bit cdata. */
#define FFI_IN_FIELDS(F)                                   \
    F(double, time)                                        \
    F(size_t, body_len)                                    \
    F(size_t, secret_len)                                  \
    F(const struct tide_sigv4_header *, headers)           \
    F(size_t, n_headers)                                   \
    F(int, normalize_path)                                 \
    F(int, sign_body)                                      \
    F(int, sign_session_token)                             \
    F(int, debug)

#define FFI_OUT_FIELDS(F)                                  \
    F(const char *, authorization)                         \
    F(double, authorization_len)                           \
    F(const char *, amz_date)                              \
    F(const char *, content_sha256)                        \
    F(const char *, signature)                             \
    F(const char *, canonical_request)                     \
    F(double, canonical_request_len)                       \
    F(const char *, string_to_sign)                        \
    F(double, string_to_sign_len)                          \
    F(double, canonical_request_resumed)                   \
    F(double, string_to_sign_resumed)                      \
    F(double, key_derivations)

#define FFI_HEADER_FIELDS(F)                               \
    F(const char *, name)                                  \
    F(size_t, name_len)                                    \
    F(const char *, value)                                 \
    F(size_t, value_len)

#define FFI_DECLARE(type, name) type name;
#define FFI_CDEF(type, name) #type " " #name ";"

struct tide_sigv4_ffi_in { FFI_IN_FIELDS(FFI_DECLARE) };
struct tide_sigv4_ffi_out {
    FFI_OUT_FIELDS(FFI_DECLARE)
    char message[sizeof(((struct tide_error *)0)->message)];
};

/* The string arguments are passed as arguments rather than struct fields:
 * the FFI keeps a string argument alive for the call. */
typedef int tide_sigv4_ffi_sign_fn(void *ud, const struct tide_sigv4_ffi_in *in,
                                   const char *method, const char *host,
                                   const char *path, const char *query,
                                   const char *body, const char *access_key_id,
                                   const char *secret_access_key,
                                   const char *session_token, const char *region,
                                   const char *service, struct tide_sigv4_ffi_out *out);

/* Reached through a struct, so that no function pointer is converted to a
 * data pointer. */
struct tide_sigv4_ffi_api {
    tide_sigv4_ffi_sign_fn *sign;
};

static const char SIGN_FFI_CDEF[] =
    "struct tide_sigv4_header {" FFI_HEADER_FIELDS(FFI_CDEF) "};"
    "struct tide_sigv4_ffi_in {" FFI_IN_FIELDS(FFI_CDEF) "};"
    "struct tide_sigv4_ffi_out {" FFI_OUT_FIELDS(FFI_CDEF)
    "char message[512];};"
    "struct tide_buffer { size_t len; char data[1]; };"
    "struct tide_sigv4_ffi_api { int (*sign)(void *, const struct tide_sigv4_ffi_in *,"
    " const char *, const char *, const char *, const char *, const char *,"
    " const char *, const char *, const char *, const char *, const char *,"
    " struct tide_sigv4_ffi_out *); };";

_Static_assert(sizeof(((struct tide_error *)0)->message) == 512,
               "SIGN_FFI_CDEF declares message[512]");

/* core.sign's work once the fast path has read and type-checked the
 * arguments: the same as l_sign from there on. Returns 0, or non-zero
 * with out->message set (raised by the caller with error(msg, 2)). */
static int ffi_sign(void *ud, const struct tide_sigv4_ffi_in *in,
                    const char *method, const char *host, const char *path,
                    const char *query, const char *body, const char *access_key_id,
                    const char *secret_access_key, const char *session_token,
                    const char *region, const char *service,
                    struct tide_sigv4_ffi_out *out)
{
    struct lsigner *ls = ud;
    if (ls->s == NULL) { /* unreachable: the closure keeps the userdata */
        snprintf(out->message, sizeof(out->message), "sign: the signer was freed");
        return TIDE_EINVAL;
    }
    double t = floor(in->time);
    if (!(t > -1e15 && t < 1e15)) {
        snprintf(out->message, sizeof(out->message), "sign: opts.time is out of range");
        return TIDE_EINVAL;
    }
    struct tide_sigv4_request req = {
        .method = method, .host = host, .path = path, .query = query,
        .headers = in->headers, .n_headers = in->n_headers,
        .body = body, .body_len = body ? in->body_len : 0,
    };
    struct tide_sigv4_credentials creds = {
        .access_key_id = access_key_id, .secret_access_key = secret_access_key,
        .secret_len = in->secret_len, .session_token = session_token,
    };
    struct tide_sigv4_options opts = {
        .region = region, .service = service, .time = (int64_t)t,
        .normalize_path = in->normalize_path != 0, .sign_body = in->sign_body != 0,
        .sign_session_token = in->sign_session_token != 0, .debug = in->debug != 0,
    };
    struct tide_sigv4_result r;
    struct tide_error err;
    int rc = tide_sigv4_sign(ls->s, &req, &creds, &opts, &r, &err);
    if (rc != 0) {
        snprintf(out->message, sizeof(out->message), "%s", err.message);
        return rc;
    }
    out->authorization = r.authorization;
    out->authorization_len = (double)r.authorization_len;
    out->amz_date = r.amz_date;
    out->content_sha256 = r.content_sha256;
    out->signature = r.signature;
    if (opts.debug) {
        out->canonical_request = r.canonical_request;
        out->canonical_request_len = (double)r.canonical_request_len;
        out->string_to_sign = r.string_to_sign;
        out->string_to_sign_len = (double)r.string_to_sign_len;
        out->canonical_request_resumed = (double)r.canonical_request_resumed;
        out->string_to_sign_resumed = (double)r.string_to_sign_resumed;
        out->key_derivations = (double)tide_sigv4_key_derivations(ls->s);
    }
    return 0;
}

static const struct tide_sigv4_ffi_api FFI_API = {ffi_sign};

/* The fast path. Called with (ud, api, layout, sign_c, cdef); returns the
 * sign function, or nil to keep sign_c. Reads are raw, as in l_sign, and
 * the header table is walked with next, in the same order as lua_next, so
 * that both paths sign the same canonical request. Numeric header values
 * and lists with a metatable go to l_sign, which formats and measures them
 * itself (tostring and # could be another function or honour __len).
 * The strings whose addresses the header array holds stay reachable from
 * req.headers until the FFI call returns (the C side calls no Lua), and
 * the other strings are arguments of the call. */
static const char SIGN_FFI_LUA[] =
    "local ud, api_ptr, layout, sign_c, cdef, buffer_mt = ...\n"
    "if not (jit and jit.status()) or buffer_mt == nil then return nil end\n"
    "local ok, ffi = pcall(require, 'ffi')\n"
    "if not ok then return nil end\n"
    "if not pcall(ffi.typeof, 'struct tide_sigv4_ffi_out') then ffi.cdef(cdef) end\n"
    "for i = 1, #layout, 3 do\n"
    "  local ct, field, want = layout[i], layout[i + 1], layout[i + 2]\n"
    "  local got = field == '' and ffi.sizeof(ct) or ffi.offsetof(ct, field)\n"
    "  if got ~= want then return nil end\n"
    "end\n"
    "local csign = ffi.cast('const struct tide_sigv4_ffi_api *', api_ptr).sign\n"
    "local self = ffi.cast('void *', ud)\n"
    "local input = ffi.new('struct tide_sigv4_ffi_in')\n"
    "local out = ffi.new('struct tide_sigv4_ffi_out')\n"
    "local HDR = ffi.typeof('struct tide_sigv4_header[?]')\n"
    "local HDR_SIZE = ffi.sizeof('struct tide_sigv4_header')\n"
    "local BUFFER = ffi.typeof('const struct tide_buffer *')\n"
    "local cap = 16\n"
    "local hdrs = HDR(cap)\n"
    "local str, copy, cast = ffi.string, ffi.copy, ffi.cast\n"
    "local type, rawget, next, getmetatable, error = type, rawget, next, getmetatable, error\n"
    "local last_time, last_date\n"
    "\n"
    "local function put(n, name, value)\n"
    "  if n == cap then\n"
    "    local bigger = HDR(cap * 2)\n"
    "    copy(bigger, hdrs, HDR_SIZE * cap)\n"
    "    hdrs, cap = bigger, cap * 2\n"
    "  end\n"
    "  local h = hdrs[n]\n"
    "  h.name, h.name_len, h.value, h.value_len = name, #name, value, #value\n"
    "  return n + 1\n"
    "end\n"
    "\n"
    "return function(req, creds, opts)\n"
    "  if type(req) ~= 'table' or type(creds) ~= 'table' or type(opts) ~= 'table' then\n"
    "    return sign_c(req, creds, opts)\n"
    "  end\n"
    "  local method, host, path = rawget(req, 'method'), rawget(req, 'host'), rawget(req, 'path')\n"
    "  local query, body, headers = rawget(req, 'query'), rawget(req, 'body'), rawget(req, 'headers')\n"
    "  local key_id, secret = rawget(creds, 'access_key_id'), rawget(creds, 'secret_access_key')\n"
    "  local token = rawget(creds, 'session_token')\n"
    "  local region, service, time = rawget(opts, 'region'), rawget(opts, 'service'), rawget(opts, 'time')\n"
    "  local np, sb = rawget(opts, 'normalize_path'), rawget(opts, 'sign_body')\n"
    "  local sst, dbg = rawget(opts, 'sign_session_token'), rawget(opts, 'debug')\n"
    "  if type(method) ~= 'string' or type(host) ~= 'string'\n"
    "      or (path ~= nil and type(path) ~= 'string') or (query ~= nil and type(query) ~= 'string')\n"
    "      or (body ~= nil and type(body) ~= 'string'\n"
    "          and (type(body) ~= 'userdata' or getmetatable(body) ~= buffer_mt))\n"
    "      or (headers ~= nil and type(headers) ~= 'table')\n"
    "      or type(key_id) ~= 'string' or type(secret) ~= 'string'\n"
    "      or (token ~= nil and type(token) ~= 'string')\n"
    "      or type(region) ~= 'string' or type(service) ~= 'string' or type(time) ~= 'number'\n"
    "      or (np ~= nil and type(np) ~= 'boolean') or (sb ~= nil and type(sb) ~= 'boolean')\n"
    "      or (sst ~= nil and type(sst) ~= 'boolean') or (dbg ~= nil and type(dbg) ~= 'boolean') then\n"
    "    return sign_c(req, creds, opts)\n"
    "  end\n"
    "  local n = 0\n"
    "  if headers ~= nil then\n"
    "    for name, v in next, headers do\n"
    "      if type(name) ~= 'string' then return sign_c(req, creds, opts) end\n"
    "      local tv = type(v)\n"
    "      if tv == 'string' then\n"
    "        n = put(n, name, v)\n"
    "      elseif tv == 'table' and getmetatable(v) == nil then\n"
    "        local count = #v\n"
    "        if count == 0 then return sign_c(req, creds, opts) end\n"
    "        for i = 1, count do\n"
    "          local item = rawget(v, i)\n"
    "          if type(item) ~= 'string' then return sign_c(req, creds, opts) end\n"
    "          n = put(n, name, item)\n"
    "        end\n"
    "      else\n"
    "        return sign_c(req, creds, opts)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  input.time = time\n"
    "  local body_len = 0\n"
    "  if body ~= nil then\n"
    "    if type(body) == 'string' then\n"
    "      body_len = #body\n"
    "    else -- a buffer, read in place: its userdata stays anchored in req\n"
    "      local b = cast(BUFFER, body)\n"
    "      body, body_len = b.data, b.len\n"
    "    end\n"
    "  end\n"
    "  input.body_len = body_len\n"
    "  input.secret_len = #secret\n"
    "  input.headers = hdrs\n"
    "  input.n_headers = n\n"
    "  input.normalize_path = np == false and 0 or 1\n"
    "  input.sign_body = sb and 1 or 0\n"
    "  input.sign_session_token = sst == false and 0 or 1\n"
    "  input.debug = dbg and 1 or 0\n"
    "  local rc = csign(self, input, method, host, path, query, body, key_id, secret, token,\n"
    "                   region, service, out)\n"
    "  if rc ~= 0 then error(str(out.message), 2) end\n"
    "  if time ~= last_time then\n"
    "    last_date = str(out.amz_date, 16)\n"
    "    last_time = time\n"
    "  end\n"
    "  local h = { authorization = str(out.authorization, out.authorization_len),\n"
    "              ['x-amz-date'] = last_date, ['x-amz-security-token'] = token }\n"
    "  if out.content_sha256 ~= nil then h['x-amz-content-sha256'] = str(out.content_sha256, 64) end\n"
    "  if not dbg then return h end\n"
    "  return h, {\n"
    "    canonical_request = str(out.canonical_request, out.canonical_request_len),\n"
    "    string_to_sign = str(out.string_to_sign, out.string_to_sign_len),\n"
    "    signature = str(out.signature, 64),\n"
    "    key_derivations = out.key_derivations,\n"
    "    canonical_request_resumed = out.canonical_request_resumed,\n"
    "    string_to_sign_resumed = out.string_to_sign_resumed,\n"
    "  }\n"
    "end\n";

/* Pushes the layout the FFI declarations must have: triples (struct, field,
 * offset), field "" meaning the struct's size. */
static void push_ffi_layout(lua_State *L)
{
    // [...]
    lua_newtable(L); // [..., layout]
    int i = 0;
#define FFI_LAYOUT_ENTRY(ctype, ctype_str, field, value) \
    lua_pushstring(L, ctype_str);                        \
    lua_rawseti(L, -2, ++i);                             \
    lua_pushstring(L, field);                            \
    lua_rawseti(L, -2, ++i);                             \
    lua_pushnumber(L, (lua_Number)(value));              \
    lua_rawseti(L, -2, ++i);
#define FFI_LAYOUT_HEADER(type, name) \
    FFI_LAYOUT_ENTRY(h, "struct tide_sigv4_header", #name, offsetof(struct tide_sigv4_header, name))
#define FFI_LAYOUT_IN(type, name) \
    FFI_LAYOUT_ENTRY(in, "struct tide_sigv4_ffi_in", #name, offsetof(struct tide_sigv4_ffi_in, name))
#define FFI_LAYOUT_OUT(type, name) \
    FFI_LAYOUT_ENTRY(out, "struct tide_sigv4_ffi_out", #name, offsetof(struct tide_sigv4_ffi_out, name))
    FFI_HEADER_FIELDS(FFI_LAYOUT_HEADER)
    FFI_IN_FIELDS(FFI_LAYOUT_IN)
    FFI_OUT_FIELDS(FFI_LAYOUT_OUT)
    FFI_LAYOUT_ENTRY(out, "struct tide_sigv4_ffi_out", "message",
                     offsetof(struct tide_sigv4_ffi_out, message))
    FFI_LAYOUT_ENTRY(h, "struct tide_sigv4_header", "", sizeof(struct tide_sigv4_header))
    FFI_LAYOUT_ENTRY(in, "struct tide_sigv4_ffi_in", "", sizeof(struct tide_sigv4_ffi_in))
    FFI_LAYOUT_ENTRY(out, "struct tide_sigv4_ffi_out", "", sizeof(struct tide_sigv4_ffi_out))
    FFI_LAYOUT_ENTRY(api, "struct tide_sigv4_ffi_api", "", sizeof(struct tide_sigv4_ffi_api))
    FFI_LAYOUT_ENTRY(buf, "struct tide_buffer", "len", offsetof(struct tide_buffer, len))
    FFI_LAYOUT_ENTRY(buf, "struct tide_buffer", "data", offsetof(struct tide_buffer, data))
#undef FFI_LAYOUT_ENTRY
#undef FFI_LAYOUT_HEADER
#undef FFI_LAYOUT_IN
#undef FFI_LAYOUT_OUT
}

/* With [core, ud, sign_c] on the stack, replaces sign_c by the fast path
 * when it can be used. Any failure (no FFI, a layout mismatch, an error
 * in the chunk) keeps sign_c: the fast path is an optimisation only. */
static void use_ffi_sign(lua_State *L)
{
    // [core, ud, sign_c]
    const char *env = getenv("TIDE_SIGV4_FFI");
    if (env != NULL && strcmp(env, "0") == 0)
        return;
    int top = lua_gettop(L);
    if (luaL_loadbuffer(L, SIGN_FFI_LUA, sizeof(SIGN_FFI_LUA) - 1, "=tide.core.sign") != 0) {
        lua_settop(L, top);
        return;
    }
    // [core, ud, sign_c, chunk]
    lua_pushvalue(L, top - 1);                          // [..., chunk, ud]
    lua_pushlightuserdata(L, (void *)&FFI_API);         // [..., chunk, ud, api]
    push_ffi_layout(L);                                 // [..., chunk, ud, api, layout]
    lua_pushvalue(L, top);                              // [..., chunk, ud, api, layout, sign_c]
    lua_pushlstring(L, SIGN_FFI_CDEF, sizeof(SIGN_FFI_CDEF) - 1); // [..., cdef]
    /* the codec sets its methods when it opens, after this */
    luaL_newmetatable(L, TIDE_BUFFER_MT);              // [..., cdef, buffer_mt]
    if (lua_pcall(L, 6, 1, 0) != 0 || lua_type(L, -1) != LUA_TFUNCTION) {
        lua_settop(L, top); // [core, ud, sign_c]
        return;
    }
    // [core, ud, sign_c, sign_ffi]
    lua_replace(L, top); // [core, ud, sign_ffi]
}

/* core.sha256_hex(s) -> lowercase hex SHA-256 of s */
static int l_sha256_hex(lua_State *L)
{
    struct lsigner *ls = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "sha256_hex: argument must be a string");
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    unsigned char md[32];
    if (EVP_DigestInit_ex2(ls->ctx, ls->sha256, NULL) != 1 || EVP_DigestUpdate(ls->ctx, s, len) != 1
        || EVP_DigestFinal_ex(ls->ctx, md, NULL) != 1)
        return luaL_error(L, "sha256_hex: OpenSSL's SHA-256 digest failed");
    char hex[65];
    tide_sigv4_hex(md, hex);
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
    ls->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    ls->ctx = EVP_MD_CTX_new();
    if (ls->sha256 == NULL || ls->ctx == NULL)
        luaL_error(L, "tide.core: OpenSSL has no SHA-256 or is out of memory");

    lua_pushvalue(L, -1);              // [core, ud, ud]
    for (int k = 0; k < K_COUNT; k++)
        lua_pushstring(L, KEYS[k]);    // [core, ud, ud, names...]
    lua_pushcclosure(L, l_sign, 1 + K_COUNT); // [core, ud, sign]
    use_ffi_sign(L);                   // [core, ud, sign] (maybe the fast path)
    lua_setfield(L, -3, "sign");       // [core, ud]
    lua_pushcclosure(L, l_sha256_hex, 1); // [core, sha256_hex]
    lua_setfield(L, -2, "sha256_hex"); // [core]
    lua_pushcfunction(L, l_credentials);
    lua_setfield(L, -2, "credentials");
    lua_pushcfunction(L, l_region);
    lua_setfield(L, -2, "region");
}
