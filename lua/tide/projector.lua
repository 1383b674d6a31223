-- tide.projector: the store-neutral batch logic of projections
-- (docs/projections.md, "Idempotency and order" and "Pieces").
--
--   local p = projector.new{ projection = proj, backend = backend,
--                            reader = reader,          -- reader(stream, after_version, before_version)
--                            aggregates = registry,    -- optional: upcasting
--                            log = function(level, msg, fields) end,   -- optional
--                            max_cached = 100000 }     -- optional: items and positions kept between batches
--   local plan, err = p:apply(events)   -- events in source order
--   p:committed(plan)                   -- after the backend wrote the plan
--   p:reset()                           -- after a failed write
--
-- Events are {stream=, version=, type=, data=, meta=} (aggregate and id are
-- derived from the stream "<aggregate>#<id>" when absent); data and meta may
-- be decoded tables, or stored text (data as AttributeValue JSON, meta as
-- JSON), which is decoded (and upcast) only for the events that are applied.
-- An event with as_stored = true has its data decoded but as stored: it is
-- upcast (in place) when applied.
--
-- apply writes nothing. It
--   1. drops events of streams the projection does not track,
--   2. reads the positions of the batch's streams it does not know yet
--      (backend:get_positions) and skips every event at or below its
--      stream's position; an event above position + 1 is a gap: the
--      missing versions come from reader and are applied first,
--   3. prefetches the items the module's prefetch names (one
--      backend:get_items for the batch),
--   4. runs before_batch, the handlers, after_batch in a working set that
--      overlays the items of earlier batches; each put carries the item
--      guards (_tide[stream] = version, _rev), and a put, update or delete
--      for (stream, v) on an item whose _tide[stream] >= v is ignored,
--   5. returns the plan: the items changed, the new positions, counts.
-- A sink (tide.sink) takes steps 1 and 2 as they are, then publishes the
-- batch's events in order and returns once their delivery reports
-- succeeded: its plan has positions and no items.
-- A handler (or hook, or prefetch) that raises stops the batch: apply
-- returns nil, err with the event and the traceback, and nothing of the
-- batch is kept.
local core = require "tide.core"
local stream_mod = require "tide.stream"
local terror = require "tide.error"
local suggest = require("tide.suggest").closest_key

local type, pairs, ipairs, tostring, setmetatable, error, xpcall =
  type, pairs, ipairs, tostring, setmetatable, error, xpcall
local budget = require "tide.budget"
local user_traceback = require("tide.sandbox").traceback
-- Copies of read-model items are made for every event: sized up front,
-- a small item's table is not rehashed as its fields go in.
local new_tab = require "table.new"
local ITEM_FIELDS = 8

local M = {}

local SEP = "\0"

------------------------------------------------------------------------
-- Errors

M.Error = terror.Error

-- kind: "handler_error" (a handler, hook or prefetch raised or broke the
-- contract), "invalid_event" (an event that cannot be decoded or upcast),
-- "gap" (the reader could not fill a gap), "store" (a backend or reader
-- failure); a tide.error naming the projection and the event.
local function new_error(kind, message, fields)
  local e = fields or {}
  e.kind, e.message = kind, message
  if e.event then
    e.stream = e.stream or e.event.stream
    e.version = e.version or e.event.version
    e.event_type = e.event_type or e.event.type
  end
  return terror.new(e)
end
M.new_error = new_error

-- A failure of the backend inside ctx:get, raised through the handler's
-- xpcall and turned into a "store" error (not a handler error).
local StoreFail = {}
StoreFail.__index = StoreFail

------------------------------------------------------------------------
-- Events: names and decoding are tide.stream's.

local split_stream, upcast_stored = stream_mod.split, stream_mod.upcast
M.split_stream = split_stream

-- A stored row -> the projector's event shape (tide.stream.decode).
M.decode = stream_mod.decode

