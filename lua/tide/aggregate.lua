-- tide.aggregate: loads aggregate modules and checks their contract.
--
-- An aggregate is a Lua module in the aggregates folder, named by its file
-- (aggregates/account.lua is the aggregate "account"):
--
--   local account = {}
--   account.initial = { status = "new", balance = 0 }   -- or a function returning it
--   account.commands = {                                -- one handler per command type
--     Deposit = function(state, cmd, ctx)
--       if state.status ~= "open" then return nil, "account is not open" end
--       return { type = "Deposited", amount = cmd.amount }   -- or a list of events
--     end,
--   }
--   account.events = {                                  -- one applier per event type
--     Deposited = function(state, event) state.balance = state.balance + event.amount; return state end,
--   }
--   account.schemas = { commands = { Deposit = { amount = { type = "integer", min = 1 } } },
--                       events = { Deposited = { amount = "integer" } } }   -- optional
--   account.upcasters = { Deposited = { [1] = function(data) ... return data end } } -- optional
--   account.snapshot_every = 100                          -- optional
--   account.snapshot_version = 1                          -- optional: bump when the state's shape changes
--   account.batching = false                              -- optional: one write per command on a hot stream
--   return account
--
-- Handlers are pure: they read the state and the command and return events,
-- or nil and a reason to reject the command. Appliers fold one event into
-- the state and return the new state.
local core = require "tide.core"
local schema = require "tide.schema"
local budget = require "tide.budget"
local sandbox = require "tide.sandbox"

local M = {}

local Aggregate = {}
Aggregate.__index = Aggregate
M.Aggregate = Aggregate

local new_tab = require "table.new"

