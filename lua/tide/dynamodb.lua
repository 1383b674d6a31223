-- tide.dynamodb: the DynamoDB and DynamoDB Streams client.
--
-- Plain Lua values in and out (tide.core's codec marshals AttributeValues),
-- SigV4 from tide.core, retries with capped exponential backoff and full
-- jitter. The transport is pluggable: in the tide process it is
-- tide.transport.engine (libcurl multi, the calling coroutine yields); in
-- nginx it is tide.transport.ngx, over nginx subrequests, with the same
-- interface:
--
--   t:request{method=, url=, headers=, body=, timeout_ms=}
--       -> {status=, headers=, body=} | nil, {kind=, message=, retryable=}
--   t.sleep(seconds), t.spawn(fn, ...) -> thread, t.wait(thread) -> ok, ...
--
-- Modules that run DynamoDB calls side by side (the projection backend, the
-- Streams runner) take the host's concurrency from the client, never from
-- its transport:
--
--   client:spawn(fn, ...) -> thread;  client:wait(thread) -> ok, ...
--   client:sleep(seconds);  client:now() -> seconds
--   client:run_parallel(list, fn) -> nil | the first error
--       fn(x) for every x of list (true | nil, err), batch_concurrency at
--       a time
--
-- Every operation returns its result table, or nil and a tide.error:
--   err.kind       the transport's kind for a TransportError (connect,
--                  timeout, ...); else "conflict" (a condition failed),
--                  "invalid" (a request DynamoDB or tide refuses as such),
--                  "store" (the service failed)
--   err.type       AWS error type ("ConditionalCheckFailedException", ...),
--                  or a tide type ("TransportError", "MalformedResponse",
--                  "ItemTooLarge", "LimitExceeded", "InvalidValue", ...)
--   err.message, err.status (HTTP status, 0 without a response),
--   err.retryable, err.attempts, err.op, err.table,
--   err.reasons    TransactionCanceledException's CancellationReasons
--                  (with .Item when the action asked for
--                  ReturnValuesOnConditionCheckFailure = "ALL_OLD")
--   err.item       the item a failed condition found, when the request
--                  asked for ReturnValuesOnConditionCheckFailure = "ALL_OLD"
--   err.ambiguous  true when an earlier attempt failed in transit, so a write
--                  the service reports as failed may in fact have been applied
--                  (a ConditionalCheckFailed after a dropped connection)
-- tostring(err) gives one line naming the operation, the table and the type
-- ("DynamoDB GetItem on table 'orders': ValidationException: ...").
--
-- What the service was asked, and what it billed: client.usage counts the
-- requests sent per operation (retries included) and adds up the capacity
-- units of every answer that carries ConsumedCapacity (a request made with
-- ReturnConsumedCapacity = "TOTAL"), per table and operation:
--   usage.requests[op] = n;  usage.capacity[table][op] = {read=, write=}
-- A write refused by its condition is billed too, but DynamoDB's error
-- answer does not say how much: usage.failed_writes[op] counts them.

local core = require "tide.core"
local terror = require "tide.error"
local clock = require "tide.clock"
local metrics = require "tide.metrics"
local mono = clock.mono
local credentials = require "tide.credentials"

local M = {}

local DEFAULTS = {
  max_attempts = 8,       -- attempts per request, the first included
  base_delay = 0.025,     -- seconds; backoff ceiling doubles per retry
  max_delay = 5,          -- seconds; cap of one backoff
  timeout_ms = 30000,     -- per attempt
  batch_concurrency = 8,  -- BatchWriteItem / BatchGetItem requests in flight
  max_unprocessed_rounds = 20,
}

local limits = core.limits
local encode_request, encode_request_buffer = core.encode_request, core.encode_request_buffer

-- Seed jitter from the CSPRNG, so processes started together spread out.
do
  local seed = tonumber(core.random_hex(4), 16)
  math.randomseed(seed)
end

