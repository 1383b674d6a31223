-- tide.sigv4: core.sign, AWS SigV4 header signing (runtime/core/sigv4.c)
-- through the FFI (tide_ffi_sigv4_sign, runtime/core/ffi_sigv4.c).
--
--   core.sign(req, creds, opts) -> headers [, debug]
--     req   {method=, host=, path=, query=, body=, headers={name=value|{value...}}}
--           body: a string, a core.encode_request_buffer buffer (read in
--           place) or nil; header values strings, numbers or lists of strings
--     creds {access_key_id=, secret_access_key=, session_token=}
--     opts  {region=, service=, time= (unix seconds), normalize_path=true,
--            sign_body=false, sign_session_token=true, debug=false}
--     headers {authorization=, ["x-amz-date"]=, ["x-amz-security-token"]=,
--              ["x-amz-content-sha256"]=}; with opts.debug also
--     debug   {canonical_request=, string_to_sign=, signature=,
--              key_derivations=, canonical_request_resumed=, string_to_sign_resumed=}
--
-- tide.core installs core.sign when it opens (lua_sigv4.c): each instance
-- of tide.core gets M.new(buffer_mt), a function with a signer of its own
-- (one per Lua VM: per nginx worker, per tide process), whose caches of
-- signing keys and shared prefixes make consecutive signatures cheap.
--
-- Wrong argument types raise "sign: ..." at the caller's position, as do
-- the errors the signer finds (an empty method, a reserved header): both
-- are caller bugs. No message carries the secret or the token.
--
-- The reads are raw and the types are checked in one test, which the JIT
-- turns into a few instructions each; only a failing check walks the
-- arguments again (arg_error) to name what is wrong. Header values that are
-- numbers are formatted as lua_tolstring does (tostring) and kept in
-- `anchors` until the call returns: the header array holds their addresses.
local ffi = require "ffi"
local tffi = require "tide.ffi"

local M = {}

local lib = tffi.lib
local csign = lib.tide_ffi_sigv4_sign
local IN = ffi.typeof("struct tide_ffi_sigv4_in")
local OUT = ffi.typeof("struct tide_ffi_sigv4_out")
local HDR = ffi.typeof("struct tide_sigv4_header[?]")
local HDR_SIZE = ffi.sizeof("struct tide_sigv4_header")
local BUFFER = ffi.typeof("const struct tide_buffer *")
local SIGNER_SLOT = ffi.typeof("struct tide_sigv4_signer *[1]")
local str, copy, cast = ffi.string, ffi.copy, ffi.cast
local type, rawget, next, getmetatable, error, tostring = type, rawget, next, getmetatable, error, tostring
local format = string.format

-- The message for the first argument that is wrong, in the order the
-- arguments are read.
local function arg_error(req, creds, opts, buffer_mt)
  if type(req) ~= "table" then return "sign: req must be a table" end
  if type(creds) ~= "table" then return "sign: creds must be a table" end
  if type(opts) ~= "table" then return "sign: opts must be a table" end
  local function str_field(t, tname, k, optional)
    local v = rawget(t, k)
    if type(v) == "string" or (optional and v == nil) then return nil end
    return format("sign: %s.%s must be a string%s", tname, k, optional and " or nil" or "")
  end
  local function bool_field(k)
    local v = rawget(opts, k)
    if v == nil or type(v) == "boolean" then return nil end
    return format("sign: opts.%s must be a boolean or nil", k)
  end
  local body = rawget(req, "body")
  local e = str_field(req, "req", "method") or str_field(req, "req", "host")
    or str_field(req, "req", "path", true) or str_field(req, "req", "query", true)
    or ((body ~= nil and type(body) ~= "string"
         and (type(body) ~= "userdata" or getmetatable(body) ~= buffer_mt))
        and "sign: req.body must be a string or nil (or a core.encode_request_buffer buffer)")
    or str_field(creds, "creds", "access_key_id") or str_field(creds, "creds", "secret_access_key")
    or str_field(creds, "creds", "session_token", true)
    or str_field(opts, "opts", "region") or str_field(opts, "opts", "service")
    or (type(rawget(opts, "time")) ~= "number" and "sign: opts.time must be a number (unix seconds)")
    or bool_field("normalize_path") or bool_field("sign_body")
    or bool_field("sign_session_token") or bool_field("debug")
  if e then return e end
  local headers = rawget(req, "headers")
  if headers ~= nil and type(headers) ~= "table" then return "sign: req.headers must be a table or nil" end
  return "sign: bad arguments" -- unreachable: the fast path's test is the same
end

local function header_error(name, v)
  if type(name) ~= "string" then return "sign: req.headers keys must be strings (header names)" end
  if type(v) == "table" then
    if #v == 0 then return format("sign: req.headers['%s'] is an empty list", name) end
    for i = 1, #v do
      if type(rawget(v, i)) ~= "string" then
        return format("sign: req.headers['%s'][%d] must be a string", name, i)
      end
    end
  end
  return format("sign: req.headers['%s'] must be a string or a list of strings", name)
end

