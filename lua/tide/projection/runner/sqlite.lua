-- tide.projection.runner.sqlite: runs one projection from the embedded
-- store's feed (the events table in position order), exactly once: each
-- batch's read-model changes, positions and checkpoint are one SQLite
-- transaction. It has the runner interface of tide.projection.runner
-- (start, run, run_until_caught_up, status, stop), and step, read, release.
--
--   local runner = require("tide.projection.runner.sqlite")
--   local r = runner.new{
--     store = store,             -- a tide.store.sqlite (its connection is shared)
--     projection = proj,         -- from tide.projection
--     aggregates = registry,     -- optional: upcasting by the aggregate modules
--     batch_size = 500,          -- events read per batch
--     registry = reg,            -- optional: take the projection from it per batch (hot reload)
--     owner = "host-1",          -- lease owner (default: a random id)
--     lease_ms = 30000,          -- the lease lasts this long after each batch
--     backoff_base = 0.1, backoff_cap = 30,   -- seconds, after a failed batch
--     log = function(level, message, fields) end,   -- default: errors on stderr
--   }
--   r:start()                -> true | nil, err   (the read-model tables)
--   r:step()                 -> n events read (0: caught up) | nil, err
--   r:run_until_caught_up{max_failures = 5, stop = flag} -> {handled = n} | nil, err
--       steps until the feed's last position at the call is reached; after a
--       failed batch it backs off (sched.sleep inside the scheduler) and
--       retries the same batch, up to max_failures times in a row; with
--       wait_for_lease = true a lease held by another owner is waited
--       for until it runs out (a crashed worker's), and given up on if
--       it is renewed meanwhile (a live worker's): err.type "LeaseHeld";
--       stop (as run's) ends it between batches: err.type "Interrupted"
--   r:run(stop, {idle = 0.2}) -> true
--       steps until stop says so or r:stop() is called, sleeping `idle`
--       seconds when caught up; failures back off and retry without limit;
--       releases the lease on return
--   r:status() -> {projection=, feed="sqlite", version=, checkpoint=,
--                  last_position=, lag=, owner=, lease_until=, holder=,
--                  held=, error=, last_error=, handled=}
--   r:stop()                 -- ends run, then gives the lease up
--   r:read(table, key) -> item (without _tide/_rev) | false | nil, err
--   r:release()              -- gives the lease up
--
-- The lease: a row of `checkpoints` with owner and lease_until. step takes
-- it (a conditional UPDATE: free, expired, or ours) before reading, and
-- every batch's transaction renews it and only commits while we own it.
-- A runner that cannot take the lease does nothing: step returns nil,
-- err with err.type == "LeaseHeld" (err.holder, err.lease_until).
--
-- A handler error (or an event that cannot be decoded) stops the batch:
-- nothing of it is written; the events before the failing one are applied
-- and checkpointed on their own, so the checkpoint stops just before the
-- failing event; the error (with the event and the traceback) goes into
-- the checkpoint row's `error` and to the log, and the next step retries.
local core = require "tide.core"
local projector_mod = require "tide.projector"
local backend_mod = require "tide.projection.sqlite"
local runner = require "tide.projection.runner"
local terror = require "tide.error"
local metrics = require "tide.metrics"

local type, tostring, setmetatable, error, math_min = type, tostring, setmetatable, error, math.min

local M = {}

local Runner = {}
Runner.__index = Runner

local default_log = require("tide.log").default

local function sleep(seconds)
  local ok, sched = pcall(require, "tide.sched")
  if ok and sched.running() then sched.sleep(seconds) end
end

function M.new(opts)
  if type(opts) ~= "table" or type(opts.store) ~= "table" or type(opts.projection) ~= "table" then
    error("runner.sqlite.new{store=, projection=}: store and projection are required", 2)
  end
  local batch = opts.batch_size or 500
  if type(batch) ~= "number" or batch < 1 or batch ~= math.floor(batch) then
    error("runner.sqlite.new: batch_size must be a positive integer", 2)
  end
  local backend = opts.backend or backend_mod.new{ store = opts.store }
  local self = setmetatable({
    store = opts.store,
    projection = opts.projection,
    name = opts.projection.name,
    backend = backend,
    batch_size = batch,
    -- host:pid: a worker's id, stable while it runs (one runner per
    -- projection in a process)
    owner = opts.owner or require("tide.projection.runner.streams").default_owner():gsub(":%x+$", ""),
    lease_ms = opts.lease_ms or 30000,
    backoff_base = opts.backoff_base or 0.1,
    backoff_cap = opts.backoff_cap or 30,
    log = opts.log or default_log,
    sleep = opts.sleep or sleep,
    handled = 0,
    failures = 0,
  }, Runner)
  self.registry = opts.registry
  self.aggregates = opts.aggregates
  self.parking = opts.parking
  self.projector = self:new_projector(opts.projection)
  return self
end

function Runner:new_projector(projection)
  return projector_mod.new{
    projection = projection, backend = self.backend, aggregates = self.aggregates,
    reader = projector_mod.store_reader(self.store), log = self.log, parking = self.parking,
  }
end

-- Hot reload: with a registry, the projection is taken from it at the start
-- of every batch, so a new version takes over between batches, never inside
-- one. nil, err when the module was removed.
function Runner:current_projection()
  if not self.registry then return true end
  local p, err = self.registry:get(self.name)
  if not p then return nil, terror.new{ kind = "invalid", type = "Removed", projection = self.name, message = err } end
  if p.version ~= self.projection.version then
    local ok, ierr = self.backend:init(p)
    if not ok then return nil, ierr end
    self.log("info", "projection reloaded", { projection = self.name, version = p.version })
    self.projection = p
    self.projector = self:new_projector(p)
  end
  return true
end

function Runner:start()
  if self.ready then return true end
  local ok, err = self.backend:init(self.projection)
  if not ok then return nil, err end
  self.ready = true
  return true
end

-- Takes (or renews) the lease and reads the checkpoint when newly taken.
function Runner:acquire()
  local ok, err = self:start()
  if not ok then return nil, err end
  local got, cp = self.backend:acquire(self.name, self.owner, self.lease_ms)
  if got == nil then return nil, cp end
  if not got then
    self.held = false
    return nil, terror.new{ kind = "conflict", type = "LeaseHeld", projection = self.name, holder = cp.owner,
      lease_until = cp.lease_until, retryable = true,
      message = ("owner %s holds the lease for %d ms more"):format(tostring(cp.owner), cp.lease_until - cp.now) }
  end
  if not self.held then
    local row, cerr = self.backend:checkpoint(self.name)
    if not row then return nil, cerr end
    self.position = row.position
    self.held = true
    -- another owner may have moved on while we did not hold the lease
    self.projector:reset()
  end
  return true
end

function Runner:release()
  if self.held then
    self.held = false
    return self.backend:release(self.name, self.owner)
  end
  return true
end

-- Writes plan with the checkpoint at position; true | nil, err.
function Runner:commit(plan, position)
  local ok, err = self.backend:write(self.name, plan, { position = position, owner = self.owner,
                                                       lease_ms = self.lease_ms })
  if not ok then
    self.projector:reset()
    if err.type == "LeaseLost" then self.held = false end
    return nil, err
  end
  self.projector:committed(plan)
  metrics.projection_events(self.name, plan.applied or 0)
  self.position = position
  return true
end

local function failed(self, err)
  self.last_error = err
  self.failures = self.failures + 1
  metrics.projection_error(self.name)
  -- the first failure with its traceback; the same failure again (each
  -- retry) in one line
  local text = tostring(err)
  if text == self.last_error_text then
    self.log("warn", "still failing (attempt " .. self.failures .. "): " .. text:match("^[^\n]*"),
             { projection = self.name })
  else
    self.log("error", text, { projection = self.name, error = err })
  end
  self.last_error_text = text
  -- the checkpoint row's error: the message, and the event it stopped at
  -- (tide status shows it; `tide park` sets that event aside)
  if self.held then
    local text = tostring(err)
    if type(err) == "table" and err.stream and err.version then
      text = core.json_encode{ message = text, stream = err.stream, version = err.version,
                               event_type = err.event_type } or text
    end
    self.backend:set_error(self.name, self.owner, text)
  end
  return nil, err
end

function Runner:step()
  local ok, err = self:current_projection()
  if not ok then return nil, err end
  ok, err = self:acquire()
  if not ok then return nil, err end
  local rows
  rows, err = self.store:read_all(self.position, self.batch_size)
  if not rows then return failed(self, err) end
  if #rows == 0 then
    -- keep the lease alive while idle
    return 0
  end
  for attempt = 1, 5 do
    local plan, aerr = self.projector:apply(rows)
    if not plan then
      -- apply what came before the failing event, so the checkpoint stops
      -- right before it
      local pos = aerr.event and aerr.event.position
      if pos and pos > rows[1].position then
        local head = {}
        for i = 1, #rows do
          if rows[i].position >= pos then break end
          head[i] = rows[i]
        end
        local hplan = self.projector:apply(head)
        if hplan and self:commit(hplan, head[#head].position) then
          self.handled = self.handled + #head
        end
      end
      return failed(self, aerr)
    end
    local cok, cerr = self:commit(plan, rows[#rows].position)
    if cok then
      self.handled = self.handled + #rows
      self.failures = 0
      self.last_error, self.last_error_text = nil, nil
      return #rows
    end
    if cerr.type ~= "Conflict" or attempt == 5 then return failed(self, cerr) end
    -- a conditional item changed under us: apply the batch again on fresh items
  end
end

function Runner:backoff()
  self.sleep(runner.backoff_delay(self.failures, self.backoff_base, self.backoff_cap))
end

function Runner:run_until_caught_up(opts)
  opts = opts or {}
  local max_failures = opts.max_failures or 5
  local target, err = self.store:last_position()
  if not target then return nil, err end
  local total, in_a_row, waited_for = 0, 0, nil
  local function interrupted()
    return nil, terror.new{ kind = "interrupted", type = "Interrupted", projection = self.name,
                            message = ("stopped before caught up (%d events handled)"):format(total) }
  end
  while true do
    if self.held and self.position and self.position >= target then return { handled = total } end
    if runner.should_stop(opts.stop) then return interrupted() end
    local n, serr = self:step()
    if n then
      in_a_row = 0
      total = total + n
      if n == 0 then return { handled = total } end
    else
      if serr.type == "LeaseHeld" and not opts.wait_for_lease then
        return nil, serr
      elseif serr.type == "LeaseHeld" then
        -- a lease left by a worker that stopped (crashed) runs out: wait
        -- for it, as `tide run` does; a lease renewed meanwhile belongs to
        -- a live worker: give up then
        if waited_for and waited_for ~= serr.lease_until then
          serr.message = serr.message .. " (renewed while waiting: another worker runs this projection)"
          return nil, serr
        end
        waited_for = serr.lease_until
        local cp = self.backend:checkpoint(self.name)
        local left = cp and (cp.lease_until - cp.now) or self.lease_ms
        self.log("info", "waiting for the lease of another owner to run out", { projection = self.name,
          holder = serr.holder, ms = left })
        local wait = math.max(left, 0) / 1000 + 0.05
        while wait > 0 do
          if runner.should_stop(opts.stop) then return interrupted() end
          local d = math.min(0.1, wait)
          self.sleep(d)
          wait = wait - d
        end
      else
      in_a_row = in_a_row + 1
      if in_a_row >= max_failures then return nil, serr end
      self:backoff()
      end
    end
  end
end

local function loop(self, stop, idle)
  while not (self.stopping or runner.should_stop(stop)) do
    local n, err = self:step()
    if not n then
      if err.type == "LeaseHeld" then
        self.sleep(math_min(idle * 5, self.lease_ms / 3000))
      else
        self:backoff()
      end
    elseif n == 0 then
      self.sleep(idle)
    end
  end
end

-- What a scrape reads while the runner runs: the feed's events not yet
-- applied, and whether it holds the lease.
local function collector(self)
  return function()
    metrics.leases_held(self.name, self.held and 1 or 0)
    local last = self.position and self.store:last_position()
    if last then metrics.projection_lag_events(self.name, math.max(0, last - self.position)) end
  end
end

function Runner:run(stop, opts)
  self.running, self.stopping = true, false
  local collect = metrics.collector(collector(self))
  local ok, err = xpcall(loop, debug.traceback, self, stop, opts and opts.idle or 0.2)
  metrics.remove_collector(collect)
  self.running = false
  self:release()
  if not ok then
    err = terror.new{ kind = "internal", type = "LuaError", projection = self.name, message = tostring(err) }
    self.log("error", tostring(err), { projection = self.name, error = err })
    return nil, err
  end
  return true
end

function Runner:stop()
  self.stopping = true
  while self.running do self.sleep(0.02) end
  self:release()
  return true
end

-- The events of the feed the projection subscribes to, up to position
-- (what it has handled, parked ones included) -> count | nil.
function Runner:handled_through(position)
  local p = self.projection
  local sql, args = { "SELECT count(*) FROM events WHERE position <= ?" }, { position or 0 }
  local function among(expr, set)
    local marks = {}
    for k in pairs(set) do
      marks[#marks + 1] = "?"
      args[#args + 1] = k
    end
    sql[#sql + 1] = " AND " .. expr .. " IN (" .. table.concat(marks, ",") .. ")"
  end
  if p.aggregates then among("substr(stream, 1, instr(stream, '#') - 1)", p.aggregates) end
  if p.events then among("type", p.events) end
  local rows = self.store.db:query(table.concat(sql), unpack(args))
  return rows and rows[1] and rows[1][1] or nil
end

function Runner:status()
  local ok, ierr = self:start()
  if not ok then return nil, ierr end
  local cp, err = self.backend:checkpoint(self.name)
  if not cp then return nil, err end
  local last, lerr = self.store:last_position()
  if not last then return nil, lerr end
  local err_text, failing = cp.error, nil
  if type(err_text) == "string" and err_text:sub(1, 1) == "{" then
    local e = require("tide.input").decode(err_text)
    if type(e) == "table" and e.message then
      err_text = e.message
      failing = { stream = e.stream, version = e.version, type = e.event_type }
    end
  end
  return {
    projection = self.name, feed = "sqlite", version = self.projection.version, now = cp.now,
    handled_total = self:handled_through(cp.position),
    checkpoint = cp.position, last_position = last, lag = last - cp.position,
    owner = self.owner, holder = cp.owner, lease_until = cp.lease_until, held = self.held == true,
    error = err_text, failing_event = failing, last_error = self.last_error, handled = self.handled,
  }
end

function Runner:read(tname, key)
  local item, err = self.backend:read_item(tname, key)
  if not item then return item, err end
  return projector_mod.user_view(item)
end

return M
