-- tide.transport.engine - the HTTP transport of the tide process.
--
-- The DynamoDB client talks to a transport, never to a host directly; the
-- nginx host gets a transport with the same interface over nginx
-- subrequests (tide.transport.ngx).
--
--   local t = require("tide.transport.engine").new{timeout_ms = 5000}
--   local resp, err = t:request{method=, url=, headers={name=value},
--                               body=, timeout_ms=, response_headers=}
--   -- body: a string, or a buffer of core.encode_request_buffer (sent as
--   -- is, never made a Lua string: t.accepts_buffer_body is true)
--   -- response_headers: optional list of header names: resp.headers then
--   -- holds only those (the others are neither kept nor made strings)
--   -- resp = {status=, headers={lowercase=value}, body=}
--   -- err  = {kind=, message=, retryable=}  (tostring(err) = "kind: message")
--   t.sleep(seconds); t.now(); local th = t.spawn(fn, ...); t.wait(th)
--
-- HTTP statuses are not errors here: a 400 or a 500 comes back as resp; the
-- client decides. err covers only failures to get a response. Its kind is
-- one of timeout, connect, resolve, reset, truncated, tls, send, url, other;
-- all are retryable except url and tls (retrying cannot fix those).
--
-- request/sleep/spawn/wait must run inside sched.run (the `tide script`
-- command runs scripts that way); outside they raise. new(opts) also
-- accepts the engine options of sched.configure (max_connections,
-- connect_timeout_ms, ca_bundle, verify_tls, gather_us): they are process-wide and
-- apply to the next sched.run.
local sched = require "tide.sched"
local is_buffer = require("tide.core").is_buffer

local type, pairs, error, setmetatable, tostring = type, pairs, error, setmetatable, tostring

local M = {}

local new_error = require("tide.transport.error").new
M.new_error = new_error

local Transport = {}
Transport.__index = Transport
-- Clients may hand request bodies over as core.encode_request_buffer buffers.
Transport.accepts_buffer_body = true

local ENGINE_OPTS = { "max_connections", "connect_timeout_ms", "ca_bundle", "verify_tls", "gather_us" }

function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("tide.transport.engine.new: opts must be a table or nil", 2)
  end
  opts = opts or {}
  if opts.timeout_ms ~= nil and (type(opts.timeout_ms) ~= "number" or opts.timeout_ms < 0) then
    error("tide.transport.engine.new: timeout_ms must be a non-negative number", 2)
  end
  local engine_opts
  for _, k in ipairs(ENGINE_OPTS) do
    if opts[k] ~= nil then
      engine_opts = engine_opts or {}
      engine_opts[k] = opts[k]
    end
  end
  if engine_opts then
    sched.configure(engine_opts)
  end
  return setmetatable({ timeout_ms = opts.timeout_ms }, Transport)
end

function Transport:request(req)
  if type(req) ~= "table" then
    error("transport:request: req must be a table", 2)
  end
  if type(req.url) ~= "string" then
    error("transport:request: req.url must be a string", 2)
  end
  if req.headers ~= nil and type(req.headers) ~= "table" then
    error("transport:request: req.headers must be a table", 2)
  end
  local body = req.body
  if body ~= nil and type(body) ~= "string" and not is_buffer(body) then
    error("transport:request: req.body must be a string, a core buffer or nil", 2)
  end
  -- A request that names its method and timeout goes to the engine as it
  -- is (submit reads it before anything yields and keeps nothing of it).
  local ereq = req
  if req.method == nil or (req.timeout_ms == nil and self.timeout_ms ~= nil) then
    ereq = {
      method = req.method or "GET",
      url = req.url,
      headers = req.headers,
      body = body,
      timeout_ms = req.timeout_ms or self.timeout_ms,
      response_headers = req.response_headers,
    }
  end
  local resp, err = sched.request(ereq)
  if not resp then
    return nil, new_error(err.kind or "other", err.message or tostring(err))
  end
  -- the engine's completion, a table of its own: handed over as it is
  resp.id = nil
  return resp
end

-- Plain functions (t.sleep(s), not t:sleep(s)), forwarding to the host.
Transport.sleep = sched.sleep
Transport.spawn = sched.spawn
Transport.wait = sched.wait
Transport.now = sched.now

return M
