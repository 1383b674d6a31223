-- tide.projection.runner.streams: runs projections from the DynamoDB stream
-- of the events table (docs/projections.md, "The DynamoDB Streams runner").
-- It has the runner interface of tide.projection.runner (start, run,
-- run_until_caught_up, status, stop), and kill.
--
--   local streams = require "tide.projection.runner.streams"
--   local r = streams.new{
--     client = db, store = <tide.store.dynamodb>, backend = <tide.projection.dynamodb>,
--     projection = proj            -- one projection (its leases: group = its name), or
--     projections = {proj, ...}, group = "*",   -- several, one reader per shard for all
--     aggregates = registry (optional, upcasting), owner = "host:pid:rand" (default),
--     lease_ms = 10000, poll_ms = 200, max_poll_ms = 1000, read_interval_ms = 200,
--     batch_limit = 1000, describe_ms = 30000, balance_ms = lease_ms / 3,
--     steal_ms = lease_ms, fence_margin_ms = lease_ms / 3, stop_timeout_ms = lease_ms,
--     retention_s = 86400, log = function(level, msg) end,
--   }
--   r:start()                   -> true | nil, err
--   r:run(stop)                 the daemon loop (see tide.projection.runner)
--   r:run_until_caught_up{timeout=} -> {handled=, records=, events=, batches=,
--                                       conflicts=, retries=, seconds=} | nil, err
--   r:status([name])            -> {projection=, feed="streams", version=, owner=,
--                                   handled=, error=, shards={...}} | nil, err
--   r:stop()                    finish the batches in flight, checkpoint, release
--   r:kill()                    stop at once without releasing (a simulated crash)
--
-- One coordinator thread lists the shards (DescribeStream), keeps a lease
-- per shard, takes and steals leases by shards.plan (balancing that
-- converges, one steal at a time, a graceful handoff first), renews its
-- own leases, and runs each owned shard in a thread of its own: ONE reader
-- per shard for every projection of the group. A batch read once is
-- applied to each projection, which keeps its own checkpoint (cp:<name> in
-- the lease, moving only forward) and its own failure state: a projection
-- whose batch fails is detached from the shard's reader and retried with
-- backoff from its own checkpoint (a second reader of the shard, at most
-- one batch per turn) until it has caught up, while the others go on.
--
-- Leases expire by their heartbeat: a lease whose (owner, counter, beat)
-- has not changed for lease_ms on this worker's monotonic clock is taken.
-- Heartbeats (renewals) go from a thread of their own, never behind the
-- coordinator's balance round.
-- The holder stops writing (fencing) once its own monotonic clock says
-- lease_ms - fence_margin_ms have passed since it sent its last successful
-- heartbeat (renewal, checkpoint or take).