-- A reader over a store with load(stream, after_version) (the event store
-- interface of docs/data-model.md): reader(stream, after, before) -> the
-- stored events with after < version < before (rows; the projector decodes
-- them) | nil, err.
function M.store_reader(store)
  return function(stream, after, before)
    local rows, err = store:load(stream, after)
    if not rows then return nil, err end
    local out = {}
    for _, r in ipairs(rows) do
      if before and r.version >= before then break end
      r.stream = stream
      out[#out + 1] = r
    end
    return out
  end
end

------------------------------------------------------------------------
-- Items

local function copy(v, depth)
  if type(v) ~= "table" then return v end
  depth = (depth or 0) + 1
  if depth > 64 then error("item nested more than 64 levels deep (or a cycle)", 0) end
  local c = new_tab(0, ITEM_FIELDS)
  for k, x in pairs(v) do c[k] = copy(x, depth) end
  return setmetatable(c, getmetatable(v))
end
M.copy = copy

-- A copy of an item without the guards (and a tombstone's mark): what
-- handlers get from ctx:get, and what ctx:put stores of the table it is
-- given.
local function user_view(item)
  local c = new_tab(0, ITEM_FIELDS)
  for k, x in pairs(item) do
    if k ~= "_tide" and k ~= "_rev" and k ~= "_deleted" then
      if type(x) == "table" then x = copy(x) end
      c[k] = x
    end
  end
  return c
end
M.user_view = user_view

------------------------------------------------------------------------
-- The projector

local Projector = {}
Projector.__index = Projector

function M.new(opts)
  if type(opts) ~= "table" or type(opts.projection) ~= "table" or type(opts.backend) ~= "table" then
    error("projector.new{projection=, backend=, reader=}: projection and backend are required", 2)
  end
  if opts.reader ~= nil and type(opts.reader) ~= "function" then
    error("projector.new: reader must be a function(stream, after_version, before_version)", 2)
  end
  return setmetatable({
    projection = opts.projection,
    name = opts.projection.name,
    backend = opts.backend,
    reader = opts.reader,
    aggregates = opts.aggregates,
    log = opts.log or function() end,
    max_cached = opts.max_cached or 100000,
    parking = opts.parking,         -- tide.projection.parking: events an operator set aside
    items = {}, nitems = 0,         -- "table\0key" -> the committed item (its _rev) | false (absent)
    positions = {}, npositions = 0, -- stream -> version (committed)
  }, Projector)
end

function Projector:reset()
  self.items, self.nitems = {}, 0
  self.positions, self.npositions = {}, 0
end

-- After the backend wrote plan: its items and positions become the known
-- committed state.
function Projector:committed(plan)
  if self.nitems > self.max_cached then self.items, self.nitems = {}, 0 end
  if self.npositions > self.max_cached then self.positions, self.npositions = {}, 0 end
  local items = self.items
  for _, it in ipairs(plan.items) do
    local k = it.table .. SEP .. it.key
    if items[k] == nil then self.nitems = self.nitems + 1 end
    items[k] = it.item or false
  end
  local positions = self.positions
  for stream, v in pairs(plan.positions) do
    if positions[stream] == nil then self.npositions = self.npositions + 1 end
    positions[stream] = v
  end
end

-- Guards are pruned: an item's guard (_tide[stream] = v) only matters
-- while stream's durable position may be below v (the items of a batch
-- are written before its positions; a worker that dies between the two
-- leaves events to deliver again). Once the position reached v, step 2
-- skips those events before any item is looked at, so the entry can go.
-- An item with more than M.GUARD_PRUNE_AT entries (an item fed by many
-- streams: a total, an index) keeps only the entries whose stream's
-- position is not known to have reached them: a conditional item cannot
-- grow towards DynamoDB's 400 KB item limit.
M.GUARD_PRUNE_AT = 64

function Projector:prune_guards(order, plan)
  local big
  for _, e in ipairs(order) do
    local g = (e.item or e.tomb or {})._tide
    if g then
      local n = 0
      for _ in pairs(g) do n = n + 1 end
      if n > M.GUARD_PRUNE_AT then
        big = big or {}
        big[#big + 1] = g
      end
    end
  end
  if not big then return true end
  local positions, need, seen = self.positions, {}, {}
  for _, g in ipairs(big) do
    for s in pairs(g) do
      if positions[s] == nil and not seen[s] then
        seen[s] = true
        need[#need + 1] = s
      end
    end
  end
  if #need > 0 then
    -- durable positions of those streams (a lower bound is enough: the
    -- cache only ever holds what was read or committed)
    local got, err = self.backend:get_positions(self.name, need)
    if not got then
      return nil, new_error("store", "reading positions failed: " .. tostring(err), { projection = self.name,
                            cause = err })
    end
    for _, s in ipairs(need) do
      positions[s] = got[s] or 0
      self.npositions = self.npositions + 1
    end
  end
  local pruned = 0
  for _, g in ipairs(big) do
    for s, v in pairs(g) do
      local p = positions[s]
      if p and p >= v and plan.positions[s] == nil then
        g[s] = nil
        pruned = pruned + 1
      end
    end
  end
  plan.pruned = (plan.pruned or 0) + pruned
  return true
end

-- ---- the batch -------------------------------------------------------------

local Batch = {}
Batch.__index = Batch

local Ctx = {}
Ctx.__index = Ctx

-- The table spec of name, or raises with a fix-it (level: the handler).
local function table_spec(b, name, method)
  local spec = b.projection.tables[name]
  if spec then return spec end
  local names = b.projection:table_names()
  local hint = type(name) == "string" and suggest(name, b.projection.tables)
  error(("ctx:%s: unknown table %s%s; %s declares: %s (add it to %s.tables)"):format(method,
    type(name) == "string" and ("'" .. name .. "'") or ("(a " .. type(name) .. ")"),
    hint and (" (did you mean '" .. hint .. "'?)") or "", b.projection.name,
    table.concat(names, ", "), b.projection.name), 3)
end

local function check_key(name, method, key)
  if type(key) == "number" then
    error(("ctx:%s(\"%s\", %s): keys are strings: pass tostring(%s)"):format(method, name, tostring(key),
      tostring(key)), 3)
  end
  if type(key) ~= "string" or key == "" then
    error(("ctx:%s(\"%s\", key): key must be a non-empty string, got %s"):format(method, name,
      key == "" and "an empty string" or type(key)), 3)
  end
end

-- A batch entry for the stored item (false: absent). A tombstone (an item
-- deleted on a store that writes the guards of deletions, see
-- docs/projections.md) is an absent item whose guards still count.
local function new_entry(tname, key, mode, stored)
  local e = { table = tname, key = key, mode = mode, item = stored, expected_rev = stored and stored._rev or false }
  if stored and stored._deleted then
    e.item, e.tomb = false, stored
  end
  return e
end

-- The batch entry of (table, key), loading the item when needed.
function Batch:entry(tname, key, spec)
  local k = tname .. SEP .. key
  local e = self.ws[k]
  if e then return e end
  local item = self.p.items[k]
  if item == nil then
    -- waiting for the store is not the handler's time
    local got, err = budget.io(self.p.backend.get_items, self.p.backend, { { table = tname, key = key } })
    if not got then
      error(setmetatable({ err = err, table = tname, key = key }, StoreFail), 0)
    end
    item = got[k] or false
  end
  e = new_entry(tname, key, spec.mode, item)
  self.ws[k] = e
  return e
end

-- True when the current event is already reflected in item (its guard).
function Batch:guarded(item)
  local ev = self.event
  if not ev or not item then return false end
  local seen = item._tide and item._tide[ev.stream]
  return seen ~= nil and seen >= ev.version
end

function Batch:touch(e)
  if not e.dirty then
    e.dirty = true
    self.order[#self.order + 1] = e
  end
end

-- Stores item (a fresh table owned by the batch; false: a deletion) into
-- entry e, with guards. The guards of an item this batch stored are its
-- own, and are updated in place; those of a committed item are shared, and
-- are copied. A deletion keeps the item's last state and guards, the
-- deleting event's included, in e.tomb: for a put later in the batch, and
-- for the stores that write them (a tombstone) until the positions are
-- durable.
function Batch:store(e, item)
  local old = e.item or e.tomb
  local tide
  if e.own_guards and old and old._tide then
    tide = old._tide
  else
    tide = {}
    if old and old._tide then
      for s, v in pairs(old._tide) do tide[s] = v end
    end
  end
  local ev = self.event
  if ev then tide[ev.stream] = ev.version end
  if item then
    item._tide = tide
    item._rev = nil
    e.item = item
  else
    local tomb = user_view(old)
    tomb._tide, tomb._deleted = tide, true
    e.item, e.tomb = false, tomb
  end
  e.own_guards = true
  self:touch(e)
end

function Ctx:get(tname, key)
  local b = self._batch
  local spec = table_spec(b, tname, "get")
  check_key(tname, "get", key)
  local e = b:entry(tname, key, spec)
  local item = e.item
  if not item then
    -- A deleted item is absent, except to an event delivered again that
    -- its tombstone already reflects: that one sees the state before the
    -- deletion, as with any item (and what it writes is ignored).
    local tomb = e.tomb
    if not (tomb and b:guarded(tomb)) then return nil end
    item = tomb
  end
  return user_view(item)
end

function Ctx:put(tname, item)
  local b = self._batch
  local spec = table_spec(b, tname, "put")
  if type(item) ~= "table" then
    error(("ctx:put(\"%s\", item): item must be a table holding its key `%s`, got %s"):format(tname, spec.key,
      type(item)), 2)
  end
  local key = item[spec.key]
  if key == nil then
    error(("ctx:put(\"%s\", item): the item has no `%s`, the table's key attribute: set item.%s"):format(tname,
      spec.key, spec.key), 2)
  end
  if type(key) == "number" then
    error(("ctx:put(\"%s\", item): item.%s is a number; keys are strings: set item.%s = tostring(...)"):format(
      tname, spec.key, spec.key), 2)
  end
  check_key(tname, "put", key)
  local e = b:entry(tname, key, spec)
  if b:guarded(e.item or e.tomb) then
    b.ignored = b.ignored + 1
    return false
  end
  b:store(e, user_view(item)) -- a copy: the handler keeps its table
  return true
end

function Ctx:update(tname, key, fields)
  local b = self._batch
  local spec = table_spec(b, tname, "update")
  check_key(tname, "update", key)
  if type(fields) ~= "table" then
    error(("ctx:update(\"%s\", \"%s\", fields): fields must be a table"):format(tname, key), 2)
  end
  if fields[spec.key] ~= nil and fields[spec.key] ~= key then
    error(("ctx:update(\"%s\", \"%s\", fields): fields.%s differs from the key; the key of an item cannot change"):format(
      tname, key, spec.key), 2)
  end
  local e = b:entry(tname, key, spec)
  if b:guarded(e.item or e.tomb) then
    b.ignored = b.ignored + 1
    return false
  end
  local fresh = {}
  if e.item then
    for k, v in pairs(e.item) do
      if k ~= "_tide" and k ~= "_rev" then fresh[k] = v end -- shared: never mutated in place
    end
  end
  for k, v in pairs(fields) do
    if k ~= "_tide" and k ~= "_rev" then fresh[k] = copy(v) end
  end
  fresh[spec.key] = key
  b:store(e, fresh)
  return true
end

function Ctx:delete(tname, key)
  local b = self._batch
  local spec = table_spec(b, tname, "delete")
  check_key(tname, "delete", key)
  local e = b:entry(tname, key, spec)
  if not e.item then return false end
  if b:guarded(e.item) then
    b.ignored = b.ignored + 1
    return false
  end
  b:store(e, false)
  return true
end

local function handler_traceback(err)
  if getmetatable(err) == StoreFail then return err end
  return user_traceback(err)
end

-- Runs fn(...) as user code, under the budget (tide.budget); returns
-- true, results | false, err (an Error).
function Batch:call(what, fn, ...)
  local ok, r1, r2 = budget.call(what, handler_traceback, fn, ...)
  if ok then return true, r1, r2 end
  local ev = self.event
  if getmetatable(r1) == StoreFail then
    return false, new_error("store", "reading an item failed: " .. tostring(r1.err),
      { projection = self.p.name, event = ev, table = r1.table, key = r1.key, cause = r1.err })
  end
  return false, new_error("handler_error", what .. " raised: " .. tostring(r1),
    { projection = self.p.name, event = ev })
end

-- Normalizes the prefetch result into requests.
local function prefetch_requests(b, ev, r1, r2, out)
  if r1 == nil then return true end
  if type(r1) == "string" then
    if b.projection.tables[r1] and type(r2) == "string" then
      out[#out + 1] = { table = r1, key = r2 }
      return true
    end
  elseif type(r1) == "table" then
    for _, r in ipairs(r1) do
      local t, k = r.table or r[1], r.key or r[2]
      if type(t) ~= "string" or not b.projection.tables[t] or type(k) ~= "string" then
        return false
      end
      out[#out + 1] = { table = t, key = k }
    end
    return true
  end
  return false
end

local parked_key = function(stream, version) return stream .. SEP .. tostring(version) end

-- Parking (tide.projection.parking): an event an operator parked is passed
-- over (its stream's position moves past it; plan.parked counts it). The
-- parked set is read when the projector starts and again after a batch
-- failed on an event: when that event has been parked since, the batch is
-- applied again at once, without it.
function Projector:apply(events)
  if type(events) ~= "table" then error("projector:apply(events): events must be a list", 2) end
  if not self.parking then return self:apply_once(events) end
  if not self.parked then
    local set, err = self.parking:set(self.name)
    if not set then return nil, new_error("store", "reading the parked events failed: " .. tostring(err),
      { projection = self.name, cause = err }) end
    self.parked = set
  end
  local plan, err = self:apply_once(events)
  if plan or (err.kind ~= "handler_error" and err.kind ~= "invalid_event") or not err.stream or not err.version then
    return plan, err
  end
  local set = self.parking:set(self.name)
  if set then self.parked = set end
  if self.parked[parked_key(err.stream, err.version)] then return self:apply_once(events) end
  return nil, err
end

function Projector:apply_once(events)
  local proj, name = self.projection, self.name
  local parked = self.parked
  local plan = { items = {}, positions = {}, applied = 0, skipped = 0, filled = 0, ignored = 0, untracked = 0,
                 parked = 0 }

  -- 1. the tracked events (list[i] of stream list_stream[i])
  local list, list_stream, need, seen = {}, {}, {}, {}
  for i = 1, #events do
    local e = events[i]
    local stream = e.stream
    if type(stream) ~= "string" then
      if type(e.aggregate) == "string" and type(e.id) == "string" then
        stream = stream_mod.of(e.aggregate, e.id)
      else
        error(("projector:apply: events[%d] has no stream"):format(i), 2)
      end
    end
    if type(e.version) ~= "number" or type(e.type) ~= "string" then
      error(("projector:apply: events[%d] needs a number version and a string type"):format(i), 2)
    end
    local agg = e.aggregate or split_stream(stream)
    if proj:tracks(agg) then
      list[#list + 1] = e
      list_stream[#list] = stream
      if self.positions[stream] == nil and not seen[stream] then
        seen[stream] = true
        need[#need + 1] = stream
      end
    else
      plan.untracked = plan.untracked + 1
    end
  end

  -- 2. positions, duplicates and gaps
  if #need > 0 then
    local got, err = self.backend:get_positions(name, need)
    if not got then
      return nil, new_error("store", "reading positions failed: " .. tostring(err), { projection = name, cause = err })
    end
    for _, s in ipairs(need) do
      self.positions[s] = got[s] or 0
      self.npositions = self.npositions + 1
    end
  end
  local pos = plan.positions
  local todo, todo_stream = {}, {}
  for i = 1, #list do
    local e, stream = list[i], list_stream[i]
    local cur = pos[stream] or self.positions[stream]
    local v = e.version
    if v <= cur then
      plan.skipped = plan.skipped + 1
    else
      if v > cur + 1 then
        if not self.reader then
          return nil, new_error("gap", ("version %d follows %d and there is no reader to fill the gap"):format(v, cur),
            { projection = name, stream = stream, version = v })
        end
        local filled, rerr = self.reader(stream, cur, v)
        if not filled then
          return nil, new_error("store", ("filling the gap %d..%d failed: %s"):format(cur + 1, v - 1, tostring(rerr)),
            { projection = name, stream = stream, version = v, cause = rerr })
        end
        local expect = cur + 1
        for _, f in ipairs(filled) do
          if f.version == expect then
            todo[#todo + 1] = f
            todo_stream[#todo] = stream
            expect = expect + 1
            plan.filled = plan.filled + 1
          elseif f.version > expect then
            break
          end
        end
        if expect ~= v then
          return nil, new_error("gap", ("version %d follows %d and the reader has no version %d"):format(v, cur, expect),
            { projection = name, stream = stream, version = v })
        end
      end
      todo[#todo + 1] = e
      todo_stream[#todo] = stream
      pos[stream] = v
    end
  end

  -- 3. decode what is applied; prefetch
  local b = setmetatable({ p = self, projection = proj, ws = {}, order = {}, ignored = 0 }, Batch)
  local ctx = setmetatable({ _batch = b, projection = name }, Ctx)
  local run = {}
  for i = 1, #todo do
    local e, stream = todo[i], todo_stream[i]
    local ev = e
    if parked and parked[parked_key(stream, e.version)] then
      plan.parked = plan.parked + 1
      self.log("warn", "passing over a parked event", { projection = name, stream = stream, version = e.version })
      goto continue
    end
    if e.as_stored and type(e.data) == "table" and type(e.meta) == "table" and e.id ~= nil then
      -- Decoded by the source (a Streams page), not upcast yet: upcast in
      -- place, once (the batch owns the event; a retried batch finds it done).
      local up, uerr = upcast_stored(self.aggregates, e.aggregate, e.type, e.data, e.meta)
      if not up then
        return nil, new_error("invalid_event", tostring(uerr), { projection = name, stream = stream,
          version = e.version, event_type = e.type })
      end
      e.data, e.as_stored = up, nil
    end
    if type(e.data) ~= "table" or type(e.meta) ~= "table" or e.stream == nil or e.aggregate == nil or e.id == nil then
      local row = e
      if e.stream == nil then
        row = {}
        for k, x in pairs(e) do row[k] = x end
        row.stream = stream
      end
      local derr
      ev, derr = M.decode(row, self.aggregates)
      if not ev then
        return nil, new_error("invalid_event", tostring(derr), { projection = name, stream = stream,
          version = e.version, event_type = e.type })
      end
    end
    if proj:subscribes(ev) and proj:handler(ev.type) then
      run[#run + 1] = ev
    end
    ::continue::
  end
  if proj.sink then
    -- a sink (tide.sink): publish the batch in order and return once every
    -- delivery report succeeded; the plan holds only the positions
    if #run > 0 then
      local n, perr = require("tide.sink").publish(proj, run, new_error)
      if not n then return nil, perr end
      plan.published = n
    end
    plan.applied = #run
    return plan
  end
  local prefetch = proj.module.prefetch
  if prefetch and #run > 0 then
    local reqs, asked, got = {}, {}, {}
    for _, ev in ipairs(run) do
      b.event = ev
      local ok, r1, r2 = b:call("prefetch", prefetch, ev)
      if not ok then return nil, r1 end
      for j = #got, 1, -1 do got[j] = nil end
      if not prefetch_requests(b, ev, r1, r2, got) then
        return nil, new_error("handler_error", ("prefetch must return a table name and a key (strings), or a list of "
          .. "{table, key}, with a table of %s.tables; got %s, %s"):format(name, tostring(r1), tostring(r2)),
          { projection = name, event = ev })
      end
      for _, r in ipairs(got) do
        local k = r.table .. SEP .. r.key
        if not asked[k] and self.items[k] == nil then
          asked[k] = true
          reqs[#reqs + 1] = r
        end
      end
    end
    b.event = nil
    if #reqs > 0 then
      local items, err = self.backend:get_items(reqs)
      if not items then
        return nil, new_error("store", "prefetching items failed: " .. tostring(err), { projection = name, cause = err })
      end
      for _, r in ipairs(reqs) do
        local k = r.table .. SEP .. r.key
        b.ws[k] = new_entry(r.table, r.key, proj.tables[r.table].mode, items[k] or false)
      end
    end
  end

  -- 4. hooks and handlers
  local mod = proj.module
  if mod.before_batch then
    local ok, err = b:call(name .. ".before_batch", mod.before_batch, ctx)
    if not ok then return nil, err end
  end
  local what_of = {} -- event type -> the handler's name in error messages
  for _, ev in ipairs(run) do
    b.event = ev
    ctx.event = ev
    local h = proj:handler(ev.type)
    local what = what_of[ev.type]
    if not what then
      what = mod.handle and (name .. ".handle") or (name .. ".handlers." .. ev.type)
      what_of[ev.type] = what
    end
    local ok, err = b:call(what, h, ev, ctx)
    if not ok then return nil, err end
    plan.applied = plan.applied + 1
  end
  b.event, ctx.event = nil, nil
  if mod.after_batch then
    local ok, err = b:call(name .. ".after_batch", mod.after_batch, ctx)
    if not ok then return nil, err end
  end

  -- 5. the plan
  local ok, perr = self:prune_guards(b.order, plan)
  if not ok then return nil, perr end
  -- The batch's entries are the plan's items ({table, key, item | nil,
  -- expected_rev, mode, tomb = the guards of a deleted item}, and the
  -- batch's own fields): the batch is done.
  for _, e in ipairs(b.order) do
    local item = e.item
    if item then
      item._rev = (e.expected_rev or 0) + 1
      e.tomb = nil
    else
      e.item = nil
      e.tomb._rev = (e.expected_rev or 0) + 1
    end
    plan.items[#plan.items + 1] = e
  end
  plan.ignored = b.ignored
  return plan
end

return M
