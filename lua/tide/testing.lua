-- tide.testing: given/when/then for aggregates and projections, in busted
-- specs (docs/testing.md). Each scenario runs on a fresh in-memory SQLite
-- store (no server, no file, nothing to init), with the modules of the
-- project's folders loaded once, sandboxed as in production.
--
--   local testing = require "tide.testing"
--   local t = testing.new{ aggregates = "aggregates", projections = "projections",
--                          now = 1700000000000 }   -- all optional (see new)
--
--   t:aggregate("cart")                              -- the stream cart#test
--     :given{ { type = "ItemAdded", sku = "tea", qty = 1 } }   -- events as handlers return them
--     :when{ type = "AddItem", sku = "tea", qty = 2 }          -- a command
--     :then_events{ { type = "ItemAdded", sku = "tea", qty = 2 } }
--   t:aggregate("cart"):when{ type = "CheckOut" }:then_rejected("empty")
--   t:aggregate("cart"):when{ type = "AddItem", sku = "tea" }:then_error("invalid", "qty")
--   ... :then_state{ items = { tea = 3 } }          -- fields of the state after the command
--   ... :then_nothing()                             -- accepted, no event
--
--   t:projection("sales")
--     :given("cart", "c1", { { type = "ItemAdded", sku = "tea", qty = 2, price = 3 } })
--     :given("cart", "c2", { ... })                  -- streams in the order given
--     :then_items("sales", { { sku = "tea", units = 2 } })   -- every item, in key order
--     :then_item("sales", "tea", { sku = "tea", units = 2 })
--     :then_no_item("sales", "coffee")
--   t:projection("sales"):given(...):then_error("attempt to index")   -- a handler raised
--
-- Comparisons are exact (every field, nested tables too; numbers by value,
-- tide.numbers included; tide's bookkeeping _tide/_rev left out of items).
-- A mismatch fails the busted test (busted's fail, so it counts as a
-- failure, with the spec's line) with both sides as JSON. Outside busted
-- it raises the same message.
--
-- Events given to an aggregate are stored as its handlers' events would be
-- (version 1, 2, ..., the aggregate's current schema version), and are
-- applied by its appliers when the command loads the stream. Commands go
-- through the repository as in production: schemas, idempotency, limits.
local core = require "tide.core"
local terror = require "tide.error"

local type, pairs, ipairs, tostring, error, setmetatable = type, pairs, ipairs, tostring, error, setmetatable

local M = {}

local DEFAULT_ID = "test"

-- ---- failing a test ----------------------------------------------------------

-- Inside busted, a failure raised through luassert (whose `error` busted
-- replaces with its own fail) counts as a failed test, not an error in
-- the spec. level: the caller to blame, counted from the function that
-- calls fail_at.
local function fail_at(level, message)
  local luassert = package.loaded["busted.core"] and package.loaded["luassert"]
  if luassert then luassert(false, message, luassert:level(level + 2)) end
  error(message, level + 2)
end

local function show(v)
  local s = core.json_encode(v)
  return s or tostring(v)
end

-- ---- equality ------------------------------------------------------------------

local function is_number(v) return type(v) == "number" or core.is_number(v) end

local function num_eq(a, b)
  if type(a) == "number" and type(b) == "number" then return a == b end
  local ok, r = pcall(function() return core.number(a) == core.number(b) end)
  return ok and r
end

-- deep equality of decoded values; lists, maps, sets and binaries by content
local function equal(a, b, depth)
  depth = (depth or 0) + 1
  if depth > 64 then return false end
  if is_number(a) and is_number(b) then return num_eq(a, b) end
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  if core.is_binary(a) or core.is_binary(b) then return core.bytes(a) == core.bytes(b) end
  for k, v in pairs(a) do
    if not equal(v, b[k], depth) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end
M.equal = equal

-- expected fields are all present and equal in actual (other fields ignored)
local function has_fields(actual, expected)
  if type(actual) ~= "table" then return false end
  for k, v in pairs(expected) do
    if not equal(actual[k], v) then return false end
  end
  return true
end

-- ---- the test bench --------------------------------------------------------------

local Bench = {}
Bench.__index = Bench

local function noop() end

-- testing.new(opts) -> bench
--   opts.aggregates, opts.projections: the folders (default: those of the
--   configuration tide.yaml / TIDE_CONFIG / opts.config when there is one,
--   else ./aggregates and ./projections); opts.sandbox = false turns the
--   sandbox off; opts.now: the commands' clock, milliseconds since the
--   epoch (a number, or a function returning one; default the wall clock);
--   opts.log: a logger for the repository and projections (default: none).
-- A module that fails to load fails the scenarios that use it, with its
-- message.
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("testing.new(opts): opts must be a table", 2) end
  local agg_dir, proj_dir = opts.aggregates, opts.projections
  local cfg = opts.cfg
  if not cfg and (agg_dir == nil or proj_dir == nil) then
    local c = require("tide.config").load{ file = opts.config or M.default_config }
    cfg = c
  end
  cfg = cfg or {}
  agg_dir = agg_dir or cfg.aggregates or "aggregates"
  proj_dir = proj_dir or cfg.projections or "projections"
  local tide = require "tide"
  local lua_cfg = { lua = cfg.lua or {} }
  if opts.sandbox == false then lua_cfg.lua = { sandbox_aggregates = false, sandbox_projections = false } end
  tide.user_code(lua_cfg)
  local now = opts.now
  local clock_ms
  if type(now) == "number" then clock_ms = function() return now end
  elseif type(now) == "function" then clock_ms = now end
  return setmetatable({
    aggregates = require("tide.aggregate").registry(agg_dir, tide.folder_options(lua_cfg, "aggregates")),
    projections = require("tide.projection").registry(proj_dir, tide.folder_options(lua_cfg, "projections")),
    clock_ms = clock_ms,
    log = opts.log or noop,
    stats = { scenarios = 0 },
  }, Bench)
end

-- A fresh in-memory store, ready (schema made).
local function memory_store()
  local store, err = require("tide.store.sqlite").new{ path = ":memory:" }
  if not store then error("tide.testing: cannot open an in-memory store: " .. tostring(err), 3) end
  local ok, ierr = store:init()
  if not ok then error("tide.testing: cannot create the store's schema: " .. tostring(ierr), 3) end
  return store
end

-- Stores events (handler-shaped: {type=, fields...}) on stream after
-- version; returns the new version or raises naming what is wrong.
local function append_given(store, aggregates, aggregate, stream, version, events, level)
  if type(events) ~= "table" then fail_at(level, "given: events must be a list of {type=, ...}") end
  local agg = aggregates:get(aggregate)
  local stored = {}
  for i, e in ipairs(events) do
    if type(e) ~= "table" or type(e.type) ~= "string" then
      fail_at(level, ("given: event %d must be a table with a type"):format(i))
    end
    local data = {}
    for k, v in pairs(e) do if k ~= "type" then data[k] = v end end
    local text, derr = require("tide.stream").encode_data(data, store.data_format)
    if not text then fail_at(level, ("given: event %d (%s) cannot be stored: %s"):format(i, e.type, derr)) end
    stored[i] = { type = e.type, data = text, meta = core.json_encode{
      command_id = ("given-%d-%d"):format(version, i), command = "given", index = i, count = #events,
      schema = agg and agg:schema_version(e.type) or 1, handler = agg and agg.version or nil } }
  end
  if #stored == 0 then return version end
  local last, err = store:append(stream, version, stored)
  if not last then fail_at(level, "given: the events cannot be stored: " .. tostring(err)) end
  return last
end

-- ---- aggregates ---------------------------------------------------------------

local Scenario = {}
Scenario.__index = Scenario

-- bench:aggregate(name [, id]) -> scenario on the stream name#id (id "test")
function Bench:aggregate(name, id)
  if type(name) ~= "string" then error("bench:aggregate(name [, id]): name must be a string", 2) end
  local _, lerr = self.aggregates:get(name)
  if lerr then fail_at(1, lerr) end
  self.stats.scenarios = self.stats.scenarios + 1
  local store = memory_store()
  return setmetatable({
    bench = self, name = name, id = id or DEFAULT_ID, store = store, version = 0,
    repository = require("tide.repository").new{ store = store, registry = self.aggregates,
                                                 clock_ms = self.clock_ms, log = self.log, max_attempts = 1 },
  }, Scenario)
end

-- scenario:given(events) -> scenario: events already in the stream
function Scenario:given(events)
  if self.result or self.err then fail_at(1, "given: call it before when") end
  self.version = append_given(self.store, self.bench.aggregates, self.name,
                              require("tide.stream").of(self.name, self.id), self.version, events, 1)
  return self
end

-- scenario:when(command [, opts]) -> scenario: runs the command
--   opts: {causation_id=, correlation_id=} as the repository takes them
-- May be called again after a then_*: the next command sees the state
-- the previous one left.
function Scenario:when(command, opts)
  if type(command) ~= "table" then fail_at(1, "when: the command must be a table {type=, ...}") end
  self.command = command
  self.result, self.err = self.repository:execute(self.name, self.id, command, opts)
  return self
end

local function events_of(result)
  local out = core.list()
  for i, ev in ipairs(result.events or {}) do
    local e = { type = ev.type }
    for k, v in pairs(ev.data or {}) do e[k] = v end
    out[i] = e
  end
  return out
end

local function describe_outcome(self)
  if self.err then
    return ("the command failed: %s: %s"):format(tostring(self.err.kind), tostring(self.err.message))
  end
  return "the command appended: " .. show(events_of(self.result))
end

local function need_when(self)
  if not self.result and not self.err then fail_at(2, "then: call when{...} first") end
end

-- then_events(list): the command succeeded and appended exactly these
-- events ({type=, fields...}), in this order.
function Scenario:then_events(expected)
  need_when(self)
  if type(expected) ~= "table" then fail_at(1, "then_events: expected a list of {type=, ...}") end
  local list = core.list()
  for i, v in ipairs(expected) do list[i] = v end
  expected = list
  if not self.result then
    fail_at(1, ("expected the events %s, but %s"):format(show(expected), describe_outcome(self)))
  end
  local got = events_of(self.result)
  if not equal(got, expected) then
    fail_at(1, ("expected the events %s\n  but got %s"):format(show(expected), show(got)))
  end
  return self
end

-- then_nothing(): the command succeeded and appended nothing (a duplicate
-- command, or a handler that returned {}).
function Scenario:then_nothing()
  need_when(self)
  if not self.result or (#(self.result.events or {}) > 0 and not self.result.duplicate) then
    fail_at(1, "expected no new event, but " .. describe_outcome(self))
  end
  return self
end

local function check_error(self, kind, pattern, what)
  need_when(self)
  if not self.err then
    fail_at(2, ("expected %s, but %s"):format(what, describe_outcome(self)))
  end
  if kind and self.err.kind ~= kind then
    fail_at(2, ("expected %s, but %s"):format(what, describe_outcome(self)))
  end
  if pattern and not tostring(self.err.message):find(pattern) then
    fail_at(2, ("expected %s with a message matching %q, but the message is: %s"):format(
      what, pattern, tostring(self.err.message)))
  end
end

-- then_rejected([pattern]): the domain refused the command (a handler
-- returned nil, reason); pattern (a Lua pattern) must match the reason.
function Scenario:then_rejected(pattern)
  check_error(self, "rejected", pattern, "a rejection")
  return self
end

-- then_error(kind [, pattern]): the command failed with this error kind
-- ("invalid", "handler_error", "too_many_events", ...; see README's exit
-- statuses) and a message matching pattern.
function Scenario:then_error(kind, pattern)
  if type(kind) ~= "string" then fail_at(1, "then_error(kind [, pattern]): kind must be a string") end
  check_error(self, kind, pattern, "an error of kind '" .. kind .. "'")
  return self
end

-- then_state(fields): the state after the command holds these fields
-- (others are not compared).
function Scenario:then_state(fields)
  need_when(self)
  local st, err = self.repository:state(self.name, self.id)
  if not st then fail_at(1, "then_state: the state cannot be read: " .. tostring(err)) end
  if not has_fields(st.state, fields) then
    fail_at(1, ("expected the state to hold %s\n  but it is %s"):format(show(fields), show(st.state)))
  end
  return self
end

-- scenario:outcome() -> the repository's result, or nil, err
function Scenario:outcome()
  return self.result, self.err
end

-- ---- projections ----------------------------------------------------------------

local PScenario = {}
PScenario.__index = PScenario

-- bench:projection(name) -> scenario
function Bench:projection(name)
  if type(name) ~= "string" then error("bench:projection(name): name must be a string", 2) end
  local p, lerr = self.projections:get(name)
  if not p then fail_at(1, lerr) end
  self.stats.scenarios = self.stats.scenarios + 1
  return setmetatable({ bench = self, projection = p, store = memory_store(), versions = {}, ran = false },
                      PScenario)
end

-- scenario:given(aggregate, id, events) -> scenario: events appended to
-- aggregate#id, after those given before (any stream)
function PScenario:given(aggregate, id, events)
  if type(aggregate) ~= "string" or type(id) ~= "string" then
    fail_at(1, "given(aggregate, id, events): aggregate and id must be strings")
  end
  if self.ran then fail_at(1, "given: call it before then_*") end
  local stream = require("tide.stream").of(aggregate, id)
  self.versions[stream] = append_given(self.store, self.bench.aggregates, aggregate, stream,
                                       self.versions[stream] or 0, events, 1)
  return self
end

-- Runs the projection over everything given, once: -> true | false, err
local function project(self)
  if self.ran then return self.ok, self.err end
  self.ran = true
  local r = require("tide.projection.runner.sqlite").new{
    store = self.store, projection = self.projection, aggregates = self.bench.aggregates,
    owner = "tide.testing", log = self.bench.log,
  }
  self.runner = r
  local ok, err = r:start()
  while ok do
    local n
    n, err = r:step()
    if not n then ok = false
    elseif n == 0 then break end
  end
  self.ok, self.err = ok and true or false, err
  return self.ok, self.err
end

local function need_projected(self, level)
  local ok, err = project(self)
  if not ok then
    fail_at(level + 1, ("projection '%s' failed: %s"):format(self.projection.name, tostring(err and err.message or err)))
  end
end

local function user_item(item)
  if type(item) == "table" then item._tide, item._rev = nil, nil end
  return item
end

-- then_item(table, key, item): the read model holds exactly this item
function PScenario:then_item(tname, key, expected)
  need_projected(self, 1)
  local item, err = self.runner.backend:read_item(tname, key)
  if item == nil then fail_at(1, ("then_item: %s cannot be read: %s"):format(tname, tostring(err))) end
  if not item then
    fail_at(1, ("expected %s[%q] to be %s, but there is no such item"):format(tname, key, show(expected)))
  end
  item = user_item(item)
  if not equal(item, expected) then
    fail_at(1, ("expected %s[%q] to be %s\n  but it is %s"):format(tname, key, show(expected), show(item)))
  end
  return self
end

-- then_no_item(table, key): the read model holds no item under key
function PScenario:then_no_item(tname, key)
  need_projected(self, 1)
  local item = self.runner.backend:read_item(tname, key)
  if item then
    fail_at(1, ("expected no item %s[%q], but it is %s"):format(tname, key, show(user_item(item))))
  end
  return self
end

-- scenario:items(table) -> every item of the read model, in key order
function PScenario:items(tname)
  need_projected(self, 1)
  local items, err = self.runner.backend:list_items(tname, { limit = 1e9 })
  if not items then fail_at(1, ("%s cannot be listed: %s"):format(tname, tostring(err))) end
  for _, item in ipairs(items) do user_item(item) end
  return items
end

-- then_items(table, items): the read model holds exactly these items (in
-- key order)
function PScenario:then_items(tname, expected)
  need_projected(self, 1)
  local items, err = self.runner.backend:list_items(tname, { limit = 1e9 })
  if not items then fail_at(1, ("%s cannot be listed: %s"):format(tname, tostring(err))) end
  for _, item in ipairs(items) do user_item(item) end
  if not equal(core.list(items), expected) then
    local list = core.list()
    for i, v in ipairs(expected) do list[i] = v end
    fail_at(1, ("expected %s to hold %s\n  but it holds %s"):format(tname, show(list), show(core.list(items))))
  end
  return self
end

-- then_error([pattern]): the projection stopped at a handler's error
-- whose message matches pattern
function PScenario:then_error(pattern)
  local ok, err = project(self)
  if ok then fail_at(1, ("expected projection '%s' to fail, but it applied every event"):format(self.projection.name)) end
  local msg = tostring(err and err.message or err)
  if pattern and not msg:find(pattern) then
    fail_at(1, ("expected projection '%s' to fail with a message matching %q, but it says: %s"):format(
      self.projection.name, pattern, msg))
  end
  return self
end

M.Scenario, M.ProjectionScenario, M.Bench = Scenario, PScenario, Bench
M.is_error = terror.is
return M
