-- tide.http.api - tide's HTTP API, host-neutral: routing, status mapping and
-- JSON bodies. It never touches nginx; lua/tide/http/site.lua reads the
-- request from nginx, calls api.handle and writes what it returns. So every
-- part here runs (and is tested) in plain LuaJIT as well.
--
--   POST /aggregates/{type}/{id}   body: a JSON command {"type":..., "id":?, ...fields}
--   GET  /aggregates/{type}/{id}   {"stream":..,"version":..,"state":..}; 404 when no events
--   GET  /read/{model}/{key}       a read-model item; 404 when absent, 400 unknown model
--   GET  /health                   {"ok":true,"store":..,"versions":{..},"aggregates":{..}}
--
-- Every error body is {"ok":false,"error":{"kind":..,"message":..,...}}.
--
--   api.route(method, raw_path) -> route, params | nil, status, kind, message
--   api.handle(app, req) -> status, body, headers
--     app: {repository=, store_kind=, read=function(model, key) -> item|false|nil,err,
--           versions=, aggregates=, models=}
--     req: {method=, path=<raw, still %-encoded>, body=, headers={lowercase=value}}
local core = require "tide.core"
local input = require "tide.input"
local result = require "tide.result"

local M = {}

-- Error kinds (of tide.repository and of this API) -> HTTP status.
M.STATUS = {
  invalid = 400,          -- bad JSON, unknown aggregate or command, schema violation
  bad_request = 400,
  not_found = 404,
  method_not_allowed = 405,
  conflict = 409,         -- the stream kept changing for commands.max_attempts
  too_large = 413,        -- the request body
  event_too_large = 413,  -- an event over the 400 KB item limit
  rejected = 422,         -- the domain said no
  idempotency_mismatch = 422, -- a command id sent again with a different command
  handler_error = 500,    -- a handler raised or broke the contract
  too_many_events = 500,  -- a handler returned more than 100 events
  internal = 500,
  not_implemented = 501,
  store = 503,            -- store or network failure (after the client's retries)
  unavailable = 503,      -- the site could not open its store or configuration
}

function M.status_of(kind)
  return M.STATUS[kind] or 500
end

-- The bodies are tide.result's: the same bytes `tide exec` prints.
local json = result.json
M.json = json
M.error_body = result.error
M.result_body = result.ok
M.state_body = result.state

-- An error of tide.repository -> status, body (the shape of tide exec's).
function M.repository_error(err)
  if type(err) ~= "table" then
    return 500, M.error_body("internal", tostring(err))
  end
  local kind = err.kind or "store"
  return M.status_of(kind), result.error(kind, err.message or tostring(err),
                                         { stream = err.stream, command = err.command, type = err.type })
end

------------------------------------------------------------------------
-- Routing

-- Percent-decoding of one path segment ("+" stays "+": this is a path).
local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

-- route -> methods it answers
local ROUTES = {
  { pattern = "^/aggregates/([^/]+)/([^/]+)$", name = "aggregate", params = { "type", "id" },
    methods = { GET = "state", POST = "command" } },
  { pattern = "^/read/([^/]+)/([^/]+)$", name = "read", params = { "model", "key" },
    methods = { GET = "read" } },
  { pattern = "^/health$", name = "health", params = {}, methods = { GET = "health" } },
}

-- api.route(method, raw_path) -> handler name, params | nil, status, kind, message, allow
-- raw_path: the request target's path, still %-encoded (so an id may hold
-- an encoded "/"); the query string, if any, is ignored.
function M.route(method, raw_path)
  local path = (raw_path or "/"):match("^[^?#]*")
  for _, r in ipairs(ROUTES) do
    local caps = { path:match(r.pattern) }
    if caps[1] then
      local handler = r.methods[method == "HEAD" and "GET" or method]
      if not handler then
        local allow = {}
        for m in pairs(r.methods) do allow[#allow + 1] = m end
        table.sort(allow)
        allow = table.concat(allow, ", ")
        return nil, 405, "method_not_allowed",
          ("%s %s: this route answers %s"):format(method, path, allow), allow
      end
      local params = {}
      for i, name in ipairs(r.params) do
        params[name] = unescape(caps[i])
        if params[name] == "" then
          return nil, 400, "bad_request", ("the %s in %s is empty"):format(name, path)
        end
      end
      return handler, params
    end
  end
  return nil, 404, "not_found", ("no route for %s %s: the API has POST and GET /aggregates/{type}/{id}, "
    .. "GET /read/{model}/{key}, GET /health"):format(method, path)
end

------------------------------------------------------------------------
-- Handlers

-- Decodes a command body: the command table | nil, message.
function M.decode_command(body)
  if body == nil or body == "" then
    return nil, 'the request body is empty: send a JSON command, e.g. {"type":"Deposit","amount":5}'
  end
  local v, err = input.decode(body, "the request body")
  if v == nil then return nil, err end
  if type(v) ~= "table" or #v > 0 or body:match("^%s*%[") then
    return nil, 'the request body must be a JSON object with a "type", e.g. {"type":"Deposit","amount":5}'
  end
  return v
end

local JSON = { ["content-type"] = "application/json" }

local handlers = {}

function handlers.command(app, req, p)
  local cmd, derr = M.decode_command(req.body)
  if not cmd then return 400, M.error_body("invalid", derr) end
  -- An Idempotency-Key header names the command when the body does not.
  local key = req.headers and req.headers["idempotency-key"]
  if cmd.id == nil and key and key ~= "" then cmd.id = key end
  local res, err = app.repository:execute(p.type, p.id, cmd)
  if not res then return M.repository_error(err) end
  return 200, M.result_body(res)
end

function handlers.state(app, _, p)
  local st, err = app.repository:state(p.type, p.id)
  if not st then return M.repository_error(err) end
  if st.version == 0 then
    return 404, M.error_body("not_found", ("stream %s has no events"):format(st.stream), { stream = st.stream })
  end
  return 200, M.state_body(st)
end

function handlers.read(app, _, p)
  if not app.read then
    return 501, M.error_body("not_implemented", app.read_error
      or "read models are not available in this build (no projection backend for the store)")
  end
  local item, err = app.read(p.model, p.key)
  if item == nil then
    if type(err) == "table" and err.kind then
      return M.status_of(err.kind), M.error_body(err.kind, err.message, { model = p.model })
    end
    return 503, M.error_body("store", "reading " .. p.model .. " failed: " .. tostring(err), { model = p.model })
  end
  if item == false then
    return 404, M.error_body("not_found", ("read model %s has no item %s"):format(p.model, p.key),
                             { model = p.model, key = p.key })
  end
  return 200, json(item)
end

function handlers.health(app)
  return 200, '{"ok":true,"store":' .. json(app.store_kind) .. ',"versions":' .. json(app.versions or {})
    .. ',"aggregates":' .. json(app.aggregates or {}) .. ',"models":' .. json(app.models or core.list{})
    .. (app.worker and (',"worker":' .. json(app.worker)) or "") .. "}"
end

-- api.handle(app, req) -> status, body, headers
function M.handle(app, req)
  local handler, p, kind, message, allow = M.route(req.method, req.path)
  if not handler then
    return p, M.error_body(kind, message), allow and { ["content-type"] = "application/json", allow = allow } or JSON
  end
  if app.unavailable then -- the store or configuration could not be opened: say why, on every route
    return 503, M.error_body("unavailable", app.unavailable, { store = app.store_kind }), JSON
  end
  local ok, status, body = xpcall(handlers[handler], debug.traceback, app, req, p)
  if not ok then
    return 500, M.error_body("internal", status), JSON
  end
  return status, body, JSON
end

return M
