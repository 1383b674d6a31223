-- core.sign: AWS SigV4 header signing, checked against the AWS test suite in
-- spec/fixtures/sigv4-suite (header-* files), plus the API's argument errors,
-- session tokens, the signing-key cache and the prefix caches.
--
-- core.sign has one binding, through LuaJIT's FFI (lua/tide/sigv4.lua over
-- runtime/core/ffi_sigv4.c). Every test that signs or fails runs twice: as
-- the JIT may compile it, and with the JIT off for a fresh copy of the
-- module (a host that runs with the JIT off runs the FFI interpreted).
--
-- Not covered: the query-* files of the suite (presigned URLs). Presigning
-- is not implemented: tide signs headers only (DynamoDB needs no presigned
-- URLs). Every header-* case runs; none is skipped.
local helpers = require "helpers"
local cjson = require "cjson"
local core = require "tide.core"

-- A new instance of tide.core, whose signer has cold caches; with jit_off,
-- one whose sign comes from a fresh copy of tide.sigv4 with the JIT off
-- (a fresh copy: jit.off marks the functions' prototypes, which every
-- instance from one copy shares).
local function fresh_core(jit_off)
  local saved = package.loaded["tide.core"]
  local saved_sigv4 = package.loaded["tide.sigv4"]
  package.loaded["tide.core"] = nil
  if jit_off then package.loaded["tide.sigv4"] = nil end
  local ok, fresh = pcall(require, "tide.core")
  package.loaded["tide.core"] = saved
  package.loaded["tide.sigv4"] = saved_sigv4
  assert(ok, fresh)
  if jit_off then jit.off(fresh.sign, true) end
  return fresh
end

local BINDINGS = {
  { name = "FFI", core = core },
  { name = "FFI, JIT off", core = fresh_core(true) },
}

local SUITE = helpers.root .. "/spec/fixtures/sigv4-suite"

-- Unix seconds of "YYYY-MM-DDTHH:MM:SSZ" (UTC; os.time would use local time).
local function utc_seconds(ts)
  local y, mo, d, h, mi, s = ts:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)Z$")
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- days from civil (proleptic Gregorian), 1970-01-01 = 0
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end

