-- tide.transport.ngx - the DynamoDB transport inside nginx.
--
-- nginx's own HTTP client does the I/O: each request is a subrequest
-- (ngx.location.capture) to an internal location that proxy_passes to an
-- `upstream` with `keepalive` connections (see examples/nginx/nginx.conf).
-- The worker never blocks: the calling request's coroutine yields until
-- the subrequest is done. The signed headers travel as nginx variables
-- (capture's `vars` option), because the location sends only the headers it
-- names (proxy_pass_request_headers off; proxy_set_header X $tide_x).
--
--   local t = require("tide.transport.ngx").new{
--     routes = { ["http://127.0.0.1:8000"] = "/_tide/dynamodb" },  -- endpoint base -> location
--   }
--   local resp, err = t:request{method=, url=, headers=, body=, timeout_ms=}
--   -- resp = {status=, headers={lowercase=value}, body=}
--   -- (req.response_headers, which the engine transport honours, is
--   -- ignored: every header comes back)
--   -- err  = {kind=, message=, retryable=}  (tostring(err) = "kind: message")
--   t.sleep(s) = ngx.sleep, t.spawn/t.wait = ngx.thread.spawn/wait, t.now = tide.clock's monotonic seconds
--
-- HTTP statuses are not errors: DynamoDB's 400 or 500 comes back as resp.
-- A failure to get a response is answered by nginx itself (502/504 from the
-- proxy module, no body, no x-amzn-requestid): that becomes err here, kind
-- "connect" or "timeout" (both retryable). The per-attempt timeout is the location's
-- proxy_read_timeout (rendered from dynamodb.timeout_ms), not
-- req.timeout_ms: nginx fixes it per location.
--
-- request/sleep/spawn/wait need a request context (rewrite, access, content
-- phases; not init_worker or a timer: ngx.location.capture needs a request).
local ngx = ngx

local type, pairs, error, setmetatable, tostring, lower =
  type, pairs, error, setmetatable, tostring, string.lower

local M = {}

-- Headers the DynamoDB client sends, and the variable each travels in. The
-- nginx.conf location sets exactly these (Host comes from the URL).
M.HEADER_VARS = {
  ["content-type"] = "tide_content_type",
  ["x-amz-target"] = "tide_amz_target",
  ["x-amz-date"] = "tide_amz_date",
  ["x-amz-security-token"] = "tide_amz_security_token",
  ["authorization"] = "tide_authorization",
}

-- The headers of the credentials chain's requests (container endpoint,
-- IMDSv2, STS, SSO portal), for routes marked `credentials`: their
-- locations (tide.credentials.nginx) also take the method and the path.
M.CREDENTIAL_HEADER_VARS = {
  ["authorization"] = "tide_c_authorization",
  ["content-type"] = "tide_c_content_type",
  ["x-amz-date"] = "tide_c_amz_date",
  ["x-amz-security-token"] = "tide_c_amz_security_token",
  ["x-aws-ec2-metadata-token"] = "tide_c_imds_token",
  ["x-aws-ec2-metadata-token-ttl-seconds"] = "tide_c_imds_ttl",
  ["x-amz-sso_bearer_token"] = "tide_c_sso_token",
}

local METHODS = { GET = "HTTP_GET", PUT = "HTTP_PUT", POST = "HTTP_POST", HEAD = "HTTP_HEAD" }

-- Phases where ngx.location.capture works
local REQUEST_PHASES = { rewrite = true, access = true, content = true }

local new_error = require("tide.transport.error").new
M.new_error = new_error

local Transport = {}
Transport.__index = Transport

-- "http://host:port/path" -> "http://host:port", "host:port"
local function split_url(url)
  local base, hostport = url:match("^(https?://([^/]+))")
  return base, hostport
end
M.split_url = split_url

-- new{routes = {[endpoint base URL] = internal location}} -> transport
function M.new(opts)
  if type(opts) ~= "table" or type(opts.routes) ~= "table" then
    error("tide.transport.ngx.new: opts.routes (endpoint base URL -> internal location) is required", 2)
  end
  local routes = {}
  for base, loc in pairs(opts.routes) do
    -- a location string (DynamoDB), or {location = DynamoDB's or nil,
    -- credentials = the credentials chain's} (one server may be both: a test's)
    if type(base) ~= "string" or (type(loc) ~= "string" and (type(loc) ~= "table" or type(loc.credentials) ~= "string")) then
      error("tide.transport.ngx.new: routes maps URL strings to location strings", 2)
    end
    routes[(base:gsub("/+$", ""))] = loc
  end
  return setmetatable({ routes = routes }, Transport)
end

