-- tide.repository: runs commands against aggregates, on any store.
--
-- execute = load (cached state, or latest snapshot + the events after it,
-- upcast) -> decide (the aggregate's handler) -> append with optimistic
-- concurrency (the store refuses a version that exists). On a conflict the
-- state is reloaded and the command decided again, a bounded number of
-- times.
--
-- Idempotency: every event's metadata carries the id of the command that
-- produced it. A stream's record keeps the ids of its last 128 commands
-- (carried across snapshots) with the versions they wrote, so a command
-- sent again with a known id appends nothing and returns the original
-- result. Two racing copies of one command cannot both append: the loser
-- conflicts, reloads, and then finds its id.
local core = require "tide.core"
local cjson = require "cjson.safe"
local aggregate = require "tide.aggregate"
local cache_mod = require "tide.cache"
local clock = require "tide.clock"
local stream_mod = require "tide.stream"
local terror = require "tide.error"

local M = {}

M.RECENT_COMMANDS = 128
M.MAX_EVENTS = 100 -- one TransactWriteItems

M.Error = terror.Error

-- A tide.error of the repository: kind (see execute), message, and the
-- stream, command and aggregate; its type is its cause's, when it has one.
local function new_error(kind, message, fields)
  local e = fields or {}
  e.kind, e.message = kind, message
  return terror.new(e)
end

local Repository = {}
Repository.__index = Repository

-- The host's sleep, looked up once per repository (not per command): in
-- the tide process, tide.sched's sleep (only inside its scheduler);
-- elsewhere none (nginx passes ngx.sleep).
local function default_sleep()
  local ok, sched = pcall(require, "tide.sched")
  if not ok then return function() end end
  return function(seconds)
    if sched.running() then sched.sleep(seconds) end
  end
end

-- repository.new{store=, registry=, cache_bytes=, max_attempts=,
--                snapshot_every=, sleep=, clock_ms=, log=} -> repository
function M.new(opts)
  if type(opts) ~= "table" or type(opts.store) ~= "table" or type(opts.registry) ~= "table" then
    error("repository.new: opts.store and opts.registry are required", 2)
  end
  return setmetatable({
    store = opts.store,
    registry = opts.registry,
    cache = cache_mod.new(opts.cache_bytes or 64 * 1024 * 1024),
    max_attempts = opts.max_attempts or 10,
    snapshot_every = opts.snapshot_every or 100,
    sleep = opts.sleep or default_sleep(),
    clock_ms = opts.clock_ms or clock.wall_ms,
    log = opts.log or function() end,
    stats = { commands = 0, conflicts = 0, loads = 0, snapshots = 0, duplicates = 0 },
  }, Repository)
end

local stream_of = stream_mod.of
M.stream_of = stream_of

local function check_id(id)
  if type(id) ~= "string" or id == "" then return "the aggregate id must be a non-empty string" end
  if #id > 1024 then return "the aggregate id is longer than 1024 bytes" end
end

------------------------------------------------------------------------
-- Serialization: data and snapshot state as AttributeValue JSON (lossless
-- for every tide value: 38-digit numbers, binary, sets, lists vs maps),
-- metadata as plain JSON.

local function encode_data(event)
  local data = {}
  for k, v in pairs(event) do
    if k ~= "type" then data[k] = v end
  end
  return core.encode_value(data)
end

local decode_event = stream_mod.decode_event
M.decode_payload = stream_mod.decode_payload
M.decode_event = decode_event

local function flat_event(ev)
  local e = {}
  for k, v in pairs(ev.data) do e[k] = v end
  e.type = ev.type
  return e
end

------------------------------------------------------------------------
-- Records: the state of a stream with its version and recent command ids.

-- A record remembers the ids of at least its last RECENT_COMMANDS commands
-- (up to twice that) in two generations, each a map id -> {first, last}
-- (the versions of its events) and the ids in the order they came: when
-- the newer one is full it becomes the older and the oldest is dropped
-- whole. No id is ever removed one by one (a hash table that loses a key
-- per command rehashes often: a tenth of a command's CPU).
local function command_span(rec, id)
  return rec.commands[id] or (rec.older and rec.older[id])
end

local function remember_command(rec, id, first, last)
  if not id then return end
  local c = command_span(rec, id)
  if c then
    c[1], c[2] = math.min(c[1], first), math.max(c[2], last)
    return
  end
  local order = rec.order
  if #order >= M.RECENT_COMMANDS then
    rec.older, rec.older_order = rec.commands, order
    order = {}
    rec.commands, rec.order = {}, order
  end
  order[#order + 1] = id
  rec.commands[id] = { first, last }
end

-- The last RECENT_COMMANDS remembered ids, oldest first.
local function recent_commands(rec)
  local ids, older, order = {}, rec.older_order or {}, rec.order
  for i = math.max(1, #older + #order - M.RECENT_COMMANDS + 1), #older do ids[#ids + 1] = older[i] end
  for i = math.max(1, #order - M.RECENT_COMMANDS + 1), #order do ids[#ids + 1] = order[i] end
  return ids
end

function Repository:load_record(agg, stream)
  self.stats.loads = self.stats.loads + 1
  local rec = { version = 0, commands = {}, order = {} }
  local snap, serr = self.store:get_snapshot(stream)
  if snap == nil then
    return nil, new_error("store", "loading the snapshot failed: " .. tostring(serr), { stream = stream, cause = serr })
  end
  local state
  if snap then
    local meta = cjson.decode(snap.meta or "{}") or {}
    if meta.snapshot_version == agg.snapshot_version then
      state = core.decode_value(snap.state)
      if type(state) == "table" then
        rec.version = snap.version
        for _, c in ipairs(meta.commands or {}) do remember_command(rec, c[1], c[2], c[3]) end
      else
        state = nil
        self.log("warn", "ignoring an unreadable snapshot", { stream = stream, version = snap.version })
      end
    end
  end
  if not state then
    local err
    state, err = agg:initial_state()
    if not state then return nil, new_error("invalid", err, { stream = stream, aggregate = agg.name }) end
  end
  local stored, lerr = self.store:load(stream, rec.version)
  if not stored then
    return nil, new_error("store", "loading events failed: " .. tostring(lerr), { stream = stream, cause = lerr })
  end
  for _, s in ipairs(stored) do
    if s.version ~= rec.version + 1 then
      return nil, new_error("store", ("stream has a gap: version %d follows %d"):format(s.version, rec.version),
                            { stream = stream })
    end
    local ev, derr = decode_event(agg, s)
    if not ev then
      return nil, new_error("invalid", ("event %d: %s"):format(s.version, derr), { stream = stream })
    end
    local aerr
    state, aerr = agg:apply(state, flat_event(ev))
    if not state then
      return nil, new_error("handler_error", ("replaying event %d: %s"):format(s.version, aerr), { stream = stream })
    end
    rec.version = s.version
    remember_command(rec, ev.meta.command_id, s.version, s.version)
  end
  rec.state = state
  return rec
end

-- The record of a stream: from the cache, or loaded.
function Repository:record(agg, stream)
  local rec = self.cache:get(stream)
  if rec and rec.module_version == agg.version then return rec end
  local err
  rec, err = self:load_record(agg, stream)
  if not rec then return nil, err end
  rec.module_version = agg.version
  self.cache:put(stream, rec, cache_mod.estimate(rec.state) + 64 * (#rec.order + #(rec.older_order or {})))
  return rec
end

------------------------------------------------------------------------
-- Commands

local function result_of(stream, version, events, duplicate)
  return { ok = true, stream = stream, version = version, events = core.list(events), duplicate = duplicate }
end

function Repository:original_result(agg, stream, span)
  local stored, err = self.store:load(stream, span[1] - 1)
  if not stored then
    return nil, new_error("store", "loading the original events failed: " .. tostring(err), { stream = stream })
  end
  local events = {}
  for _, s in ipairs(stored) do
    if s.version > span[2] then break end
    events[#events + 1] = assert(decode_event(agg, s))
  end
  return result_of(stream, span[2], events, true)
end

local function item_bytes(stream, version, ev)
  -- the DynamoDB item: attribute names + values (version as a number)
  return #"stream" + #stream + #"version" + #tostring(version) + #"type" + #ev.type
    + #"data" + #ev.data + #"meta" + #ev.meta
end

function Repository:maybe_snapshot(agg, stream, old_version, rec)
  local every = agg.snapshot_every or self.snapshot_every
  if not every or every <= 0 then return end
  if math.floor(old_version / every) == math.floor(rec.version / every) then return end
  local state_text, err = core.encode_value(rec.state)
  if not state_text then
    self.log("warn", "snapshot skipped: the state cannot be encoded", { stream = stream, error = err })
    return
  end
  local cmds = {}
  for _, id in ipairs(recent_commands(rec)) do
    local c = command_span(rec, id)
    cmds[#cmds + 1] = { id, c[1], c[2] }
  end
  local meta = core.json_encode{ snapshot_version = agg.snapshot_version, handler = agg.version,
                                 commands = core.list(cmds) }
  local ok, perr = self.store:put_snapshot(stream, rec.version, state_text, meta)
  if ok then
    self.stats.snapshots = self.stats.snapshots + 1
  else
    self.log("warn", "snapshot skipped: " .. tostring(perr), { stream = stream, version = rec.version })
  end
end

-- repository:execute(aggregate_name, id, command [, opts]) -> result | nil, err
--   command: {type=, id= (optional command id), ...fields}
--   opts: {causation_id=, correlation_id=}
--   result: {ok=true, stream=, version=, events={{version=, type=, data=, meta=}...}, duplicate=}
--   err.kind: "invalid" (bad command or module), "rejected" (the domain said
--   no), "conflict" (after max_attempts), "handler_error" (a handler raised),
--   "too_many_events", "event_too_large", "store" (store or network failure)
function Repository:execute(name, id, command, opts)
  local agg, aerr = self.registry:get(name)
  if not agg then return nil, new_error("invalid", aerr, { aggregate = name }) end
  local iderr = check_id(id)
  if iderr then return nil, new_error("invalid", iderr, { aggregate = name }) end
  local stream = stream_of(name, id)
  if type(command) ~= "table" then
    return nil, new_error("invalid", "the command must be a JSON object with a 'type'", { stream = stream })
  end
  local ok, verr = agg:check_command(command)
  if not ok then
    return nil, new_error("invalid", verr, { stream = stream, command = command.type })
  end
  if command.id ~= nil and (type(command.id) ~= "string" or command.id == "") then
    return nil, new_error("invalid", "the command id must be a non-empty string", { stream = stream, command = command.type })
  end
  opts = opts or {}
  self.stats.commands = self.stats.commands + 1
  local command_id = command.id or core.random_hex(16)
  local cmd = {}
  for k, v in pairs(command) do
    if k ~= "id" then cmd[k] = v end
  end
  local ctype = cmd.type
  local fields = { stream = stream, command = ctype, aggregate = name, command_id = command_id }

  for attempt = 1, self.max_attempts do
    local rec, lerr = self:record(agg, stream)
    if not rec then
      lerr.command = ctype
      return nil, lerr
    end
    local span = command_span(rec, command_id)
    if span then
      self.stats.duplicates = self.stats.duplicates + 1
      return self:original_result(agg, stream, span)
    end
    local now = self.clock_ms()
    local ctx = { aggregate = name, id = id, stream = stream, version = rec.version, now = now,
                  command_id = command_id, correlation_id = opts.correlation_id or command_id,
                  causation_id = opts.causation_id }
    local state = aggregate.deep_copy(rec.state)
    local events, kind, msg = agg:decide(state, cmd, ctx)
    if not events then
      return nil, new_error(kind, msg, fields)
    end
    if #events == 0 then
      return result_of(stream, rec.version, {}, false)
    end
    if #events > M.MAX_EVENTS then
      return nil, new_error("too_many_events",
        ("%s.%s returned %d events; one command may append at most %d (one DynamoDB transaction)")
          :format(name, ctype, #events, M.MAX_EVENTS), fields)
    end
    local stored, out = {}, {}
    for i, e in ipairs(events) do
      local perr
      state, perr = agg:apply(state, e)
      if not state then return nil, new_error("handler_error", perr, fields) end
      local data_text, derr = encode_data(e)
      if not data_text then
        return nil, new_error("invalid", ("event %d (%s) cannot be stored: %s"):format(i, e.type, derr), fields)
      end
      local version = rec.version + i
      local meta = {
        command_id = command_id, command = ctype, correlation_id = ctx.correlation_id,
        causation_id = ctx.causation_id, timestamp = now, schema = agg:schema_version(e.type),
        handler = agg.version, index = i, count = #events,
      }
      local s = { type = e.type, data = data_text, meta = core.json_encode(meta) }
      if item_bytes(stream, version, s) > core.limits.item_bytes then
        return nil, new_error("event_too_large",
          ("event %d (%s) would be %d bytes stored, over the %d-byte item limit"):format(
            i, e.type, item_bytes(stream, version, s), core.limits.item_bytes), fields)
      end
      stored[i] = s
      local data = {}
      for k, v in pairs(e) do if k ~= "type" then data[k] = v end end
      out[i] = { version = version, type = e.type, data = data, meta = meta, meta_text = s.meta }
    end
    local last, err = self.store:append(stream, rec.version, stored)
    if last then
      local old = rec.version
      -- The new record takes over the recent command ids (copying 128 of
      -- them per command was a tenth of a command's CPU); a command still
      -- deciding on the old record then sees ids it could only skip.
      local new = { version = last, state = state, commands = rec.commands, order = rec.order,
                    older = rec.older, older_order = rec.older_order, module_version = agg.version }
      remember_command(new, command_id, old + 1, last)
      self.cache:put(stream, new, cache_mod.estimate(state) + 64 * (#new.order + #(new.older_order or {})))
      self:maybe_snapshot(agg, stream, old, new)
      return result_of(stream, last, out, false)
    end
    if type(err) ~= "table" or err.type ~= "Conflict" then
      return nil, new_error("store", tostring(err), { stream = stream, command = ctype, aggregate = name, cause = err,
                                                      command_id = command_id })
    end
    -- Someone else appended first: our state is stale. Reload and decide again.
    self.stats.conflicts = self.stats.conflicts + 1
    self.cache:drop(stream)
    if attempt < self.max_attempts then
      self.sleep(math.random() * math.min(0.05, 0.001 * 2 ^ attempt))
    end
  end
  return nil, new_error("conflict", ("gave up after %d attempts: the stream kept changing"):format(self.max_attempts),
                        fields)
end

-- repository:state(aggregate_name, id) -> {state=, version=, stream=} | nil, err
function Repository:state(name, id)
  local agg, aerr = self.registry:get(name)
  if not agg then return nil, new_error("invalid", aerr, { aggregate = name }) end
  local iderr = check_id(id)
  if iderr then return nil, new_error("invalid", iderr, { aggregate = name }) end
  -- A read must see other writers' events: load afresh (from the latest
  -- snapshot), and leave the result in the cache for the next command.
  local stream = stream_of(name, id)
  local rec, err = self:load_record(agg, stream)
  if not rec then return nil, err end
  rec.module_version = agg.version
  self.cache:put(stream, rec, cache_mod.estimate(rec.state) + 64 * (#rec.order + #(rec.older_order or {})))
  return { state = rec.state, version = rec.version, stream = stream }
end

-- repository:events(aggregate_name, id [, after_version]) -> list of
-- {version=, type=, data=, meta=} (upcast) | nil, err
function Repository:events(name, id, after)
  local agg, aerr = self.registry:get(name)
  if not agg then return nil, new_error("invalid", aerr, { aggregate = name }) end
  local iderr = check_id(id)
  if iderr then return nil, new_error("invalid", iderr, { aggregate = name }) end
  local stream = stream_of(name, id)
  local stored, err = self.store:load(stream, after or 0)
  if not stored then return nil, new_error("store", tostring(err), { stream = stream }) end
  local out = {}
  for _, s in ipairs(stored) do
    local ev, derr = decode_event(agg, s)
    if not ev then return nil, new_error("invalid", ("event %d: %s"):format(s.version, derr), { stream = stream }) end
    out[#out + 1] = ev
  end
  return out
end

return M
