-- tide.repository: runs commands against aggregates, on any store.
--
-- execute = load (cached state, or latest snapshot + the events after it,
-- upcast) -> decide (the aggregate's handler) -> append with optimistic
-- concurrency (the store refuses a version that exists). On a conflict
-- only the events after the decided-on version are applied to the cached
-- state (a catch-up: from the refused write's answer when it shows them,
-- see catch_up, else read), and the command is decided again, a bounded
-- number of times (commands.max_attempts) with a jittered pause growing
-- with each attempt. Commands waiting on one stream share one write (see
-- "Lanes").
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

local mono = clock.mono
local byte = string.byte
-- Tables that get their keys one by one are made with room for a few
-- (an empty table rehashes at 1, 2 and 4 keys).
local new_tab = require "table.new"
local strbuf = require "string.buffer"
local floor = math.floor

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

local function sched_parking()
  local ok, sched = pcall(require, "tide.sched")
  if not ok then return nil end
  local running, current, suspend, wakeup = sched.running, sched.current, sched.suspend, sched.wakeup
  return {
    -- -> a waiter for the current coroutine (its thread), or nil when it cannot park
    new = function() return running() and current() or nil end,
    wait = function(_) suspend(); return true end,
    wake = wakeup,
  }
end
M.sched_parking = sched_parking

-- repository.new{store=, registry=, cache_bytes=, max_attempts=, batching=,
--                max_backoff=, snapshot_every=, sleep=,
--                parking=, clock_ms=, log=} -> repository
--   parking: {new=function() -> waiter | nil, wait=function(waiter) -> true
--   | nil, err (it may time out), wake=function(waiter)} (see "Lanes" below).
--   host_lanes: {enter=function(stream) -> true | nil, err (waits for this
--   process's turn on the stream among the host's processes),
--   leave=function(stream, version_written_or_nil, written_or_nil),
--   version=function(stream) -> the last version any of them wrote, or nil,
--   events=function(stream, after, upto) -> the stored events after..upto
--   (what another process left), or nil}: optional. written: {first=, events=
--   the stored events of this turn's last write} (enough for the next
--   process's catch-up without a read). Forwarding (optional, all of these
--   or none): enter(stream, true) -> "held" when another process holds the
--   turn; forward(stream, text) -> the holder's reply text | nil, why
--   ("withdrawn": nobody took it, the turn is free again; "refused": the
--   holder runs another module version; "lost": the holder died after
--   taking it; "timeout"; "error"), waiting for it; take(stream) -> ticket,
--   text of the next forwarded message | nil; claim(ticket) -> true (ours
--   to answer) | false (its sender withdrew it); refuse(ticket);
--   reply(ticket, text); pending(stream) -> true when messages wait for
--   stream. See "Forwarding" below.
function M.new(opts)
  if type(opts) ~= "table" or type(opts.store) ~= "table" or type(opts.registry) ~= "table" then
    error("repository.new: opts.store and opts.registry are required", 2)
  end
  return setmetatable({
    store = opts.store,
    registry = opts.registry,
    cache = cache_mod.new(opts.cache_bytes or 64 * 1024 * 1024),
    max_attempts = opts.max_attempts or 20,
    max_backoff = opts.max_backoff or 1, -- seconds, the longest pause between attempts
    batching = opts.batching ~= false,
    parking = opts.parking or sched_parking(),
    host_lanes = opts.host_lanes,
    lanes = {},
    spare_lanes = {}, -- closed lanes, for the next streams (see execute)
    gathering = false, -- the snapshot reads gathering for one request (snapshot_of)
    written = {}, -- stream -> {first=, events=} of the last write in a host turn (host_lanes)
    contention_by_stream = {}, contention_count = 0,
    snapshot_every = opts.snapshot_every or 100,
    sleep = opts.sleep or default_sleep(),
    clock_ms = opts.clock_ms or clock.wall_ms,
    log = opts.log or function() end,
    -- catch_up_reads: catch-ups that read the stream; guessed_catch_ups:
    -- those that took a refused write's events as all they missed
    stats = { commands = 0, conflicts = 0, catch_ups = 0, catch_up_reads = 0, guessed_catch_ups = 0, writes = 0,
              loads = 0, snapshots = 0, duplicates = 0, snapshot_reads_shared = 0 },
  }, Repository)
end

local stream_of = stream_mod.of
M.stream_of = stream_of

-- Ids and names become keys and are printed: tide.input checks them
-- (UTF-8, no control characters, the documented limits).
local input = require "tide.input"
local function check_id(id, name)
  return input.name_error(name) or input.id_error(id)
end

------------------------------------------------------------------------
-- Serialization: data and snapshot state as AttributeValue JSON (lossless
-- for every tide value: 38-digit numbers, binary, sets, lists vs maps),
-- metadata as plain JSON.

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
-- (up to twice that) in two generations, each the ids in the order they
-- came (order), a map id -> its place k in order (commands), and each
-- command's span in spans[3k-2..3k]: the first and last versions of its
-- events and its fingerprint (of the command: idempotency_mismatch; false
-- for events written before tide recorded it), three slots of one list
-- rather than a table per command. When the newer generation is full it
-- becomes the older and the oldest is dropped whole. No id is ever
-- removed one by one (a hash table that loses a key per command rehashes
-- often: a tenth of a command's CPU).

-- -> the first and last versions of the command id's events and its
-- fingerprint (or nil), | nil when the record does not know the id
local function command_span(rec, id)
  local k, spans = rec.commands[id], rec.spans
  if not k then
    k, spans = rec.older and rec.older[id], rec.older_spans
    if not k then return nil end
  end
  k = 3 * k
  return spans[k - 2], spans[k - 1], spans[k] or nil
end

-- Every record has the same keys, set in the same order (older,
-- older_order and older_spans false until the first generation is full):
-- a record that gained keys later had another shape, and every compiled
-- trace reading records took a side exit for it (new side traces, long
-- after warm-up).
-- (A constructor: its keys come with the table, none is added one by one.)
local function new_record(version, state, commands, order, spans, older, older_order, older_spans, module_version)
  return { version = version, state = state or false, commands = commands, order = order, spans = spans,
           older = older or false, older_order = older_order or false, older_spans = older_spans or false,
           module_version = module_version or false }
end

-- The record's copy of rec's generations (a new record takes them over).
local function next_record(rec, version, state, module_version)
  return new_record(version, state, rec.commands, rec.order, rec.spans, rec.older, rec.older_order, rec.older_spans,
                    module_version)
end

local function remember_command(rec, id, first, last, fp)
  if not id then return end
  local k, spans = rec.commands[id], rec.spans
  if not k then
    k, spans = rec.older and rec.older[id], rec.older_spans
  end
  if k then
    k = 3 * k
    spans[k - 2], spans[k - 1] = math.min(spans[k - 2], first), math.max(spans[k - 1], last)
    spans[k] = spans[k] or fp or false
    return
  end
  local order = rec.order
  if #order >= M.RECENT_COMMANDS then
    rec.older, rec.older_order, rec.older_spans = rec.commands, order, rec.spans
    order = {}
    rec.commands, rec.order, rec.spans = {}, order, {}
  end
  k = #order + 1
  order[k] = id
  rec.commands[id] = k
  spans = rec.spans
  spans[3 * k - 2], spans[3 * k - 1], spans[3 * k] = first, last, fp or false
end

-- The last RECENT_COMMANDS remembered ids, oldest first.
local function recent_commands(rec)
  local ids, older, order = {}, rec.older_order or {}, rec.order
  for i = math.max(1, #older + #order - M.RECENT_COMMANDS + 1), #older do ids[#ids + 1] = older[i] end
  for i = math.max(1, #order - M.RECENT_COMMANDS + 1), #order do ids[#ids + 1] = order[i] end
  return ids
end

-- Snapshot reads that start in the same turn of the host's loop (a
-- process beginning on many streams at once: `tide batch`'s first lines, a
-- burst of requests) share one request when the store reads several at
-- once (store:get_snapshots, DynamoDB's BatchGetItem): the first load
-- yields once (the host's sleep(0)), the loads that start meanwhile park
-- on its read, and one read answers them all; alone, it reads as before.
local SNAPSHOTS_TOGETHER = 100

function Repository:snapshot_of(stream)
  local store, parking = self.store, self.parking
  local gather = self.gathering
  if not store.get_snapshots or not parking or (gather and #gather >= SNAPSHOTS_TOGETHER) then
    return store:get_snapshot(stream)
  end
  if gather then
    local waiter = parking.new()
    if not waiter then return store:get_snapshot(stream) end
    local slot = { stream = stream, waiter = waiter }
    gather[#gather + 1] = slot
    while not slot.done do
      if not parking.wait(waiter) then break end
    end
    if slot.done then return slot.snap, slot.err end
    slot.abandoned = true -- the wait failed (nginx's is bounded): read alone
    return store:get_snapshot(stream)
  end
  gather = { { stream = stream } }
  self.gathering = gather
  self.sleep(0)
  self.gathering = nil
  if #gather == 1 then return store:get_snapshot(stream) end
  local streams = new_tab(#gather, 0)
  for i = 1, #gather do streams[i] = gather[i].stream end
  local snaps, err = store:get_snapshots(streams)
  for i = 2, #gather do
    local slot = gather[i]
    if not slot.abandoned then
      slot.done = true
      if snaps then slot.snap = snaps[slot.stream] else slot.snap, slot.err = nil, err end
      parking.wake(slot.waiter)
    end
  end
  if not snaps then return nil, err end
  self.stats.snapshot_reads_shared = self.stats.snapshot_reads_shared + #gather - 1
  return snaps[stream]
end

function Repository:load_record(agg, stream)
  self.stats.loads = self.stats.loads + 1
  local rec = new_record(0, false, {}, {}, {})
  local snap, serr = self:snapshot_of(stream)
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
        for _, c in ipairs(meta.commands or {}) do remember_command(rec, c[1], c[2], c[3], c[4]) end
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
      return nil, new_error("store", ("stored event %d cannot be read: %s"):format(s.version, derr), { stream = stream })
    end
    local aerr
    state, aerr = agg:apply(state, flat_event(ev))
    if not state then
      return nil, new_error("handler_error", ("replaying event %d: %s"):format(s.version, aerr), { stream = stream })
    end
    rec.version = s.version
    remember_command(rec, ev.meta.command_id, s.version, s.version, ev.meta.command_hash)
  end
  rec.state = state
  return rec
end

-- Puts a stream's record in the cache, sized by its state and its ids
-- (no table made for a missing older generation: this runs per write).
local function put_record(self, stream, rec)
  local older = rec.older_order
  self.cache:put(stream, rec, cache_mod.estimate(rec.state) + 64 * (#rec.order + (older and #older or 0)))
end

-- The record of a stream: from the cache, or loaded.
function Repository:record(agg, stream)
  local rec = self.cache:get(stream)
  if rec and rec.module_version == agg.version then return rec end
  local err
  rec, err = self:load_record(agg, stream)
  if not rec then return nil, err end
  rec.module_version = agg.version
  put_record(self, stream, rec)
  return rec
end

------------------------------------------------------------------------
-- Commands

-- core.list's metatable, set here without a call into C per result
local LIST = getmetatable(core.list())

local function result_of(stream, version, events, duplicate)
  return { ok = true, stream = stream, version = version, events = setmetatable(events, LIST), duplicate = duplicate }
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

-- The DynamoDB item: attribute names + values (version as a number;
-- "last" + a number on an append's last event). The version's length is
-- counted, not written out (a string per event), below 1e14, where
-- tostring gives its digits.
local ITEM_NAMES = #"stream" + #"version" + #"type" + #"data" + #"meta" + #"last" + 3
local function item_bytes(stream, version, etype, data_text, meta_text)
  local digits
  if version < 1e14 then
    digits = 1
    local p = 10
    while version >= p do digits, p = digits + 1, p * 10 end
  else
    digits = #tostring(version)
  end
  return ITEM_NAMES + #stream + digits + #etype + #data_text + #meta_text
end

-- A snapshot's meta: {"commands":[[id,first,last(,fingerprint)]...],
-- "handler":..,"snapshot_version":..} (json_encode's text: keys sorted),
-- the last RECENT_COMMANDS ids oldest first. The commands' part is written
-- straight into a buffer (a table per command and a list made and walked
-- per snapshot were most of a hot stream's snapshot, one per batch), when
-- every id and fingerprint is plain text (no byte json_encode escapes or
-- replaces) and every version an integer below 1e14 (written as
-- json_encode writes it); otherwise by json_encode, as before.
local snap_buf, text_buf = strbuf.new(), strbuf.new()
local text_check = require("tide.ffi").lib.tide_ffi_text_check
local check_at = require("ffi").new("double[1]")

-- whether json_encode writes s as it is: valid UTF-8, no control
-- character, no '"' nor a backslash (one pass in C, two plain finds)
local function is_plain(s)
  return text_check(s, #s, check_at) == 0 and not s:find('"', 1, true) and not s:find("\\", 1, true)
end

local function is_version(v)
  return type(v) == "number" and v >= 0 and v < 1e14 and v == floor(v)
end

-- Writes the commands of ids into buf (their text into texts, for one
-- check at the end) -> true | false (not plain: json_encode's turn)
local function put_commands(buf, texts, rec, ids)
  for i = 1, #ids do
    local id = ids[i]
    local first, last, fp = command_span(rec, id)
    if type(id) ~= "string" or not is_version(first) or not is_version(last)
        or (fp ~= nil and type(fp) ~= "string") then
      return false
    end
    buf:put(i == 1 and '["' or ',["', id, '",', first, ',', last)
    if fp then
      buf:put(',"', fp, '"]')
      texts:put(id, fp)
    else
      buf:put("]")
      texts:put(id)
    end
  end
  return true
end

local function snapshot_meta(agg, rec)
  local ids = recent_commands(rec)
  local buf, texts = snap_buf:reset(), text_buf:reset()
  buf:put('{"commands":[')
  if put_commands(buf, texts, rec, ids) and is_plain(texts:tostring()) then
    local tail = core.json_encode{ snapshot_version = agg.snapshot_version, handler = agg.version }
    if tail == "{}" then buf:put("]}") else buf:put("],", tail:sub(2)) end -- (no version fields: {"commands":[..]})
    return buf:tostring()
  end
  local cmds = {}
  for _, id in ipairs(ids) do
    local first, last, fp = command_span(rec, id)
    cmds[#cmds + 1] = { id, first, last, fp }
  end
  return core.json_encode{ snapshot_version = agg.snapshot_version, handler = agg.version,
                           commands = core.list(cmds) }
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
  local meta = snapshot_meta(agg, rec)
  local ok, perr = self.store:put_snapshot(stream, rec.version, state_text, meta)
  if ok then
    self.stats.snapshots = self.stats.snapshots + 1
  else
    self.log("warn", "snapshot skipped: " .. tostring(perr), { stream = stream, version = rec.version })
  end
end

------------------------------------------------------------------------
-- Lanes: the commands waiting on one stream share a write.
--
-- Each stream with a command in progress in this process has a lane: a
-- queue of the commands that came while its leader was deciding or
-- writing. When the leader's write returns, it wakes the commands it
-- carried with their results and hands the lane to the first one still
-- waiting, which takes everything queued by then (never waiting for more
-- to come) and decides it in one batch: each command against the state as
-- the one before left it, all their events appended in one write (a
-- PutItem for one event, a TransactWriteItems for 2 to 100; one SQLite
-- transaction). So a hot stream gets past one write per round trip, and
-- commands of one stream are decided in the order they arrived.
--
-- Parking needs the host: tide.sched in the tide process, ngx.semaphore in
-- nginx (the site passes it). Without one (plain LuaJIT, one command at a
-- time) every command is its own batch.


-- The events and bytes one write may carry (a TransactWriteItems: 100
-- actions, 4 MB; one of them may be the check of the expected version).
local BATCH_EVENTS = M.MAX_EVENTS - 1
local BATCH_BYTES = 4 * 1000 * 1000

local NO_OPTS = {}

-- Checks a command and makes it a job for a lane; -> job | nil, err
function Repository:prepare(name, id, command, opts)
  local iderr = check_id(id, name)
  if iderr then return nil, new_error("invalid", iderr) end
  local agg, aerr = self.registry:get(name)
  if not agg then return nil, new_error("invalid", aerr, { aggregate = name }) end
  local stream = stream_of(name, id)
  if type(command) ~= "table" then
    return nil, new_error("invalid", "the command must be a JSON object with a 'type'", { stream = stream })
  end
  local ok, verr = agg:check_command(command)
  if not ok then
    return nil, new_error("invalid", verr, { stream = stream, command = command.type })
  end
  if command.id ~= nil then
    local cerr = input.command_id_error(command.id)
    if cerr then return nil, new_error("invalid", cerr, { stream = stream, command = command.type }) end
  end
  opts = opts or NO_OPTS
  local command_id, cmd, fp = command.id, command, nil
  if command_id ~= nil then
    -- the handler sees the command without its id
    cmd = new_tab(0, 4)
    for k, v in pairs(command) do
      if k ~= "id" then cmd[k] = v end
    end
    -- the command's fingerprint (type and fields, keys sorted): the same
    -- command id sent with another command is an idempotency_mismatch
    fp = core.sha256_hex(core.json_encode(cmd)):sub(1, 16)
  else
    command_id = core.random_hex(16)
  end
  return { agg = agg, name = name, id = id, stream = stream, cmd = cmd, command_id = command_id, fp = fp,
           correlation_id = opts.correlation_id or command_id, causation_id = opts.causation_id }
end

-- The context an error of a job names (a new table per error: it becomes
-- the error).
local function fields_of(job)
  return { stream = job.stream, command = job.cmd.type, aggregate = job.name, command_id = job.command_id }
end

-- The list aggregate:decide returns a handler's single event in, lent
-- anew (emptied) for each job: read before the next job is decided.
local one_event = {}

-- Decides one job against state (a copy it may keep) at version, putting
-- the events to store in events after its first nevents (the batch's
-- list: no list per job); -> the new state, how many events and their
-- bytes, and the events' results | nil (job.err set; events may hold some
-- of them past nevents).
function Repository:decide(job, state, version, now, events, nevents)
  local agg, cmd = job.agg, job.cmd
  local ctype = cmd.type
  local ctx = { aggregate = job.name, id = job.id, stream = job.stream, version = version, now = now,
                command_id = job.command_id, correlation_id = job.correlation_id,
                causation_id = job.causation_id }
  one_event[1] = nil
  local decided, kind, msg = agg:decide(state, cmd, ctx, one_event)
  if not decided then
    job.err = new_error(kind, msg, fields_of(job))
    return nil
  end
  local n = #decided
  if n > M.MAX_EVENTS then
    job.err = new_error("too_many_events",
      ("%s.%s returned %d events; one command may append at most %d (one DynamoDB transaction)")
        :format(job.name, ctype, n, M.MAX_EVENTS), fields_of(job))
    return nil
  end
  local out, bytes = new_tab(n, 0), 0
  for i, e in ipairs(decided) do
    local perr
    state, perr = agg:apply(state, e)
    if not state then
      job.err = new_error("handler_error", perr, fields_of(job))
      return nil
    end
    local data = new_tab(0, 4)
    for k, val in pairs(e) do if k ~= "type" then data[k] = val end end
    local format = self.store.data_format
    local data_text, derr = stream_mod.encode_data(data, format)
    if not data_text then
      job.err = new_error("invalid", ("event %d (%s) cannot be stored: %s"):format(i, e.type, derr), fields_of(job))
      return nil
    end
    local v = version + i
    local meta = {
      command_id = job.command_id, command = ctype, correlation_id = ctx.correlation_id,
      causation_id = ctx.causation_id, timestamp = now, schema = agg:schema_version(e.type),
      handler = agg.version, index = i, count = n, command_hash = job.fp,
    }
    local meta_text = core.json_encode(meta)
    local size = item_bytes(job.stream, v, e.type, data_text, meta_text)
    if size > core.limits.item_bytes then
      job.err = new_error("event_too_large",
        ("event %d (%s) would be %d bytes stored, over the %d-byte item limit"):format(
          i, e.type, size, core.limits.item_bytes), fields_of(job))
      return nil
    end
    local s = { type = e.type, data = data_text, meta = meta_text, format = format, bytes = size }
    events[nevents + i] = s
    bytes = bytes + size
    -- plain JSON data (the embedded store's) is the result's text as well
    out[i] = { version = v, type = e.type, data = data, meta = meta, meta_text = s.meta,
               data_text = format == "json" and byte(data_text) == 123 and data_text or nil }
  end
  return state, n, bytes, out
end

-- A conflict: the stream moved past rec. Applies only the events after
-- rec.version to a copy of its state; -> the caught-up record, and true
-- when it took the refused write's events as all it missed without
-- knowing it (a guess) | nil (the events cannot be applied here: the
-- caller reloads).
--
-- conflict: the store's Conflict error. Its err.found, the events the
-- refused write met at its versions, spares the read when they connect
-- to rec.version (the first is rec.version + 1) and
--  - err.found_all says the stream ends there (a later version of the
--    refused write was free), or
--  - guess is set and the last of them ends the append that wrote it
--    (the store marks an append's last event, `last`): the stream often
--    ends there too, and when it does not, the next write is refused and
--    shows what followed, in one request, as the read would have. Either
--    way every event applied is the one stored at its version, and the
--    next write is conditioned on the version after it: a wrong guess
--    costs a refused write, never a wrong decision.
-- Otherwise it reads (a consistent Query) past the found events, or past
-- rec.version when they do not connect.
function Repository:catch_up(agg, stream, rec, conflict, guess)
  local stored, guessed
  local found = type(conflict) == "table" and conflict.found
  if found and found[1] and found[1].version == rec.version + 1 then
    stored = found
    if conflict.found_all then
      -- the whole of it
    elseif guess and found[#found].last then
      guessed = true
    else
      self.stats.catch_up_reads = self.stats.catch_up_reads + 1
      local more, err = self.store:load(stream, found[#found].version)
      if not more then return nil, err end
      stored = {}
      for i = 1, #found do stored[i] = found[i] end
      for i = 1, #more do stored[#stored + 1] = more[i] end
    end
  else
    self.stats.catch_up_reads = self.stats.catch_up_reads + 1
    local err
    stored, err = self.store:load(stream, rec.version)
    if not stored then return nil, err end
  end
  local state = aggregate.deep_copy(rec.state)
  local new = next_record(rec, rec.version, false, agg.version)
  for _, s in ipairs(stored) do
    if s.version ~= new.version + 1 then return nil end
    local ev = decode_event(agg, s)
    if not ev then return nil end
    state = agg:apply(state, flat_event(ev))
    if not state then return nil end
    new.version = s.version
    remember_command(new, ev.meta.command_id, s.version, s.version, ev.meta.command_hash)
  end
  new.state = state
  self.stats.catch_ups = self.stats.catch_ups + 1
  if guessed then self.stats.guessed_catch_ups = self.stats.guessed_catch_ups + 1 end
  return new, guessed or false
end

-- Guessed catch-ups in a row a batch may make: when the write after a
-- guess is refused too, the guess was wrong (the stream had moved further:
-- a cached record stale by several appends, or writes landing faster
-- than ours), and the next catch-up reads all of it at once. So a stale
-- record costs at most one refused write more than a read would have,
-- and a write lost to one other append costs only its refusal.
local MAX_GUESSES = 1

-- Contention: the streams this process lost a write on lately, with how
-- long that write took (about one round trip to the store, rtt).
--
-- A writer that just won a contended stream needs no read before its next
-- write, while the losers must first catch up (one round trip), so it
-- would win again and again: a fresh batch on a stream this process lost
-- a write on lately first waits a random pause below FRESH_TURN round
-- trips, letting the other writers' retries in.
local FRESH_TURN = 2
local CONTENTION_S = 5
local CONTENTION_STREAMS = 10000

function Repository:contended(stream, rtt)
  local c = self.contention_by_stream
  if not c[stream] then
    self.contention_count = self.contention_count + 1
    if self.contention_count > CONTENTION_STREAMS then
      c = {}
      self.contention_by_stream, self.contention_count = c, 1
    end
  end
  c[stream] = { at = mono(), rtt = math.max(rtt, 0.0005) }
end

-- The pause after the failed write number `attempt` of a batch on
-- stream: random (full jitter) below min(max_backoff, base * 2^(attempt-1)),
-- base being how long that write took (at least MIN_BACKOFF_BASE), so the
-- pauses scale with the store's latency. A batch that keeps losing backs
-- off for longer and longer (up to max_backoff, 1 s by default: 20
-- attempts span a few seconds), so a burst of writers on one stream is
-- over before its last writer runs out of attempts; meanwhile the lane
-- gathers the stream's new commands into the retry.
local MIN_BACKOFF_BASE = 0.005
local COLLISIONS_PER_ATTEMPT = 3
function Repository:retry_pause(stream, attempt)
  local hot = self.contention_by_stream[stream]
  local base = math.max(hot and hot.rtt or 0, MIN_BACKOFF_BASE)
  return math.random() * math.min(self.max_backoff, base * 2 ^ (attempt - 1))
end

-- -> {at=, rtt=} when this process lost a write on stream in the last
-- CONTENTION_S seconds, else nil.
function Repository:contention(stream)
  local hot = self.contention_by_stream[stream]
  if not hot then return nil end
  if mono() - hot.at > CONTENTION_S then
    self.contention_by_stream[stream] = nil
    self.contention_count = self.contention_count - 1
    return nil
  end
  return hot
end


-- Clears what an earlier attempt left on a job, only the fields it has:
-- storing nil under a key a table lacks adds the key, and a job's keys
-- (prepare's 9, then waiter, taken, out, first, res, done) would outgrow
-- the 16 its table has room for (a rehash per command).
local function clear_outcome(job)
  if job.res ~= nil then job.res = nil end
  if job.err ~= nil then job.err = nil end
  if job.same_as ~= nil then job.same_as = nil end
  if job.span ~= nil then job.span = nil end
  if job.out ~= nil then job.out = nil end
  if job.first ~= nil then job.first = nil end
  if job.at ~= nil then job.at = nil end
end

-- Runs jobs (all on one stream, of one aggregate) as one batch: sets
-- job.res or job.err on each it takes. Returns how many it took: jobs
-- past the limits of one write are left for the next batch. With
-- take_queued and lane (batching), a retry after a conflict also takes
-- what was queued meanwhile: one write instead of two (take_queued(lane,
-- jobs, repository)).
function Repository:run_batch(jobs, take_queued, lane)
  local first = jobs[1]
  local agg, stream = first.agg, first.stream
  local njobs = #jobs
  local rec, lerr
  local hot = self:contention(stream)
  if hot then
    -- This process lost a write on the stream lately: others are writing
    -- it too. A fresh batch waits its turn behind their retries (see
    -- Repository:retry_pause).
    self.sleep(math.random() * math.min(self.max_backoff, FRESH_TURN * hot.rtt))
    -- what queued meanwhile joins this batch (one write instead of two)
    if take_queued then
      take_queued(lane, jobs, self)
      njobs = #jobs
    end
  end
  -- lost: writes that lost to another writer's (the catch-up found new
  -- events): at most max_attempts. A write that met another writer's
  -- still in flight (DynamoDB's TransactionConflict: nothing new to catch
  -- up with yet) is not lost, only retried, up to COLLISIONS_PER_ATTEMPT
  -- times max_attempts writes in all.
  local lost, writes = 0, 0
  -- guessed catch-ups in a row (see MAX_GUESSES)
  local guesses = 0
  for attempt = 1, math.huge do
    if attempt > 1 and take_queued then
      take_queued(lane, jobs, self)
      njobs = #jobs
    end
    if not rec then
      local loads = self.stats.loads
      rec, lerr = self:record(agg, stream)
      if rec and take_queued and self.stats.loads ~= loads then
        -- the load took a round trip: the commands queued meanwhile join
        -- this batch (one write instead of two)
        take_queued(lane, jobs, self)
        njobs = #jobs
      end
      if not rec then
        for _, job in ipairs(jobs) do
          local e = setmetatable({}, getmetatable(lerr))
          for k, v in pairs(lerr) do e[k] = v end
          e.command = job.cmd.type
          job.err = e
        end
        return njobs
      end
      local known = self.host_lanes and self.host_lanes.version(stream)
      if known and known > rec.version then
        -- another process of this host wrote since: catch up first rather
        -- than lose the write
        -- (from the events that process left in the host's shared memory
        -- when they are exactly the ones missing: no read)
        local shared = self.host_lanes.events and self.host_lanes.events(stream, rec.version, known)
        local caught = self:catch_up(agg, stream, rec, shared and { found = shared, found_all = true })
        if caught then
          put_record(self, stream, caught)
          rec = caught
        end
      end
    end
    -- decide every job in turn against the state the one before left
    local state, version, now = rec.state, rec.version, self.clock_ms()
    local events, nevents, nbytes, ntaken = new_tab(njobs, 0), 0, 0, njobs
    local seen -- command id -> the job of this batch that carries it
    for i = 1, njobs do
      local job = jobs[i]
      clear_outcome(job)
      local span_first, span_last, span_fp = command_span(rec, job.command_id)
      local orig = not span_first and seen and seen[job.command_id]
      local fp = span_first and span_fp or (orig and orig.fp)
      if fp and job.fp and fp ~= job.fp then
        job.err = new_error("idempotency_mismatch", ("command id %s was used for a different command "
          .. "(version %d of the stream): a command id names one command; send a new id for a new command")
          :format(job.command_id, span_first or orig.first), fields_of(job))
      elseif span_first then
        job.span = { span_first, span_last } -- (a duplicate's: original_result reads its events)
      elseif orig then
        job.same_as = orig
      else
        local new_state, n, bytes, out = self:decide(job, aggregate.deep_copy(state), version, now, events, nevents)
        if not new_state then
          -- (the events it put before it failed)
          for k = nevents + 1, nevents + M.MAX_EVENTS do
            if events[k] == nil then break end
            events[k] = nil
          end
        elseif nevents > 0 and (nevents + n > BATCH_EVENTS or nbytes + bytes > BATCH_BYTES) then
          for k = nevents + 1, nevents + n do events[k] = nil end
          ntaken = i - 1
          break
        else
          nevents, nbytes = nevents + n, nbytes + bytes
          state, version = new_state, version + n
          if n > 0 then
            job.out, job.first = out, version - n + 1
            if njobs > 1 then
              seen = seen or {}
              seen[job.command_id] = job
            end
          else
            job.at = version -- no events: the version it was decided at
          end
        end
      end
    end
    local ok, err = true, nil
    local started = mono()
    if nevents > 0 then
      local last
      last, err = self.store:append(stream, rec.version, events)
      ok = last ~= nil
      if ok then
        self.stats.writes = self.stats.writes + 1
        if self.host_lanes then self.written[stream] = { first = rec.version + 1, events = events } end
      end
    end
    if ok then
      if nevents > 0 then
        -- The new record takes over the recent command ids (copying 128 of
        -- them per command was a tenth of a command's CPU).
        local old = rec
        local new = next_record(rec, version, state, agg.version)
        for i = 1, ntaken do
          local job = jobs[i]
          if job.out then remember_command(new, job.command_id, job.first, job.first + #job.out - 1, job.fp) end
        end
        put_record(self, stream, new)
        self:maybe_snapshot(agg, stream, old.version, new)
        rec = new
      end
      for i = 1, ntaken do
        local job = jobs[i]
        if job.span then
          self.stats.duplicates = self.stats.duplicates + 1
          job.res, job.err = self:original_result(agg, stream, job.span)
        elseif job.same_as then
          self.stats.duplicates = self.stats.duplicates + 1
          local orig = job.same_as
          job.res = result_of(stream, orig.first + #orig.out - 1, orig.out, true)
        elseif job.out then
          job.res = result_of(stream, job.first + #job.out - 1, job.out, false)
        elseif not job.err then
          job.res = result_of(stream, job.at, {}, false)
        end
      end
      for i = 1, ntaken do
        local job = jobs[i]
        if job.out ~= nil then job.out = nil end
        if job.span ~= nil then job.span = nil end
        if job.same_as ~= nil then job.same_as = nil end
      end
      return ntaken
    end
    if type(err) ~= "table" or err.type ~= "Conflict" then
      for i = 1, ntaken do
        local job = jobs[i]
        job.err = new_error("store", tostring(err), { stream = stream, command = job.cmd.type, aggregate = job.name,
                                                      cause = err, command_id = job.command_id })
      end
      return ntaken
    end
    -- Someone else appended first: catch up with their events (a read of
    -- only those), then decide the whole batch again.
    self.stats.conflicts = self.stats.conflicts + 1
    self:contended(stream, mono() - started)
    local behind = rec.version
    local guessed
    rec, guessed = self:catch_up(agg, stream, rec, err, guesses < MAX_GUESSES)
    guesses = guessed == true and guesses + 1 or 0
    if rec then
      put_record(self, stream, rec)
    else
      self.cache:drop(stream)
    end
    writes = writes + 1
    if not rec or rec.version > behind then lost = lost + 1 end
    if lost >= self.max_attempts or writes >= COLLISIONS_PER_ATTEMPT * self.max_attempts then break end
    self.sleep(self:retry_pause(stream, writes))
  end
  for _, job in ipairs(jobs) do
    job.res, job.out, job.span, job.same_as = nil, nil, nil, nil
    job.err = new_error("conflict",
      ("gave up after %d attempts: the stream kept changing (%d lost to other writers; commands.max_attempts = %d)")
        :format(writes, lost, self.max_attempts),
      fields_of(job))
  end
  return njobs
end

------------------------------------------------------------------------
-- Forwarding: the processes of one host (nginx workers, host_lanes) take
-- turns on a stream, and a process whose commands arrive while another
-- holds the turn forwards them to the holder (through the host's shared
-- memory) instead of waiting for the turn: the holder takes them into its
-- batch (take_forwarded, at the points where it takes its own queued
-- commands), decides them with its own, writes all their events in one
-- write and replies each command's outcome, which the sender returns as
-- its own. So a hot stream's writes carry every worker's commands, as if
-- one process served the host.
--
-- Exactly once: a forwarded message is answered by whoever claims it
-- first (host_lanes.claim: an atomic add in the shared dict); its sender
-- claims it back (withdraws it) when no holder took it and the turn is
-- free again. A holder that dies after claiming it ("lost") leaves the
-- outcome unknown: the sender runs the same commands itself with the same
-- command ids, so a command the dead holder did write is found as a
-- duplicate (its write, if it landed, is at a version the sender's write
-- must read past first: the conditional append). A message is forwarded
-- only when small (FORWARD_BYTES) and only for batching aggregates.

local FORWARD_BYTES = 64 * 1024
-- closed lanes kept for reuse (about the commands in flight at once)
local LANES_KEPT = 256
local LINGER_BATCHES = 4

-- The commands of jobs as one message (lossless: tide values).
local function encode_jobs(jobs)
  local list = new_tab(#jobs, 0)
  for i = 1, #jobs do
    local j = jobs[i]
    list[i] = { n = j.name, i = j.id, c = j.cmd, k = j.command_id, f = j.fp, r = j.correlation_id,
                z = j.causation_id, v = j.agg.version }
  end
  return core.encode_value(list)
end

-- A job's outcome, to reply: the result's events as the sender returns
-- them (the data's JSON text too, so its response has the same bytes),
-- or the error's fields; {n = true} when it was not taken (past the
-- limits of the holder's write: the sender sends it again).
local ERROR_FIELDS = { "kind", "message", "stream", "command", "aggregate", "command_id" }
local function encode_outcome(job, taken)
  if not taken then return { n = true } end
  local res = job.res
  if res then
    local evs = new_tab(#res.events, 0)
    for k, ev in ipairs(res.events) do
      evs[k] = { v = ev.version, t = ev.type, d = ev.data, m = ev.meta_text or core.json_encode(ev.meta),
                 j = ev.data_text or core.json_encode(ev.data) }
    end
    return { s = res.stream, v = res.version, u = res.duplicate or nil, e = evs }
  end
  local e, x = job.err or {}, {}
  for _, f in ipairs(ERROR_FIELDS) do
    if type(e[f]) == "string" then x[f] = e[f] end
  end
  if type(e.type) == "string" then x.type = e.type end
  x.kind, x.message = x.kind or "store", x.message or tostring(job.err)
  return { x = x }
end

-- -> true when o (a decoded outcome) was taken, setting job.res or job.err
local function decode_outcome(job, o)
  if type(o) ~= "table" or o.n then return false end
  if type(o.x) == "table" then
    job.err = terror.new(o.x)
    return true
  end
  local events = new_tab(type(o.e) == "table" and #o.e or 0, 0)
  for k, e in ipairs(type(o.e) == "table" and o.e or {}) do
    events[k] = { version = e.v, type = e.t, data = e.d or {}, meta = cjson.decode(e.m or "{}") or {},
                  meta_text = e.m, data_text = e.j }
  end
  job.res = result_of(o.s, o.v, events, o.u and true or false)
  return true
end

-- The holder's side: moves the forwarded commands waiting for stream
-- (of agg, the aggregate of its module version) to the end of jobs, each
-- with fwd = its message {ticket=, jobs=}, while the batch has room.
function Repository:take_forwarded(jobs, agg, stream)
  local hl = self.host_lanes
  while #jobs < BATCH_EVENTS do
    local ticket, text = hl.take(stream)
    if not ticket then return end
    local list = core.decode_value(text)
    local fit = type(list) == "table" and #list > 0
    if fit then
      for _, m in ipairs(list) do
        if type(m) ~= "table" or m.v ~= agg.version or type(m.n) ~= "string" or type(m.i) ~= "string"
            or self.registry:get(m.n) ~= agg or stream_of(m.n, m.i) ~= stream or type(m.c) ~= "table" then
          fit = false
          break
        end
      end
    end
    if not fit then
      hl.refuse(ticket)
    elseif hl.claim(ticket) then
      local msg = { ticket = ticket, jobs = new_tab(#list, 0) }
      for k, m in ipairs(list) do
        local j = { agg = agg, name = m.n, id = m.i, stream = stream, cmd = m.c, command_id = m.k, fp = m.f,
                    correlation_id = m.r, causation_id = m.z, fwd = msg }
        msg.jobs[k] = j
        jobs[#jobs + 1] = j
      end
      self.stats.forwarded_in = (self.stats.forwarded_in or 0) + #list
    end
  end
end

-- The sender's side: forwards jobs to the process holding stream's turn
-- and waits for the outcomes; -> how many of jobs (from the first) got one
-- | nil, why (host_lanes.forward's).
function Repository:forward(stream, jobs)
  local text = encode_jobs(jobs)
  if not text or #text > FORWARD_BYTES then return nil, "refused" end
  local reply, why = self.host_lanes.forward(stream, text)
  if not reply then return nil, why end
  local list = core.decode_value(reply)
  if type(list) ~= "table" then return nil, "lost" end
  local n = 0
  for i = 1, #jobs do
    local job = jobs[i]
    job.res, job.err = nil, nil
    if not decode_outcome(job, list[i]) then break end
    n = i
  end
  self.stats.forwarded_out = (self.stats.forwarded_out or 0) + n
  return n
end

-- repository:execute(aggregate_name, id, command [, opts]) -> result | nil, err
--   command: {type=, id= (optional command id), ...fields}
--   opts: {causation_id=, correlation_id=}
--   result: {ok=true, stream=, version=, events={{version=, type=, data=, meta=}...}, duplicate=}
--   err.kind: "invalid" (bad command or module), "rejected" (the domain said
--   no), "conflict" (after max_attempts), "handler_error" (a handler raised),
--   "too_many_events", "event_too_large", "store" (store or network failure)
-- Moves the commands queued on lane (of jobs[1]'s module version, in
-- arrival order, up to the first of another) to the end of jobs, until
-- jobs holds as many commands as one write may carry events: a batch
-- decides no more than that, and what it took past it would only go back
-- to the queue after the write.
local function take_queued(lane, jobs)
  local agg = jobs[1].agg
  local head, njobs = lane.head, #jobs
  while njobs < BATCH_EVENTS and head <= lane.n and (lane[head].abandoned or lane[head].agg == agg) do
    local j = lane[head]
    if not j.abandoned then
      j.taken = true
      njobs = njobs + 1
      jobs[njobs] = j
    end
    lane[head] = false
    head = head + 1
  end
  lane.head = head
end

-- take_queued, and then the commands other processes forwarded (a
-- function of its own, not a closure per command: execute creates none,
-- so the JIT can compile it)
local function take_queued_and_forwarded(lane, jobs, repo)
  take_queued(lane, jobs)
  repo:take_forwarded(jobs, jobs[1].agg, jobs[1].stream)
end

function Repository:execute(name, id, command, opts)
  local job, perr = self:prepare(name, id, command, opts)
  if not job then return nil, perr end
  self.stats.commands = self.stats.commands + 1
  local stream = job.stream
  local lanes, parking = self.lanes, self.parking
  local batching = self.batching
  if job.agg.batching ~= nil then batching = job.agg.batching end
  local hl = self.host_lanes
  local forwarding = hl and hl.forward and batching
  -- a lane: {head=, n=, jobs=} with the queue in lane[head..n]; jobs: the
  -- list its leader decides in a batch (empty between leaders);
  -- lane.forwarding while its leader waits for another process's write of
  -- its commands
  local lane = lanes[stream]
  while lane and lane.forwarding and forwarding do
    -- that process takes this command as well, now (not after the
    -- leader's reply: its next batch may well start before)
    local n, why = self:forward(stream, { job })
    if n == 1 then return job.res, job.err end
    if why == "timeout" then
      return nil, new_error("store", "no answer from the process holding the stream's turn (the command may "
        .. "have been applied: send it again with the same command id)", fields_of(job))
    end
    if why and why ~= "withdrawn" then forwarding = false end
    lane = lanes[stream]
  end
  if lane then
    local waiter = parking and parking.new()
    if not waiter then
      -- this coroutine cannot park (no scheduler): a batch of its own
      self:run_batch({ job })
      return job.res, job.err
    end
    -- a leader is at work on this stream: wait for its write, or for the lane
    job.waiter = waiter
    lane.n = lane.n + 1
    lane[lane.n] = job
    while true do
      local ok, werr = parking.wait(waiter)
      if ok then break end
      if not job.taken then
        -- not in a batch yet: give up the place in the queue
        job.abandoned = true
        return nil, new_error("store", "waiting for the stream's earlier commands failed: " .. tostring(werr),
                              fields_of(job))
      end
      -- in a batch being written: its outcome must be waited for
    end
    if job.done then return job.res, job.err end
    -- handed the lane: lead it
  else
    -- a lane closed earlier, when there is one (a command on a quiet
    -- stream would make a lane and a list per command)
    local spare = self.spare_lanes
    local nspare = #spare
    if nspare > 0 then
      lane = spare[nspare]
      spare[nspare] = nil
    else
      lane = { head = 1, n = 0, jobs = {} }
    end
    lanes[stream] = lane
  end
  local jobs = lane.jobs
  jobs[1] = job
  local lingering = 0
  while true do
    local ok, ntaken
    local entered, herr = true, nil
    if lingering > 0 then
      -- still leading: the commands other processes forwarded meanwhile
      entered = hl.enter(stream, true)
      if entered ~= true then break end -- another process took the turn: they are its
      self:take_forwarded(jobs, job.agg, stream)
      if #jobs == 0 then
        hl.leave(stream)
        break
      end
    end
    while hl and lingering == 0 do
      entered, herr = hl.enter(stream, forwarding)
      if entered ~= "held" then break end
      -- another process holds the stream's turn: its batch takes ours
      if batching then take_queued(lane, jobs) end
      lane.forwarding = true
      local n, why = self:forward(stream, jobs)
      lane.forwarding = nil
      if n and n > 0 then
        ok, ntaken, entered = true, n, "forwarded"
        break
      end
      if why == "timeout" then
        entered, herr = nil, "no answer from the process holding its turn (the commands may have been "
          .. "applied: send them again with the same command ids)"
        break
      end
      -- withdrawn (the turn is free) or not taken: try again; refused or
      -- lost (the holder died: the commands run here, with the same ids)
      if why and why ~= "withdrawn" then forwarding = false end
    end
    local take = batching and take_queued or nil
    -- the holder takes the other processes' forwarded commands too
    if take and forwarding then take = take_queued_and_forwarded end
    -- (after the wait for the host's turn: what queued meanwhile joins)
    if take and entered == true then take(lane, jobs, self) end
    if entered == "forwarded" then
      -- done by the holder
    elseif entered then
      ok, ntaken = pcall(self.run_batch, self, jobs, take, lane)
      if hl then
        local rec = self.cache:get(stream)
        local written = self.written[stream]
        self.written[stream] = nil
        if not (rec and written and written.first + #written.events - 1 == rec.version) then written = nil end
        hl.leave(stream, rec and rec.version, written)
      end
    else
      ok, ntaken = true, #jobs
      for _, j in ipairs(jobs) do
        j.res, j.err = nil, new_error("store", "waiting for the stream's turn among this host's processes failed: "
                                      .. tostring(herr), fields_of(j))
      end
    end
    if not ok then
      local msg = tostring(ntaken)
      ntaken = #jobs
      for _, j in ipairs(jobs) do
        j.res, j.err = nil, new_error("handler_error", "the command could not be run: " .. msg, fields_of(j))
      end
    end
    -- forwarded commands: every message taken is answered, once
    local replies
    for i = 1, #jobs do
      local j = jobs[i]
      local msg = j.fwd
      if msg then
        replies = replies or {}
        if not replies[msg] then
          replies[msg] = new_tab(#msg.jobs, 0)
          replies[#replies + 1] = msg
        end
        local out = replies[msg]
        out[#out + 1] = encode_outcome(j, i <= ntaken)
      end
    end
    if replies then
      for _, msg in ipairs(replies) do
        local text = core.encode_value(replies[msg])
        hl.reply(msg.ticket, text or core.encode_value{ { x = { kind = "store", message = "the outcome cannot be encoded" } } })
      end
    end
    -- jobs not taken (past the limits of one write) go back to the front of the queue, in order
    for i = #jobs, ntaken + 1, -1 do
      if not jobs[i].fwd then
        lane.head = lane.head - 1
        lane[lane.head] = jobs[i]
        jobs[i].taken = nil
      end
    end
    for i = 1, ntaken do
      local j = jobs[i]
      if not j.fwd and j ~= job then
        j.done = true
        parking.wake(j.waiter)
      end
    end
    -- The batch answered: when nothing of this process waits for the
    -- stream but others forwarded commands meanwhile, lead one more batch
    -- for them (at most LINGER_BATCHES: this command's own answer waits)
    -- rather than leave the stream idle until one of them notices the turn
    -- is free.
    if not (entered == true and forwarding and lingering < LINGER_BATCHES and hl.pending(stream)) then break end
    local waiting = false
    for k = lane.head, lane.n do
      if lane[k] and not lane[k].abandoned then
        waiting = true
        break
      end
    end
    if waiting then break end
    lingering = lingering + 1
    for k = #jobs, 1, -1 do jobs[k] = nil end
  end
  for k = #jobs, 1, -1 do jobs[k] = nil end
  -- hand the lane to the first command still waiting, or close it
  local head = lane.head
  while head <= lane.n and lane[head].abandoned do
    lane[head] = false
    head = head + 1
  end
  if head <= lane.n then
    local nxt = lane[head]
    lane[head] = false
    head = head + 1
    if head > lane.n then head, lane.n = 1, 0 end
    lane.head = head
    nxt.taken = true
    parking.wake(nxt.waiter)
  else
    lanes[stream] = nil
    local spare = self.spare_lanes
    if #spare < LANES_KEPT then
      lane.head, lane.n = 1, 0
      spare[#spare + 1] = lane
    end
  end
  return job.res, job.err
end

-- repository:state(aggregate_name, id) -> {state=, version=, stream=} | nil, err
function Repository:state(name, id)
  local iderr = check_id(id, name)
  if iderr then return nil, new_error("invalid", iderr) end
  local agg, aerr = self.registry:get(name)
  if not agg then return nil, new_error("invalid", aerr, { aggregate = name }) end
  -- A read must see other writers' events: load afresh (from the latest
  -- snapshot), and leave the result in the cache for the next command.
  local stream = stream_of(name, id)
  local rec, err = self:load_record(agg, stream)
  if not rec then return nil, err end
  rec.module_version = agg.version
  put_record(self, stream, rec)
  return { state = rec.state, version = rec.version, stream = stream }
end

-- repository:events(aggregate_name, id [, after_version [, opts]]) -> list of
-- {version=, type=, data=, meta=} (upcast; opts.stored: as stored) | nil, err
function Repository:events(name, id, after, opts)
  local iderr = check_id(id, name)
  if iderr then return nil, new_error("invalid", iderr) end
  local agg, aerr = self.registry:get(name)
  if not agg then return nil, new_error("invalid", aerr, { aggregate = name }) end
  local stream = stream_of(name, id)
  local stored, err = self.store:load(stream, after or 0)
  if not stored then return nil, new_error("store", tostring(err), { stream = stream }) end
  local out = {}
  for _, s in ipairs(stored) do
    local ev, derr = decode_event(not (opts and opts.stored) and agg or nil, s)
    if not ev then return nil, new_error("store", ("stored event %d cannot be read: %s"):format(s.version, derr), { stream = stream }) end
    out[#out + 1] = ev
  end
  return out
end

return M