------------------------------------------------------------------------
-- Errors: tide.error, with the client's type as err.type and a kind
-- derived from it (a TransportError keeps the transport's kind).

local KIND_OF_TYPE = {
  ConditionalCheckFailedException = "conflict", TransactionCanceledException = "conflict",
  TransactionConflictException = "conflict",
  ConfigError = "invalid", CredentialsError = "invalid", InvalidValue = "invalid", ItemTooLarge = "invalid",
  LimitExceeded = "invalid", ValidationException = "invalid", SerializationException = "invalid",
  LuaError = "internal",
}

local function new_error(fields)
  if fields.kind == nil then fields.kind = KIND_OF_TYPE[fields.type] or "store" end
  if fields.message == nil then fields.message = fields.type end
  return terror.new(fields)
end
M.Error = terror.Error
M.is_error = terror.is

------------------------------------------------------------------------
-- Endpoints and configuration

local function parse_url(url)
  local scheme, rest = url:match("^(https?)://(.+)$")
  if not scheme then return nil end
  local hostport, path = rest:match("^([^/]+)(/?.*)$")
  if not hostport or hostport == "" then return nil end
  local host, port = hostport:match("^(.-):(%d+)$")
  host = host or hostport
  if host == "" then return nil end
  -- The Host header carries the port only when it is not the default one,
  -- exactly as libcurl and nginx send it, or the signature would not match.
  local default = (scheme == "https" and "443" or "80")
  local host_header = (port and port ~= default) and (host .. ":" .. port) or host
  if path == "" then path = "/" end
  local base = scheme .. "://" .. hostport
  return { scheme = scheme, host = host_header, path = path, base = base, url = base .. "/" }
end
M.parse_url = parse_url

local function getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

-- Resolves endpoint and region: explicit options, then AWS_ENDPOINT_URL_DYNAMODB,
-- AWS_ENDPOINT_URL; the region through tide.credentials.region (AWS_REGION,
-- AWS_DEFAULT_REGION, the profile's, then instance metadata when this
-- runs inside the tide process's scheduler).
local function in_scheduler()
  if ngx then return false end
  local ok, sched = pcall(require, "tide.sched")
  return ok and sched.current() ~= nil
end

local function resolve_config(opts)
  local region = opts.region
  if not region then
    local local_endpoint = opts.endpoint or getenv("AWS_ENDPOINT_URL_DYNAMODB") or getenv("AWS_ENDPOINT_URL")
    local rerr
    region, rerr = credentials.region{ profile = opts.profile, transport = opts.transport,
                                       imds = not local_endpoint and in_scheduler() }
    if not region and not local_endpoint then
      return nil, "no AWS region: set dynamodb.region, AWS_REGION or a profile's region ("
        .. tostring(rerr and rerr.message or rerr) .. ")"
    end
  end
  local endpoint = opts.endpoint or getenv("AWS_ENDPOINT_URL_DYNAMODB") or getenv("AWS_ENDPOINT_URL")
  if not region then
    if endpoint then
      region = "us-east-1" -- a local endpoint needs some region to sign with
    else
      return nil, "no AWS region: set dynamodb.region, AWS_REGION or a profile's region"
    end
  end
  endpoint = endpoint or ("https://dynamodb." .. region .. ".amazonaws.com")
  local streams = opts.streams_endpoint or getenv("AWS_ENDPOINT_URL_DYNAMODB_STREAMS")
    or ((opts.endpoint or getenv("AWS_ENDPOINT_URL_DYNAMODB") or getenv("AWS_ENDPOINT_URL")) and endpoint)
    or ("https://streams.dynamodb." .. region .. ".amazonaws.com")
  local e, s = parse_url(endpoint), parse_url(streams)
  if not e then return nil, "invalid DynamoDB endpoint URL '" .. endpoint .. "' (want http(s)://host[:port])" end
  if not s then return nil, "invalid DynamoDB Streams endpoint URL '" .. streams .. "'" end
  return region, e, s
end

local Client = {}
Client.__index = Client

local function default_transport(opts)
  local ok, mod = pcall(require, "tide.transport.engine")
  if not ok then
    error("tide.dynamodb: no transport given and tide.transport.engine is unavailable: " .. tostring(mod), 3)
  end
  return mod.new(opts)
end

-- dynamodb.new(opts) -> client | nil, err
--   opts.region, opts.endpoint, opts.streams_endpoint, opts.profile,
--   opts.credentials = {access_key_id=, secret_access_key=, session_token=},
--   opts.transport, opts.max_attempts, opts.base_delay, opts.max_delay,
--   opts.timeout_ms, opts.batch_concurrency, and transport options
--   (max_connections, ca_bundle, verify_tls, gather_us) for the default transport.
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("dynamodb.new: opts must be a table", 2) end
  local region, ep, sep = resolve_config(opts)
  if not region then return nil, new_error{ type = "ConfigError", message = ep, status = 0 } end
  local self = setmetatable({}, Client)
  for k, v in pairs(DEFAULTS) do self[k] = opts[k] or v end
  self.region = region
  self.endpoint = ep
  self.streams_endpoint = sep
  self.profile = opts.profile
  self.transport = opts.transport or default_transport(opts)
  self.credential_source = opts.credential_source or credentials.new{
    profile = opts.profile, credentials = opts.credentials, region = opts.region or region,
    transport = self.transport, log = opts.log, shared = opts.credentials_shared,
  }
  self.sign_req = { method = "POST", path = "/" }
  self.sign_opts = { region = region, service = "dynamodb" }
  self.buffer_bodies = self.transport.accepts_buffer_body == true
  self.usage = { requests = {}, capacity = {}, failed_writes = {} }
  return self
end

local READ_OPS = { GetItem = true, Query = true, Scan = true, BatchGetItem = true, TransactGetItems = true }

local function add_capacity(usage, op, cc)
  local tname = cc.TableName or "?"
  local per_table = usage.capacity[tname]
  if not per_table then per_table = {}; usage.capacity[tname] = per_table end
  local u = per_table[op]
  if not u then u = { read = 0, write = 0 }; per_table[op] = u end
  local r, w = tonumber(cc.ReadCapacityUnits), tonumber(cc.WriteCapacityUnits)
  if r or w then
    u.read, u.write = u.read + (r or 0), u.write + (w or 0)
  elseif READ_OPS[op] then
    u.read = u.read + (tonumber(cc.CapacityUnits) or 0)
  else
    u.write = u.write + (tonumber(cc.CapacityUnits) or 0)
  end
end

-- Adds an answer's ConsumedCapacity (one object, or a list for batches and
-- transactions) to client.usage.
local function account(usage, op, consumed)
  if type(consumed) ~= "table" then return end
  if consumed.TableName or consumed.CapacityUnits then
    add_capacity(usage, op, consumed)
  else
    for _, cc in ipairs(consumed) do
      if type(cc) == "table" then add_capacity(usage, op, cc) end
    end
  end
end

-- client:usage_totals() -> {requests=, read=, write=} over every operation
-- and table so far.
function Client:usage_totals()
  local t = { requests = 0, read = 0, write = 0 }
  for _, n in pairs(self.usage.requests) do t.requests = t.requests + n end
  for _, per_table in pairs(self.usage.capacity) do
    for _, u in pairs(per_table) do t.read, t.write = t.read + u.read, t.write + u.write end
  end
  return t
end

-- client:credentials() -> creds | nil, err: the current credentials of the
-- chain (tide.credentials), refreshed before they expire.
function Client:credentials()
  return self.credential_source:get()
end

------------------------------------------------------------------------
-- One request, with retries

local function table_of(params)
  if type(params) ~= "table" then return nil end
  if params.TableName then return params.TableName end
  if params.RequestItems then
    local names = {}
    for name in pairs(params.RequestItems) do names[#names + 1] = name end
    table.sort(names)
    return table.concat(names, ",")
  end
  if params.StreamArn then return params.StreamArn:match(":table/([^/]+)") end
  if params.ShardIterator then return nil end
  return nil
end

local function parse_error_body(status, body)
  local doc = body and body ~= "" and core.decode_response(body)
  if type(doc) == "table" and (doc.__type or doc.message or doc.Message) then
    local t = doc.__type and core.short_error_type(doc.__type) or ("HTTP" .. status)
    return t, doc.message or doc.Message or "", doc
  end
  -- Not JSON: a proxy's or load balancer's page. Keep a short, one-line hint.
  local snippet = (body or ""):sub(1, 160):gsub("%s+", " ")
  return "HTTP" .. status, "non-JSON error response: " .. snippet, nil
end

local RETRYABLE_CANCEL = {
  None = true, TransactionConflict = true, ThrottlingError = true,
  ProvisionedThroughputExceeded = true,
}

-- A cancelled transaction is worth replaying (with the same token) only when
-- no item failed its condition or validation.
local function cancellation_retryable(reasons)
  if type(reasons) ~= "table" then return false end
  local any = false
  for _, r in ipairs(reasons) do
    if not RETRYABLE_CANCEL[r.Code or "None"] then return false end
    if r.Code and r.Code ~= "None" then any = true end
  end
  return any
end

-- The only response header the client reads (for error reports).
local RESPONSE_HEADERS = { "x-amzn-requestid" }

local JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
local sign, wall_s = core.sign, clock.wall_s

-- The headers core.sign signs besides its own, per X-Amz-Target: never
-- changed once made, so shared by every request of that operation.
local signed_headers_of = {}
local function signed_headers(target)
  local h = signed_headers_of[target]
  if not h then
    h = { ["content-type"] = JSON_CONTENT_TYPE, ["x-amz-target"] = target }
    signed_headers_of[target] = h
  end
  return h
end

-- Errors that mean "these credentials are no longer good": the request is
-- retried once after a refresh (tide.credentials: source:expired).
local REFRESH_ON = { ExpiredTokenException = true, UnrecognizedClientException = true,
                     ExpiredToken = true }

-- Sends one already-encoded request and classifies the outcome:
-- returns result | nil, err (err.retry_class = "never"|"throttled"|"transient")
function Client:attempt(target, endpoint, body, op, tname, decode)
  local creds, cerr = self:credentials()
  if not creds then
    return nil, new_error{ type = "CredentialsError", message = tostring(cerr),
                           kind = type(cerr) == "table" and cerr.kind or nil, status = 0,
                           retry_class = "never", op = op, table = tname }
  end
  -- core.sign reads its arguments and returns before anything can yield,
  -- so one request table and one options table serve every signature of
  -- the client; the headers signed are the same for every call of an op.
  local sign_req, sign_opts = self.sign_req, self.sign_opts
  sign_req.host, sign_req.headers, sign_req.body = endpoint.host, signed_headers(target), body
  sign_opts.time = wall_s()
  local signed = sign(sign_req, creds, sign_opts)
  sign_req.body = nil -- not kept alive by the client
  local headers = {
    ["content-type"] = JSON_CONTENT_TYPE, ["x-amz-target"] = target,
    authorization = signed.authorization, ["x-amz-date"] = signed["x-amz-date"],
    ["x-amz-security-token"] = signed["x-amz-security-token"],
  }
  local resp, terr = self.transport:request{
    method = "POST", url = endpoint.url, headers = headers, body = body,
    timeout_ms = self.timeout_ms, response_headers = RESPONSE_HEADERS,
  }
  if not resp then
    local kind = type(terr) == "table" and terr.kind or "other"
    local msg = type(terr) == "table" and terr.message or tostring(terr)
    return nil, new_error{ type = "TransportError", kind = kind, message = msg, status = 0,
                           retry_class = core.classify_error(0, nil, kind), op = op, table = tname }
  end
  local status = resp.status
  if status == 200 then
    local result, derr = (decode or core.decode_response)(resp.body or "")
    if result == nil then
      return nil, new_error{ type = "MalformedResponse", message = derr, status = status,
                             retry_class = "transient", op = op, table = tname }
    end
    return result
  end
  local etype, emsg, doc = parse_error_body(status, resp.body)
  local err = new_error{ type = etype, message = emsg, status = status, op = op, table = tname,
                         request_id = resp.headers and resp.headers["x-amzn-requestid"] }
  if doc and doc.Item then err.item = doc.Item end -- ReturnValuesOnConditionCheckFailure
  -- the key refused, so that send can refresh (a key id is no secret)
  if REFRESH_ON[etype] then err.access_key_id = creds.access_key_id end
  if etype == "TransactionCanceledException" and doc and doc.CancellationReasons then
    err.reasons = doc.CancellationReasons
    err.retry_class = cancellation_retryable(err.reasons) and "transient" or "never"
  else
    err.retry_class = core.classify_error(status, doc and doc.__type or nil, nil)
  end
  return nil, err
end

function Client:backoff(attempt)
  return core.backoff(attempt, self.base_delay, self.max_delay, math.random())
end

-- client:call(op, params [, opts]) -> result | nil, err
-- The low-level entry: any DynamoDB (or, with opts.streams, Streams) API
-- operation by name, with the codec's marshalling and the retry policy.
-- opts.decode: function(body) -> result | nil, message, used instead of
-- core.decode_response on a 200 response.
-- opts.gate: function() -> true | nil, err, called before every attempt,
-- the retries included: a falsy answer ends the request there with that
-- error (type "Cancelled" when it gives none). A writer whose right to
-- write can lapse (a lease) checks it before each send, so a retry after
-- a backoff is never sent on a right that ran out meanwhile.
function Client:call(op, params, opts)
  if type(op) ~= "string" then error("call: op must be a string", 2) end
  if type(params) ~= "table" then error("call: params must be a table (" .. op .. ")", 2) end
  local body, err = self:encode(op, params)
  if not body then return nil, err end
  return self:send(op, params, body, opts)
end

-- -> body, its length in bytes | nil, err. The body is a Lua string, or,
-- for a transport that takes them, a buffer: bodies that differ in a few
-- bytes are costly to intern as Lua strings.
function Client:encode(op, params)
  local body, size
  if self.buffer_bodies then
    body, size = encode_request_buffer(params)
  else
    body, size = encode_request(params)
    if body then size = #body end
  end
  if not body then
    return nil, new_error{ type = "InvalidValue", message = size, status = 0, op = op,
                           table = table_of(params), retryable = false, attempts = 0 }
  end
  return body, size
end

-- Sends an encoded request with the retry policy.
function Client:send(op, params, body, opts)
  local streams = opts and opts.streams
  local tname = table_of(params)
  local target = (streams and "DynamoDBStreams_20120810." or "DynamoDB_20120810.") .. op
  local endpoint = streams and self.streams_endpoint or self.endpoint
  local in_doubt = false
  local attempt = 0
  local usage = self.usage
  local requests = usage.requests
  local t0 = metrics.enabled and mono()
  local renewed = false
  local gate = opts and opts.gate
  while true do
    if gate then
      local open, gerr = gate()
      if not open then
        return nil, gerr or new_error{ type = "Cancelled", status = 0, op = op, table = tname, attempts = attempt,
                                       retryable = false, message = op .. " not sent: its gate is closed" }
      end
    end
    attempt = attempt + 1
    requests[op] = (requests[op] or 0) + 1
    local result, err = self:attempt(target, endpoint, body, op, tname, opts and opts.decode)
    if result then
      if result.ConsumedCapacity then account(usage, op, result.ConsumedCapacity) end
      if t0 then metrics.dynamodb_result(op, t0, result) end
      return result
    end
    if err.kind == "conflict" then usage.failed_writes[op] = (usage.failed_writes[op] or 0) + 1 end
    if err.access_key_id and not renewed then
      -- refused credentials: one retry with fresh ones, not counted
      renewed = true
      local fresh = self.credential_source:expired(err.access_key_id)
      if fresh then
        attempt = attempt - 1
        goto continue
      end
    end
    err.attempts = attempt
    err.retryable = err.retry_class ~= "never"
    if in_doubt and err.retry_class == "never" then err.ambiguous = true end
    if err.type == "TransportError" or err.type == "MalformedResponse" or err.status >= 500 then
      in_doubt = true
    end
    if err.retry_class == "never" or attempt >= self.max_attempts then
      if t0 then metrics.dynamodb_failure(op, t0, err) end
      return nil, err
    end
    if t0 then metrics.dynamodb_retry(op, err) end
    self.transport.sleep(self:backoff(attempt - 1))
    ::continue::
  end
end

------------------------------------------------------------------------
-- Single-item operations

local function check_params(name, params)
  if type(params) ~= "table" then error(name .. ": params must be a table", 3) end
  if type(params.TableName) ~= "string" then error(name .. ": params.TableName must be a string", 3) end
end

-- An item's DynamoDB size never exceeds the length of its DynamoDB JSON
-- (names and values appear raw or longer there), so the exact size is only
-- computed for requests whose body could hold an oversized item.
local function item_too_large(op, tname, item, what)
  local size = core.item_size(item)
  if size and size > limits.item_bytes then
    return new_error{ type = "ItemTooLarge", status = 0, op = op, table = tname, attempts = 0,
      retryable = false,
      message = string.format("%s is %d bytes, over DynamoDB's %d-byte item limit",
                              what or "item", size, limits.item_bytes) }
  end
end

function Client:get_item(params)
  check_params("get_item", params)
  return self:call("GetItem", params)
end

-- put_item, update_item, delete_item (params [, opts]): opts as for call
-- (opts.gate).
function Client:put_item(params, opts)
  check_params("put_item", params)
  if type(params.Item) ~= "table" then error("put_item: params.Item must be a table", 2) end
  local body, size = self:encode("PutItem", params)
  if not body then return nil, size end
  if size > limits.item_bytes then
    local err = item_too_large("PutItem", params.TableName, params.Item)
    if err then return nil, err end
  end
  return self:send("PutItem", params, body, opts)
end

function Client:update_item(params, opts)
  check_params("update_item", params)
  return self:call("UpdateItem", params, opts)
end

function Client:delete_item(params, opts)
  check_params("delete_item", params)
  return self:call("DeleteItem", params, opts)
end

------------------------------------------------------------------------
-- Query and Scan: pagination

local function shallow_copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- Iterator over pages: `for page, err in client:query_pages(p) do ... end`.
-- On failure the loop body sees page == false and err, once, then the loop ends.
local function pages(self, op, params)
  local p = shallow_copy(params)
  local done = false
  return function()
    if done then return nil end
    local page, err = self:call(op, p)
    if not page then done = true; return false, err end
    if page.LastEvaluatedKey then
      p.ExclusiveStartKey = page.LastEvaluatedKey
    else
      done = true
    end
    return page
  end
end

function Client:query_pages(params)
  check_params("query_pages", params)
  return pages(self, "Query", params)
end

function Client:scan_pages(params)
  check_params("scan_pages", params)
  return pages(self, "Scan", params)
end

-- Iterator over items across pages: `for item, err in client:query_items(p)`.
local function items(self, op, params)
  local next_page = pages(self, op, params)
  local page, i = nil, 0
  return function()
    while true do
      if page and page.Items and i < #page.Items then
        i = i + 1
        return page.Items[i]
      end
      local err
      page, err = next_page()
      i = 0
      if page == nil then return nil end
      if page == false then return false, err end
    end
  end
end

function Client:query_items(params)
  check_params("query_items", params)
  return items(self, "Query", params)
end

local function collect(self, op, params)
  local all, count, scanned = {}, 0, 0
  local last
  for page, err in pages(self, op, params) do
    if not page then return nil, err end
    for _, item in ipairs(page.Items or {}) do all[#all + 1] = item end
    count = count + (page.Count or 0)
    scanned = scanned + (page.ScannedCount or 0)
    last = page
  end
  return { Items = core.list(all), Count = count, ScannedCount = scanned,
           ConsumedCapacity = last and last.ConsumedCapacity }
end

-- client:query(params) -> {Items=, Count=, ScannedCount=} with every page.
function Client:query(params)
  check_params("query", params)
  return collect(self, "Query", params)
end

-- client:scan(params [, {segments=N}]) -> {Items=, Count=, ScannedCount=}.
-- With segments > 1 the table is read by N parallel segment scans (item
-- order across segments is unspecified).
function Client:scan(params, opts)
  check_params("scan", params)
  local segments = opts and opts.segments or params.TotalSegments or 1
  if segments <= 1 then return collect(self, "Scan", params) end
  local threads = {}
  for s = 0, segments - 1 do
    local p = shallow_copy(params)
    p.Segment, p.TotalSegments = s, segments
    threads[#threads + 1] = self.transport.spawn(collect, self, "Scan", p)
  end
  local all, count, scanned, first_err = {}, 0, 0, nil
  for _, th in ipairs(threads) do
    local ok, res, err = self.transport.wait(th)
    if not ok then
      first_err = first_err or new_error{ type = "LuaError", message = tostring(res), status = 0,
                                          op = "Scan", table = params.TableName }
    elseif not res then
      first_err = first_err or err
    else
      for _, item in ipairs(res.Items) do all[#all + 1] = item end
      count, scanned = count + res.Count, scanned + res.ScannedCount
    end
  end
  if first_err then return nil, first_err end
  return { Items = core.list(all), Count = count, ScannedCount = scanned }
end

------------------------------------------------------------------------
-- Batches

-- The host's threads and clock, through the transport (see the header).
function Client:spawn(fn, ...) return self.transport.spawn(fn, ...) end
function Client:wait(thread) return self.transport.wait(thread) end
function Client:sleep(seconds) return self.transport.sleep(seconds) end
function Client:now() return self.transport.now() end

-- Runs fn(chunk) for every chunk with at most batch_concurrency in flight;
-- returns the first error, or nil.
function Client:run_parallel(chunks, fn)
  local n = self.batch_concurrency
  local next_index, first_err = 1, nil
  local function worker()
    while not first_err and next_index <= #chunks do
      local chunk = chunks[next_index]
      next_index = next_index + 1
      local ok, err = fn(chunk)
      if not ok then first_err = first_err or err end
    end
  end
  if #chunks == 1 then
    worker()
    return first_err
  end
  local threads = {}
  for _ = 1, math.min(n, #chunks) do threads[#threads + 1] = self.transport.spawn(worker) end
  for _, th in ipairs(threads) do
    local ok, err = self.transport.wait(th)
    if not ok then first_err = first_err or new_error{ type = "LuaError", message = tostring(err), status = 0 } end
  end
  return first_err
end

local function count_items(request_items)
  local n = 0
  for _, reqs in pairs(request_items) do n = n + #reqs end
  return n
end

-- client:batch_write(request_items [, opts]) -> {requests=N, batches=N} | nil, err
-- (opts.gate as for call: checked before every request and every resend)
-- request_items as for BatchWriteItem ({[table] = {{PutRequest={Item=}}, ...}})
-- of any length: split into requests of at most 25 items, sent
-- batch_concurrency at a time; UnprocessedItems are resent with backoff.
-- Every request is encoded and checked before the first is sent, so an
-- oversized or unencodable item means nothing is written. (25 items of at
-- most 400 KB stay under BatchWriteItem's 16 MB, so the count bounds a request.)
-- On failure err.unprocessed holds what was not written (in the same shape).
function Client:batch_write(request_items, opts)
  if type(request_items) ~= "table" then error("batch_write: request_items must be a table", 2) end
  local names = {}
  for name in pairs(request_items) do names[#names + 1] = name end
  table.sort(names)
  local chunks, cur = {}, nil
  for _, name in ipairs(names) do
    for _, req in ipairs(request_items[name]) do
      if type(req) ~= "table" or not (req.PutRequest or req.DeleteRequest) then
        error("batch_write: each request of table '" .. name .. "' must have PutRequest or DeleteRequest", 2)
      end
      if not cur or cur.n >= limits.batch_write_items then
        cur = { n = 0, ri = {} }
        chunks[#chunks + 1] = cur
      end
      cur.n = cur.n + 1
      cur.ri[name] = cur.ri[name] or {}
      table.insert(cur.ri[name], req)
    end
  end
  local total = 0
  for _, chunk in ipairs(chunks) do
    local params = { RequestItems = chunk.ri }
    local body, size = self:encode("BatchWriteItem", params)
    if not body then return nil, size end
    if size > limits.item_bytes then
      for name, reqs in pairs(chunk.ri) do
        for i, req in ipairs(reqs) do
          local item = req.PutRequest and req.PutRequest.Item or req.DeleteRequest.Key
          local err = item_too_large("BatchWriteItem", name, item, "request " .. i .. " of the batch")
          if err then return nil, err end
        end
      end
    end
    chunk.params, chunk.body = params, body
    total = total + chunk.n
  end
  local unprocessed = {}
  local err = self:run_parallel(chunks, function(chunk)
    local ri, body = chunk.ri, chunk.body
    local round = 0
    while true do
      local res, cerr
      if body then
        res, cerr = self:send("BatchWriteItem", chunk.params, body, opts)
        body = nil
      else
        res, cerr = self:call("BatchWriteItem", { RequestItems = ri }, opts)
      end
      if not res then
        for name, reqs in pairs(ri) do
          unprocessed[name] = unprocessed[name] or {}
          for _, r in ipairs(reqs) do table.insert(unprocessed[name], r) end
        end
        return false, cerr
      end
      local left = res.UnprocessedItems
      if not left or next(left) == nil then return true end
      round = round + 1
      if round > self.max_unprocessed_rounds then
        for name, reqs in pairs(left) do
          unprocessed[name] = unprocessed[name] or {}
          for _, r in ipairs(reqs) do table.insert(unprocessed[name], r) end
        end
        return false, new_error{ type = "UnprocessedItems", status = 200, op = "BatchWriteItem",
          retryable = true, attempts = round,
          message = count_items(left) .. " items still unprocessed after " .. round .. " rounds of backoff" }
      end
      self.transport.sleep(self:backoff(round - 1))
      ri = left
    end
  end)
  if err then
    err.unprocessed = unprocessed
    return nil, err
  end
  return { requests = total, batches = #chunks }
end

-- client:batch_get(request_items [, opts]) -> {Responses={[table]={items...}}} | nil, err
-- request_items as for BatchGetItem ({[table] = {Keys={...}, ...}}), any
-- number of keys: split by 100 keys, UnprocessedKeys resent with backoff.
-- opts.consumed: ask for ReturnConsumedCapacity = TOTAL (client.usage).
function Client:batch_get(request_items, opts)
  if type(request_items) ~= "table" then error("batch_get: request_items must be a table", 2) end
  local flat = {}
  local names = {}
  for name in pairs(request_items) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local spec = request_items[name]
    if type(spec) ~= "table" or type(spec.Keys) ~= "table" then
      error("batch_get: request_items['" .. name .. "'].Keys must be a list of keys", 2)
    end
    for _, key in ipairs(spec.Keys) do flat[#flat + 1] = { name, key } end
  end
  local chunks = {}
  for i = 1, #flat, limits.batch_get_keys do
    local c = {}
    for j = i, math.min(i + limits.batch_get_keys - 1, #flat) do c[#c + 1] = flat[j] end
    chunks[#chunks + 1] = c
  end
  local responses = {}
  for _, name in ipairs(names) do responses[name] = core.list() end
  local err = self:run_parallel(chunks, function(chunk)
    local ri = {}
    for _, e in ipairs(chunk) do
      local name = e[1]
      if not ri[name] then
        local spec = shallow_copy(request_items[name])
        spec.Keys = core.list()
        ri[name] = spec
      end
      table.insert(ri[name].Keys, e[2])
    end
    local round = 0
    while true do
      local res, cerr = self:call("BatchGetItem", { RequestItems = ri,
                                                    ReturnConsumedCapacity = opts and opts.consumed and "TOTAL" or nil })
      if not res then return false, cerr end
      for name, list in pairs(res.Responses or {}) do
        for _, item in ipairs(list) do table.insert(responses[name], item) end
      end
      local left = res.UnprocessedKeys
      if not left or next(left) == nil then return true end
      round = round + 1
      if round > self.max_unprocessed_rounds then
        return false, new_error{ type = "UnprocessedKeys", status = 200, op = "BatchGetItem",
          retryable = true, attempts = round, message = "keys still unprocessed after " .. round .. " rounds" }
      end
      self.transport.sleep(self:backoff(round - 1))
      ri = left
    end
  end)
  if err then return nil, err end
  return { Responses = responses }
end

-- client:transact_write(params) -> result | nil, err
-- Checks DynamoDB's limits (100 actions, 4 MB, 400 KB per item) before
-- sending anything, and adds a ClientRequestToken when absent so that a
-- retried request can never apply twice (DynamoDB treats a replay of the
-- same token within 10 minutes as the same transaction).
function Client:transact_write(params)
  if type(params) ~= "table" or type(params.TransactItems) ~= "table" then
    error("transact_write: params.TransactItems must be a list", 2)
  end
  local actions = params.TransactItems
  if #actions == 0 or #actions > limits.transact_items then
    return nil, new_error{ type = "LimitExceeded", status = 0, op = "TransactWriteItems", attempts = 0,
      retryable = false,
      message = string.format("%d actions; a transaction takes 1 to %d", #actions, limits.transact_items) }
  end
  for i, a in ipairs(actions) do
    if type(a) ~= "table" or type(a.Put or a.Update or a.Delete or a.ConditionCheck) ~= "table" then
      error("transact_write: TransactItems[" .. i .. "] needs Put, Update, Delete or ConditionCheck", 2)
    end
  end
  if not params.ClientRequestToken then
    params = shallow_copy(params)
    params.ClientRequestToken = core.random_hex(16)
  end
  local body, size = self:encode("TransactWriteItems", params)
  if not body then return nil, size end
  -- Exact sizes only when the body is big enough to break a limit (see
  -- item_too_large): the common small transaction is encoded once.
  if size > limits.item_bytes then
    local err
    local total = 0
    for i, a in ipairs(actions) do
      local action = a.Put or a.Update or a.Delete or a.ConditionCheck
      local item = a.Put and a.Put.Item or action.Key
      if item then
        err = item_too_large("TransactWriteItems", action.TableName, item, "TransactItems[" .. i .. "]")
        if err then return nil, err end
        total = total + (core.item_size(item) or 0)
      end
    end
    if total > limits.transact_bytes then
      return nil, new_error{ type = "LimitExceeded", status = 0, op = "TransactWriteItems", attempts = 0,
        retryable = false,
        message = string.format("transaction is %d bytes, over DynamoDB's %d-byte limit", total, limits.transact_bytes) }
    end
  end
  return self:send("TransactWriteItems", params, body)
end

function Client:transact_get(params)
  return self:call("TransactGetItems", params)
end

------------------------------------------------------------------------
-- Tables

function Client:create_table(params) check_params("create_table", params); return self:call("CreateTable", params) end
function Client:describe_table(params) check_params("describe_table", params); return self:call("DescribeTable", params) end
function Client:delete_table(params) check_params("delete_table", params); return self:call("DeleteTable", params) end
function Client:update_table(params) check_params("update_table", params); return self:call("UpdateTable", params) end
function Client:update_time_to_live(params)
  check_params("update_time_to_live", params)
  return self:call("UpdateTimeToLive", params)
end
function Client:list_tables(params) return self:call("ListTables", params or {}) end

-- client:create_table_if_missing(params) -> true | result | nil, err
-- DescribeTable first, CreateTable only when the table is not there: a
-- process whose IAM policy has no dynamodb:CreateTable (a least-privilege
-- worker, docs/deploy.md) starts on tables `tide init` made. A table made
-- meanwhile by another process answers ResourceInUseException, as
-- CreateTable does.
function Client:create_table_if_missing(params)
  check_params("create_table", params)
  local res, err = self:describe_table{ TableName = params.TableName }
  if res then return true end
  if err.type ~= "ResourceNotFoundException" then return nil, err end
  return self:call("CreateTable", params)
end

-- client:wait_for_table(name, timeout_seconds) -> description | nil, err
-- Polls DescribeTable until the table is ACTIVE.
function Client:wait_for_table(name, timeout)
  local deadline = self.transport.now() + (timeout or 60)
  local delay = 0.05
  while true do
    local res, err = self:describe_table{ TableName = name }
    if res and res.Table.TableStatus == "ACTIVE" then return res.Table end
    if not res and err.type ~= "ResourceNotFoundException" then return nil, err end
    if self.transport.now() >= deadline then
      return nil, new_error{ type = "Timeout", status = 0, op = "DescribeTable", table = name,
                             message = "table did not become ACTIVE in " .. (timeout or 60) .. " s" }
    end
    self.transport.sleep(delay)
    delay = math.min(delay * 2, 1)
  end
end

------------------------------------------------------------------------
-- DynamoDB Streams

function Client:list_streams(params)
  return self:call("ListStreams", params or {}, { streams = true })
end

-- client:describe_stream{StreamArn=} -> {StreamDescription = {..., Shards = every shard}}
-- Follows LastEvaluatedShardId until the whole shard list is read.
function Client:describe_stream(params)
  if type(params) ~= "table" or type(params.StreamArn) ~= "string" then
    error("describe_stream: params.StreamArn must be a string", 2)
  end
  local p = shallow_copy(params)
  local shards, desc = {}, nil
  while true do
    local res, err = self:call("DescribeStream", p, { streams = true })
    if not res then return nil, err end
    desc = res.StreamDescription
    for _, s in ipairs(desc.Shards or {}) do shards[#shards + 1] = s end
    if not desc.LastEvaluatedShardId then break end
    p.ExclusiveStartShardId = desc.LastEvaluatedShardId
  end
  desc.Shards = core.list(shards)
  desc.LastEvaluatedShardId = nil
  return { StreamDescription = desc }
end

function Client:get_shard_iterator(params)
  return self:call("GetShardIterator", params, { streams = true })
end

function Client:get_records(params)
  return self:call("GetRecords", params, { streams = true })
end

return M
