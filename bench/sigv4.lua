-- Benchmark of core.sign on a 1 KB DynamoDB PutItem request, against the
-- floor: core.sha256_hex over the same body bytes (one SHA-256 of the body
-- is the least any signer must do).
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/lua/?.so;;' luajit bench/sigv4.lua [ops]
--
-- Prints one line per figure: "<name>: <us> us/op (<ops> ops)". bench/run.sh
-- takes the first "sign" line (with a session token) and the first "sha256"
-- line (the floor) for the 2x target. The same request is signed by
-- bench/sigv4_smithy.js for the comparison with @smithy/signature-v4.
--
-- The signer keeps the SHA-256 states of the prefixes that consecutive
-- canonical requests and strings to sign share (see runtime/core/sigv4.c),
-- so the figures depend on what the previous request was:
--
-- - the first figure signs two PutItems of the same size in turn, whose
--   bodies (so payload hashes) differ, at the same second: a busy client,
--   where everything up to the payload hash repeats. Signing one request
--   over and over would resume one block further, which no real client
--   does: the alternation keeps that out of the figure.
-- - "a new second every request" moves opts.time by one second per request:
--   the x-amz-date line differs each time, so only the first block of the
--   canonical request and nothing of the string to sign can be resumed. It
--   is the figure of a client sending one request per second or less, and
--   the cost of the first request of each second for a busy one.
local core = require "tide.core"

local OPS = tonumber(arg and arg[1]) or 200000

-- A ~1 KB PutItem body: an event item as tide writes it.
local function body_1k(amount)
  local payload = ('{"owner":"alice","amount":%d,"note":"%s"}'):format(amount, ("x"):rep(650))
  local body = '{"TableName":"tide_events","Item":{"stream":{"S":"account#4f9c2a7e-1b3d-4c5e-8f70-123456789abc"},'
    .. '"version":{"N":"42"},"type":{"S":"Deposited"},"payload":{"S":"' .. payload:gsub('"', '\\"') .. '"},'
    .. '"meta":{"M":{"command_id":{"S":"cmd-0001"},"ts":{"N":"1700000000"}}}},'
    .. '"ConditionExpression":"attribute_not_exists(#v)","ExpressionAttributeNames":{"#v":"version"}}'
  return body
end

local BODY = body_1k(125)
local function put_item(body)
  return {
    method = "POST", host = "dynamodb.us-east-1.amazonaws.com", path = "/",
    headers = {
      ["content-type"] = "application/x-amz-json-1.0",
      ["x-amz-target"] = "DynamoDB_20120810.PutItem",
    },
    body = body,
  }
