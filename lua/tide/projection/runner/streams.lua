-- tide.projection.runner.streams: runs a projection from the DynamoDB stream of
-- the events table (docs/projections.md, "Sources and runners"). It has the
-- runner interface of tide.projection.runner (start, run,
-- run_until_caught_up, status, stop), and kill.
--
--   local streams = require "tide.projection.runner.streams"
--   local r = streams.new{
--     client = db, store = <tide.store.dynamodb>, backend = <tide.projection.dynamodb>,
--     projection = proj, aggregates = registry (optional, for upcasting),
--     owner = "host:pid:rand" (default), lease_ms = 10000, poll_ms = 200, max_poll_ms = 2000,
--     batch_limit = 1000, describe_ms = 10000, log = function(level, msg) end,
--   }
--   r:start()                   -> true | nil, err   (lease and read-model tables)
--   r:run(stop)                 the daemon loop; stop: nil, a function returning
--                               true to stop, or a table whose .stop becomes true
--   r:run_until_caught_up{timeout=} -> {handled=, records=, events=, batches=,
--                                       conflicts=, retries=, seconds=} | nil, err
--                               (handled: this call's records; the rest count
--                               since the runner was made)
--   r:status()                  -> {projection=, feed="streams", version=, owner=,
--                                   handled=, error=, shards = {{shard=, parent=,
--                                   owner=, checkpoint=, error=, state=, lag_ms=,
--                                   mine=, records=}...}} | nil, err
--   r:stop()                    finish the batch in flight, checkpoint, release the leases
--   r:kill()                    stop at once without releasing (a simulated crash)
--
-- One coordinator thread lists the shards (DescribeStream, all pages),
-- keeps a lease per shard, takes free or expired leases up to the owner's
-- fair share (stealing one at a time from an owner above it), renews its
-- own every lease_ms / 3, and runs each owned shard in a thread of its own.
-- A shard starts only when its parent's lease says SHARD_END or the parent
-- is no longer listed. Per batch of records: decode, projector:apply,
-- backend:write, then the checkpoint (conditional on the lease counter: a
-- worker that lost its lease stops at once, having written only effects
-- that the new owner's guards recognise).

local core = require "tide.core"
local runner = require "tide.projection.runner"
local leases_mod = require "tide.projection.leases"
local stream_mod = require "tide.stream"
local terror = require "tide.error"
local shards = require "tide.projection.shards"
local tffi = require "tide.ffi"
local metrics = require "tide.metrics"

local M = {}

local SHARD_END = leases_mod.SHARD_END
local REBUILD = leases_mod.REBUILD_NEEDED

local function default_owner()
  return string.format("%s:%d:%s", tffi.hostname(), tffi.pid(), core.random_hex(4))
end
M.default_owner = default_owner

local default_log = require("tide.log").default

------------------------------------------------------------------------
-- Records -> events, and the gap-filling reader

local function num(v)
  return v ~= nil and tonumber(tostring(v)) or nil
end

-- streams.get_events(client, params) -> { events=, records=, last_seq=,
--   last_created=, NextShardIterator= } | nil, err
-- GetRecords on the stream of a tide events table, decoded straight to
-- projector events (core.decode_stream_records) instead of full records.
function M.get_events(client, params)
  return client:call("GetRecords", params, { streams = true, decode = core.decode_stream_records })
end

-- streams.reader(client, events_table) -> reader(stream, after, before)
-- The projector's gap filler: the events with after < version < before
-- (before nil: all after), ascending, from a consistent Query
-- `stream = :s AND version BETWEEN :a AND :b` (every page); nil, err on failure.
function M.reader(client, events_table)
  return function(stream, after, before)
    local out = {}
    local aggregate, id = stream_mod.split(stream)
    local first, last = after + 1, before and (before - 1) or 2 ^ 53
    if last < first then return out end
    for page, err in client:query_pages{
      TableName = events_table,
      KeyConditionExpression = "#s = :s AND #v BETWEEN :a AND :b",
      ExpressionAttributeNames = { ["#s"] = "stream", ["#v"] = "version" },
      ExpressionAttributeValues = { [":s"] = stream, [":a"] = first, [":b"] = last },
      ConsistentRead = true,
    } do
      if not page then
        return nil, leases_mod.wrap(err, string.format("reading versions %d..%d of stream '%s'", first, last, stream),
                                    { table = events_table })
      end
      for _, item in ipairs(page.Items or {}) do
        out[#out + 1] = { stream = stream, aggregate = aggregate, id = id,
                          version = num(item.version), type = item.type, data = item.data, meta = item.meta }
      end
    end
    return out
  end
end

------------------------------------------------------------------------

local Runner = {}
Runner.__index = Runner

function M.new(opts)
  if type(opts) ~= "table" then error("runner.streams.new: opts must be a table", 2) end
  for _, k in ipairs({ "client", "store", "backend", "projection" }) do
    if type(opts[k]) ~= "table" then error("runner.streams.new: opts." .. k .. " is required", 2) end
  end
  local proj = opts.projection
  local lease_ms = opts.lease_ms or 10000
  local self = setmetatable({
    client = opts.client,
    store = opts.store,
    backend = opts.backend,
    projection = proj,
    name = proj.name,
    aggregates = opts.aggregates,
    owner = opts.owner or default_owner(),
    lease_ms = lease_ms,
    renew_s = lease_ms / 3000,
    poll_s = (opts.poll_ms or 200) / 1000,
    max_poll_s = (opts.max_poll_ms or 2000) / 1000,
    retry_max_s = (opts.retry_max_ms or 30000) / 1000,
    batch_limit = opts.batch_limit or 1000,
    describe_s = (opts.describe_ms or 10000) / 1000,
    caught_up_empty = opts.caught_up_empty or 2,
    log = opts.log or default_log,
    new_projector = opts.new_projector,
    state = {},        -- shard id -> worker state
    stats = { records = 0, events = 0, batches = 0, conflicts = 0, retries = 0 },
  }, Runner)
  self.leases = leases_mod.new{ client = opts.client, table_prefix = opts.table_prefix or opts.store.prefix,
                                projection = proj.name, owner = self.owner, lease_ms = lease_ms,
                                clock_ms = opts.clock_ms }
  self.reader = M.reader(opts.client, opts.store.events_table)
  return self
end

function Runner:err(etype, msg, shard, cause)
  return leases_mod.error(etype, msg, { projection = self.name, shard = shard, cause = cause,
                                        table = self.leases.table })
end

function Runner:start()
  local ok, err = self.leases:init()
  if not ok then return nil, err end
  return self.backend:init(self.projection)
end

function Runner:make_projector()
  if self.new_projector then return self.new_projector(self) end
  return require("tide.projector").new{ projection = self.projection, backend = self.backend,
                                        reader = self.reader, aggregates = self.aggregates }
end

function Runner:sleep(s) self.client:sleep(s) end
function Runner:now() return self.client:now() end

------------------------------------------------------------------------
-- The shard tree

function Runner:stream_arn()
  if self.arn then return self.arn end
  local d, err = self.store:describe()
  if not d then return nil, err end
  if not d.events.stream_arn then
    return nil, self:err("NoStream", "the events table '" .. tostring(d.events.table) .. "' has no stream")
  end
  self.arn = d.events.stream_arn
  return self.arn
end

-- Reads the shard list and makes sure every shard has a lease.
function Runner:refresh_tree()
  local arn, err = self:stream_arn()
  if not arn then return nil, err end
  local res, derr = self.client:describe_stream{ StreamArn = arn }
  if not res then return nil, leases_mod.wrap(derr, "describing the stream", { projection = self.name }) end
  local tree = shards.tree(res.StreamDescription.Shards or {})
  for _, id in ipairs(tree.order) do
    if not (self.known and self.known[id]) then
      local ok, lerr = self.leases:ensure(id, tree.by_id[id].parent)
      if not ok then return nil, lerr end
    end
  end
  self.known = {}
  for _, id in ipairs(tree.order) do self.known[id] = true end
  self.tree = tree
  self.described_at = self:now()
  return tree
end

------------------------------------------------------------------------
-- One shard

local function halted(self, st)
  return self.killed or st.lost or st.abandon
end

-- Backoff for a failing batch or request: 0.1 s doubling up to retry_max_s.
function Runner:backoff(st)
  st.failures = (st.failures or 0) + 1
  self:sleep(runner.backoff_delay(st.failures, 0.1, self.retry_max_s))
end

function Runner:iterator(st)
  local cp = st.lease.checkpoint
  local params = { StreamArn = self.arn, ShardId = st.shard }
  if cp then
    params.ShardIteratorType, params.SequenceNumber = "AFTER_SEQUENCE_NUMBER", cp
  else
    params.ShardIteratorType = "TRIM_HORIZON"
  end
  local res, err = self.client:get_shard_iterator(params)
  if not res then return nil, err end
  return res.ShardIterator
end

-- Records a failure on the lease (shown by status and `tide status`).
function Runner:note_error(st, message)
  st.error = message
  local ok, err = self.leases:record_error(st.lease, message)
  if not ok and err.type == "LeaseLost" then st.lost = true end
end

-- Applies one batch of records until it is durable, then checkpoints.
-- Returns true, or false when the shard must be dropped (lease lost,
-- killed, or stopping before the batch could be applied).
-- batch: what streams.get_events returns (core.decode_stream_records):
-- the events of the records, their count, the last record's sequence number.
function Runner:process(st, batch)
  local events, last_seq = batch.events, batch.last_seq
  st.failures = 0
  while #events > 0 do
    if halted(self, st) or (self.stopping and st.failures > 0) then return false end
    local ok, plan, aerr = xpcall(st.projector.apply, debug.traceback, st.projector, events)
    if not ok then
      plan, aerr = nil, terror.new{ kind = "internal", type = "LuaError", message = tostring(plan) }
    end
    if plan then
      local wok, werr = self.backend:write(self.name, plan)
      if wok then
        st.projector:committed(plan)
        st.applied = (st.applied or 0) + (plan.applied or 0)
        metrics.projection_events(self.name, plan.applied or 0)
        break
      end
      st.projector:reset()
      if werr.type == "Conflict" then
        self.stats.conflicts = self.stats.conflicts + 1
        self:sleep(0.005 * math.random())
      else
        self.stats.retries = self.stats.retries + 1
        metrics.projection_error(self.name)
        self.log("warn", string.format("projection '%s' shard %s: writing the batch failed, retrying: %s",
          self.name, st.shard, tostring(werr)))
        self:note_error(st, tostring(werr))
        self:backoff(st)
      end
    else
      pcall(st.projector.reset, st.projector)
      self.stats.retries = self.stats.retries + 1
      metrics.projection_error(self.name)
      local msg = type(aerr) == "table" and (aerr.message or tostring(aerr)) or tostring(aerr)
      local ev = type(aerr) == "table" and aerr.event
      if ev then msg = string.format("event %s v%s (%s): %s", tostring(ev.stream), tostring(ev.version),
                                     tostring(ev.type), msg) end
      self.log("error", string.format("projection '%s' shard %s: batch failed, retrying with backoff: %s",
        self.name, st.shard, msg))
      self:note_error(st, msg)
      self:backoff(st)
    end
  end
  -- The batch's effects are durable: move the checkpoint.
  st.failures = 0
  while true do
    if self.killed or st.lost then return false end
    local l, cerr = self.leases:checkpoint(st.lease, last_seq, #events)
    if l then
      st.lease, st.checkpoint, st.error = l, last_seq, nil
      break
    end
    if cerr.type == "LeaseLost" then
      st.lost = true
      self.log("warn", tostring(cerr) .. "; dropping the shard")
      return false
    end
    self.log("warn", "checkpoint failed, retrying: " .. tostring(cerr))
    self:backoff(st)
  end
  st.records = (st.records or 0) + batch.records
  self.stats.records = self.stats.records + batch.records
  self.stats.events = self.stats.events + #events
  self.stats.batches = self.stats.batches + 1
  st.last_created_ms = batch.last_created and batch.last_created * 1000 or nil
  metrics.projection_checkpoint(self.name, st.shard, batch.last_created)
  return true
end

-- Trimmed records we never applied: never skip them silently.
function Runner:rebuild_needed(st)
  self.log("error", string.format("projection '%s' shard %s: %s: the stream no longer holds the records"
    .. " after the checkpoint (%s); run `tide replay %s`", self.name, st.shard, REBUILD,
    tostring(st.lease.checkpoint or "TRIM_HORIZON"), self.name))
  self:note_error(st, REBUILD)
  st.state = "error"
end

function Runner:shard_loop(st)
  st.state = "running"
  st.projector = self:make_projector()
  local iter
  local idle = self.poll_s
  st.empty = 0
  while not halted(self, st) and not self.stopping do
    if not iter then
      local err
      iter, err = self:iterator(st)
      if not iter then
        if err.type == "TrimmedDataAccessException" then return self:rebuild_needed(st) end
        self.log("warn", string.format("projection '%s' shard %s: GetShardIterator failed: %s",
                                       self.name, st.shard, tostring(err)))
        self:backoff(st)
        goto continue
      end
    end
    do
      local res, gerr = M.get_events(self.client, { ShardIterator = iter, Limit = self.batch_limit })
      if not res then
        if gerr.type == "ExpiredIteratorException" then
          -- A new iterator from the checkpoint (nothing after it was applied).
          self.log("info", "iterator expired on shard " .. st.shard .. ": renewing it from the checkpoint")
          iter = nil
        elseif gerr.type == "TrimmedDataAccessException" then
          return self:rebuild_needed(st)
        else
          self.log("warn", string.format("projection '%s' shard %s: GetRecords failed: %s",
                                         self.name, st.shard, tostring(gerr)))
          iter = nil
          self:backoff(st)
        end
        goto continue
      end
      st.failures = 0
      local nrecords = res.records
      if nrecords > 0 then
        if not self:process(st, res) then return end
        st.empty, idle = 0, self.poll_s
      end
      iter = res.NextShardIterator
      if not iter then
        -- The shard is closed and read to its end.
        while not (self.killed or st.lost) do
          local l, cerr = self.leases:checkpoint(st.lease, SHARD_END)
          if l then st.lease, st.checkpoint = l, SHARD_END; break end
          if cerr.type == "LeaseLost" then st.lost = true; break end
          self:backoff(st)
        end
        if st.checkpoint == SHARD_END then
          st.state = "done"
          self.changed = true
        end
        return
      end
      if nrecords == 0 then
        st.empty = st.empty + 1
        if st.empty >= self.caught_up_empty then st.caught_up = true end
        st.last_created_ms = nil
        metrics.projection_position(self.name, st.shard, nil)
        self:sleep(idle)
        idle = math.min(idle * 2, self.max_poll_s)
      end
    end
    ::continue::
  end
end

-- Spawns the worker thread of an owned shard.
function Runner:start_shard(lease)
  local st = { shard = lease.shard, lease = lease, parent = lease.parent, state = "starting",
               checkpoint = lease.checkpoint }
  self.state[lease.shard] = st
  st.thread = self.client:spawn(function()
    local ok, e = xpcall(self.shard_loop, debug.traceback, self, st)
    if not ok then
      self.log("error", string.format("projection '%s' shard %s: worker failed: %s", self.name, st.shard, tostring(e)))
      st.error = tostring(e)
      if not (self.killed or st.lost) then
        pcall(self.note_error, self, st, tostring(e))
      end
    end
    -- Finished, lost, failed or stopping: give the lease back unless lost
    -- or killed (a crash keeps it until it expires).
    if not (self.killed or st.lost) then
      local rok, rerr = self.leases:release(st.lease)
      if not rok and rerr.type ~= "LeaseLost" then
        self.log("warn", "releasing the lease failed: " .. tostring(rerr))
      end
    end
    if st.state ~= "done" and st.state ~= "error" then st.state = st.lost and "lost" or "stopped" end
    st.finished = true
    self.changed = true
    metrics.projection_shard_gone(self.name, st.shard)
  end)
  return st
end

------------------------------------------------------------------------
-- Coordination

function Runner:done_set(list)
  local done = {}
  for _, l in ipairs(list) do
    if l.checkpoint == SHARD_END then done[l.shard] = true end
  end
  return done
end

-- Lists the leases, takes what this owner should hold, starts workers.
function Runner:balance()
  local list, err = self.leases:list()
  if not list then return nil, err end
  self.lease_list = list
  local done = self:done_set(list)
  local eligible = {}
  local tree = self.tree
  for _, l in ipairs(list) do
    if tree.by_id[l.shard] and not done[l.shard] and l.error ~= REBUILD
      and shards.startable(tree, l.shard, function(id) return done[id] end) then
      eligible[l.shard] = true
    end
  end
  -- Our own shards whose worker ended (stopped after an error) are free again.
  for id, st in pairs(self.state) do
    if st.finished then self.state[id] = nil end
  end
  local takes
  local now = self.leases.clock_ms()
  local running = {}
  for id in pairs(self.state) do running[id] = true end
  if self.greedy then
    takes = {}
    for _, l in ipairs(list) do
      local alive = l.owner and l.expires > now and not (l.owner == self.owner and not running[l.shard])
      if eligible[l.shard] and not alive then takes[#takes + 1] = l end
    end
  else
    takes = shards.plan_takes{ owner = self.owner, now = now, leases = list, eligible = eligible, running = running }
  end
  for _, l in ipairs(takes) do
    if not self.state[l.shard] then
      local nl, terr = self.leases:take(l)
      if nl then
        self.log("info", string.format("projection '%s': %s took shard %s%s", self.name, self.owner, l.shard,
                                       l.steal and (" from " .. tostring(l.owner)) or ""))
        self:start_shard(nl)
        if l.owner and l.owner ~= self.owner then metrics.lease_takeover(self.name) end
      elseif terr.type ~= "LeaseLost" then
        self.log("warn", "taking a lease failed: " .. tostring(terr))
      end
    end
  end
  metrics.leases_held_count(self.name, self.state)
  return true
end

function Runner:renew_all()
  for _, st in pairs(self.state) do
    if not st.finished and not st.lost then
      local l, err = self.leases:renew(st.lease)
      if l then
        st.lease = l
      elseif err.type == "LeaseLost" then
        st.lost = true
        self.log("warn", tostring(err) .. "; dropping the shard")
      else
        self.log("warn", "renewing a lease failed: " .. tostring(err))
      end
    end
  end
end

local should_stop = runner.should_stop

-- The daemon loop; returns when stop says so, or after stop()/kill().
function Runner:run(stop, opts)
  if self.running then error("streams: run is already running", 2) end
  self.running, self.stopping, self.killed = true, false, false
  local ok, err = xpcall(self.loop, debug.traceback, self, stop, opts)
  if not ok then
    self.log("error", "projection '" .. self.name .. "': coordinator failed: " .. tostring(err))
  end
  self:shutdown()
  self.running = false
  if not ok then return nil, self:err("LuaError", tostring(err)) end
  return true
end

function Runner:loop(stop)
  local last_renew, last_balance = -math.huge, -math.huge
  local tick = math.min(self.renew_s, 1)
  while not (self.stopping or self.killed or should_stop(stop)) do
    local now = self:now()
    local changed = self.changed
    self.changed = false
    if not self.tree or changed or now - (self.described_at or -math.huge) >= self.describe_s then
      local tree, err = self:refresh_tree()
      if not tree then self.log("warn", tostring(err)) end
    end
    if now - last_renew >= self.renew_s then
      self:renew_all()
      last_renew = now
    end
    if self.tree and (now - last_balance >= tick or changed) then
      local ok, err = self:balance()
      if not ok then self.log("warn", tostring(err)) end
      last_balance = now
    end
    if self.on_tick then self:on_tick() end
    if self.stopping or self.killed or should_stop(stop) then break end
    -- Short slices: react quickly to a finished shard or a stop.
    local t0 = self:now()
    while self:now() - t0 < tick and not (self.changed or self.stopping or self.killed or should_stop(stop)) do
      self:sleep(math.min(0.05, tick))
    end
  end
end

-- Waits for the workers: they finish their batch, checkpoint and release
-- (unless killed).
function Runner:shutdown()
  self.stopping = true
  for _, st in pairs(self.state) do
    if st.thread and not st.finished then self.client:wait(st.thread) end
  end
end

function Runner:stop()
  self.stopping = true
  while self.running do self:sleep(0.02) end
  return true
end

function Runner:kill()
  self.killed = true
  while self.running do self:sleep(0.02) end
end

-- r:run_until_caught_up{timeout=} -> stats | nil, err
-- Takes every shard it can (no fair share) and runs until each shard
-- listed at the start is caught up: closed shards read to their end
-- (SHARD_END), open ones until GetRecords has come back empty
-- caught_up_empty times in a row (DynamoDB Streams has no "behind latest"
-- figure; an empty answer is how a reader learns it reached the tip).
-- Shards held by another live worker are waited for.
function Runner:run_until_caught_up(opts)
  opts = opts or {}
  local timeout = opts.timeout or 600
  -- a shard whose batch failed this many times in a row ends the catch-up
  -- (as on the embedded store): the workers stop and give their leases
  -- back, so a rerun after fixing the handler starts at once
  local max_failures = opts.max_failures or 5
  local tree, err = self:refresh_tree()
  if not tree then return nil, err end
  local targets = {}
  for _, id in ipairs(tree.order) do targets[id] = true end
  local t0 = self:now()
  local records_before = self.stats.records
  local failure
  self.greedy = true
  local function finished()
    local list = self.lease_list
    if not list then return false end
    local by = {}
    for _, l in ipairs(list) do by[l.shard] = l end
    for id in pairs(targets) do
      local l, st = by[id], self.state[id]
      if l and l.error == REBUILD then
        failure = self:err("RebuildNeeded", "the stream no longer holds records of shard " .. id
          .. " that were never applied: run `tide replay " .. self.name .. "`", id)
        return true
      end
      if st and st.error and (st.failures or 0) >= max_failures then
        failure = terror.new{ kind = "handler_error", type = "CatchUpFailed", projection = self.name,
                              shard = id, message = st.error }
        return true
      end
      local done = (l and l.checkpoint == SHARD_END) or (st and (st.caught_up or st.state == "done"))
      if not done then return false end
    end
    return true
  end
  local ok, rerr = self:run(function()
    if self:now() - t0 > timeout then
      failure = self:err("Timeout", string.format("not caught up after %g s", timeout))
      return true
    end
    -- the lease list is refreshed by balance(); our own states are live
    return finished()
  end)
  self.greedy = false
  if not ok then return nil, rerr end
  if failure then return nil, failure end
  local st = self.stats
  return { handled = st.records - records_before, records = st.records, events = st.events,
           batches = st.batches, conflicts = st.conflicts, retries = st.retries, seconds = self:now() - t0 }
end

-- r:status() -> the projection's figures and its shards, parents first (a
-- lease-table Query).
function Runner:status()
  local list, err = self.leases:list()
  if not list then return nil, err end
  local order = {}
  if self.tree then for i, id in ipairs(self.tree.order) do order[id] = i end end
  table.sort(list, function(a, b)
    local x, y = order[a.shard] or math.huge, order[b.shard] or math.huge
    if x ~= y then return x < y end
    return a.shard < b.shard
  end)
  local now = self.leases.clock_ms()
  local out, first_error, handled = {}, nil, 0
  for _, l in ipairs(list) do
    local st = self.state[l.shard]
    local live = l.owner and l.expires > now
    local state
    if l.checkpoint == SHARD_END then state = "done"
    elseif l.error == REBUILD then state = "rebuild needed"
    elseif st and not st.finished then state = st.state
    elseif live then state = "owned"
    else state = "free" end
    local lag
    if st and not st.finished then
      lag = st.caught_up and 0 or (st.last_created_ms and math.max(0, now - st.last_created_ms)) or nil
    end
    out[#out + 1] = {
      shard = l.shard, parent = l.parent, owner = live and l.owner or nil, checkpoint = l.checkpoint,
      error = l.error, state = state, lag_ms = lag, mine = (live and l.owner == self.owner) or false,
      counter = l.counter, records = st and st.records or 0,
    }
    if l.error and not first_error then first_error = "shard " .. l.shard .. ": " .. l.error end
    handled = handled + (l.handled or 0)
  end
  return { projection = self.name, feed = "streams", version = self.projection.version, owner = self.owner,
           handled = self.stats.records, handled_total = handled, error = first_error, shards = out }
end

return M