-- A deep copy that keeps metatables (core.list, tide.number...).
local function deep_copy(v, depth)
  if type(v) ~= "table" then return v end
  depth = (depth or 0) + 1
  if depth > 64 then error("state nested more than 64 levels deep (or a cycle)", 0) end
  local c = new_tab(#v, 4) -- room for a small state's keys: no rehash at 1, 2 and 4
  for k, x in pairs(v) do
    if type(x) == "table" then x = deep_copy(x, depth) end -- (no call per plain value)
    c[k] = x
  end
  -- (not a tail call: a trace cannot return to a lower frame from setmetatable)
  setmetatable(c, getmetatable(v))
  return c
end
M.deep_copy = deep_copy

local function fail(path, fmt, ...)
  return nil, path .. ": " .. string.format(fmt, ...)
end

-- Compiles and checks a module from its source text; returns an Aggregate
-- or nil, message (a message that says how to fix the module).
function M.from_source(name, source, path, opts)
  path = path or (name .. ".lua")
  local mod, err = require("tide.registry").run_source(name, source, path, opts)
  if not mod then return nil, err end
  if type(mod.commands) ~= "table" then
    return fail(path, "missing `commands`: add a table of handlers, e.g. %s.commands = { Open = function(state, cmd, ctx) ... end }", name)
  end
  if type(mod.events) ~= "table" then
    return fail(path, "missing `events`: add a table of appliers, e.g. %s.events = { Opened = function(state, event) ... return state end }", name)
  end
  if next(mod.commands) == nil then return fail(path, "`commands` is empty: add at least one handler") end
  for cname, h in pairs(mod.commands) do
    if type(cname) ~= "string" then return fail(path, "`commands` keys must be command type names (strings)") end
    if type(h) ~= "function" then
      return fail(path, "commands.%s must be a function(state, cmd, ctx), got %s", cname, type(h))
    end
  end
  for ename, a in pairs(mod.events) do
    if type(ename) ~= "string" then return fail(path, "`events` keys must be event type names (strings)") end
    if type(a) ~= "function" then
      return fail(path, "events.%s must be a function(state, event) returning the new state, got %s", ename, type(a))
    end
  end
  local init = mod.initial
  if init == nil then init = {} end
  if type(init) ~= "table" and type(init) ~= "function" then
    return fail(path, "`initial` must be a table or a function returning the initial state, got %s", type(init))
  end
  local self = setmetatable({ name = name, path = path, module = mod,
                              version = core.sha256_hex(source):sub(1, 16),
                              initial_value = init }, Aggregate)
  local st, serr = self:initial_state()
  if not st then return nil, path .. ": " .. serr end
  -- schemas
  self.command_schemas, self.event_schemas = {}, {}
  if mod.schemas ~= nil then
    if type(mod.schemas) ~= "table" then
      return fail(path, "`schemas` must be a table { commands = {...}, events = {...} }")
    end
    for _, kind in ipairs{ "commands", "events" } do
      local target = kind == "commands" and self.command_schemas or self.event_schemas
      local known = kind == "commands" and mod.commands or mod.events
      for tname, spec in pairs(mod.schemas[kind] or {}) do
        if not known[tname] then
          return fail(path, "schemas.%s.%s names no %s handler", kind, tostring(tname),
                      kind == "commands" and "command" or "event")
        end
        local compiled, cerr = schema.compile(spec)
        if not compiled then return fail(path, "schemas.%s.%s: %s", kind, tname, cerr) end
        target[tname] = compiled
      end
    end
  end
  -- upcasters
  self.schema_versions = {}
  if mod.upcasters ~= nil then
    if type(mod.upcasters) ~= "table" then
      return fail(path, "`upcasters` must be a table { EventType = { [1] = function(data) ... end } }")
    end
    for ename, chain in pairs(mod.upcasters) do
      if not mod.events[ename] then return fail(path, "upcasters.%s names no event applier", tostring(ename)) end
      if type(chain) ~= "table" then return fail(path, "upcasters.%s must be a list of functions", ename) end
      local n = 0
      for k, f in pairs(chain) do
        if type(k) ~= "number" or type(f) ~= "function" then
          return fail(path, "upcasters.%s[%s] must be a function(data) upgrading schema %s to %s",
                      ename, tostring(k), tostring(k), tostring(k) .. "+1")
        end
        n = math.max(n, k)
      end
      for k = 1, n do
        if not chain[k] then return fail(path, "upcasters.%s has no step [%d]: the chain must be 1..%d", ename, k, n) end
      end
      self.schema_versions[ename] = n + 1
    end
  end
  if mod.snapshot_every ~= nil and (type(mod.snapshot_every) ~= "number" or mod.snapshot_every < 1
                                    or mod.snapshot_every ~= math.floor(mod.snapshot_every)) then
    return fail(path, "`snapshot_every` must be a positive integer (events between snapshots)")
  end
  self.snapshot_every = mod.snapshot_every
  if mod.batching ~= nil and type(mod.batching) ~= "boolean" then
    return fail(path, "`batching` must be true or false (whether commands waiting on one stream share a write)")
  end
  self.batching = mod.batching
  self.snapshot_version = mod.snapshot_version or 1
  return self
end

-- Loads aggregates/<name>.lua.
M.load_file = require("tide.registry").file_loader("aggregate", function(...) return M.from_source(...) end)

function Aggregate:initial_state()
  local init = self.initial_value
  if type(init) == "function" then
    local ok, st = budget.call(self.name .. ".initial", sandbox.traceback, init)
    if not ok then return nil, "`initial` raised: " .. tostring(st) end
    if type(st) ~= "table" then return nil, "`initial` must return a table (the initial state), got " .. type(st) end
    return st
  end
  return deep_copy(init)
end

-- The current schema version of an event type (1 without upcasters).
function Aggregate:schema_version(event_type)
  return self.schema_versions[event_type] or 1
end

-- Raises data of schema `from` to the current schema; returns data or
-- nil, message.
function Aggregate:upcast(event_type, data, from)
  local target = self:schema_version(event_type)
  from = from or 1
  if from > target then
    return nil, ("event %s has schema %d, newer than this module knows (%d): deploy the newer module")
      :format(event_type, from, target)
  end
  local chain = self.module.upcasters and self.module.upcasters[event_type]
  for v = from, target - 1 do
    local ok, out = budget.call(("%s.upcasters.%s[%d]"):format(self.name, event_type, v), sandbox.traceback,
                                chain[v], data)
    if not ok then return nil, ("upcaster %s[%d] raised: %s"):format(event_type, v, tostring(out)) end
    if type(out) ~= "table" then
      return nil, ("upcaster %s[%d] must return the upgraded data table, got %s"):format(event_type, v, type(out))
    end
    data = out
  end
  return data
end

-- The fields of a command and of an event that are not their payload (one
-- table each: schema.validate makes its fast check once per such table).
local NOT_COMMAND_FIELDS = { type = true, id = true }
local NOT_EVENT_FIELDS = { type = true }

-- Validates a command against its schema; returns true or nil, message.
function Aggregate:check_command(cmd)
  local ctype = cmd.type
  if type(ctype) ~= "string" then return nil, "command needs a string field 'type'" end
  if not self.module.commands[ctype] then
    local hint = schema.suggest(ctype, self.module.commands)
    local names = {}
    for n in pairs(self.module.commands) do names[#names + 1] = n end
    table.sort(names)
    return nil, ("unknown command '%s' for aggregate '%s'%s; it handles: %s"):format(ctype, self.name,
      hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(names, ", "))
  end
  local compiled = self.command_schemas[ctype]
  if compiled then
    local ok, err = schema.validate(compiled, cmd, NOT_COMMAND_FIELDS)
    if not ok then return nil, ctype .. ": " .. err end
  end
  return true
end

-- "account.commands.Deposit": what a budgeted call is named, made once per
-- type (not a new string per command).
local function call_name(self, kind, t)
  local names = self.call_names
  if not names then
    names = { commands = {}, events = {} }
    self.call_names = names
  end
  local n = names[kind][t]
  if not n then
    n = self.name .. "." .. kind .. "." .. t
    names[kind][t] = n
  end
  return n
end

-- Runs the handler. Returns:
--   events (a list of flat event tables, possibly empty)
--   nil, "rejected", reason    -- the domain said no
--   nil, "handler_error", message  -- the handler raised (message has the
--                                     traceback) or broke the contract
-- one (optional): an empty list the caller lends for a handler's single
-- event, returned holding it (no list made per command).
function Aggregate:decide(state, cmd, ctx, one)
  local handler = self.module.commands[cmd.type]
  local ok, r1, r2 = budget.call(call_name(self, "commands", cmd.type), sandbox.traceback, handler, state, cmd, ctx)
  if not ok then
    return nil, "handler_error", ("%s.%s raised: %s"):format(self.name, cmd.type, tostring(r1))
  end
  if r1 == nil then
    if r2 ~= nil then return nil, "rejected", r2 end
    return nil, "handler_error", ("%s.%s returned nothing: return an event {type=...}, a list of events, "
      .. "or nil and a reason to reject the command"):format(self.name, cmd.type)
  end
  if type(r1) ~= "table" then
    return nil, "handler_error", ("%s.%s returned a %s: return an event {type=...}, a list of events, "
      .. "or nil and a reason"):format(self.name, cmd.type, type(r1))
  end
  local events = r1
  if r1.type ~= nil then
    events = one or {}
    events[1] = r1
  end
  for i, e in ipairs(events) do
    if type(e) ~= "table" or type(e.type) ~= "string" then
      return nil, "handler_error", ("%s.%s: event %d must be a table with a string field 'type'")
        :format(self.name, cmd.type, i)
    end
    if not self.module.events[e.type] then
      return nil, "handler_error", ("%s.%s returned event '%s', which has no applier: add %s.events.%s")
        :format(self.name, cmd.type, e.type, self.name, e.type)
    end
    local compiled = self.event_schemas[e.type]
    if compiled then
      local vok, verr = schema.validate(compiled, e, NOT_EVENT_FIELDS)
      if not vok then
        return nil, "handler_error", ("%s.%s returned an invalid %s event: %s"):format(self.name, cmd.type, e.type, verr)
      end
    end
  end
  if #events == 0 and next(r1) ~= nil then
    return nil, "handler_error", ("%s.%s returned a table that is neither an event {type=...} nor a list of events")
      :format(self.name, cmd.type)
  end
  return events
end

-- Folds one flat event into the state; returns the new state or
-- nil, message (applier raised or returned nothing).
function Aggregate:apply(state, event)
  local applier = self.module.events[event.type]
  if not applier then
    return nil, ("no applier for event '%s' in aggregate '%s': add %s.events.%s")
      :format(tostring(event.type), self.name, self.name, tostring(event.type))
  end
  local ok, out = budget.call(call_name(self, "events", event.type), sandbox.traceback, applier, state, event)
  if not ok then return nil, ("%s.events.%s raised: %s"):format(self.name, event.type, tostring(out)) end
  if type(out) ~= "table" then
    return nil, ("%s.events.%s returned %s: an applier must return the new state (end it with `return state`)")
      :format(self.name, event.type, out == nil and "nothing" or ("a " .. type(out)))
  end
  return out
end

------------------------------------------------------------------------
-- The registry: every aggregate of a folder (tide.registry), with hot reload.

-- aggregate.registry(dir [, opts]) -> registry (reg.aggregates is its name -> module map);
-- opts.sandbox = false: the folder's modules run without tide's sandbox
function M.registry(dir, opts)
  local reg = require("tide.registry").new{ dir = dir, kind = "aggregate", sandbox = opts and opts.sandbox,
                                            load_file = M.load_file, from_source = M.from_source }
  reg.aggregates = reg.entries
  return reg
end

return M