end
local REQ = put_item(BODY)
-- Another deposit: same size, another amount, so another payload hash.
local REQ2 = put_item(body_1k(126))
assert(#REQ2.body == #BODY)
-- The session token of the AWS SigV4 suite's STS example (316 bytes). It is
-- part of the canonical request, so its length counts: real STS tokens run
-- from ~300 to over 1000 bytes.
local TOKEN = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
local CREDS = {
  access_key_id = "AKIDEXAMPLE",
  secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
  session_token = TOKEN,
}
local CREDS_NO_TOKEN = { access_key_id = CREDS.access_key_id, secret_access_key = CREDS.secret_access_key }
local OPTS = { region = "us-east-1", service = "dynamodb", time = 1700000000 }

-- CPU µs per call of fn over n calls.
local function time_ops(n, fn)
  local t0 = os.clock()
  for _ = 1, n do fn() end
  return (os.clock() - t0) * 1e6 / n
end

local function bench(name, n, fn)
  for _ = 1, math.min(n, 10000) do fn() end -- warm up: JIT, caches, buffers
  local us = time_ops(n, fn)
  print(("%s: %.3f us/op (%d ops)"):format(name, us, n))
  return us
end

-- Signs REQ and REQ2 in turn.
local function alternate(creds, opts)
  local a, b = REQ, REQ2
  return function()
    a, b = b, a
    return core.sign(a, creds, opts)
  end
end

print(("# LuaJIT %s, body %d bytes, session token %d bytes, CPU time (os.clock), after a warm-up"):format(
  jit and jit.version or "?", #BODY, #CREDS.session_token))
-- The target's two figures are taken in turn, in rounds, and each is the
-- median of its rounds: on a shared machine a noisy second then lands on
-- both figures alike instead of on one of them.
local ROUNDS = 5
local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  return s[(#s + 1) / 2]
end
local sign_fn, floor_fn = alternate(CREDS, OPTS), function() return core.sha256_hex(BODY) end
for _ = 1, 10000 do sign_fn(); floor_fn() end -- warm up: JIT, caches, buffers
local per_round = math.max(1, math.floor(OPS / ROUNDS))
local sign_rounds, floor_rounds = {}, {}
for r = 1, ROUNDS do
  sign_rounds[r] = time_ops(per_round, sign_fn)
  floor_rounds[r] = time_ops(per_round, floor_fn)
end
local sign, floor = median(sign_rounds), median(floor_rounds)
local function rounds_text(t)
  local parts = {}
  for i, v in ipairs(t) do parts[i] = ("%.3f"):format(v) end
  return table.concat(parts, " ")
end
print(("sigv4.sign 1KB PutItem: %.3f us/op (median of %d rounds of %d ops, taken in turn with the floor)"):format(
  sign, ROUNDS, per_round))
print(("sha256_hex 1KB (floor): %.3f us/op (median of %d rounds of %d ops)"):format(floor, ROUNDS, per_round))
print(("  rounds, us/op: sign %s | floor %s"):format(rounds_text(sign_rounds), rounds_text(floor_rounds)))
print(("sigv4.sign / sha256 floor: %.2fx"):format(sign / floor))

local cold_opts = { region = OPTS.region, service = OPTS.service, time = OPTS.time }
local cold = bench("sigv4.sign 1KB PutItem, a new second every request (prefix caches cold)", OPS, function()
  cold_opts.time = cold_opts.time + 1
  return core.sign(REQ, CREDS, cold_opts)
end)
print(("  cold / sha256 floor: %.2fx"):format(cold / floor))

-- Context for the ratios: signing must hash the body, then the canonical
-- request (which carries the token), then HMAC the string to sign. The
-- bound lines time those SHA-256 computations alone, as OpenSSL EVP calls
-- over the same lengths, with no Lua-to-C call of their own when the FFI
-- can reach libcrypto (else through core.sha256_hex, which adds a call and
-- a hex string each). HMAC is counted as the signer does it: the key's
-- padded blocks are cached, the rest is one inner and one outer digest.
-- "uncached": the whole canonical request and string to sign; "warm": only
-- what the prefix caches leave to hash in the first figure's case (from
-- the resumed offsets that debug reports). No signer built on OpenSSL's
-- SHA-256 and these caches can go below the warm bound.
-- (REQ, REQ2, REQ: the third signature resumes as in the first figure.)
local dbg_opts = { region = OPTS.region, service = OPTS.service, time = OPTS.time, debug = true }
core.sign(REQ, CREDS, dbg_opts)
core.sign(REQ2, CREDS, dbg_opts)
local _, dbg = core.sign(REQ, CREDS, dbg_opts)
local creq, sts = dbg.canonical_request, dbg.string_to_sign
local creq_tail = creq:sub(dbg.canonical_request_resumed + 1)
local sts_tail = sts:sub(dbg.string_to_sign_resumed + 1)
local inner = ("i"):rep(32)

local digest, via
do
  local ok, ffi = pcall(require, "ffi")
  local lib
  if ok then
    for _, name in ipairs({ "crypto", "libcrypto.so.3" }) do
      local loaded, l = pcall(ffi.load, name)
      if loaded then lib = l; break end
    end
  end
  if lib then
    pcall(ffi.cdef, [[
      typedef struct evp_md_st EVP_MD;
      typedef struct evp_md_ctx_st EVP_MD_CTX;
      EVP_MD *EVP_MD_fetch(void *libctx, const char *algorithm, const char *properties);
      EVP_MD_CTX *EVP_MD_CTX_new(void);
      int EVP_DigestInit_ex2(EVP_MD_CTX *ctx, const EVP_MD *type, const void *params);
      int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt);
      int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s);
    ]])
    local md, ctx, out = lib.EVP_MD_fetch(nil, "SHA256", nil), lib.EVP_MD_CTX_new(), ffi.new("unsigned char[32]")
    if md ~= nil and ctx ~= nil then
      digest = function(s)
        lib.EVP_DigestInit_ex2(ctx, md, nil)
        lib.EVP_DigestUpdate(ctx, s, #s)
        lib.EVP_DigestFinal_ex(ctx, out, nil)
      end
      via = "OpenSSL EVP through the FFI"
    end
  end
end
if not digest then
  digest, via = core.sha256_hex, "core.sha256_hex"
end

local bound = bench("sha256 of body + canonical request + HMAC passes (hash-only bound, uncached)", OPS, function()
  digest(BODY); digest(creq); digest(sts); return digest(inner)
end)
local warm = bench("sha256 of body + canonical request + HMAC passes (hash-only bound, warm)", OPS, function()
  digest(BODY); digest(creq_tail); digest(sts_tail); return digest(inner)
end)
print(("  via %s; canonical request %d bytes (%d resumed), string to sign %d bytes (%d resumed)"):format(
  via, #creq, dbg.canonical_request_resumed, #sts, dbg.string_to_sign_resumed))
print(("  sign / warm bound: %.2fx; cold sign / uncached bound: %.2fx"):format(sign / warm, cold / bound))

local nt = bench("sigv4.sign 1KB PutItem, no session token", OPS, alternate(CREDS_NO_TOKEN, OPTS))
print(("sigv4.sign (no token) / sha256 floor: %.2fx"):format(nt / floor))
-- bench/sigv4_smithy.js prints the same line: equal signatures cross-check both.
print("# authorization: " .. core.sign(REQ, CREDS, OPTS).authorization)
