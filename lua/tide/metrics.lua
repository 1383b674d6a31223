-- tide.metrics: the counters, gauges and histograms an operator scrapes
-- (Prometheus text exposition format 0.0.4), in both hosts.
--
--   local metrics = require "tide.metrics"
--   metrics.command("account", "Deposit", "ok", 0.0012)    -- the few places that know an outcome
--   metrics.render() -> the /metrics page (text)
--   metrics.use_shared_dict(ngx.shared.tide_metrics)       -- nginx: every worker counts into one dict
--
-- The families are declared once, below (docs/operations.md lists them).
-- Label values are bounded: an aggregate, command, projection or table
-- tide does not know is counted as "unknown", and each family keeps at most
-- MAX_SERIES label sets (further ones go to a series whose labels are all
-- "other"), so a client sending made-up types cannot grow a scrape.
--
-- Storage: in the tide process, plain Lua numbers in a cell per label set
-- (a counter's increment is a table lookup per label and an addition). In
-- nginx, after use_shared_dict, increments go to the shared dict (one
-- incr each, under the dict's lock), so a scrape answered by any worker
-- gives the same totals. Gauges computed at scrape time (lag, leases,
-- process figures) come from collectors, functions that render calls
-- first; those belong to the process that runs the projections.
local type, tostring, pairs, ipairs = type, tostring, pairs, ipairs
local concat, sort = table.concat, table.sort
local floor = math.floor

local M = {}

local MAX_SERIES = 1000
M.MAX_SERIES = MAX_SERIES

-- Off until something serves the page (tide.metrics.server.start, or
-- use_shared_dict in nginx): then every recording call counts. Off, each
-- returns at once (make bench compares both in one run).
M.enabled = false

local families, order = {}, {}
local collectors = {}
local dict = nil -- the nginx shared dict, or nil: local cells

-- ---------------------------------------------------------------------------
-- Label values

local function escape(v)
  v = tostring(v)
  if v:find('[\\"\n]') then
    v = v:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n")
  end
  return v
end

local function label_text(fam, values)
  local names = fam.labels
  if #names == 0 then return "" end
  local parts = {}
  for i = 1, #names do
    parts[i] = names[i] .. '="' .. escape(values[i]) .. '"'
  end
  return "{" .. concat(parts, ",") .. "}"
end

-- ---------------------------------------------------------------------------
-- Families and cells

local function family(kind, name, help, labels, buckets)
  local f = { kind = kind, name = name, help = help, labels = labels or {}, cells = {}, list = {},
              n = 0, buckets = buckets }
  families[name] = f
  order[#order + 1] = f
  return f
end

local function make_cell(f, values)
  local x = { labels = label_text(f, values), value = 0 }
  x.key = f.name .. "\1" .. x.labels
  if f.kind == "histogram" then
    local counts, bkeys = {}, {}
    for i = 1, #f.buckets + 1 do counts[i], bkeys[i] = 0, x.key .. "\1" .. i end
    x.counts, x.bkeys, x.sumkey, x.sum, x.count = counts, bkeys, x.key .. "\1sum", 0, 0
  end
  f.list[#f.list + 1] = x
  return x
end

local function new_cell(f, values)
  if f.n >= MAX_SERIES then
    -- the family is full: every further label set shares one series
    if not f.overflow then
      local v = {}
      for i = 1, #f.labels do v[i] = "other" end
      f.overflow = make_cell(f, v)
    end
    return f.overflow
  end
  f.n = f.n + 1
  return make_cell(f, values)
end

-- The cell of a label set (at most three labels): nested tables by value,
-- so that a label set seen before costs one lookup per label and builds no
-- string and no table.
local function cell(f, a, b, c)
  local n = #f.labels
  local t = f.cells
  local x
  if n == 0 then
    x = t[1]
    if not x then x = new_cell(f, {}); t[1] = x end
    return x
  end
  if a == nil then a = "unknown" end
  if n == 1 then
    x = t[a]
    if not x then x = new_cell(f, { a }); t[a] = x end
    return x
  end
  local t2 = t[a]
  if not t2 then t2 = {}; t[a] = t2 end
  if b == nil then b = "unknown" end
  if n == 2 then
    x = t2[b]
    if not x then x = new_cell(f, { a, b }); t2[b] = x end
    return x
  end
  local t3 = t2[b]
  if not t3 then t3 = {}; t2[b] = t3 end
  if c == nil then c = "unknown" end
  x = t3[c]
  if not x then x = new_cell(f, { a, b, c }); t3[c] = x end
  return x
end
M.cell = cell

local function add(f, v, a, b, c)
  local x = cell(f, a, b, c)
  if dict then
    dict:incr(x.key, v, 0)
  else
    x.value = x.value + v
  end
end

local function set(f, v, a, b, c)
  local x = cell(f, a, b, c)
  if dict then
    dict:set(x.key, v)
  else
    x.value = v
  end
end

local function observe(f, v, a, b, c)
  local x = cell(f, a, b, c)
  local bk = f.buckets
  local i, nb = 1, #bk
  while i <= nb and v > bk[i] do i = i + 1 end
  if dict then
    dict:incr(x.bkeys[i], 1, 0)
    dict:incr(x.sumkey, v, 0)
  else
    x.counts[i] = x.counts[i] + 1
    x.sum = x.sum + v
    x.count = x.count + 1
  end
end

-- Request latencies: 1 ms .. 10 s (DynamoDB answers in a few ms; retries
-- with backoff take longer).
local LATENCY = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local F = {
  commands = family("counter", "tide_commands_total", "Commands run, by outcome.",
    { "aggregate", "command", "outcome" }),
  forwarded = family("counter", "tide_forwarded_commands_total",
    "Commands another worker of this host forwarded to this one, holding their stream's turn, which decided "
    .. "them and wrote them with its own.", { "aggregate" }),
  command_duration = family("histogram", "tide_command_duration_seconds",
    "Time to run a command, from the start to its outcome.", { "aggregate" }, LATENCY),
  ddb_requests = family("counter", "tide_dynamodb_requests_total",
    "DynamoDB requests (after retries), by outcome.", { "operation", "outcome" }),
  ddb_duration = family("histogram", "tide_dynamodb_request_duration_seconds",
    "Time of a DynamoDB request, retries and backoff included.", { "operation" }, LATENCY),
  ddb_retries = family("counter", "tide_dynamodb_retries_total", "DynamoDB attempts retried, by reason.",
    { "operation", "reason" }),
  ddb_capacity = family("counter", "tide_dynamodb_consumed_capacity_units_total",
    "Capacity units DynamoDB reported consumed (ReturnConsumedCapacity).", { "table", "operation", "kind" }),
  proj_events = family("counter", "tide_projection_events_total",
    "Events a projection applied to its read models.",
    { "projection" }),
  proj_errors = family("counter", "tide_projection_errors_total",
    "Projection batches that failed (handler errors, failed writes).", { "projection" }),
  proj_lag = family("gauge", "tide_projection_lag_seconds",
    "Age of the newest stream record a shard's worker processed (0 when caught up).", { "projection", "shard" }),
  proj_lag_events = family("gauge", "tide_projection_lag_events",
    "Events of the embedded store's feed not yet applied by the projection.", { "projection" }),
  proj_checkpoint = family("gauge", "tide_projection_checkpoint_timestamp_seconds",
    "When the shard's checkpoint last moved (seconds since the epoch).", { "projection", "shard" }),
  leases_held = family("gauge", "tide_leases_held", "Leases this process holds.", { "projection" }),
  takeovers = family("counter", "tide_lease_takeovers_total",
    "Leases this process took from another owner (expired or stolen).", { "projection" }),
  sink_messages = family("counter", "tide_sink_messages_published_total",
    "Messages a sink published whose delivery report succeeded.", { "projection" }),
  sink_failures = family("counter", "tide_sink_delivery_failures_total",
    "Messages whose delivery report failed (the batch is published again from the checkpoint).", { "projection" }),
  sink_in_flight = family("gauge", "tide_sink_messages_in_flight",
    "Messages handed to the Kafka producer and not yet reported."),
  sink_duration = family("histogram", "tide_sink_publish_duration_seconds",
    "Time from publishing a sink's batch to the last delivery report of its messages.", { "projection" }, LATENCY),
  creds_expiry = family("gauge", "tide_aws_credentials_expiry_timestamp_seconds",
    "When the AWS credentials in use expire (seconds since the epoch); no series for keys that never expire.",
    { "provider" }),
  creds_refreshes = family("counter", "tide_aws_credentials_refreshes_total",
    "Fetches of AWS credentials from their provider, by outcome (ok, failed).", { "provider", "outcome" }),
  reloads = family("counter", "tide_reloads_total", "Hot reloads of modules, by outcome.", { "kind", "outcome" }),
  module_info = family("gauge", "tide_module_info", "The modules running, with their version (value 1).",
    { "kind", "name", "version" }),
  build_info = family("gauge", "tide_build_info", "tide's build (value 1).", { "version", "luajit", "libcurl" }),
  cpu = family("counter", "process_cpu_seconds_total", "Total user and system CPU time spent in seconds."),
  rss = family("gauge", "process_resident_memory_bytes", "Resident memory size in bytes."),
  fds = family("gauge", "process_open_fds", "Number of open file descriptors."),
  start = family("gauge", "process_start_time_seconds", "Start time of the process since unix epoch in seconds."),
}
M.families = F

-- ---------------------------------------------------------------------------
-- Bounded label values

-- Names a label may take (aggregates, their commands, projections), set by
-- whoever loads the modules (metrics.know).
local known = { aggregate = nil, projection = nil }

-- metrics.know(kind, registry): label values of kind ("aggregate",
-- "projection") are the names registry holds (read at each call: hot
-- reload adds and removes modules).
function M.know(kind, registry)
  known[kind] = registry
end

local function bounded_aggregate(name)
  local r = known.aggregate
  if type(name) ~= "string" then return "unknown", nil end
  if r then
    local mod = r.entries and r.entries[name]
    if not mod then return "unknown", nil end
    return name, mod
  end
  return name, nil
end

local OPERATIONS = {}
for _, op in ipairs{ "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem",
                     "BatchWriteItem", "TransactWriteItems", "TransactGetItems", "CreateTable", "DescribeTable",
                     "DeleteTable", "UpdateTable", "UpdateTimeToLive", "ListTables", "ListStreams",
                     "DescribeStream", "GetShardIterator", "GetRecords", "DescribeTimeToLive" } do
  OPERATIONS[op] = op
end

-- ---------------------------------------------------------------------------
-- Recording: the calls at the places that know an outcome

-- A command's outcome; outcome is one of ok, rejected, conflict, invalid,
-- handler_error, store_error, duplicate.
function M.command(aggregate, command, outcome, seconds)
  if not M.enabled then return end
  local agg, mod = bounded_aggregate(aggregate)
  local cmd = "unknown"
  if mod and type(command) == "string" then
    local cmds = mod.module and mod.module.commands
    if cmds and cmds[command] then cmd = command end
  elseif not known.aggregate and type(command) == "string" then
    cmd = command
  end
  add(F.commands, 1, agg, cmd, outcome)
  if seconds then observe(F.command_duration, seconds, agg) end
end

-- The outcome of a repository:execute: (result, err) -> outcome label.
local OUTCOME_OF_KIND = {
  rejected = "rejected", conflict = "conflict", invalid = "invalid", handler_error = "handler_error",
  too_many_events = "handler_error", event_too_large = "handler_error",
}
function M.outcome(res, err)
  if res then return res.duplicate and "duplicate" or "ok" end
  local kind = type(err) == "table" and err.kind
  return OUTCOME_OF_KIND[kind] or "store_error"
end

-- Wraps repo.execute (this instance) so that every command is counted:
-- the repository itself stays free of metrics. debug_log: a logger given
-- only at log.level debug, which then gets one line per command with the
-- metrics' names (aggregate, command, outcome) and the stream.
function M.instrument_repository(repo, debug_log)
  local execute, mono = repo.execute, require("tide.clock").mono
  local outcome = M.outcome
  repo.execute = function(self, name, id, command, opts)
    if not (M.enabled or debug_log) then return execute(self, name, id, command, opts) end
    local t0 = mono()
    local res, err = execute(self, name, id, command, opts)
    local dt = mono() - t0
    local ctype = type(command) == "table" and command.type or nil
    local oc = outcome(res, err)
    M.command(name, ctype, oc, dt)
    if debug_log then
      debug_log("debug", "command", { aggregate = name, command = ctype, outcome = oc,
        stream = res and res.stream or type(err) == "table" and err.stream or nil, duration_ms = dt * 1000 })
    end
    return res, err
  end
  -- commands this worker took from the others (nginx: tide.repository's forwarding)
  local take_forwarded = repo.take_forwarded
  repo.take_forwarded = function(self, jobs, agg, stream)
    local n = #jobs
    take_forwarded(self, jobs, agg, stream)
    if M.enabled and #jobs > n then add(F.forwarded, #jobs - n, (bounded_aggregate(jobs[n + 1].name))) end
  end
  return repo
end

local mono = require("tide.clock").mono

-- One DynamoDB request (all its attempts), begun at t0 (tide.clock.mono)
-- and answered with result; its ConsumedCapacity (ReturnConsumedCapacity)
-- is added up per table.
function M.dynamodb_result(op, t0, result)
  op = OPERATIONS[op] or "other"
  add(F.ddb_requests, 1, op, "ok")
  observe(F.ddb_duration, mono() - t0, op)
  -- the tide process reads capacity from the clients' own totals
  -- (metrics.usage); nginx's workers add each answer's to the shared dict
  if dict then
    local cc = result.ConsumedCapacity
    if cc ~= nil then M.dynamodb_capacity(op, cc) end
  end
end

-- One DynamoDB request that failed (after its retries); outcome from err:
-- throttled, conditional_failed, client_error, server_error, transport_error.
function M.dynamodb_failure(op, t0, err)
  op = OPERATIONS[op] or "other"
  add(F.ddb_requests, 1, op, M.dynamodb_outcome(err))
  observe(F.ddb_duration, mono() - t0, op)
end

-- err of a failed DynamoDB request -> its outcome label.
function M.dynamodb_outcome(err)
  if type(err) ~= "table" then return "client_error" end
  if err.type == "TransportError" or err.type == "MalformedResponse" then return "transport_error" end
  if err.retry_class == "throttled" then return "throttled" end
  if err.type == "ConditionalCheckFailedException" or err.type == "TransactionCanceledException" then
    return "conditional_failed"
  end
  if (err.status or 0) >= 500 then return "server_error" end
  return "client_error"
end

-- An attempt that will be retried; err as Client:attempt returns it.
function M.dynamodb_retry(op, err)
  if not M.enabled then return end
  local reason
  if err.retry_class == "throttled" then reason = "throttled"
  elseif err.type == "TransportError" or err.type == "MalformedResponse" then reason = "transport"
  else reason = "server_error" end
  add(F.ddb_retries, 1, OPERATIONS[op] or "other", reason)
end

-- ConsumedCapacity of a response (an object or a list of them, as
-- DynamoDB returns with ReturnConsumedCapacity = TOTAL or INDEXES).
local function capacity_one(op, cc, table_label)
  if type(cc) ~= "table" then return end
  local t = table_label(cc.TableName)
  local r, w = tonumber(cc.ReadCapacityUnits), tonumber(cc.WriteCapacityUnits)
  if not r and not w and cc.CapacityUnits then
    -- only the total: reads for read operations, writes otherwise
    local reads = op == "GetItem" or op == "Query" or op == "Scan" or op == "BatchGetItem" or op == "TransactGetItems"
    if reads then r = tonumber(cc.CapacityUnits) else w = tonumber(cc.CapacityUnits) end
  end
  if r and r > 0 then add(F.ddb_capacity, r, t, op, "read") end
  if w and w > 0 then add(F.ddb_capacity, w, t, op, "write") end
end

-- Tables are named by configuration (bounded); the family's series cap
-- guards against anything else.
local function table_label(name) return type(name) == "string" and name or "unknown" end

function M.dynamodb_capacity(op, cc)
  if cc == nil then return end
  op = OPERATIONS[op] or "other"
  if cc[1] then
    for i = 1, #cc do capacity_one(op, cc[i], table_label) end
  else
    capacity_one(op, cc, table_label)
  end
end

local function projection_label(name)
  local r = known.projection
  if type(name) ~= "string" then return "unknown" end
  if r and r.entries and not r.entries[name] then return "unknown" end
  return name
end

-- n events a projection applied to its read models (re-deliveries the
-- item guards skip are not counted).
function M.projection_events(projection, n)
  if not M.enabled or n == 0 then return end
  add(F.proj_events, n, projection_label(projection))
end

-- A shard's checkpoint moved (DynamoDB Streams) past a batch whose newest
-- record was created at created_s (ApproximateCreationDateTime, seconds
-- since the epoch).
function M.projection_checkpoint(projection, shard, created_s)
  if not M.enabled then return end
  local p = projection_label(projection)
  set(F.proj_checkpoint, require("tide.clock").wall_ms() / 1000, p, shard)
  M.projection_position(p, shard, created_s)
end

-- Lag inputs, read at scrape time: the newest record processed on a shard
-- (created_s), or nil once a read came back empty (caught up: lag 0).
local positions = {}
function M.projection_position(projection, shard, created_s)
  if not M.enabled then return end
  local p = projection_label(projection)
  local by = positions[p]
  if not by then by = {}; positions[p] = by end
  by[shard] = created_s or false
end

-- A shard this process no longer works on: its lag and checkpoint series go.
function M.projection_shard_gone(projection, shard)
  local p = projection_label(projection)
  if positions[p] then positions[p][shard] = nil end
  local byp = F.proj_lag.cells[p]
  local x = byp and byp[shard]
  if x then x.gone = true end
  byp = F.proj_checkpoint.cells[p]
  x = byp and byp[shard]
  if x then x.gone = true end
end

function M.projection_error(projection)
  if not M.enabled then return end
  add(F.proj_errors, 1, projection_label(projection))
end

-- Sinks (tide.sink.kafka): delivered and failed messages, the messages in
-- flight (one producer per process), a batch's time to its last report.
function M.sink_published(projection, n)
  if not M.enabled then return end
  add(F.sink_messages, n, projection_label(projection))
end

function M.sink_failed(projection, n)
  if not M.enabled then return end
  add(F.sink_failures, n, projection_label(projection))
end

function M.sink_in_flight(n)
  if not M.enabled then return end
  set(F.sink_in_flight, n)
end

function M.sink_publish_duration(projection, seconds)
  if not M.enabled then return end
  observe(F.sink_duration, seconds, projection_label(projection))
end

function M.projection_lag_events(projection, n)
  if not M.enabled then return end
  set(F.proj_lag_events, n, projection_label(projection))
end

function M.leases_held(projection, n)
  if not M.enabled then return end
  set(F.leases_held, n, projection_label(projection))
end

-- The leases a runner holds: the shards of its state table whose worker
-- has not finished.
function M.leases_held_count(projection, state)
  if not M.enabled then return end
  local n = 0
  for _, st in pairs(state) do
    if not st.finished and not st.lost then n = n + 1 end
  end
  set(F.leases_held, n, projection_label(projection))
end

function M.lease_takeover(projection)
  if not M.enabled then return end
  add(F.takeovers, 1, projection_label(projection))
end

-- A hot reload of a module of kind ("aggregate", "projection"); outcome:
-- ok or error.
function M.reload(kind, outcome)
  if not M.enabled then return end
  add(F.reloads, 1, kind == "projection" and "projection" or "aggregate", outcome == "ok" and "ok" or "error")
end

-- ---------------------------------------------------------------------------
-- Collectors: gauges computed at scrape time

-- Capacity units, from the DynamoDB clients' running totals (tide.dynamodb:
-- client.usage.capacity[table][op] = {read=, write=}), summed at scrape
-- time: metrics.usage(client) names a client whose totals count.
local usage_clients = setmetatable({}, { __mode = "k" })
function M.usage(client)
  if type(client) == "table" and type(client.usage) == "table" then usage_clients[client] = true end
end

local function usage_collector()
  local sums = {}
  for client in pairs(usage_clients) do
    for tname, per_table in pairs(client.usage.capacity or {}) do
      for op, u in pairs(per_table) do
        local key = table_label(tname) .. "\0" .. (OPERATIONS[op] or "other")
        local t = sums[key]
        if not t then t = { table_label(tname), OPERATIONS[op] or "other", 0, 0 }; sums[key] = t end
        t[3], t[4] = t[3] + (u.read or 0), t[4] + (u.write or 0)
      end
    end
  end
  for _, t in pairs(sums) do
    if t[3] > 0 then cell(F.ddb_capacity, t[1], t[2], "read").value = t[3] end
    if t[4] > 0 then cell(F.ddb_capacity, t[1], t[2], "write").value = t[4] end
  end
end

-- metrics.collector(fn): fn() runs before each render (errors are
-- reported on the page as a comment and never fail the scrape).
function M.collector(fn)
  collectors[#collectors + 1] = fn
  return fn
end

function M.remove_collector(fn)
  for i = #collectors, 1, -1 do
    if collectors[i] == fn then table.remove(collectors, i) end
  end
end

-- AWS credentials: the sources (tide.credentials) whose keys are in use;
-- the expiry gauge is read from them at scrape time, so keys another
-- nginx worker fetched (read from the shared dict) count too.
local credential_sources = setmetatable({}, { __mode = "k" })
function M.credentials_source(src)
  credential_sources[src] = true
end

-- One fetch of credentials from `provider` (a refresh, or the first).
function M.credentials_fetch(provider, ok)
  if not M.enabled then return end
  add(F.creds_refreshes, 1, provider or "unknown", ok and "ok" or "failed")
end

local function credentials_collector()
  local by = {}
  for src in pairs(credential_sources) do
    local c = src.creds
    if c and c.expiration then
      local p = c.provider or "unknown"
      if not by[p] or c.expiration < by[p] then by[p] = c.expiration end
    end
  end
  for _, x in ipairs(F.creds_expiry.list) do x.gone = true end
  for p, e in pairs(by) do
    local x = cell(F.creds_expiry, p)
    x.gone = nil
    set(F.creds_expiry, e, p)
  end
end

-- Lag from the positions recorded above, against the wall clock now.
local function lag_collector(now_s)
  for p, by in pairs(positions) do
    for shard, created in pairs(by) do
      local lag = created and now_s - created or 0
      if lag < 0 then lag = 0 end
      local x = cell(F.proj_lag, p, shard)
      x.value, x.gone = lag, nil
    end
  end
end

-- The modules of the registries named by metrics.know, as module_info.
local function modules_collector()
  for kind, r in pairs(known) do
    if type(r) == "table" and r.entries then
      local f = F.module_info
      for _, x in ipairs(f.list) do
        if x.kind_label == kind then x.gone = true end
      end
      for name, mod in pairs(r.entries) do
        local x = cell(f, kind, name, tostring(mod.version or "unknown"))
        x.kind_label, x.gone, x.value = kind, nil, 1
      end
    end
  end
end

local build_labels = nil
-- Process figures and the build: the tide process's engine knows them;
-- nginx has no engine (its page has the build only, libcurl "none").
local function process_collector()
  local p
  if not rawget(_G, "ngx") then
    local ok, engine = pcall(require, "tide.engine")
    p = ok and type(engine) == "table" and engine.process and engine.process() or nil
  end
  if not build_labels then
    local version = require("tide.core").version
    build_labels = { tostring(version), jit and jit.version or _VERSION, p and p.curl or "none" }
  end
  set(F.build_info, 1, build_labels[1], build_labels[2], build_labels[3])
  if p then
    if p.cpu_seconds then cell(F.cpu).value = p.cpu_seconds end
    if p.resident_bytes then cell(F.rss).value = p.resident_bytes end
    if p.open_fds then cell(F.fds).value = p.open_fds end
    if p.start_time then cell(F.start).value = p.start_time end
  end
end

-- ---------------------------------------------------------------------------
-- Rendering

local function num(v)
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v ~= v then return "NaN" end
  if v == floor(v) and v > -1e15 and v < 1e15 then return string.format("%d", v) end
  local t = string.format("%.15g", v)
  if tonumber(t) ~= v then t = string.format("%.17g", v) end
  return t
end

local function with_le(labels, le)
  if labels == "" then return '{le="' .. le .. '"}' end
  return labels:sub(1, -2) .. ',le="' .. le .. '"}'
end

-- Values of the shared dict (nginx): key -> value, read once per render.
local function dict_values()
  local vals = {}
  for _, k in ipairs(dict:get_keys(0)) do
    vals[k] = dict:get(k)
  end
  return vals
end

-- The cells the dict holds that this worker has not seen yet (another
-- worker counted them): rebuilt from the key, "name\1labels[\1suffix]".
local function adopt(vals)
  for k in pairs(vals) do
    local name, labels = k:match("^([^\1]+)\1([^\1]*)")
    local f = name and families[name]
    if f then
      f.seen = f.seen or {}
      if not f.seen[labels] then
        local present = false
        for _, x in ipairs(f.list) do
          if x.labels == labels then present = true; break end
        end
        f.seen[labels] = true
        if not present then
          local x = { labels = labels, key = name .. "\1" .. labels, value = 0 }
          if f.kind == "histogram" then x.counts, x.sum, x.count = {}, 0, 0 end
          f.list[#f.list + 1] = x
        end
      end
    end
  end
end

-- metrics.render() -> the page, text format 0.0.4.
function M.render()
  local lines = {}
  local now_s = require("tide.clock").wall_ms() / 1000
  local ok, err = pcall(process_collector)
  if not ok then lines[#lines + 1] = "# process figures unavailable: " .. tostring(err):gsub("\n", " ") end
  if not dict then
    lag_collector(now_s)
    modules_collector()
    usage_collector()
  end
  credentials_collector()
  for _, fn in ipairs(collectors) do
    local cok, cerr = pcall(fn)
    if not cok then lines[#lines + 1] = "# a collector failed: " .. tostring(cerr):gsub("\n", " ") end
  end
  local vals = dict and dict_values()
  if vals then adopt(vals) end
  for _, f in ipairs(order) do
    local list = {}
    for _, x in ipairs(f.list) do
      if not x.gone then list[#list + 1] = x end
    end
    if #list > 0 then
      sort(list, function(a, b) return a.labels < b.labels end)
      lines[#lines + 1] = "# HELP " .. f.name .. " " .. f.help
      lines[#lines + 1] = "# TYPE " .. f.name .. " " .. f.kind
      for _, x in ipairs(list) do
        if f.kind == "histogram" then
          local cum, bk = 0, f.buckets
          local counts, sum
          if vals then
            counts, sum = {}, vals[x.key .. "\1sum"] or 0
            for i = 1, #bk + 1 do counts[i] = vals[x.key .. "\1" .. i] or 0 end
          else
            counts, sum = x.counts, x.sum
          end
          for i = 1, #bk do
            cum = cum + counts[i]
            lines[#lines + 1] = f.name .. "_bucket" .. with_le(x.labels, num(bk[i])) .. " " .. num(cum)
          end
          cum = cum + counts[#bk + 1]
          lines[#lines + 1] = f.name .. "_bucket" .. with_le(x.labels, "+Inf") .. " " .. num(cum)
          lines[#lines + 1] = f.name .. "_sum" .. x.labels .. " " .. num(sum)
          lines[#lines + 1] = f.name .. "_count" .. x.labels .. " " .. num(cum)
        else
          local v = x.value
          if vals then v = vals[x.key] or 0 end
          lines[#lines + 1] = f.name .. x.labels .. " " .. num(v)
        end
      end
    end
  end
  lines[#lines + 1] = ""
  return concat(lines, "\n")
end

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- ---------------------------------------------------------------------------
-- Hosts

-- nginx: count into the shared dict d (lua_shared_dict), from every worker.
function M.use_shared_dict(d)
  dict = d
  M.enabled = true
end

-- Forgets every value (specs).
function M.reset()
  for _, f in ipairs(order) do
    f.cells, f.list, f.n, f.overflow, f.seen = {}, {}, 0, nil, nil
  end
  positions = {}
  collectors = {}
  usage_clients = setmetatable({}, { __mode = "k" })
  credential_sources = setmetatable({}, { __mode = "k" })
  known = {}
  build_labels = nil
  dict = nil
  M.enabled = false
end

return M
