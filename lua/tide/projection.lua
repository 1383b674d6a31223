-- tide.projection: loads projection modules and checks their contract
-- (docs/projections.md).
--
-- A projection is a Lua module in the projections folder, named by its file
-- (projections/balances.lua is the projection "balances"):
--
--   local balances = {}
--   balances.subscribe = { aggregates = { "account" } }  -- and/or events = { "Deposited", ... }
--   balances.tables = { balances = { key = "id" } }      -- name -> {key=, mode="batch"|"conditional"}
--   balances.prefetch = function(event) return "balances", event.id end   -- optional
--   balances.handlers = { Opened = function(event, ctx) ... end, ... }    -- or balances.handle(event, ctx)
--   balances.before_batch = function(ctx) end             -- optional hooks
--   balances.after_batch = function(ctx) end
--   return balances
--
-- A sink (tide.sink) is a projection whose effect is publishing: it has
-- `sink = { kind = "kafka", topic = "..." }` and an optional
-- `publish(event)` instead of tables and handlers.
--
-- subscribe: with `aggregates` only, every event of those aggregates; with
-- `events` only, those event types of any aggregate; with both, those types
-- of those aggregates.
local core = require "tide.core"
local suggest = require("tide.suggest").closest_key

local M = {}

local Projection = {}
Projection.__index = Projection
M.Projection = Projection

M.MODES = { batch = true, conditional = true }

local function fail(path, fmt, ...)
  return nil, path .. ": " .. string.format(fmt, ...)
end


