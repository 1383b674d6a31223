-- Benchmark of core.sign on a 1 KB DynamoDB PutItem request, against the
-- floor: core.sha256_hex over the same body bytes (one SHA-256 of the body
-- is the least any signer must do).
--
--   LUA_CPATH='build/lua/?.so;;' luajit bench/sigv4.lua [ops]
--
-- Prints one line per figure: "<name>: <us> us/op (<ops> ops)". The same
-- request is signed by bench/sigv4_smithy.js for the comparison with
-- @smithy/signature-v4.
local core = require "tide.core"

local OPS = tonumber(arg and arg[1]) or 200000

-- A ~1 KB PutItem body: an event item as tide writes it.
local function body_1k()
  local payload = ('{"owner":"alice","amount":%d,"note":"%s"}'):format(125, ("x"):rep(650))
  local body = '{"TableName":"tide_events","Item":{"stream":{"S":"account#4f9c2a7e-1b3d-4c5e-8f70-123456789abc"},'
    .. '"version":{"N":"42"},"type":{"S":"Deposited"},"payload":{"S":"' .. payload:gsub('"', '\\"') .. '"},'
    .. '"meta":{"M":{"command_id":{"S":"cmd-0001"},"ts":{"N":"1700000000"}}}},'
    .. '"ConditionExpression":"attribute_not_exists(#v)","ExpressionAttributeNames":{"#v":"version"}}'
  return body
end

local BODY = body_1k()
local REQ = {
  method = "POST", host = "dynamodb.us-east-1.amazonaws.com", path = "/",
  headers = {
    ["content-type"] = "application/x-amz-json-1.0",
    ["x-amz-target"] = "DynamoDB_20120810.PutItem",
  },
  body = BODY,
}
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

local function bench(name, n, fn)
  for _ = 1, math.min(n, 10000) do fn() end -- warm up: JIT, caches, buffers
  local t0 = os.clock()
  for _ = 1, n do fn() end
  local us = (os.clock() - t0) * 1e6 / n
  print(("%s: %.3f us/op (%d ops)"):format(name, us, n))
  return us
end

print(("# LuaJIT %s, body %d bytes, session token %d bytes, CPU time (os.clock), after a warm-up"):format(
  jit and jit.version or "?", #BODY, #CREDS.session_token))
local sign = bench("sigv4.sign 1KB PutItem", OPS, function() return core.sign(REQ, CREDS, OPTS) end)
local floor = bench("sha256_hex 1KB (floor)", OPS, function() return core.sha256_hex(BODY) end)
print(("sigv4.sign / sha256 floor: %.2fx"):format(sign / floor))

-- Context for the ratio: signing must hash the body, then the canonical
-- request (which carries the token), then HMAC the string to sign. This
-- line times those SHA-256 calls alone over the same lengths (HMAC as two
-- calls, key blocks excluded as the cached key saves them): no signer can
-- go below it with OpenSSL's SHA-256.
local _, dbg = core.sign(REQ, CREDS, { region = OPTS.region, service = OPTS.service, time = OPTS.time, debug = true })
local creq, sts, inner = dbg.canonical_request, dbg.string_to_sign, ("i"):rep(32)
local bound = bench("sha256 of body + canonical request + HMAC passes (hash-only bound)", OPS, function()
  core.sha256_hex(BODY); core.sha256_hex(creq); core.sha256_hex(sts); return core.sha256_hex(inner)
end)
print(("  canonical request %d bytes, string to sign %d bytes; bound / floor: %.2fx; sign / bound: %.2fx"):format(
  #creq, #sts, bound / floor, sign / bound))
local nt = bench("sigv4.sign 1KB PutItem, no session token", OPS, function() return core.sign(REQ, CREDS_NO_TOKEN, OPTS) end)
print(("sigv4.sign (no token) / sha256 floor: %.2fx"):format(nt / floor))
-- bench/sigv4_smithy.js prints the same line: equal signatures cross-check both.
print("# authorization: " .. core.sign(REQ, CREDS, OPTS).authorization)