local core = require "tide.core"
local clock = require "tide.clock"
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
local pad, before = leases_mod.pad, leases_mod.before

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
-- (before nil: all after), ascending, from a consistent Query (every page).
function M.reader(client, events_table)
  return function(stream, after, before_v)
    local out = {}
    local aggregate, id = stream_mod.split(stream)
    local first, last = after + 1, before_v and (before_v - 1) or 2 ^ 53
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
  for _, k in ipairs({ "client", "store", "backend" }) do
    if type(opts[k]) ~= "table" then error("runner.streams.new: opts." .. k .. " is required", 2) end
  end
  local projs = opts.projections or { opts.projection }
  if type(projs) ~= "table" or #projs == 0 or type(projs[1]) ~= "table" then
    error("runner.streams.new: opts.projection or opts.projections is required", 2)
  end
  local group = opts.group or (#projs == 1 and projs[1].name) or leases_mod.ALL
  local lease_ms = opts.lease_ms or 10000
  local self = setmetatable({
    client = opts.client,
    store = opts.store,
    backend = opts.backend,
    projections = projs,
    projection = projs[1],
    name = group == leases_mod.ALL and projs[1].name or group,
    group = group,
    aggregates = opts.aggregates,
    owner = opts.owner or default_owner(),
    lease_ms = lease_ms,
    lease_s = lease_ms / 1000,
    renew_s = lease_ms / 3000,
    fence_s = (lease_ms - (opts.fence_margin_ms or lease_ms / 3)) / 1000,
    poll_s = (opts.poll_ms or 200) / 1000,
    max_poll_s = (opts.max_poll_ms or 1000) / 1000,
    read_interval_s = (opts.read_interval_ms or 200) / 1000,
    retry_max_s = (opts.retry_max_ms or 30000) / 1000,
    batch_limit = opts.batch_limit or 1000,
    describe_s = (opts.describe_ms or 30000) / 1000,
    describe_min_s = (opts.describe_min_ms or math.max(1000, (opts.describe_ms or 30000) / 10)) / 1000,
    balance_s = (opts.balance_ms or math.min(lease_ms / 3, 1000)) / 1000,
    steal_s = (opts.steal_ms or lease_ms) / 1000,
    stop_timeout_s = (opts.stop_timeout_ms or lease_ms) / 1000,
    retention_ms = (opts.retention_s or 86400) * 1000,
    caught_up_empty = opts.caught_up_empty or 2,
    log = opts.log or default_log,
    new_projector = opts.new_projector,
    state = {},        -- shard id -> worker state
    seen = {},         -- shard id -> {owner=, counter=, beat=, at=} as this worker observed it
    stats = { records = 0, events = 0, batches = 0, conflicts = 0, retries = 0, steals = 0, handoffs = 0,
              fenced = 0, resumed = 0 },
    handled = {},      -- projection name -> records checkpointed
  }, Runner)
  self.by_name = {}
  for _, p in ipairs(projs) do self.by_name[p.name] = p; self.handled[p.name] = 0 end
  self.leases = leases_mod.new{ client = opts.client, table_prefix = opts.table_prefix or opts.store.prefix,
                                group = group, projection = projs[1].name, owner = self.owner,
                                lease_ms = lease_ms, clock_ms = opts.clock_ms }
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
  for _, p in ipairs(self.projections) do
    ok, err = self.backend:init(p)
    if not ok then return nil, err end
  end
  return true
end

function Runner:make_projector(proj)
  if self.new_projector then return self.new_projector(self, proj) end
  return require("tide.projector").new{ projection = proj, backend = self.backend,
                                        reader = self.reader, aggregates = self.aggregates }
end

-- Calls f(name, ...) for each projection of the runner (metrics are
-- labelled per projection; the group's leases are every projection's).
function Runner:each_projection(f, ...)
  for _, p in ipairs(self.projections) do f(p.name, ...) end
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

-- Reads the shard list (DescribeStream, every page; the client retries
-- LimitExceededException with backoff) and makes sure every shard has a lease.
function Runner:refresh_tree()
  local arn, err = self:stream_arn()
  if not arn then return nil, err end
  self.describes = (self.describes or 0) + 1
  local res, derr = self.client:describe_stream{ StreamArn = arn }
  -- the next one is due describe_s later (±10%), whatever the outcome
  self.described_at = self:now() + (math.random() - 0.5) * 0.2 * self.describe_s
  if not res then return nil, leases_mod.wrap(derr, "describing the stream", { projection = self.name }) end
  local desc = res.StreamDescription
  self.stream_created_ms = desc.CreationRequestDateTime and desc.CreationRequestDateTime * 1000 or nil
  local tree = shards.tree(desc.Shards or {})
  -- shards new to this worker: look at the lease table once (another
  -- worker may have made their leases) rather than one PutItem each
  local missing = false
  for _, id in ipairs(tree.order) do
    if not (self.known and self.known[id]) and not (self.lease_by_shard and self.lease_by_shard[id]) then
      missing = true
      break
    end
  end
  if missing then
    local list = self.leases:list()
    if list then self:observe(list) end
  end
  -- a lease for each shard new to this worker that the last lease list
  -- did not have (another worker may have made it already); several in
  -- flight (after a split of 64 shards: 128 PutItems)
  local new = {}
  for _, id in ipairs(tree.order) do
    if not (self.known and self.known[id]) and not (self.lease_by_shard and self.lease_by_shard[id]) then
      new[#new + 1] = id
    end
  end
  if #new > 0 then
    local lerr = self.client:run_parallel(new, function(id) return self.leases:ensure(id, tree.by_id[id].parent) end)
    if lerr then return nil, lerr end
  end
  self.known = {}
  for _, id in ipairs(tree.order) do self.known[id] = true end
  self.tree = tree
  return tree
end

-- The tree as the describer recorded it in the lease table: its listed
-- ids, each with the parent its lease names.
function Runner:tree_from_listing(d, by)
  if not (d and d.listed) then return nil end
  if d.listed == self.listing and self.tree then return self.tree end
  local list = {}
  for id in d.listed:gmatch("[^ ]+") do
    if id ~= "~" then
      local l = by[id]
      list[#list + 1] = { ShardId = id, ParentShardId = l and l.parent or nil }
    end
  end
  self.listing = d.listed
  self.stream_created_ms = d.created
  self.tree = shards.tree(list)
  return self.tree
end

-- Is a listed shard at its end with no child known yet? Then the
-- describer looks again soon (its children are in the stream already).
local function ended_childless(tree, by)
  for _, id in ipairs(tree.order) do
    local l = by[id]
    if l and l.checkpoint == SHARD_END and #tree.by_id[id].children == 0 then
      return true
    end
  end
  return false
end

-- DescribeStream, shared by the fleet: one worker holds the describer
-- lease (leases.DESCRIBER, taken and judged by its heartbeat like a shard
-- lease), describes every describe_s (sooner, at most every
-- describe_min_s, when a shard ended and its children are not listed yet),
-- makes the new shards' leases and records the listed ids in its lease
-- item; the other workers build their tree from that item, which comes
-- with the lease list they read anyway. So the fleet makes pages /
-- describe_s DescribeStream calls a second, whatever its size.
function Runner:describer_turn(d, by)
  local now = self:now()
  if self.greedy then
    -- run_until_caught_up (`tide project`, `tide replay`): one process on
    -- its own lease group, describing for itself
    if not self.tree or now >= (self.described_at or -math.huge) + self.describe_s then
      local tree, err = self:refresh_tree()
      if not tree then return nil, err end
    end
    return true
  end
  local mine = self.describer
  if mine and not (d and d.owner == self.owner and d.counter == mine.counter) then
    -- taken over (our heartbeats stopped long enough) or deleted
    self.describer, mine = nil, nil
  end
  if not mine then
    local s = self.seen[leases_mod.DESCRIBER]
    if d and (not s or s.owner ~= d.owner or s.counter ~= d.counter or s.beat ~= d.beat) then
      s = { owner = d.owner, counter = d.counter, beat = d.beat, at = now }
      self.seen[leases_mod.DESCRIBER] = s
    end
    local free = not d or not d.owner or now - s.at >= self.lease_s or d.owner == self.owner
    if free and not self.stopping then
      if not d then
        local ok, err = self.leases:ensure(leases_mod.DESCRIBER)
        if not ok then return nil, err end
        d = { shard = leases_mod.DESCRIBER, counter = 0, beat = 0 }
      end
      local sent = self:now()
      local nl = self.leases:take(d)
      if nl then
        self.describer, self.describer_beat, mine = nl, sent, nl
        self.described_at = nil
        self.log("info", "describer lease taken: this worker lists the stream's shards for the fleet",
                 { owner = self.owner })
      end
    end
  end
  if not mine then
    self:tree_from_listing(d, by)
    return true
  end
  local due = not self.tree or not self.described_at or now >= self.described_at + self.describe_s
    or (now >= self.described_at + self.describe_min_s and ended_childless(self.tree, by))
  if due then
    local tree, err = self:refresh_tree()
    if not tree then return nil, err end
    local sent = self:now()
    local nl, rerr = self.leases:record_listing(mine, tree.order, self.stream_created_ms)
    if nl then
      self.describer, self.describer_beat = nl, sent
      self.listing = nl.listed
    elseif rerr.type == "LeaseLost" then
      self.describer = nil
    else
      return nil, rerr
    end
  elseif now - self.describer_beat >= self.renew_s then
    local sent = self:now()
    local nl, rerr = self.leases:renew(mine)
    if nl then self.describer, self.describer_beat = nl, sent
    elseif rerr.type == "LeaseLost" then self.describer = nil end
  end
  return true
end

------------------------------------------------------------------------
-- Heartbeats and fencing

-- After a successful write that was a heartbeat (take, renew, checkpoint):
-- the lease is ours until sent_at + lease_ms on every other worker's clock.
local function beat_ok(st, l, sent_at)
  if l.counter ~= st.lease.counter then return end
  if (l.beat or 0) >= (st.lease.beat or 0) then
    st.lease.beat, st.lease.handoff = l.beat, l.handoff
    st.lease.errors = l.errors
  end
  if sent_at > (st.beat_sent or -math.huge) then st.beat_sent = sent_at end
end

-- May this worker still write for the shard? Its own monotonic clock says
-- whether the lease may have passed to someone else. A fenced shard is
-- paused, not dropped: its renewals go on, and one that succeeds (it is
-- conditioned on the counter, so nobody took the lease meanwhile) makes
-- the lease ours again for lease_ms on every other worker's clock, and
-- the shard resumes from its checkpoints (as the KCL's renewer, which
-- keeps renewing a lease it stopped counting as held).
function Runner:may_write(st)
  if self.killed or st.lost then return false end
  local since = self:now() - (st.beat_sent or -math.huge)
  if since >= self.fence_s then
    if not st.fenced then
      st.fenced = true
      st.fenced_at = self:now()
      self.stats.fenced = self.stats.fenced + 1
      self.log("warn", string.format("shard %s: no heartbeat for %.1f s: the lease may have passed to another"
        .. " worker; stopping writes", st.shard, since))
    end
    return false
  end
  if st.fenced then
    st.fenced = false
    st.resume = true
    self.stats.resumed = self.stats.resumed + 1
    self.log("info", string.format("shard %s: heartbeat again after %.1f s without writing: the lease is still"
      .. " ours; resuming from the checkpoints", st.shard, self:now() - (st.fenced_at or self:now())))
  end
  return true
end

------------------------------------------------------------------------
-- One shard: reading

local function halted(self, st)
  return self.killed or st.lost
end

-- Back to the checkpoints after a pause (fenced mid-batch: what was
-- applied and not checkpointed is read and applied again; the projectors
-- skip what they already wrote).
local function rewind(self, st)
  st.resume = false
  st.main = { pos = nil }
  st.idle_until = nil
  for name, ps in pairs(st.procs) do
    if not ps.attached and ps.cursor then ps.cursor = { pos = cp_of(st, name) } end
    pcall(ps.projector.reset, ps.projector)
  end
end

-- A turn that stopped because the shard is fenced: wait for a renewal
-- (true), or give the shard up when the lease is gone or the worker is
-- stopping (false).
function Runner:paused(st)
  if halted(self, st) or self.stopping then return false end
  return st.fenced == true
end

-- The stored checkpoint of projection `name` on the shard (padded) or nil.
local function cp_of(st, name)
  local c = st.cps[name]
  return c and pad(c) or nil
end

-- The earliest checkpoint among `names` (nil: one of them never started).
local function min_cp(st, names)
  local m, first = nil, true
  for name in pairs(names) do
    local c = cp_of(st, name)
    if c == nil then return nil end
    if first or c < m then m = c end
    first = false
  end
  return m
end

-- May records before TRIM_HORIZON have been trimmed for a projection
-- that never read this shard? When the stream is older than its
-- retention and the shard's parent did not end (for every projection)
-- within the retention.
function Runner:may_have_trimmed(st)
  local now = clock.wall_ms()
  local parent = st.parent and self.lease_by_shard and self.lease_by_shard[st.parent]
  if parent and parent.checkpoint == SHARD_END then
    return parent.ended ~= nil and now - parent.ended > self.retention_ms
  end
  if st.lease.parent_done or st.lease.decision == "skip-parent" then return false end
  return self.stream_created_ms ~= nil and now - self.stream_created_ms > self.retention_ms
end

-- Can no record of the stream have been trimmed yet? When it is younger
-- than its retention (DynamoDB Streams trims records after 24 hours):
-- then a TrimmedDataAccessException cannot mean lost records. DynamoDB
-- Local answers one now and then for a stream a few seconds old (a
-- GetRecords on an iterator taken before the shard's first records:
-- aws-sdk-java#2923); taken at its word, it marked a new projection
-- `rebuild needed` at its first read. Unknown age: no.
function Runner:stream_too_young_to_trim()
  local created = self.stream_created_ms
  return created ~= nil and clock.wall_ms() - created < self.retention_ms
end

-- An iterator for a cursor: after its position, or TRIM_HORIZON.
function Runner:iterator(st, cur)
  -- a worker that never described knows the stream from DescribeTable
  local arn, aerr = self:stream_arn()
  if not arn then return nil, aerr end
  local params = { StreamArn = arn, ShardId = st.shard }
  local pos = cur.pos
  if pos and pos ~= leases_mod.FROM_START then
    params.ShardIteratorType, params.SequenceNumber = "AFTER_SEQUENCE_NUMBER", leases_mod.unpad(pos)
  else
    params.ShardIteratorType = "TRIM_HORIZON"
  end
  local res, err = self.client:get_shard_iterator(params)
  if not res then return nil, err end
  return res.ShardIterator
end

-- Pacing: at most one GetRecords per read_interval_s on this shard (both
-- cursors), so a shard stays within DynamoDB Streams' 5 per second.
function Runner:pace(st)
  local wait = (st.last_read or -math.huge) + self.read_interval_s - self:now()
  if wait > 0 then self:sleep(wait) end
  st.last_read = self:now()
end

-- Backoff for a failing request: 0.1 s doubling up to retry_max_s.
function Runner:backoff(st)
  st.failures = (st.failures or 0) + 1
  local d = runner.backoff_delay(st.failures, 0.1, self.retry_max_s)
  local t0 = self:now()
  while self:now() - t0 < d and not (halted(self, st) or self.stopping) do
    self:sleep(math.min(0.05, d))
  end
end

-- A TrimmedDataAccessException of a stream younger than its retention:
-- logged, and the read is tried again (a fresh iterator) after a backoff.
function Runner:spurious_trim(st, cur, op, err)
  self.log("warn", string.format("shard %s: %s answered %s on a stream younger than its retention (no record"
    .. " can have been trimmed): reading again", st.shard, op, tostring(err)))
  cur.iter = nil
  self:backoff(st)
  return "retry"
end

-- Reads one page for a cursor. Returns "records", batch | "empty" | "end",
-- batch | "trimmed" | "retry".
function Runner:read(st, cur)
  if not cur.iter then
    local it, err = self:iterator(st, cur)
    if not it then
      if err.type == "TrimmedDataAccessException" then
        if self:stream_too_young_to_trim() then return self:spurious_trim(st, cur, "GetShardIterator", err) end
        return "trimmed"
      end
      self.log("warn", string.format("shard %s: GetShardIterator failed: %s", st.shard, tostring(err)))
      self:backoff(st)
      return "retry"
    end
    cur.iter = it
  end
  self:pace(st)
  st.reads = (st.reads or 0) + 1
  local res, gerr = M.get_events(self.client, { ShardIterator = cur.iter, Limit = self.batch_limit })
  if not res then
    if gerr.type == "ExpiredIteratorException" then
      self.log("info", "iterator expired on shard " .. st.shard .. ": renewing it from the checkpoint")
    elseif gerr.type == "TrimmedDataAccessException" then
      if self:stream_too_young_to_trim() then return self:spurious_trim(st, cur, "GetRecords", gerr) end
      return "trimmed"
    else
      self.log("warn", string.format("shard %s: GetRecords failed: %s", st.shard, tostring(gerr)))
      self:backoff(st)
    end
    cur.iter = nil
    return "retry"
  end
  st.failures = 0
  cur.iter = res.NextShardIterator
  if not res.NextShardIterator then return "end", res end
  if res.records == 0 then return "empty" end
  return "records", res
end

------------------------------------------------------------------------
-- One shard: applying

-- Applies a batch to projection `name` until it is durable. -> true, or
-- false, message (failed: the caller detaches it), or nil (halted).
function Runner:apply_one(st, name, batch)
  local events = batch.events
  if #events == 0 then return true end
  local ps = st.procs[name]
  local conflicts = 0
  while true do
    if not self:may_write(st) then return nil end
    local ok, plan, aerr = xpcall(ps.projector.apply, debug.traceback, ps.projector, events)
    if not ok then
      plan, aerr = nil, terror.new{ kind = "internal", type = "LuaError", message = tostring(plan) }
    end
    if plan then
      if not self:may_write(st) then ps.projector:reset(); return nil end
      -- checked again before each request is sent; st.last_write is the
      -- last send (what the fleet spec compares across workers)
      local wok, werr = self.backend:write(name, plan, nil, { fence = st.fence })
      if wok then
        ps.projector:committed(plan)
        ps.unrecorded = (ps.unrecorded or 0) + (plan.applied or 0)
        metrics.projection_events(name, plan.applied or 0)
        return true
      end
      ps.projector:reset()
      -- a conflict is another shard's worker on a shared (conditional)
      -- item: apply again at once, with a growing random pause; it is
      -- not a failure of the projection
      if werr.type == "Conflict" and conflicts < 1000 then
        conflicts = conflicts + 1
        self.stats.conflicts = self.stats.conflicts + 1
        self:sleep(0.005 * math.min(conflicts, 40) * math.random())
      else
        if werr.type == "Fenced" then return nil end
        metrics.projection_error(name)
        return false, "writing the batch failed: " .. tostring(werr)
      end
    else
      pcall(ps.projector.reset, ps.projector)
      metrics.projection_error(name)
      local msg = type(aerr) == "table" and (aerr.message or tostring(aerr)) or tostring(aerr)
      local ev = type(aerr) == "table" and aerr.event
      if ev then msg = string.format("event %s v%s (%s): %s", tostring(ev.stream), tostring(ev.version),
                                     tostring(ev.type), msg) end
      return false, msg
    end
  end
end

-- The fence given to backend:write for a shard: may we send one more request?
local function make_fence(self, st)
  return function()
    if not self:may_write(st) then return false end
    st.last_write = self:now()
    if not st.first_write then
      st.first_write = st.last_write
      self.log("info", "shard writes begin", { shard = st.shard, owner = self.owner, at = st.first_write })
    end
    return true
  end
end

-- A projection failed on this shard: it leaves the shard's reader and is
-- retried from its checkpoint after a backoff.
function Runner:detach(st, name, message)
  local ps = st.procs[name]
  ps.failures = (ps.failures or 0) + 1
  ps.attached = false
  ps.cursor = { pos = cp_of(st, name) }
  ps.retry_at = self:now() + runner.backoff_delay(ps.failures, 0.1, self.retry_max_s)
  ps.error = message
  self.stats.retries = self.stats.retries + 1
  self.log("error", string.format("projection '%s' shard %s: batch failed, retrying with backoff: %s",
    name, st.shard, message))
  if self:may_write(st) then
    local ok, err = self.leases:record_error(st.lease, message, name)
    if not ok and err.type == "LeaseLost" then st.lost = true end
  end
end

-- Checkpoints `names` at seq (one conditional UpdateItem; a heartbeat too).
-- Retries until done, the lease is lost, or stopping runs out of time.
function Runner:checkpoint(st, names, seq)
  local cps, handled = {}, {}
  for name in pairs(names) do
    cps[name] = seq
    local ps = st.procs[name]
    -- the events applied since the last checkpoint (tide status sums them)
    if ps and (ps.unrecorded or 0) > 0 then handled[name] = ps.unrecorded end
  end
  if next(cps) == nil then return true end
  -- the last projections reaching SHARD_END: the lease's own SHARD_END
  -- in the same write (a worker stopped between two writes would leave a
  -- shard that no projection reads any more and its children waiting)
  local finish = seq == SHARD_END
  if finish then
    for _, p in ipairs(self.projections) do
      if not cps[p.name] and st.cps[p.name] ~= SHARD_END then finish = false end
    end
  end
  st.failures = 0
  while true do
    if not self:may_write(st) then return false end
    if self.stopping and self:now() > (self.stop_deadline or math.huge) then return false end
    local sent = self:now()
    local l, cerr = self.leases:checkpoint(st.lease, cps, handled, finish)
    if l then
      beat_ok(st, l, sent)
      if finish then st.lease_done = true end
      for name in pairs(cps) do
        st.cps[name] = seq
        local ps = st.procs[name]
        if ps then ps.error, ps.unrecorded = nil, 0 end
      end
      return true
    end
    if cerr.type == "LeaseLost" then
      st.lost = true
      self.log("warn", tostring(cerr) .. "; dropping the shard")
      return false
    end
    self.log("warn", "checkpoint failed, retrying: " .. tostring(cerr))
    self:backoff(st)
  end
end

-- Applies a batch to every projection of `names` (in parallel), then
-- checkpoints those that succeeded. Returns false when halted.
function Runner:apply_batch(st, names, batch)
  local list = {}
  local last = pad(batch.last_seq)
  for name in pairs(names) do
    -- one that rejoined ahead of the reader has these records already
    local c = cp_of(st, name)
    if not (c and c >= last) then list[#list + 1] = name end
  end
  table.sort(list)
  local ok_names, failed = {}, {}
  local halted_now = false
  self.client:run_parallel(list, function(name)
    local ok, msg = self:apply_one(st, name, batch)
    if ok then ok_names[name] = true
    elseif ok == false then failed[name] = msg
    else halted_now = true end
    return true
  end)
  if halted_now then return false end
  for name, msg in pairs(failed) do self:detach(st, name, msg) end
  local seq = batch.last_seq
  if not self:checkpoint(st, ok_names, seq) then return false end
  for name in pairs(ok_names) do
    self.handled[name] = self.handled[name] + batch.records
  end
  st.records = (st.records or 0) + batch.records
  self.stats.records = self.stats.records + batch.records
  self.stats.events = self.stats.events + #batch.events
  self.stats.batches = self.stats.batches + 1
  st.last_created_ms = batch.last_created and batch.last_created * 1000 or nil
  for name in pairs(ok_names) do metrics.projection_checkpoint(name, st.shard, batch.last_created) end
  return true
end

-- The records were trimmed before `names` read them: never skip silently.
function Runner:rebuild_needed(st, names)
  for name in pairs(names) do
    local ps = st.procs[name]
    ps.attached, ps.rebuild, ps.error = false, true, REBUILD
    self.log("error", string.format("projection '%s' shard %s: %s: the stream no longer holds the records"
      .. " after the checkpoint (%s); run `tide replay %s`", name, st.shard, REBUILD,
      tostring(st.cps[name] or "TRIM_HORIZON"), name))
    if self:may_write(st) then
      local ok, err = self.leases:record_error(st.lease, REBUILD, name)
      if not ok and err.type == "LeaseLost" then st.lost = true end
    end
  end
end

local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end

-- The attached projections (the main cursor's).
local function attached(st)
  local out = {}
  for name, ps in pairs(st.procs) do
    if ps.attached and not ps.rebuild and st.cps[name] ~= SHARD_END then out[name] = true end
  end
  return out
end

-- One turn of the main cursor. Returns false when the shard must stop.
function Runner:main_turn(st)
  local names = attached(st)
  local cur = st.main
  if next(names) == nil then return true end
  if not cur.iter and cur.pos == nil then
    cur.pos = min_cp(st, names)
    -- never read yet by some of them: were records trimmed before them?
    if cur.pos == nil and self:may_have_trimmed(st) then
      local fresh = {}
      for name in pairs(names) do if cp_of(st, name) == nil then fresh[name] = true end end
      self:rebuild_needed(st, fresh)
      return true
    end
  end
  local what, batch = self:read(st, cur)
  if what == "trimmed" then
    self:rebuild_needed(st, names)
    return true
  elseif what == "retry" then
    return true
  end
  if batch and batch.records > 0 then
    if not self:apply_batch(st, names, batch) then return false end
    cur.pos = pad(batch.last_seq)
    st.empty, st.idle = 0, self.poll_s
  end
  if what == "end" then
    -- read to its end: SHARD_END for those still attached
    local still = attached(st)
    if not self:checkpoint(st, still, SHARD_END) then return false end
    cur.done = true
  elseif what == "empty" then
    st.empty = (st.empty or 0) + 1
    if st.empty >= self.caught_up_empty then st.caught_up = true end
    st.last_created_ms = nil
    for name in pairs(names) do metrics.projection_position(name, st.shard, nil) end
    st.idle = math.min((st.idle or self.poll_s) * 2, self.max_poll_s)
    st.idle_until = self:now() + st.idle
  end
  return true
end

-- One turn of a detached projection whose retry is due: one batch from its
-- own checkpoint; once it reached the main cursor, it rejoins it.
function Runner:catchup_turn(st, name)
  local ps = st.procs[name]
  local cur = ps.cursor
  local what, batch = self:read(st, cur)
  if what == "trimmed" then
    self:rebuild_needed(st, { [name] = true })
    return true
  elseif what == "retry" then
    ps.retry_at = self:now() + runner.backoff_delay(ps.failures, 0.1, self.retry_max_s)
    return true
  end
  if batch and batch.records > 0 then
    local ok, msg = self:apply_one(st, name, batch)
    if ok == nil then return false end
    if not ok then
      ps.failures = ps.failures + 1
      ps.retry_at = self:now() + runner.backoff_delay(ps.failures, 0.1, self.retry_max_s)
      ps.cursor = { pos = cp_of(st, name) }
      ps.error = msg
      self.log("error", string.format("projection '%s' shard %s: batch failed again, retrying with backoff: %s",
        name, st.shard, msg))
      if self:may_write(st) then self.leases:record_error(st.lease, msg, name) end
      return true
    end
    if not self:checkpoint(st, { [name] = true }, batch.last_seq) then return false end
    self.handled[name] = self.handled[name] + batch.records
    metrics.projection_checkpoint(name, st.shard, batch.last_created)
    cur.pos = pad(batch.last_seq)
  end
  if what == "end" then
    if not self:checkpoint(st, { [name] = true }, SHARD_END) then return false end
    ps.failures, ps.cursor = 0, nil
    return true
  end
  -- rejoin: at the tip, or at or past the main cursor
  if what == "empty" or (st.main.pos and cur.pos and cur.pos >= st.main.pos) or st.main.done then
    if st.main.done then
      ps.retry_at = self:now()    -- keep reading on its own to the end
    else
      ps.attached, ps.failures, ps.cursor = true, 0, nil
      if next(attached(st)) and not st.main.iter and st.main.pos == nil then st.main.pos = cur.pos end
      self.log("info", string.format("projection '%s' shard %s: caught up, back with the shard's reader", name, st.shard))
    end
  end
  return true
end

function Runner:shard_loop(st)
  st.state = "running"
  st.main = { pos = nil }
  st.idle = self.poll_s
  st.fence = make_fence(self, st)
  -- each projection: its projector, its checkpoint, attached unless it
  -- needs a rebuild here or finished the shard
  for _, p in ipairs(self.projections) do
    local e = st.lease.errors and st.lease.errors[p.name]
    st.procs[p.name] = { projector = self:make_projector(p), attached = true, rebuild = (e == REBUILD) }
  end
  while not halted(self, st) do
    if self.stopping then break end
    if st.fenced then
      -- paused: the renewals go on in their own thread; one that lands
      -- unfences the shard (may_write), a lost lease ends it
      if self:may_write(st) then rewind(self, st) else self:sleep(0.05) end
      goto continue
    end
    if st.resume then rewind(self, st) end
    if st.lease.handoff and st.lease.handoff ~= self.owner then
      -- asked to hand the shard over: the batch is checkpointed; release
      st.handing_off = true
      self.stats.handoffs = self.stats.handoffs + 1
      self.log("info", string.format("shard %s: handing over to %s", st.shard, st.lease.handoff))
      break
    end
    local busy = false
    if not st.main.done and next(attached(st)) and (st.idle_until or 0) <= self:now() then
      if not self:main_turn(st) then
        if self:paused(st) then goto continue end
        return
      end
      busy = true
    end
    -- detached projections, one due per turn
    for name, ps in pairs(st.procs) do
      if not ps.attached and not ps.rebuild and st.cps[name] ~= SHARD_END and (ps.retry_at or 0) <= self:now() then
        if halted(self, st) or self.stopping or st.fenced then break end
        if not self:catchup_turn(st, name) then
          if self:paused(st) then goto continue end
          return
        end
        busy = true
        break
      end
    end
    -- finished: every projection at SHARD_END
    local all_end, waiting = true, false
    for name, ps in pairs(st.procs) do
      if st.cps[name] ~= SHARD_END then
        all_end = false
        if not ps.rebuild then waiting = true end
      end
    end
    if all_end then
      if st.lease_done then
        st.state = "done"
        self.changed = true
        return
      end
      -- a lease whose projections ended under an earlier holder that
      -- stopped before writing the lease's SHARD_END: written now,
      -- retried until done, the lease is lost, or stopping
      if not self:may_write(st) then goto continue end
      local sent = self:now()
      local l, ferr = self.leases:finish(st.lease)
      if l then
        beat_ok(st, l, sent)
        st.state = "done"
        self.changed = true
        return
      end
      if ferr.type == "LeaseLost" then
        st.lost = true
        return
      end
      self.log("warn", string.format("shard %s: finishing the lease failed, retrying: %s", st.shard, tostring(ferr)))
      self:backoff(st)
      goto continue
    end
    -- nothing left to read here for any projection (finished, or waiting
    -- for a rebuild): give the shard back
    if not waiting then return end
    if not busy then
      local until_t = st.idle_until or self:now()
      for _, ps in pairs(st.procs) do
        if not ps.attached and not ps.rebuild and ps.retry_at and ps.retry_at < until_t then until_t = ps.retry_at end
      end
      local d = math.max(0.01, math.min(until_t - self:now(), 0.05))
      self:sleep(d)
    end
    ::continue::
  end
end

-- Spawns the worker thread of an owned shard.
function Runner:start_shard(lease, sent)
  local st = { shard = lease.shard, lease = lease, parent = lease.parent, state = "starting",
               cps = {}, procs = {}, beat_sent = sent }
  for name, c in pairs(lease.cps or {}) do st.cps[name] = c end
  self.state[lease.shard] = st
  st.thread = self.client:spawn(function()
    local ok, e = xpcall(self.shard_loop, debug.traceback, self, st)
    if not ok then
      self.log("error", string.format("projection '%s' shard %s: worker failed: %s", self.name, st.shard, tostring(e)))
      st.error = tostring(e)
    end
    -- Finished, handed off or stopping: give the lease back while it is
    -- still ours by our clock; a crash (kill) or a lost lease keeps it.
    if not (self.killed or st.lost) and st.state ~= "done" and self:may_write(st)
       and not (self.stopping and self:now() > (self.stop_deadline or math.huge)) then
      local rok, rerr = self.leases:release(st.lease)
      if not rok and rerr.type ~= "LeaseLost" then
        self.log("warn", "releasing the lease failed: " .. tostring(rerr))
      end
    end
    if st.state ~= "done" then st.state = st.lost and "lost" or "stopped" end
    if st.first_write then
      -- the interval in which this worker wrote for the shard (monotonic
      -- seconds): the multi-process specs check that no two overlap
      self.log("info", "shard writes end", { shard = st.shard, owner = self.owner, first = st.first_write,
                                             last = st.last_write, state = st.state })
    end
    st.finished = true
    self.changed = true
    self:each_projection(metrics.projection_shard_gone, st.shard)
  end)
  return st
end

------------------------------------------------------------------------
-- Coordination

-- Observes the lease list on this worker's monotonic clock: a lease is
-- expired when its (owner, counter, beat) has not changed for lease_ms
-- since this worker first saw that state.
function Runner:observe(list)
  local now = self:now()
  local seen, by = self.seen, {}
  for _, l in ipairs(list) do
    by[l.shard] = l
    local s = seen[l.shard]
    if not s or s.owner ~= l.owner or s.counter ~= l.counter or s.beat ~= l.beat then
      s = { owner = l.owner, counter = l.counter, beat = l.beat, at = now }
      seen[l.shard] = s
    end
    l.expired = l.owner ~= nil and now - s.at >= self.lease_s
    -- released to a worker that asked for it (graceful handoff): kept for
    -- that worker for a lease time
    l.reserved = l.owner == nil and l.handoff ~= nil and l.handoff ~= self.owner and now - s.at < self.lease_s
    -- a lease held under our own id that we do not run: an earlier life's
    if l.owner == self.owner and not (self.state[l.shard] and not self.state[l.shard].finished) then
      l.expired = true
    end
  end
  self.lease_by_shard = by
  return by
end

-- Which shards may be read now: listed, not finished, parent finished
-- (or an operator decided to skip it), no projection waiting for a rebuild
-- on a parent.
function Runner:eligible(list, by)
  local eligible = {}
  local tree = self.tree
  for _, l in ipairs(list) do
    -- listed in our tree, or the child of a finished shard whose lease
    -- another worker made after its DescribeStream
    local known = tree.by_id[l.shard] or (l.parent and by[l.parent] and by[l.parent].checkpoint == SHARD_END)
    if known and l.checkpoint ~= SHARD_END then
      local p = l.parent
      local ok
      if not p then ok = true
      elseif l.parent_done or l.decision == "skip-parent" then ok = true
      elseif by[p] then ok = by[p].checkpoint == SHARD_END
      else ok = false end   -- parent unknown here: wait (see status), never skip
      -- a shard where every projection needs a rebuild is not read; one
      -- where every projection is at SHARD_END but the lease is not (its
      -- holder stopped between the two: an earlier version, or a finish
      -- that failed) is taken to write the lease's SHARD_END, which its
      -- children wait for
      if ok then
        local live, ended = false, true
        for _, proj in ipairs(self.projections) do
          if l.errors[proj.name] ~= REBUILD and l.cps[proj.name] ~= SHARD_END then live = true end
          if l.cps[proj.name] ~= SHARD_END then ended = false end
        end
        ok = live or ended
      end
      if ok then eligible[l.shard] = true end
    end
  end
  return eligible
end

-- Finished leases: deleted once the shard is no longer listed (trimmed),
-- after their children learned that they were finished.
function Runner:collect(list, by)
  if not self.tree then return end
  for _, l in ipairs(list) do
    if l.checkpoint == SHARD_END and not self.tree.by_id[l.shard] then
      local ok = true
      for _, c in ipairs(list) do
        if c.parent == l.shard and not c.parent_done then
          ok = ok and self.leases:mark_parent_done(c.shard)
        end
      end
      if ok then self.leases:delete(l) end
    end
  end
  local _ = by
end

-- Lists the leases, takes what this owner should hold, starts workers.
function Runner:balance()
  local list, d = self.leases:list()
  if not list then return nil, d end
  self.lease_list = list
  local by = self:observe(list)
  local dok, derr = self:describer_turn(d, by)
  if not dok then self.log("warn", tostring(derr)) end
  if not self.tree then return true end
  for id, st in pairs(self.state) do
    if st.finished then self.state[id] = nil end
  end
  -- a handoff asked on a lease we run: seen here, without waiting for
  -- the next heartbeat's answer
  for id, st in pairs(self.state) do
    local l = by[id]
    if l and l.handoff and l.owner == self.owner and l.counter == st.lease.counter and not st.lease.handoff then
      st.lease.handoff = l.handoff
    end
  end
  local eligible = self:eligible(list, by)
  local running = {}
  for id in pairs(self.state) do running[id] = true end
  local now = self:now()
  local plan
  if self.greedy then
    plan = { takes = {} }
    for _, l in ipairs(list) do
      if eligible[l.shard] and not running[l.shard] and (not l.owner or l.expired) then
        plan.takes[#plan.takes + 1] = l
      end
    end
  else
    -- each worker looks at the leases in its own random order, so workers
    -- that start together mostly take different shards (from a random
    -- place in the list, their runs of 8 overlapped: most takes collided)
    local order, n = {}, #list
    for i = 1, n do
      local j = math.random(i)
      order[i] = order[j]
      order[j] = list[i]
    end
    plan = shards.plan{ owner = self.owner, leases = order, eligible = eligible, running = running,
                        max_takes = self.max_takes or 8,
                        may_steal = now - (self.last_steal or -math.huge) >= self.steal_s }
  end
  -- the takes in parallel; one lost to another worker (it took the lease
  -- first) leaves this worker under its share: the next round comes soon
  -- (0.2 s, not balance_ms), while free leases are left
  local lost = 0
  self.client:run_parallel(plan.takes, function(l)
    if not self.state[l.shard] and not self.stopping then
      local sent = self:now()
      local nl, terr = self.leases:take(l)
      if nl then
        self.log("info", string.format("%s took shard %s%s", self.owner, l.shard,
                                       l.owner and (" from " .. tostring(l.owner)) or ""))
        self:start_shard(nl, sent)
        if l.owner and l.owner ~= self.owner then self:each_projection(metrics.lease_takeover) end
      else
        lost = lost + 1
        if terr.type ~= "LeaseLost" then self.log("warn", "taking a lease failed: " .. tostring(terr)) end
      end
    end
    return true
  end)
  self.balance_soon = lost > 0 or (#plan.takes > 0 and #plan.takes >= (self.max_takes or 8))
  local steal = plan.steal
  if steal and not self.stopping then
    self.last_steal = now
    local asked = self.handoff_asked
    if asked and asked.shard == steal.shard and asked.counter == steal.counter
       and now - asked.at >= self.lease_s then
      -- asked lease_ms ago and still not handed over: take it (the holder
      -- is fenced by the counter)
      self.handoff_asked = nil
      local sent = self:now()
      local nl = self.leases:take(steal, true)
      if nl then
        self.log("info", string.format("%s took shard %s from %s (no handoff)", self.owner, steal.shard, steal.owner))
        self:start_shard(nl, sent)
        self:each_projection(metrics.lease_takeover)
      end
    elseif not (asked and asked.shard == steal.shard) then
      local nl = self.leases:request_handoff(steal)
      if nl then
        self.stats.steals = self.stats.steals + 1
        self.handoff_asked = { shard = steal.shard, counter = steal.counter, at = now }
      else
        self.last_steal = nil       -- nothing asked: try again next round
      end
    end
  end
  -- finished leases: the describer (or a lone run_until_caught_up) deletes them
  if self.describer or self.greedy then self:collect(list, by) end
  self:each_projection(metrics.leases_held_count, self.state)
  return true
end

-- Renews the leases whose last heartbeat is older than lease_ms / 3
-- (a checkpoint is one too), in parallel.
function Runner:renew_all()
  local due = {}
  local now = self:now()
  for _, st in pairs(self.state) do
    if not st.finished and not st.lost and now - (st.beat_sent or -math.huge) >= self.renew_s then
      due[#due + 1] = st
    end
  end
  if #due == 0 then return end
  self.client:run_parallel(due, function(st)
    local sent = self:now()
    local l, err = self.leases:renew(st.lease)
    if l then
      beat_ok(st, l, sent)
    elseif err.type == "LeaseLost" then
      st.lost = true
      self.log("warn", tostring(err) .. "; dropping the shard")
    else
      self.log("warn", "renewing a lease failed: " .. tostring(err))
    end
    return true
  end)
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
  local last_balance = -math.huge
  local tick = math.min(self.renew_s / 2, 0.5)
  -- Heartbeats in a thread of their own (as the KCL's lease renewer):
  -- they never wait behind a balance round (the lease Query, takes, a
  -- describer's DescribeStream and lease creation), which on a busy host
  -- can take longer than the fence margin.
  local looping = true
  local renewer = self.client:spawn(function()
    local rtick = math.min(self.renew_s / 4, 0.25)
    while looping and not (self.stopping or self.killed) do
      local rok, rerr = xpcall(self.renew_all, debug.traceback, self)
      if not rok then self.log("error", "projection '" .. self.name .. "': renewing leases failed: " .. tostring(rerr)) end
      local t0 = self:now()
      while looping and self:now() - t0 < rtick and not (self.stopping or self.killed) do
        self:sleep(math.min(0.05, rtick))
      end
    end
  end)
  local ok, err = xpcall(self.loop_body, debug.traceback, self, stop, tick, last_balance)
  looping = false
  self.client:wait(renewer)
  if not ok then error(err, 0) end
end

function Runner:loop_body(stop, tick, last_balance)
  while not (self.stopping or self.killed or should_stop(stop)) do
    local now = self:now()
    local changed = self.changed
    self.changed = false
    -- the lease list, and with it DescribeStream's shard list (see
    -- describer_turn); looked at every 0.2 s until there is one
    local period = (self.tree and not self.balance_soon) and self.balance_s or 0.2
    if now - last_balance >= period or changed then
      local ok, err = self:balance()
      if not ok then self.log("warn", tostring(err)) end
      last_balance = now
    end
    if self.on_tick then self:on_tick() end
    if self.stopping or self.killed or should_stop(stop) then break end
    local t0 = self:now()
    while self:now() - t0 < tick and not (self.changed or self.stopping or self.killed or should_stop(stop)) do
      self:sleep(math.min(0.05, tick))
    end
  end
end

-- Waits for the workers: they finish their batch, checkpoint and release
-- (unless killed), within stop_timeout_s; after that the runner returns
-- and reports the shards it left (their leases expire on their own).
function Runner:shutdown()
  self.stopping = true
  self.stop_deadline = self:now() + self.stop_timeout_s
  while true do
    local busy = false
    for _, st in pairs(self.state) do
      if st.thread and not st.finished then busy = true end
    end
    if not busy then break end
    if self:now() > self.stop_deadline + 1 then
      self.abandoned = true
      self.log("warn", "stopping: shard workers did not finish in time; leaving their leases to expire")
      break
    end
    self:sleep(0.02)
  end
  if self.describer and not (self.killed or self.abandoned) and self:now() < self.stop_deadline then
    -- the next describer need not wait for this lease to run out
    self.leases:release(self.describer)
  end
  self.describer = nil
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

-- r:run_until_caught_up{timeout=, stop=} -> stats | nil, err
-- stop (a function or a {stop=} flag, as run's) ends it early with an
-- Interrupted error, the batches in flight finished and checkpointed.
-- Takes every shard it can (no fair share) and runs until each shard
-- listed at the start is caught up for every projection: closed shards
-- read to their end, open ones until GetRecords has come back empty
-- caught_up_empty times in a row. Shards held by another live worker are
-- waited for.
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
      if l then
        for _, p in ipairs(self.projections) do
          if l.errors[p.name] == REBUILD or (st and st.procs[p.name] and st.procs[p.name].rebuild) then
            failure = self:err("RebuildNeeded", "the stream no longer holds records of shard " .. id
              .. " that were never applied: run `tide replay " .. p.name .. "`", id)
            return true
          end
        end
      end
      local done = (l and l.checkpoint == SHARD_END) or (st and (st.state == "done"))
      if not done and st and not st.finished and st.caught_up then
        done = true
        for _, ps in pairs(st.procs) do if not ps.attached then done = false end end
      end
      if st then
        for pname, ps in pairs(st.procs) do
          if ps.error and (ps.failures or 0) >= max_failures then
            failure = terror.new{ kind = "handler_error", type = "CatchUpFailed", projection = pname,
                                  shard = id, message = ps.error }
            return true
          end
        end
      end
      if not done then return false end
    end
    return true
  end
  local ok, rerr = self:run(function()
    if runner.should_stop(opts.stop) then
      failure = terror.new{ kind = "interrupted", type = "Interrupted", projection = self.name,
                            message = ("stopped before caught up (%d records handled)"):format(
                              self.stats.records - records_before) }
      return true
    end
    if self:now() - t0 > timeout then
      failure = self:err("Timeout", string.format("not caught up after %g s", timeout))
      return true
    end
    return finished()
  end)
  self.greedy = false
  if not ok then return nil, rerr end
  if failure then return nil, failure end
  local st = self.stats
  return { handled = st.records - records_before, records = st.records, events = st.events,
           batches = st.batches, conflicts = st.conflicts, retries = st.retries, seconds = self:now() - t0 }
end

-- r:status([name]) -> the projection's figures and its shards, parents
-- first (a lease-table Query). name: one projection of the group (default
-- the first).
function Runner:status(name)
  name = name or self.projections[1].name
  local list, err = self.leases:list()
  if not list then return nil, err end
  local by = self:observe(list)
  local order = {}
  if self.tree then for i, id in ipairs(self.tree.order) do order[id] = i end end
  table.sort(list, function(a, b)
    local x, y = order[a.shard] or math.huge, order[b.shard] or math.huge
    if x ~= y then return x < y end
    return a.shard < b.shard
  end)
  local out, first_error, handled = {}, nil, 0
  for _, l in ipairs(list) do
    local st = self.state[l.shard]
    local cp = l.cps[name]
    local e = l.errors[name]
    local state
    if cp == SHARD_END or l.checkpoint == SHARD_END then state = "done"
    elseif e == REBUILD then state = "rebuild needed"
    elseif st and not st.finished then
      state = (st.procs[name] and not st.procs[name].attached) and "retrying" or st.state
    elseif l.owner then state = "owned"
    elseif l.parent and not by[l.parent] and not l.parent_done and l.decision ~= "skip-parent" then
      state = "waiting for parent"
    else state = "free" end
    local lag
    if st and not st.finished then
      lag = st.caught_up and 0 or (st.last_created_ms and math.max(0, clock.wall_ms() - st.last_created_ms)) or nil
    end
    out[#out + 1] = {
      shard = l.shard, parent = l.parent, owner = l.owner, checkpoint = cp or l.checkpoint,
      error = e, state = state, lag_ms = lag, mine = (l.owner == self.owner) or false,
      counter = l.counter, records = st and st.records or 0,
    }
    if e and not first_error then first_error = "shard " .. l.shard .. ": " .. e end
    handled = handled + (l.handled[name] or 0)
  end
  return { projection = name, feed = "streams", version = (self.by_name[name] or self.projection).version,
           owner = self.owner, group = self.group, handled = self.handled[name] or 0, handled_total = handled,
           error = first_error, shards = out }
end

-- For status output and the specs: what this worker reads now.
function Runner:owned()
  local out = {}
  for id, st in pairs(self.state) do
    if not st.finished then out[#out + 1] = id end
  end
  table.sort(out)
  return out
end

M.count = count
M.before = before

return M