local function sorted_keys(t)
  local names = {}
  for k in pairs(t) do names[#names + 1] = tostring(k) end
  table.sort(names)
  return names
end
M.sorted_keys = sorted_keys

-- A list of strings -> set; nil, message when it is not one.
local function string_set(list, what)
  if type(list) ~= "table" then return nil, what .. " must be a list of names, e.g. { \"account\" }" end
  local set, n = {}, 0
  for k, v in pairs(list) do
    if type(k) ~= "number" or type(v) ~= "string" or v == "" then
      return nil, what .. " must be a list of non-empty strings, e.g. { \"account\" }; found "
        .. tostring(k) .. " = " .. tostring(v)
    end
    set[v] = true
    n = n + 1
  end
  if n == 0 then return nil, what .. " is empty: name at least one" end
  return set
end

-- Compiles and checks a module from its source text; returns a Projection
-- or nil, message (a message that says how to fix the module).
function M.from_source(name, source, path, opts)
  if type(name) ~= "string" or type(source) ~= "string" then
    error("projection.from_source(name, source [, path]): name and source must be strings", 2)
  end
  path = path or (name .. ".lua")
  local mod, err = require("tide.registry").run_source(name, source, path, opts)
  if not mod then return nil, err end

  -- subscribe
  local sub = mod.subscribe
  if sub == nil then
    return fail(path, "missing `subscribe`: say which events it reads, e.g. %s.subscribe = { aggregates = { \"account\" } }"
      .. " (and/or events = { \"Deposited\" })", name)
  end
  if type(sub) ~= "table" then
    return fail(path, "`subscribe` must be a table { aggregates = {...}, events = {...} }, got %s", type(sub))
  end
  for k in pairs(sub) do
    if k ~= "aggregates" and k ~= "events" then
      local hint = type(k) == "string" and suggest(k, { aggregates = true, events = true })
      return fail(path, "subscribe.%s is not a subscription field%s; use `aggregates` and/or `events`",
        tostring(k), hint and (" (did you mean `" .. hint .. "`?)") or "")
    end
  end
  if sub.aggregates == nil and sub.events == nil then
    return fail(path, "`subscribe` names nothing: add aggregates = { \"account\" } and/or events = { \"Deposited\" }")
  end
  local aggs, events
  if sub.aggregates ~= nil then
    local serr
    aggs, serr = string_set(sub.aggregates, "subscribe.aggregates")
    if not aggs then return nil, path .. ": " .. serr end
  end
  if sub.events ~= nil then
    local serr
    events, serr = string_set(sub.events, "subscribe.events")
    if not events then return nil, path .. ": " .. serr end
  end

  -- a sink publishes what it reads (tide.sink): no tables, no handlers
  if mod.sink ~= nil then
    local spec, serr = require("tide.sink").check(mod, name, path)
    if not spec then return nil, serr end
    return setmetatable({
      name = name, path = path, module = mod, tables = {}, sink = spec,
      version = core.sha256_hex(source):sub(1, 16),
      aggregates = aggs, events = events,
    }, Projection)
  end

  -- tables
  if type(mod.tables) ~= "table" or next(mod.tables) == nil then
    return fail(path, "missing `tables`: declare the read-model tables it writes, e.g. "
      .. "%s.tables = { %s = { key = \"id\" } }", name, name)
  end
  local tables = {}
  for tname, spec in pairs(mod.tables) do
    if type(tname) ~= "string" or not tname:match("^[%w_%-%.]+$") then
      return fail(path, "tables: %s is not a table name (letters, digits, _ - .)", tostring(tname))
    end
    if type(spec) ~= "table" then
      return fail(path, "tables.%s must be a table { key = \"id\" }, got %s", tname, type(spec))
    end
    if type(spec.key) ~= "string" or spec.key == "" then
      return fail(path, "tables.%s needs `key`, the item attribute that holds its key, e.g. { key = \"id\" }", tname)
    end
    if spec.key == "_tide" or spec.key == "_rev" then
      return fail(path, "tables.%s: the key cannot be %s (tide keeps its own guards there)", tname, spec.key)
    end
    local mode = spec.mode or "batch"
    if not M.MODES[mode] then
      return fail(path, "tables.%s.mode must be \"batch\" (items written by the events of one stream) or "
        .. "\"conditional\" (items that gather many streams), got %s", tname, tostring(spec.mode))
    end
    for k in pairs(spec) do
      if k ~= "key" and k ~= "mode" then
        return fail(path, "tables.%s.%s is not a table option; use `key` and `mode`", tname, tostring(k))
      end
    end
    tables[tname] = { key = spec.key, mode = mode }
  end

  -- handlers
  if mod.handlers ~= nil and mod.handle ~= nil then
    return fail(path, "define either `handlers` (one function per event type) or `handle(event, ctx)`, not both")
  end
  if mod.handle ~= nil and type(mod.handle) ~= "function" then
    return fail(path, "`handle` must be a function(event, ctx), got %s", type(mod.handle))
  end
  if mod.handle == nil then
    if type(mod.handlers) ~= "table" then
      return fail(path, "missing `handlers`: add one function per event type, e.g. "
        .. "%s.handlers = { Opened = function(event, ctx) ctx:put(...) end } (or one %s.handle(event, ctx))", name, name)
    end
    if next(mod.handlers) == nil then return fail(path, "`handlers` is empty: add at least one handler") end
    for ename, h in pairs(mod.handlers) do
      if type(ename) ~= "string" then return fail(path, "`handlers` keys must be event type names (strings)") end
      if type(h) ~= "function" then
        return fail(path, "handlers.%s must be a function(event, ctx), got %s", ename, type(h))
      end
      if events and not events[ename] then
        return fail(path, "handlers.%s is never called: subscribe.events does not list %s (add it, or drop the handler)",
          ename, ename)
      end
    end
  end
  for _, hook in ipairs{ "before_batch", "after_batch", "prefetch" } do
    if mod[hook] ~= nil and type(mod[hook]) ~= "function" then
      return fail(path, "`%s` must be a function, got %s", hook, type(mod[hook]))
    end
  end
  local known = { subscribe = true, tables = true, handlers = true, handle = true, prefetch = true,
                  before_batch = true, after_batch = true, description = true }
  for k in pairs(mod) do
    if type(k) == "string" and not known[k] and not k:match("^_") then
      local hint = suggest(k, known)
      if hint then
        return fail(path, "`%s` is not a projection field (did you mean `%s`?)", k, hint)
      end
    end
  end

  return setmetatable({
    name = name, path = path, module = mod, tables = tables,
    version = core.sha256_hex(source):sub(1, 16),
    aggregates = aggs, events = events,
  }, Projection)
end

-- Loads projections/<name>.lua.
M.load_file = require("tide.registry").file_loader("projection", function(...) return M.from_source(...) end)

-- True when the events of stream's aggregate may concern the projection:
-- their versions are tracked (positions) even for types it does not handle.
function Projection:tracks(aggregate)
  return self.aggregates == nil or self.aggregates[aggregate] == true
end

-- True when the projection's handlers run for event ({aggregate=, type=}).
function Projection:subscribes(event)
  if self.aggregates and not self.aggregates[event.aggregate] then return false end
  if self.events then return self.events[event.type] == true end
  return true
end

-- The handler of an event type, or nil when it handles none (the event
-- only moves the stream's position).
function Projection:handler(event_type)
  local mod = self.module
  if self.sink then return mod.publish or true end
  if mod.handle then return mod.handle end
  return mod.handlers[event_type]
end

-- Names of the tables, sorted.
function Projection:table_names()
  return sorted_keys(self.tables)
end

------------------------------------------------------------------------
-- The registry: every projection of a folder.

-- projection.registry(dir [, opts]) -> registry (tide.registry, with hot reload;
-- reg.projections is its name -> module map); opts.sandbox = false: the
-- folder's modules run without tide's sandbox
-- A read-model table belongs to one projection: a module declaring a
-- table another loaded projection writes is an error naming both ->
-- message | nil.
function M.table_conflict(reg, name, mod)
  for _, t in ipairs(mod:table_names()) do
    for other, p in pairs(reg.entries) do
      if other ~= name and p.tables and p.tables[t] then
        return ("read-model table '%s' is declared by projection '%s' and by projection '%s': a table "
          .. "belongs to one projection; rename it in one of them"):format(t, other, name)
      end
    end
  end
end

function M.registry(dir, opts)
  if type(dir) ~= "string" then error("projection.registry(dir): dir must be a string", 2) end
  local reg = require("tide.registry").new{ dir = dir, kind = "projection", sandbox = opts and opts.sandbox,
                                            load_file = M.load_file, from_source = M.from_source,
                                            conflict = M.table_conflict }
  reg.projections = reg.entries
  return reg
end

return M