-- A new core.sign with a signer of its own. buffer_mt: the metatable of
-- core.encode_request_buffer's buffers.
function M.new(buffer_mt)
  local err = tffi.new_error()
  local slot = SIGNER_SLOT()
  if lib.tide_ffi_sigv4_signer_new(slot, err) ~= 0 then error("tide.core: " .. tffi.message(err), 2) end
  local signer = ffi.gc(slot[0], lib.tide_ffi_sigv4_signer_delete)
  local input, out = IN(), OUT()
  local cap = 16
  local hdrs = HDR(cap)
  local anchors, n_anchors = {}, 0
  local last_time, last_date

  local function put(n, name, value)
    if n == cap then
      local bigger = HDR(cap * 2)
      copy(bigger, hdrs, HDR_SIZE * cap)
      hdrs, cap = bigger, cap * 2
    end
    local h = hdrs[n]
    h.name, h.name_len, h.value, h.value_len = name, #name, value, #value
    return n + 1
  end

  return function(req, creds, opts)
    if type(req) ~= "table" or type(creds) ~= "table" or type(opts) ~= "table" then
      error(arg_error(req, creds, opts, buffer_mt), 2)
    end
    local method, host, path = rawget(req, "method"), rawget(req, "host"), rawget(req, "path")
    local query, body, headers = rawget(req, "query"), rawget(req, "body"), rawget(req, "headers")
    local key_id, secret = rawget(creds, "access_key_id"), rawget(creds, "secret_access_key")
    local token = rawget(creds, "session_token")
    local region, service, time = rawget(opts, "region"), rawget(opts, "service"), rawget(opts, "time")
    local np, sb = rawget(opts, "normalize_path"), rawget(opts, "sign_body")
    local sst, dbg = rawget(opts, "sign_session_token"), rawget(opts, "debug")
    if type(method) ~= "string" or type(host) ~= "string"
        or (path ~= nil and type(path) ~= "string") or (query ~= nil and type(query) ~= "string")
        or (body ~= nil and type(body) ~= "string"
            and (type(body) ~= "userdata" or getmetatable(body) ~= buffer_mt))
        or (headers ~= nil and type(headers) ~= "table")
        or type(key_id) ~= "string" or type(secret) ~= "string"
        or (token ~= nil and type(token) ~= "string")
        or type(region) ~= "string" or type(service) ~= "string" or type(time) ~= "number"
        or (np ~= nil and type(np) ~= "boolean") or (sb ~= nil and type(sb) ~= "boolean")
        or (sst ~= nil and type(sst) ~= "boolean") or (dbg ~= nil and type(dbg) ~= "boolean") then
      error(arg_error(req, creds, opts, buffer_mt), 2)
    end
    local n = 0
    if headers ~= nil then
      for name, v in next, headers do
        local tv = type(v)
        if type(name) ~= "string" then
          error(header_error(name, v), 2)
        elseif tv == "string" then
          n = put(n, name, v)
        elseif tv == "number" then
          v = tostring(v)
          n_anchors = n_anchors + 1
          anchors[n_anchors] = v
          n = put(n, name, v)
        elseif tv == "table" then
          local count = #v
          if count == 0 then error(header_error(name, v), 2) end
          for i = 1, count do
            local item = rawget(v, i)
            if type(item) ~= "string" then error(header_error(name, v), 2) end
            n = put(n, name, item)
          end
        else
          error(header_error(name, v), 2)
        end
      end
    end
    input.time = time
    local body_len = 0
    if body ~= nil then
      if type(body) == "string" then
        body_len = #body
      else -- a buffer, read in place: its userdata stays anchored in req
        local b = cast(BUFFER, body)
        body, body_len = b.data, b.len
      end
    end
    input.body_len = body_len
    input.secret_len = #secret
    input.headers = hdrs
    input.n_headers = n
    input.normalize_path = np == false and 0 or 1
    input.sign_body = sb and 1 or 0
    input.sign_session_token = sst == false and 0 or 1
    input.debug = dbg and 1 or 0
    local rc = csign(signer, input, method, host, path, query, body, key_id, secret, token,
                     region, service, out, err)
    if n_anchors > 0 then
      for i = 1, n_anchors do anchors[i] = nil end
      n_anchors = 0
    end
    if rc ~= 0 then error(str(err.message), 2) end
    if time ~= last_time then
      last_date = str(out.amz_date, 16)
      last_time = time
    end
    local h = { authorization = str(out.authorization, out.authorization_len),
                ["x-amz-date"] = last_date, ["x-amz-security-token"] = token }
    if out.content_sha256 ~= nil then h["x-amz-content-sha256"] = str(out.content_sha256, 64) end
    if not dbg then return h end
    return h, {
      canonical_request = str(out.canonical_request, out.canonical_request_len),
      string_to_sign = str(out.string_to_sign, out.string_to_sign_len),
      signature = str(out.signature, 64),
      key_derivations = out.key_derivations,
      canonical_request_resumed = out.canonical_request_resumed,
      string_to_sign_resumed = out.string_to_sign_resumed,
    }
  end
end

return M