function Transport:request(req)
  if type(req) ~= "table" then error("transport:request: req must be a table", 2) end
  if type(req.url) ~= "string" then error("transport:request: req.url must be a string", 2) end
  if req.body ~= nil and type(req.body) ~= "string" then
    error("transport:request: req.body must be a string or nil", 2)
  end
  local base, hostport = split_url(req.url)
  local loc = base and self.routes[base]
  if not loc then
    local known = {}
    for b in pairs(self.routes) do known[#known + 1] = b end
    table.sort(known)
    return nil, new_error("url", ("this nginx site proxies DynamoDB requests to %s, not to %s: "
      .. "render the site again from the current tide.yaml (tools/nginx.sh reload)")
      :format(#known > 0 and table.concat(known, ", ") or "no endpoint", tostring(base or req.url)))
  end
  -- the Host header the request was signed with: no default port
  local host = hostport
  if base:sub(1, 5) == "https" then host = host:gsub(":443$", "") else host = host:gsub(":80$", "") end
  if type(loc) == "table" then
    if not loc.location or not (req.headers and req.headers["x-amz-target"]) then
      return self:credentials_request(req, base, host, loc.credentials)
    end
    loc = loc.location
  end
  -- every variable, "" when the header is absent (nginx then omits the header)
  local vars = { tide_host = host }
  for _, var in pairs(M.HEADER_VARS) do vars[var] = "" end
  for name, value in pairs(req.headers or {}) do
    local var = M.HEADER_VARS[lower(name)]
    if not var then
      error("transport:request: header '" .. name .. "' has no variable in the nginx location "
        .. "(tide.transport.ngx.HEADER_VARS)", 2)
    end
    vars[var] = value
  end
  local res = ngx.location.capture(loc, {
    method = req.method == "GET" and ngx.HTTP_GET or ngx.HTTP_POST,
    body = req.body or "",
    vars = vars,
  })
  local headers = {}
  for k, v in pairs(res.header or {}) do
    headers[lower(k)] = type(v) == "table" and v[#v] or v
  end
  -- nginx answers for the upstream when DynamoDB did not: 502 (connection
  -- refused, reset, bad response) or 504 (timeout), with no body and no
  -- request id (a subrequest gets no error page). DynamoDB's own errors
  -- always carry x-amzn-requestid and a JSON body.
  if (res.status == 502 or res.status == 504) and not headers["x-amzn-requestid"] and (res.body or "") == "" then
    local kind = res.status == 504 and "timeout" or "connect"
    return nil, new_error(kind, "DynamoDB at " .. base .. ": "
      .. (kind == "timeout" and "no response within proxy_read_timeout"
          or "connection failed, was dropped, or the response was invalid (nginx's error log has the cause)"))
  end
  if res.truncated then
    return nil, new_error("truncated", "the response from " .. base .. " was cut short")
  end
  return { status = res.status, headers = headers, body = res.body or "" }
end

-- A request of the credentials chain: any method, path and query, the
-- headers of CREDENTIAL_HEADER_VARS. Outside a request's phases (init_worker,
-- timers) nginx has no subrequests: an error of kind "other" says so.
function Transport:credentials_request(req, base, host, loc)
  local phase = ngx.get_phase()
  if not REQUEST_PHASES[phase] then
    return nil, new_error("other", "no subrequest in nginx's " .. tostring(phase) .. " phase: "
      .. "credentials from " .. base .. " are fetched within a request")
  end
  local vars = { tide_c_host = host, tide_c_path = req.url:sub(#base + 1) }
  if vars.tide_c_path == "" then vars.tide_c_path = "/" end
  for _, var in pairs(M.CREDENTIAL_HEADER_VARS) do vars[var] = "" end
  for name, value in pairs(req.headers or {}) do
    local var = M.CREDENTIAL_HEADER_VARS[lower(name)]
    if not var then
      error("transport:request: header '" .. name .. "' has no variable in the credentials location", 2)
    end
    vars[var] = value
  end
  local method = METHODS[req.method or "GET"]
  if not method then error("transport:request: method " .. tostring(req.method) .. " not supported", 2) end
  local res = ngx.location.capture(loc, { method = ngx[method], body = req.body or "", vars = vars })
  local headers = {}
  for k, v in pairs(res.header or {}) do headers[lower(k)] = type(v) == "table" and v[#v] or v end
  if (res.status == 502 or res.status == 504) and (res.body or "") == "" then
    return nil, new_error(res.status == 504 and "timeout" or "connect", base .. ": no response (nginx's error log has the cause)")
  end
  return { status = res.status, headers = headers, body = res.body or "" }
end

-- Plain functions (t.sleep(s), not t:sleep(s)), as tide.transport.engine.
Transport.sleep = function(s) return ngx.sleep(s) end
Transport.spawn = function(...) return ngx.thread.spawn(...) end
Transport.wait = function(...) return ngx.thread.wait(...) end
Transport.now = require("tide.clock").mono

return M