-- Parses a raw HTTP request as the suite writes it: request line, header
-- lines (a line starting with whitespace continues the previous value; a
-- name may repeat), an empty line, the body. Returns method, target, the
-- headers as an ordered list of {name, value}, and the body.
local function parse_http(text)
  local lines, body = {}, nil
  local pos = 1
  while true do
    local nl = text:find("\n", pos, true)
    local line = text:sub(pos, (nl or #text + 1) - 1)
    if line == "" then
      if nl then body = text:sub(nl + 1) end
      break
    end
    lines[#lines + 1] = line
    if not nl then break end
    pos = nl + 1
  end
  local method, target = lines[1]:match("^(%S+) (.*) HTTP/%d%.%d$")
  assert(method, "bad request line: " .. lines[1])
  local headers = {}
  for i = 2, #lines do
    local line = lines[i]
    if line:match("^%s") then
      local last = headers[#headers]
      last[2] = last[2] .. "\n" .. line
    else
      local name, value = line:match("^([^:]+):(.*)$")
      assert(name, "bad header line: " .. line)
      headers[#headers + 1] = { name, value }
    end
  end
  return method, target, headers, body ~= "" and body or nil
end

-- The suite's request as core.sign's req: Host goes to req.host, repeated
-- names become lists.
local function request_of(text)
  local method, target, list, body = parse_http(text)
  local path, query = target:match("^([^?]*)%??(.*)$")
  local req = { method = method, path = path, query = query ~= "" and query or nil,
                headers = {}, body = body }
  local by_lower = {}
  for _, h in ipairs(list) do
    local name, value = h[1], h[2]
    if name:lower() == "host" then
      req.host = value
    else
      local key = by_lower[name:lower()] or name
      by_lower[name:lower()] = key
      local prev = req.headers[key]
      if prev == nil then
        req.headers[key] = value
      elseif type(prev) == "table" then
        prev[#prev + 1] = value
      else
        req.headers[key] = { prev, value }
      end
    end
  end
  return req
end

-- Header multiset of a raw request, as sorted "lower-name:value" lines.
local function header_set(list)
  local out = {}
  for _, h in ipairs(list) do out[#out + 1] = h[1]:lower() .. ":" .. h[2] end
  table.sort(out)
  return out
end

local function list_cases()
  -- one folder per case (the README beside them is not one)
  local out = helpers.run("cd " .. helpers.shell_quote(SUITE) .. " && ls -d */")
  local cases = {}
  for name in out:gmatch("([^\n]+)/") do cases[#cases + 1] = name end
  return cases
end

local function read(case, file)
  return (assert(helpers.read_file(SUITE .. "/" .. case .. "/" .. file)))
end

local VANILLA_CREDS = {
  access_key_id = "AKIDEXAMPLE",
  secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
local VANILLA_OPTS = { region = "us-east-1", service = "service", time = 1440938160 }
local VANILLA_REQ = { method = "GET", host = "example.amazonaws.com", path = "/" }
local VANILLA_SIG = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"

local function with(t, extra)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

local function signature_of(h)
  return h.authorization:match("Signature=(%x+)$")
end

describe("core.sign's binding", function()
  it("is one Lua function over the FFI, also with the JIT off", function()
    assert.are.equal("Lua", debug.getinfo(core.sign, "S").what)
    assert.are.equal("Lua", debug.getinfo(BINDINGS[2].core.sign, "S").what)
    assert.are_not.equal(core.sign, BINDINGS[2].core.sign)
  end)
end)

for _, binding in ipairs(BINDINGS) do
local core = binding.core

describe("core.sign (" .. binding.name .. ") against the AWS SigV4 suite", function()
  local cases = list_cases()

  it("finds the suite", function()
    assert.is_true(#cases >= 30)
  end)

  for _, case in ipairs(cases) do
    describe(case, function()
      local ctx = cjson.decode(read(case, "context.json"))
      local req = request_of(read(case, "request.txt"))
      local creds = {
        access_key_id = ctx.credentials.access_key_id,
        secret_access_key = ctx.credentials.secret_access_key,
        session_token = ctx.credentials.token,
      }
      local opts = {
        region = ctx.region, service = ctx.service, time = utc_seconds(ctx.timestamp),
        normalize_path = ctx.normalize, sign_body = ctx.sign_body,
        sign_session_token = not ctx.omit_session_token, debug = true,
      }
      local headers, debug = core.sign(req, creds, opts)

      it("builds the canonical request", function()
        assert.are.equal(read(case, "header-canonical-request.txt"), debug.canonical_request)
      end)

      it("builds the string to sign", function()
        assert.are.equal(read(case, "header-string-to-sign.txt"), debug.string_to_sign)
      end)

      it("computes the signature", function()
        local want = read(case, "header-signature.txt"):gsub("%s+$", "")
        assert.are.equal(want, debug.signature)
        assert.are.equal(want, signature_of(headers))
      end)

      it("gives the headers of the signed request", function()
        local _, _, want_list = parse_http(read(case, "header-signed-request.txt"))
        local _, _, got_list = parse_http(read(case, "request.txt"))
        for name, value in pairs(headers) do got_list[#got_list + 1] = { name, value } end
        assert.are.same(header_set(want_list), header_set(got_list))
      end)
    end)
  end
end)

describe("core.sign (" .. binding.name .. ")", function()
  it("returns lower-case header names, and the token when given", function()
    local h = core.sign(VANILLA_REQ, with(VANILLA_CREDS, { session_token = "TOKEN" }), VANILLA_OPTS)
    assert.are.equal("20150830T123600Z", h["x-amz-date"])
    assert.are.equal("TOKEN", h["x-amz-security-token"])
    assert.matches("SignedHeaders=host;x%-amz%-date;x%-amz%-security%-token,", h.authorization)
    assert.is_nil(h["x-amz-content-sha256"])
    local n = 0
    for k in pairs(h) do n = n + 1; assert.are.equal(k:lower(), k) end
    assert.are.equal(3, n)
  end)

  it("matches the suite's session-token case", function()
    local h = core.sign(VANILLA_REQ, with(VANILLA_CREDS, {
      session_token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
    }), VANILLA_OPTS)
    assert.are.equal("07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
                     signature_of(h))
  end)

  it("signs a DynamoDB request with its defaults (normalized path, no content hash)", function()
    local body = '{"TableName":"events"}'
    local h, d = core.sign({
      method = "POST", host = "dynamodb.eu-west-1.amazonaws.com", path = "/",
      headers = { ["Content-Type"] = "application/x-amz-json-1.0",
                  ["X-Amz-Target"] = "DynamoDB_20120810.PutItem" },
      body = body,
    }, VANILLA_CREDS, { region = "eu-west-1", service = "dynamodb", time = 1700000000, debug = true })
    assert.is_nil(h["x-amz-content-sha256"])
    assert.matches("SignedHeaders=content%-type;host;x%-amz%-date;x%-amz%-target,", h.authorization)
    assert.are.equal(core.sha256_hex(body), d.canonical_request:match("(%x+)$"))
  end)

  it("accepts numeric header values and an empty body", function()
    local h, d = core.sign(with(VANILLA_REQ, { headers = { ["Content-Length"] = 0 }, body = "" }),
                           VANILLA_CREDS, with(VANILLA_OPTS, { debug = true }))
    assert.matches("\ncontent%-length:0\n", d.canonical_request)
    assert.matches("SignedHeaders=content%-length;host;x%-amz%-date,", h.authorization)
  end)

  it("uses a given x-amz-content-sha256 as the payload hash (S3's UNSIGNED-PAYLOAD)", function()
    local h, d = core.sign(with(VANILLA_REQ, { headers = { ["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD" } }),
                           VANILLA_CREDS, with(VANILLA_OPTS, { debug = true, sign_body = true }))
    assert.matches("\nUNSIGNED%-PAYLOAD$", d.canonical_request)
    assert.is_nil(h["x-amz-content-sha256"])
  end)

  it("floors fractional times", function()
    local a = core.sign(VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { time = 1440938160.75 }))
    assert.are.equal(VANILLA_SIG, signature_of(a))
  end)

  describe("signing-key cache", function()
    it("derives a key once per (date, region, service, secret)", function()
      local _, d1 = core.sign(VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { debug = true }))
      local _, d2 = core.sign(VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { debug = true, time = VANILLA_OPTS.time + 60 }))
      assert.are.equal(d1.key_derivations, d2.key_derivations)
    end)

    it("never reuses a key when the secret, date, region or service changes", function()
      -- A fresh module instance has a cold cache: it is the reference.
      local function cold_sign(creds, opts)
        return signature_of(fresh_core().sign(VANILLA_REQ, creds, opts))
      end
      local same_len_secret = VANILLA_CREDS.secret_access_key:sub(1, -2) .. "X"
      local variants = {
        { VANILLA_CREDS, VANILLA_OPTS },
        { with(VANILLA_CREDS, { secret_access_key = same_len_secret }), VANILLA_OPTS },
        { VANILLA_CREDS, with(VANILLA_OPTS, { time = VANILLA_OPTS.time + 86400 }) },
        { VANILLA_CREDS, with(VANILLA_OPTS, { region = "eu-west-1" }) },
        { VANILLA_CREDS, with(VANILLA_OPTS, { service = "dynamodb" }) },
        { with(VANILLA_CREDS, { secret_access_key = "other" }), with(VANILLA_OPTS, { region = "us-west-2" }) },
        { VANILLA_CREDS, with(VANILLA_OPTS, { region = "ap-south-1", service = "s3" }) },
        -- long inputs are not cached, and must still sign right
        { with(VANILLA_CREDS, { secret_access_key = ("k"):rep(300) }), VANILLA_OPTS },
        { VANILLA_CREDS, with(VANILLA_OPTS, { region = ("r"):rep(100) }) },
      }
      local seen = {}
      -- Twice round, more variants than cache slots: hits, misses, evictions.
      for round = 1, 2 do
        for i, v in ipairs(variants) do
          local sig = signature_of(core.sign(VANILLA_REQ, v[1], v[2]))
          assert.are.equal(cold_sign(v[1], v[2]), sig, "variant " .. i .. " round " .. round)
          if round == 1 then
            assert.is_nil(seen[sig], "variant " .. i .. " collides")
            seen[sig] = true
          end
        end
      end
      assert.are.equal(VANILLA_SIG, signature_of(core.sign(VANILLA_REQ, VANILLA_CREDS, VANILLA_OPTS)))
    end)
  end)

  describe("argument errors", function()
    local function err_of(...)
      local ok, e = pcall(core.sign, ...)
      assert.is_false(ok)
      return e
    end
    local SECRET = VANILLA_CREDS.secret_access_key

    local bad = {
      { "req must be a table", nil, VANILLA_CREDS, VANILLA_OPTS },
      { "creds must be a table", VANILLA_REQ, "x", VANILLA_OPTS },
      { "opts must be a table", VANILLA_REQ, VANILLA_CREDS, nil },
      { "req.method must be a string", with(VANILLA_REQ, { method = 1 }), VANILLA_CREDS, VANILLA_OPTS },
      { "req.host must be a string", with(VANILLA_REQ, { host = false }), VANILLA_CREDS, VANILLA_OPTS },
      { "req.path must be a string or nil", with(VANILLA_REQ, { path = {} }), VANILLA_CREDS, VANILLA_OPTS },
      { "req.query must be a string or nil", with(VANILLA_REQ, { query = 3 }), VANILLA_CREDS, VANILLA_OPTS },
      { "req.body must be a string or nil", with(VANILLA_REQ, { body = {} }), VANILLA_CREDS, VANILLA_OPTS },
      { "req.headers must be a table or nil", with(VANILLA_REQ, { headers = "x" }), VANILLA_CREDS, VANILLA_OPTS },
      { "req.headers['x-a'] must be a string or a list of strings", with(VANILLA_REQ, { headers = { ["x-a"] = true } }), VANILLA_CREDS, VANILLA_OPTS },
      { "req.headers['x-a'][2] must be a string", with(VANILLA_REQ, { headers = { ["x-a"] = { "a", 2 } } }), VANILLA_CREDS, VANILLA_OPTS },
      { "req.headers keys must be strings", with(VANILLA_REQ, { headers = { "x" } }), VANILLA_CREDS, VANILLA_OPTS },
      { "header name 'bad name'", with(VANILLA_REQ, { headers = { ["bad name"] = "v" } }), VANILLA_CREDS, VANILLA_OPTS },
      { "header 'authorization' is set by the signer", with(VANILLA_REQ, { headers = { Authorization = "v" } }), VANILLA_CREDS, VANILLA_OPTS },
      { "header 'x-amz-date' is set by the signer", with(VANILLA_REQ, { headers = { ["X-Amz-Date"] = "v" } }), VANILLA_CREDS, VANILLA_OPTS },
      { "the host header differs from req.host", with(VANILLA_REQ, { headers = { Host = "other" } }), VANILLA_CREDS, VANILLA_OPTS },
      { "x-amz-security-token given both", with(VANILLA_REQ, { headers = { ["x-amz-security-token"] = "t" } }), with(VANILLA_CREDS, { session_token = "t" }), VANILLA_OPTS },
      { "req.method is empty", with(VANILLA_REQ, { method = "" }), VANILLA_CREDS, VANILLA_OPTS },
      { "creds.access_key_id must be a string", VANILLA_REQ, { secret_access_key = SECRET }, VANILLA_OPTS },
      { "creds.access_key_id is empty", VANILLA_REQ, with(VANILLA_CREDS, { access_key_id = "" }), VANILLA_OPTS },
      { "creds.secret_access_key must be a string", VANILLA_REQ, { access_key_id = "AK" }, VANILLA_OPTS },
      { "creds.secret_access_key is empty", VANILLA_REQ, with(VANILLA_CREDS, { secret_access_key = "" }), VANILLA_OPTS },
      { "creds.session_token must be a string or nil", VANILLA_REQ, with(VANILLA_CREDS, { session_token = 5 }), VANILLA_OPTS },
      { "creds.session_token has control characters", VANILLA_REQ, with(VANILLA_CREDS, { session_token = "a\r\nb" }), VANILLA_OPTS },
      { "opts.region must be a string", VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { region = 1 }) },
      { "opts.region is empty", VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { region = "" }) },
      { "opts.service must be a string", VANILLA_REQ, VANILLA_CREDS, { region = "r", time = 0 } },
      { "opts.service is empty or has characters", VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { service = "a/b" }) },
      { "opts.time must be a number", VANILLA_REQ, VANILLA_CREDS, { region = "r", service = "s" } },
      { "opts.time is out of range", VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { time = 1e300 }) },
      { "opts.debug must be a boolean", VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { debug = 1 }) },
      { "opts.sign_body must be a boolean", VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { sign_body = "yes" }) },
      { "opts.normalize_path must be a boolean", VANILLA_REQ, VANILLA_CREDS, with(VANILLA_OPTS, { normalize_path = 0 }) },
    }
    for _, case in ipairs(bad) do
      it("raises '" .. case[1] .. "'", function()
        local e = err_of(case[2], case[3], case[4])
        assert.is_truthy(e:find("sign: " .. case[1], 1, true), e)
        assert.is_falsy(e:find(SECRET, 1, true))
      end)
    end

    it("reports the caller's position, like error(msg, 2)", function()
      local ok, e = pcall(function() core.sign(nil, VANILLA_CREDS, VANILLA_OPTS) end)
      assert.is_false(ok)
      assert.matches("sigv4_spec%.lua:%d+: sign: req must be a table", e)
      -- also for what the signer finds (raised from Lua)
      ok, e = pcall(function() core.sign(with(VANILLA_REQ, { method = "" }), VANILLA_CREDS, VANILLA_OPTS) end)
      assert.is_false(ok)
      assert.matches("sigv4_spec%.lua:%d+: sign: req.method is empty", e)
    end)

    it("never puts the secret or the token in a message", function()
      local creds = with(VANILLA_CREDS, { session_token = "SECRET-TOKEN\n" })
      local e = err_of(with(VANILLA_REQ, { headers = { ["x-amz-security-token"] = "x" } }), creds, VANILLA_OPTS)
      assert.is_falsy(e:find("SECRET-TOKEN", 1, true))
      e = err_of(VANILLA_REQ, creds, VANILLA_OPTS)
      assert.is_falsy(e:find("SECRET-TOKEN", 1, true))
    end)
  end)

  describe("prefix caches", function()
    -- Requests that tide sends: DynamoDB JSON over POST, with a token.
    local TOKEN = ("AQoDYXdzEPT//////////wEXAMPLE"):rep(12)
    local CREDS = with(VANILLA_CREDS, { session_token = TOKEN })
    local function ddb(target, body, host)
      return { method = "POST", host = host or "dynamodb.us-east-1.amazonaws.com", path = "/",
               headers = { ["content-type"] = "application/x-amz-json-1.0",
                           ["x-amz-target"] = "DynamoDB_20120810." .. target },
               body = body }
    end
    local function opts_at(time, extra)
      return with({ region = "us-east-1", service = "dynamodb", time = time, debug = true }, extra)
    end

    it("resumes a request from what it shares with the previous one", function()
      local t = 1700000000
      local s1 = { core.sign(ddb("PutItem", '{"a":1}'), CREDS, opts_at(t)) }
      local s2 = { core.sign(ddb("PutItem", '{"a":2}'), CREDS, opts_at(t)) }
      local s3 = { core.sign(ddb("PutItem", '{"a":3}'), CREDS, opts_at(t)) }
      local creq = s3[2].canonical_request
      -- all but the payload hash is shared: whole blocks up to it resumed
      local shared = #creq - 64
      assert.are.equal(shared - shared % 64, s3[2].canonical_request_resumed)
      -- the string to sign shares its first block (algorithm, date, scope)
      assert.are.equal(64, s3[2].string_to_sign_resumed)
      -- and the signatures are those of a signer that never saw s1 and s2
      local h, d = fresh_core().sign(ddb("PutItem", '{"a":3}'), CREDS, opts_at(t))
      assert.are.same(h, s3[1])
      assert.are.equal(d.canonical_request, creq)
      assert.are.equal(d.signature, s3[2].signature)
      assert.are.equal(0, d.canonical_request_resumed)
      assert.are_not.equal(s1[2].signature, s2[2].signature)
    end)

    it("resumes the first block only when the second changes", function()
      local t = 1700000100
      core.sign(ddb("PutItem", "{}"), CREDS, opts_at(t))
      core.sign(ddb("PutItem", "{}"), CREDS, opts_at(t + 1))
      local _, d = core.sign(ddb("PutItem", "{}"), CREDS, opts_at(t + 2))
      assert.are.equal(64, d.canonical_request_resumed)
      assert.are.equal(0, d.string_to_sign_resumed)
    end)

    it("keeps requests to other hosts apart", function()
      local t = 1700000200
      local streams = "streams.dynamodb.us-east-1.amazonaws.com"
      for i = 1, 3 do
        core.sign(ddb("PutItem", "{}" .. i), CREDS, opts_at(t))
        core.sign(ddb("GetRecords", "{}" .. i, streams), CREDS, opts_at(t))
      end
      local _, d1 = core.sign(ddb("PutItem", "{}"), CREDS, opts_at(t))
      local _, d2 = core.sign(ddb("GetRecords", "{}", streams), CREDS, opts_at(t))
      assert.is_true(d1.canonical_request_resumed >= 512)
      assert.is_true(d2.canonical_request_resumed >= 512)
    end)

    it("signs requests with many headers and long lists as the other pass does", function()
      local req = ddb("PutItem", "{}")
      for i = 1, 40 do req.headers[("X-H-%02d"):format(i)] = ("v%d"):format(i) end
      local list = {}
      for i = 1, 30 do list[i] = ("item %d"):format(i) end
      req.headers["x-list"] = list
      local other = binding.name == "FFI" and BINDINGS[2].core or BINDINGS[1].core
      local h, d = core.sign(req, CREDS, opts_at(1700000250))
      local rh, rd = other.sign(req, CREDS, opts_at(1700000250))
      assert.are.same(rh, h)
      assert.are.equal(rd.canonical_request, d.canonical_request)
      assert.matches("\nx%-list:item 1,item 2,", d.canonical_request)
      assert.matches(";x%-h%-40;x%-list, ", h.authorization)
    end)

    it("signs every request of a varied sequence as a signer with cold caches does", function()
      -- Deterministic pseudo-random choices (Park-Miller: exact in doubles).
      local seed = 12345
      local function rnd(n)
        seed = seed * 16807 % 2147483647
        return seed % n
      end
      local bodies = { "", '{"TableName":"t"}', ('{"x":"' .. ("y"):rep(1000) .. '"}'), ("\0\1\2"):rep(1500) }
      local tokens = { TOKEN, nil, ("T"):rep(1200), "tok en" }
      local targets = { "PutItem", "GetItem", "Query", "TransactWriteItems" }
      local hosts = { "dynamodb.us-east-1.amazonaws.com", "dynamodb.us-east-1.amazonaws.com",
                      "streams.dynamodb.us-east-1.amazonaws.com", "localhost:8000" }
      local t, host, target, token, region = 1700000300, hosts[1], targets[1], TOKEN, "us-east-1"
      local length, list, big, path, extra = nil, nil, nil, nil, {}
      local resumed_creq, resumed_sts = 0, 0
      for i = 1, 200 do
        -- the next request: mostly the previous one with another body, as
        -- a client sends them; now and then another second, day, host,
        -- operation, token, region, header set, path or option
        if rnd(5) == 0 then t = t + (rnd(10) == 0 and 86400 or 1) end
        if rnd(8) == 0 then host = hosts[rnd(#hosts) + 1] end
        if rnd(4) == 0 then target = targets[rnd(#targets) + 1] end
        if rnd(12) == 0 then token = tokens[rnd(#tokens) + 1] end
        if rnd(12) == 0 then region = region == "us-east-1" and "eu-west-1" or "us-east-1" end
        if rnd(10) == 0 then length = length == nil and rnd(5000) or nil end
        if rnd(10) == 0 then list = list == nil and { "b  c", " a" } or nil end
        if rnd(12) == 0 then big = big == nil and ("v"):rep(3000 + rnd(3000)) or nil end
        if rnd(12) == 0 then path = path == nil and "/a/./b/../c" or nil end
        if rnd(12) == 0 then
          extra = { normalize_path = rnd(2) == 0, sign_body = rnd(2) == 0, sign_session_token = rnd(2) == 0 }
        end
        local req = ddb(target, bodies[rnd(#bodies) + 1], host)
        req.headers["Content-Length"], req.headers["X-Amz-Meta-List"], req.headers["x-big"] = length, list, big
        if path then req.path, req.query = path, "z=1&a=%41" end
        local creds = with(VANILLA_CREDS, { session_token = token })
        local opts = opts_at(t, with({ region = region }, extra))
        local h, d = core.sign(req, creds, opts)
        local rh, rd = fresh_core(binding.name ~= "FFI").sign(req, creds, opts)
        assert.are.same(rh, h, "request " .. i)
        assert.are.equal(rd.canonical_request, d.canonical_request, "request " .. i)
        assert.are.equal(rd.string_to_sign, d.string_to_sign, "request " .. i)
        assert.are.equal(rd.signature, d.signature, "request " .. i)
        resumed_creq = resumed_creq + d.canonical_request_resumed
        resumed_sts = resumed_sts + d.string_to_sign_resumed
      end
      -- the caches took part
      assert.is_true(resumed_creq > 200 * 128, "canonical request bytes resumed: " .. resumed_creq)
      assert.is_true(resumed_sts > 20 * 64, "string-to-sign bytes resumed: " .. resumed_sts)
    end)
  end)
end)

end -- for each binding

describe("core.sha256_hex", function()
  it("hashes strings", function()
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256_hex(""))
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256_hex("abc"))
    assert.are.equal(core.sha256_hex("a\0b"), core.sha256_hex("a\0b"))
    assert.are_not.equal(core.sha256_hex("a\0b"), core.sha256_hex("a"))
  end)

  it("raises on a non-string", function()
    local ok, e = pcall(core.sha256_hex, 12)
    assert.is_false(ok)
    assert.matches("sha256_hex: argument must be a string", e, 1, true)
  end)
end)
