-- tide.store.sqlite - the embedded event store (docs/data-model.md) on one
-- SQLite file, through the tide.sqlite C module.
--
--   local store, err = require("tide.store.sqlite").new{
--     path = "./tide.db",          -- created if missing
--     busy_timeout_ms = 10000,     -- how long a writer waits for another's lock
--     synchronous = "normal",      -- or "full" (see Durability)
--     group_max = 512,             -- appends per shared transaction
--     writer_thread = nil,         -- group commit on a thread of its own (below);
--                                  -- nil: when the process may run on 2 CPUs or more
--   }
--   assert(store:init())
--   store:append(stream, expected_version, events) -> last_version | nil, err
--   store:load(stream, after_version) -> events | nil, err
--   store:get_snapshot(stream) -> snapshot | false | nil, err
--   store:put_snapshot(stream, version, state_text, meta_text) -> true | nil, err
--   store:read_all(after_position, limit) -> events (with position, stream) | nil, err
--   store:last_position() -> the highest position (0 for an empty store) | nil, err
--   store:list_streams(aggregate, {limit=, after=}) -> {{stream=, id=, version=}...}, more | nil, err
--   store:close()
--   store.stats = {appends=, transactions=, conflicts=, largest_group=, groups_here=}
--     appends written, write transactions begun, appends that failed with a
--     Conflict, the most appends one transaction carried, groups the writer
--     thread left to the Lua thread (a lone append: below)
--
-- Errors are tide.errors {kind=, type=, message=, stream=, retryable=, code=}
-- (kind "conflict" for a Conflict, else "store"); type is "Conflict" (the
-- stream is not at expected_version: reload and retry the command;
-- err.current_version says where it is, when known), "Busy" (another process held the write lock beyond
-- busy_timeout_ms: retryable as is) or "StoreError" (anything else: I/O, a
-- file that is not a tide store). Wrong argument types raise.
--
-- Group commit: inside the tide process's scheduler (tide.sched), appends of
-- concurrent threads share one transaction. The first append of a group
-- leads it: it yields once (sched.sleep(0)) so the other ready threads can
-- join (each parks with sched.suspend), then runs BEGIN IMMEDIATE, one
-- savepoint per append (a conflict rolls back only its own) and COMMIT, and
-- wakes each member with its own result. A group holds at most group_max
-- appends; the next append leads a new group. If BEGIN or COMMIT fails,
-- every append of the group gets that error: none is reported as written. The transaction runs without yielding, so no other thread uses
-- the connection in the middle of it. Outside a scheduler (plain LuaJIT,
-- nginx), each append commits on its own.
--
-- With writer_thread = true (tide.yaml: sqlite.writer_thread; unset, it is
-- true when the process may run on two CPUs or more), the group's
-- transaction runs on a thread of its own (runtime/sqlite/writer.c): each
-- append is queued there as its command is decided (one call into C) and
-- runs in the open transaction (a group begins once COMMIT is asked or 32
-- appends wait, and takes the rest as they come), while the Lua thread goes on with
-- the other commands; the first append of a turn asks for COMMIT after
-- that turn (sched.sleep(0)), or, when it is the only append queued and
-- no other thread is ready to run (one command at a time), commits it on
-- the Lua thread (db:run_here: the hand-over would only add two thread
-- wake-ups to its wait); the threads wait for the outcome without
-- blocking the process (one of them watches the writer's eventfd with
-- sched.wait_readable and wakes the others). The same rules hold: a
-- savepoint per append of several events, a Conflict fails only its own
-- append (with current_version), a failed BEGIN or COMMIT fails every
-- append of the group, nothing is reported written before its COMMIT
-- succeeded, Busy stays retryable, group_max appends per transaction at
-- most. A snapshot (put_snapshot) joins the group as well. load,
-- get_snapshot and read_all go through a second connection (WAL: it sees
-- only committed transactions, and waits for no writer); any other use of
-- the connection on the Lua thread (the projection backend's queries,
-- last_position, list_streams, begin/commit) first commits the open group
-- and waits for the writer to be idle (the time of the appends still
-- queued). So a read never sees an append that is not committed. close() commits the groups
-- whose COMMIT was asked and fails (StoreError "group commit failed: ...
-- the store is closed") the appends of a group still gathering. Outside a
-- scheduler, appends stay synchronous on the calling thread. Measured in
-- bench/README.md ("The fourth round", "The seventh round", "The writer
-- thread as the default").

-- Durability: WAL mode with synchronous = "normal" survives a crash of the
-- process; a power loss or OS crash can lose the last transactions (never
-- corrupt the file). "full" fsyncs at every commit: one fsync per group.
--
-- Blocking: SQLite calls are synchronous. A writer that waits for another
-- process's lock blocks its whole process (up to busy_timeout_ms); with
-- the writer thread, only that thread waits (and the Lua thread, if it
-- reads meanwhile).
local sqlite = require "tide.sqlite"
local new_tab = require "table.new"
local terror = require "tide.error"

local type, error, tostring, setmetatable, pcall, floor =
  type, error, tostring, setmetatable, pcall, math.floor

local M = {}

local DEFAULT_GROUP_MAX = 512
local DEFAULT_READ_LIMIT = 1000

-- ---- errors ----------------------------------------------------------------

M.Error = terror.Error

-- retryable: the same append may simply be retried (Busy); a Conflict
-- needs a reload first, a StoreError a person.
local function new_error(etype, message, stream, code)
  return terror.new{ kind = etype == "Conflict" and "conflict" or "store", type = etype, message = message,
                     stream = stream, code = code, retryable = etype == "Busy" }
end
M.new_error = new_error

-- The binding's error (or a string) as a store error of stream.
local function wrap(err, stream)
  if type(err) == "table" then
    return new_error(err.type or "StoreError", err.message or tostring(err), stream, err.code)
  end
  return new_error("StoreError", tostring(err), stream)
end

-- ---- argument checks (raise: they are the caller's bugs) -------------------

local function is_int(v, min)
  return type(v) == "number" and v == floor(v) and v >= min and v <= 2 ^ 53
end

local function check_stream(name, stream)
  if type(stream) ~= "string" or stream == "" then
    error("store:" .. name .. ": stream must be a non-empty string", 3)
  end
end

local function check_events(events)
  if type(events) ~= "table" then
    error("store:append: events must be an array of {type=, data=, meta=}", 3)
  end
  for i = 1, #events do
    local ev = events[i]
    if type(ev) ~= "table" or type(ev.type) ~= "string" then
      error("store:append: events[" .. i .. "].type must be a string", 3)
    end
    if ev.data ~= nil and type(ev.data) ~= "string" then
      error("store:append: events[" .. i .. "].data must be JSON text (a string)", 3)
    end
    if ev.meta ~= nil and type(ev.meta) ~= "string" then
      error("store:append: events[" .. i .. "].meta must be JSON text (a string)", 3)
    end
  end
end

-- ---- the store ---------------------------------------------------------------

local Store = {}
Store.__index = Store

-- The metatable of tide.sqlite's own connections (a connection wrapped by
-- a caller takes the Lua write path).
local DB_META

-- tide.sched when this is the tide process, else false (nginx, plain LuaJIT).
local sched_mod
local function get_sched()
  if sched_mod == nil then
    local ok, mod = pcall(require, "tide.sched")
    sched_mod = ok and mod or false
  end
  return sched_mod
end

function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("tide.store.sqlite.new: opts must be a table", 2)
  end
  local path = opts.path or "./tide.db"
  if type(path) ~= "string" then
    error("tide.store.sqlite.new: path must be a string", 2)
  end
  if opts.busy_timeout_ms ~= nil and not is_int(opts.busy_timeout_ms, 0) then
    error("tide.store.sqlite.new: busy_timeout_ms must be a non-negative integer", 2)
  end
  if opts.synchronous ~= nil and opts.synchronous ~= "normal" and opts.synchronous ~= "full" then
    error('tide.store.sqlite.new: synchronous must be "normal" or "full"', 2)
  end
  if opts.writer_thread ~= nil and type(opts.writer_thread) ~= "boolean" then
    error("tide.store.sqlite.new: writer_thread must be a boolean", 2)
  end
  local group_max = opts.group_max or DEFAULT_GROUP_MAX
  if not is_int(group_max, 1) then
    error("tide.store.sqlite.new: group_max must be a positive integer", 2)
  end
  local db, err = sqlite.open(path, {
    busy_timeout_ms = opts.busy_timeout_ms,
    synchronous = opts.synchronous,
  })
  if not db then
    return nil, wrap(err)
  end
  DB_META = DB_META or getmetatable(db)
  local self = setmetatable({
    db = db,
    path = path,
    data_format = "json", -- event data as plain JSON (tide.stream.encode_data)
    group_max = group_max,
    queue = nil, -- the group being gathered, while its leader yields (a wrapped connection)
    fd = nil, -- the writer thread's descriptor, once started
    gathering = nil, -- the thread that will close the group of this turn
    pump = nil, -- the thread that watches fd for the others
    parked = {}, -- items whose threads wait for their outcome, in queue order
    order = 0, -- appends queued on the writer thread so far (item.order)
    writer_transactions = 0, -- the writer thread's transactions counted in stats
    closed = false,
    -- unset: on when the process may run on two CPUs or more (the
    -- writer then has a core of its own)
    writer_thread = opts.writer_thread == nil and sqlite.cpus() >= 2 or opts.writer_thread == true,
    reached = {}, nreached = 0, -- see note_reached
    stats = { appends = 0, transactions = 0, conflicts = 0, largest_group = 0, groups_here = 0 },
  }, Store)
  -- a file of schema 1 holds AttributeValue JSON: made plain on open
  local ok, merr = self:migrate()
  if not ok then
    db:close()
    return nil, merr
  end
  return self
end

function Store:init()
  local ok, err = self.db:init()
  if not ok then
    return nil, wrap(err)
  end
  return self:migrate()
end

-- Schema 1 (tide before 0.x): event data and read-model items as
-- AttributeValue JSON text. Schema 2: plain JSON (tide.stream.encode_data,
-- format "json"). migrate() converts a file of schema 1 in one write
-- transaction (BEGIN IMMEDIATE: another process opening it at the same
-- time waits, then finds it done), a page of rows at a time; a new file is
-- created at 2 by db:init. Snapshots stay AttributeValue JSON (opaque).
local MIGRATE_PAGE = 1000

local function user_version(db)
  local rows, err = db:query("SELECT user_version FROM pragma_user_version")
  if not rows then return nil, err end
  return rows[1][1]
end

local function convert_rows(db, first, select_sql, update_sql)
  local convert = require("tide.stream").convert
  local after = first
  while true do
    local rows, err = db:query(select_sql, after, MIGRATE_PAGE)
    if not rows then return nil, err end
    for _, r in ipairs(rows) do
      -- r = {key..., text}: the last column is the text
      local text = r[#r]
      if text ~= nil and text ~= "" then
        local plain, cerr = convert(text, "json")
        if not plain then
          return nil, { message = ("cannot convert %s: %s"):format(table.concat(r, " ", 1, #r - 1), tostring(cerr)) }
        end
        local args = { plain }
        for k = 1, #r - 1 do args[#args + 1] = r[k] end
        local ok, uerr = db:query(update_sql, unpack(args))
        if not ok then return nil, uerr end
      end
    end
    if #rows < MIGRATE_PAGE then return true end
    after = rows[#rows][1]
  end
end

function Store:migrate()
  local db = self.db
  local uv, err = user_version(db)
  if not uv then return nil, wrap(err) end
  if uv ~= 1 then return true end
  local ok
  ok, err = db:begin()
  if not ok then return nil, wrap(err) end
  uv, err = user_version(db)
  if uv == 1 then
    ok, err = convert_rows(db, 0, "SELECT position, data FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
                           "UPDATE events SET data = ?1 WHERE position = ?2")
    if ok then
      local rows = db:query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'read_models'")
      if rows and rows[1][1] > 0 then
        -- keyed by (model, key): page on their concatenation
        ok, err = convert_rows(db, "", "SELECT model || char(0) || key, model, key, item FROM read_models"
          .. " WHERE model || char(0) || key > ?1 ORDER BY model || char(0) || key LIMIT ?2",
          "UPDATE read_models SET item = ?1 WHERE model = ?3 AND key = ?4")
      end
    end
    if ok then ok, err = db:exec("PRAGMA user_version = 2") end
    if ok then ok, err = db:commit() end
  elseif uv then
    ok, err = db:commit()
  end
  if not ok then
    db:rollback()
    return nil, wrap(err)
  end
  return true
end

-- The expected-version check. Versions are dense and never removed, so
-- once this process saw a stream committed at version v, an append
-- expecting v or less needs no read: inserting version expected + 1
-- succeeds exactly when the stream is at expected, and meets the
-- (stream, version) UNIQUE constraint otherwise; only then is the version
-- read, for the Conflict's current_version. A stream not seen yet (or seen
-- only below expected) is read first, as every append was (a `SELECT
-- version ... LIMIT 1` per append: about 4k of a command's 15k SQLite
-- instructions). reached: stream -> the highest version this store saw
-- committed (its own appends, its loads); at most REACHED_MAX streams,
-- then forgotten (each costs one read again).
local REACHED_MAX = 65536

local function note_reached(self, stream, version)
  local reached = self.reached
  local known = reached[stream]
  if known then
    if version > known then reached[stream] = version end
    return
  end
  if self.nreached >= REACHED_MAX then
    reached = {}
    self.reached, self.nreached = reached, 0
  end
  reached[stream] = version
  self.nreached = self.nreached + 1
end

local function conflict_at(stream, current, expected)
  local err = new_error("Conflict", string.format("stream is at version %d, not at the expected %d",
    current, expected), stream)
  err.current_version = current
  return err
end

-- Runs one append inside the open transaction (several events: in a savepoint).
-- Returns last_version | nil, err, plus true when the transaction itself is
-- gone (SQLite ended it after an I/O error).
local function apply(db, item)
  local stream, expected, events = item.stream, item.expected, item.events
  local current, err
  if not item.reached then
    current, err = db:max_version(stream)
    if not current then
      return nil, wrap(err, stream), not db:in_transaction()
    end
    if current ~= expected then
      return nil, conflict_at(stream, current, expected)
    end
  end
  -- One event is one INSERT, which SQLite undoes by itself when it fails;
  -- several need a savepoint, so that a failure keeps none of them.
  local single = #events == 1
  local ok
  if not single then
    ok, err = db:savepoint()
    if not ok then
      return nil, wrap(err, stream), not db:in_transaction()
    end
  end
  ok, err = db:insert_events(stream, expected + 1, events)
  if ok and not single then
    ok, err = db:release()
  end
  if ok then
    return expected + #events
  end
  err = wrap(err, stream)
  if not db:in_transaction() then
    return nil, err, true
  end
  if not single then
    db:rollback_to()
    db:release()
  end
  if item.reached and err.type == "Conflict" then
    -- the stream moved past expected (see note_reached): where is it?
    current, err = db:max_version(stream)
    if not current then
      return nil, wrap(err, stream), not db:in_transaction()
    end
    return nil, conflict_at(stream, current, expected)
  end
  return nil, err
end

-- Every append of group gets err: none is reported as written.
local function fail_all(group, err)
  for i = 1, #group do
    local item = group[i]
    item.result, item.err = nil, wrap(err, item.stream)
  end
end

-- Runs the appends of group in one transaction; sets item.result/item.err.
-- (No closure made per group: each was a trace abort, NYI FNEW.)
local function commit_group(self, group)
  local db, stats, n = self.db, self.stats, #group
  stats.transactions = stats.transactions + 1
  if n > stats.largest_group then
    stats.largest_group = n
  end
  local ok, err = db:begin()
  if not ok then
    return fail_all(group, err)
  end
  for i = 1, n do
    local item = group[i]
    local res, aerr, gone = apply(db, item)
    if gone then
      return fail_all(group, aerr)
    end
    item.result, item.err = res, aerr
  end
  ok, err = db:commit()
  if not ok then
    db:rollback()
    return fail_all(group, err)
  end
  for i = 1, n do
    local item = group[i]
    if item.result then
      stats.appends = stats.appends + 1
      note_reached(self, item.stream, item.result)
    elseif item.err.type == "Conflict" then
      stats.conflicts = stats.conflicts + 1
    end
  end
end

local function result_of(item)
  if item.result then
    return item.result
  end
  return nil, item.err
end

-- Group commit on the Lua thread: the group's leader runs its transaction
-- through the connection's methods (db:begin, db:max_version, ...). Also
-- the path of a connection wrapped by a caller (not tide.sqlite's own).
local function append_lua(self, item, sched)
  if not (sched and sched.running()) then
    commit_group(self, { item })
    return result_of(item)
  end
  local q = self.queue
  if q then
    -- a leader is gathering a group: join it and wait for its wake-up
    item.th = sched.current()
    q[#q + 1] = item
    if #q >= self.group_max then
      self.queue = nil -- full: the next append leads a new group
    end
    sched.suspend()
    return result_of(item)
  end
  -- the leader: let the other ready threads join, then commit for all
  q = { item }
  if self.group_max > 1 then
    self.queue = q
    sched.sleep(0)
    if self.queue == q then
      self.queue = nil
    end
  end
  local ok, err = pcall(commit_group, self, q)
  if not ok then
    -- a bug, or the store closed under the group: nothing is reported written
    pcall(self.db.rollback, self.db)
    for i = 1, #q do
      q[i].result, q[i].err = nil, new_error("StoreError", "group commit failed: " .. tostring(err), q[i].stream)
    end
  end
  for i = 2, #q do
    sched.wakeup(q[i].th)
  end
  return result_of(item)
end

-- ---- the writer thread (tide.sqlite's db:enqueue / db:collect) ---------------

local ERROR_TYPE = { ECONFLICT = "Conflict", EBUSY = "Busy" }

-- The outcome the binding set on a finished item: last_version | nil, err
-- (the errors the Lua path makes, field for field).
local function outcome(self, item)
  local stats = self.stats
  local last = item.result
  if last then
    stats.appends = stats.appends + 1
    if not item.snapshot then note_reached(self, item.stream, last) end
    return last
  end
  local stream, err = item.stream, nil
  local current = item.current_version
  if current then
    err = conflict_at(stream, current, item.expected)
  else
    local code = item.code
    err = new_error(ERROR_TYPE[code] or "StoreError", item.message, stream, code)
  end
  if err.type == "Conflict" and not item.snapshot then
    stats.conflicts = stats.conflicts + 1
  end
  return nil, err
end

-- Takes the writer's finished items (their outcome into them) and wakes
-- the threads that waited for them.
local function collect(self)
  local _, transactions, largest = self.db:collect()
  local stats = self.stats
  -- the writer's counts are its own since it started: add what is new
  stats.transactions = stats.transactions + transactions - self.writer_transactions
  self.writer_transactions = transactions
  if largest > stats.largest_group then stats.largest_group = largest end
  local parked, keep = self.parked, 0
  local sched = get_sched()
  for i = 1, #parked do
    local item = parked[i]
    parked[i] = nil
    if item.done then
      sched.wakeup(item.th) -- (in queue order: parked is)
    else
      keep = keep + 1
      parked[keep] = item
    end
  end
  -- collected by another thread (a group run here): the pump, waiting for
  -- a descriptor this read has just drained, looks at its item again
  local pump = self.pump
  if pump and pump ~= sched.current() then sched.wakeup(pump) end
end

-- Parks the current thread until item is done (or the pump's turn comes):
-- parked stays in queue order (items nearly always arrive in it).
local function park(self, item, sched)
  item.th = sched.current()
  local parked = self.parked
  local k = #parked
  while k > 0 and parked[k].order > item.order do
    parked[k + 1] = parked[k]
    k = k - 1
  end
  parked[k + 1] = item
  sched.suspend()
end

-- Waits (yielding) until item is done. One waiting thread (the pump)
-- watches the writer's descriptor and collects for all; the others park.
-- The pump is the first append of its group (the one that gathered it),
-- and the others wake in the order they were queued: a group's threads go
-- on in the order of the Lua path's (its leader first, then the members),
-- so the events of the next groups land in the same order too.
local function await(self, item, sched)
  while not item.done do
    local pump, gathering = self.pump, self.gathering
    if (pump and sched.alive(pump)) or self.closed
      or (gathering and gathering ~= sched.current() and sched.alive(gathering)) then
      park(self, item, sched)
    else
      self.pump = sched.current()
      sched.wait_readable(self.fd)
      self.pump = nil
      if self.closed then break end
      collect(self)
    end
  end
  -- hand the pump over to the thread still waiting that queued first
  if not (self.pump and sched.alive(self.pump)) then
    -- (threads of an earlier, failed sched.run are dropped: nobody waits)
    local parked = self.parked
    while #parked > 0 do
      if sched.wakeup(table.remove(parked, 1).th) then break end
    end
  end
end

-- Whether the appends of this call go to the writer thread: asked for,
-- inside the scheduler, on tide.sqlite's own connection (a connection
-- wrapped by a caller takes the Lua path).
local function uses_writer(self, sched)
  return self.writer_thread and sched and sched.running() and getmetatable(self.db) == DB_META
end

local function closed_error(stream)
  return new_error("StoreError", "group commit failed: tide.sqlite: the store is closed", stream)
end

-- Queues item on the writer thread, joins the group gathered in this turn
-- of the scheduler, and waits for its outcome.
local function append_writer(self, item, sched)
  if self.closed then return nil, closed_error(item.stream) end
  local db = self.db
  local fd = self.fd
  if not fd then
    local err
    fd, err = db:writer_start(self.group_max)
    if not fd then return nil, wrap(err, item.stream) end
    self.fd = fd
  end
  local order = self.order + 1
  self.order, item.order = order, order
  db:enqueue(item)
  local gathering = self.gathering
  if not (gathering and sched.alive(gathering)) then
    -- the first append of this turn: the others of the turn join its
    -- group; then COMMIT (a gatherer of an earlier sched.run that failed
    -- never will: this one closes its group too)
    self.gathering = sched.current()
    sched.sleep(0)
    self.gathering = nil
    if not self.closed then
      if sched.idle() and db:run_here(1) then
        -- a lone append and nothing else to run meanwhile (one command
        -- at a time): committed on this thread, without the hand-over's
        -- two wake-ups
        self.stats.groups_here = self.stats.groups_here + 1
        collect(self)
      else
        db:close_group()
      end
    end
  end
  await(self, item, sched)
  if not item.done then return nil, closed_error(item.stream) end
  return outcome(self, item)
end

function Store:append(stream, expected_version, events)
  check_stream("append", stream)
  if not is_int(expected_version, 0) then
    error("store:append: expected_version must be a non-negative integer", 2)
  end
  check_events(events)
  -- room for the outcome's fields too: no rehash when they are set
  local item = new_tab(0, 8)
  item.stream, item.expected, item.events = stream, expected_version, events
  -- (with events: an empty append has no insert to meet the constraint;
  -- on tide.sqlite's own connection: a wrapped one keeps its own checks)
  item.reached = #events > 0 and (expected_version == 0 or (self.reached[stream] or -1) >= expected_version)
    and getmetatable(self.db) == DB_META
  local sched = get_sched()
  if uses_writer(self, sched) then
    return append_writer(self, item, sched)
  end
  return append_lua(self, item, sched)
end

function Store:load(stream, after_version)
  check_stream("load", stream)
  after_version = after_version or 0
  if not is_int(after_version, 0) then
    error("store:load: after_version must be a non-negative integer", 2)
  end
  local events, err = self.db:load(stream, after_version)
  if not events then
    return nil, wrap(err, stream)
  end
  local n = #events
  for i = 1, n do
    local ev = events[i]
    ev.position, ev.stream, ev.format = nil, nil, "json"
  end
  if n > 0 then note_reached(self, stream, events[n].version) end
  return events
end

function Store:get_snapshot(stream)
  check_stream("get_snapshot", stream)
  local snap, err = self.db:get_snapshot(stream)
  if snap == nil then
    return nil, wrap(err, stream)
  end
  return snap
end

function Store:put_snapshot(stream, version, state_text, meta_text)
  check_stream("put_snapshot", stream)
  if not is_int(version, 0) then
    error("store:put_snapshot: version must be a non-negative integer", 2)
  end
  if type(state_text) ~= "string" then
    error("store:put_snapshot: state must be JSON text (a string)", 2)
  end
  if meta_text ~= nil and type(meta_text) ~= "string" then
    error("store:put_snapshot: meta must be JSON text (a string) or nil", 2)
  end
  local sched = get_sched()
  if self.fd and uses_writer(self, sched) then
    -- the writer thread runs: the snapshot joins the group of this turn
    -- (a transaction of its own would wait for the writer first)
    local item = { snapshot = true, stream = stream, version = version, state = state_text, meta = meta_text }
    local last, err = append_writer(self, item, sched)
    if not last then return nil, err end
    return true
  end
  local ok, err = self.db:put_snapshot(stream, version, state_text, meta_text)
  if not ok then
    return nil, wrap(err, stream)
  end
  return true
end

-- Events with position > after_position, in position order, at most limit
-- (default 1000): {position=, stream=, version=, type=, data=, meta=}.
function Store:read_all(after_position, limit)
  after_position = after_position or 0
  limit = limit or DEFAULT_READ_LIMIT
  if not is_int(after_position, 0) then
    error("store:read_all: after_position must be a non-negative integer", 2)
  end
  if not is_int(limit, 1) then
    error("store:read_all: limit must be a positive integer", 2)
  end
  local events, err = self.db:read_all(after_position, limit)
  if not events then
    return nil, wrap(err)
  end
  for i = 1, #events do events[i].format = "json" end
  return events
end

-- The highest position of the feed (0 when the store has no event): where
-- a projection that reads read_all is caught up.
function Store:last_position()
  local rows, err = self.db:query("SELECT max(position) FROM events")
  if not rows then
    return nil, wrap(err)
  end
  return rows[1] and rows[1][1] or 0
end

-- The streams of an aggregate in name order, after the stream `after`
-- (a stream name or an id), at most limit (default 100); more: true when
-- there are others. A range of the UNIQUE (stream, version) index: the
-- streams "<aggregate>#..." sort between "<aggregate>#" and "<aggregate>$".
function Store:list_streams(aggregate, opts)
  opts = opts or {}
  if type(aggregate) ~= "string" or aggregate == "" then
    error("store:list_streams: aggregate must be a non-empty string", 2)
  end
  local limit = opts.limit or 100
  if not is_int(limit, 1) then error("store:list_streams: limit must be a positive integer", 2) end
  local from = aggregate .. "#"
  local after = opts.after
  if after and after:sub(1, #from) ~= from then after = from .. after end
  local rows, err = self.db:query("SELECT stream, max(version) FROM events WHERE stream > ?1 AND stream < ?2"
    .. " GROUP BY stream ORDER BY stream LIMIT ?3", after or from, aggregate .. "$", limit + 1)
  if not rows then return nil, wrap(err) end
  local out = {}
  for i = 1, math.min(#rows, limit) do
    out[i] = { stream = rows[i][1], id = rows[i][1]:sub(#from + 1), version = rows[i][2] }
  end
  return out, #rows > limit
end

-- Closes the file. Appends whose group was closed (COMMIT asked) are
-- committed first; the appends of a group still gathering fail (their
-- leader had not asked for COMMIT yet): their threads get the error.
function Store:close()
  if self.closed then return end
  self.closed = true
  self.db:close()
  if self.fd then
    local sched = get_sched()
    if self.pump then
      sched.wakeup(self.pump)
      self.pump = nil
    end
    local parked = self.parked
    for i = #parked, 1, -1 do
      local item = parked[i]
      parked[i] = nil
      sched.wakeup(item.th)
    end
  end
end

return M
