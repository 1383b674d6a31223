-- The store-neutral batch logic (tide.projector) against an in-memory
-- backend: positions (duplicates, gaps), item guards, handler errors,
-- hooks, ctx get/put/update/delete, prefetch, decoding and upcasting.
local projection = require "tide.projection"
local projector = require "tide.projector"
local aggregate = require "tide.aggregate"
local core = require "tide.core"

local SEP = "\0"

-- A backend that keeps items and positions in tables and counts calls.
local function mem_backend()
  local b = { items = {}, positions = {}, calls = { get_items = 0, get_positions = 0, write = 0 }, requested = {} }
  function b:get_items(reqs)
    self.calls.get_items = self.calls.get_items + 1
    local out = {}
    for _, r in ipairs(reqs) do
      self.requested[#self.requested + 1] = r.table .. "/" .. r.key
      local k = r.table .. SEP .. r.key
      if self.items[k] then out[k] = projector.copy(self.items[k]) end
    end
    return out
  end
  function b:get_positions(name, streams)
    self.calls.get_positions = self.calls.get_positions + 1
    local out = {}
    for _, s in ipairs(streams) do out[s] = self.positions[name .. SEP .. s] end
    return out
  end
  function b:write(name, plan)
    self.calls.write = self.calls.write + 1
    for _, it in ipairs(plan.items) do
      self.items[it.table .. SEP .. it.key] = it.item and projector.copy(it.item) or nil
    end
    for s, v in pairs(plan.positions) do self.positions[name .. SEP .. s] = v end
    return true
  end
  function b:item(t, k) return self.items[t .. SEP .. k] end
  return b
end

local SRC = [[
local p = {}
p.subscribe = { aggregates = { "account" } }
p.tables = { balances = { key = "id" }, stats = { key = "name", mode = "conditional" } }
p.calls = {}
p.handlers = {
  Opened = function(e, ctx)
    p.calls[#p.calls + 1] = e.stream .. ":" .. e.version
    ctx:put("balances", { id = e.id, owner = e.data.owner, balance = 0, version = e.version })
  end,
  Deposited = function(e, ctx)
    p.calls[#p.calls + 1] = e.stream .. ":" .. e.version
    local it = ctx:get("balances", e.id)
    p.saw_guards = p.saw_guards or it._tide ~= nil or it._rev ~= nil
    if e.data.amount == 666 then error("cursed amount") end
    it.balance = it.balance + e.data.amount
    it.version = e.version
    ctx:put("balances", it)
  end,
  Noted = function(e, ctx)
    ctx:update("balances", e.id, { note = e.data.note, version = e.version })
  end,
  Closed = function(e, ctx)
    ctx:delete("balances", e.id)
  end,
}
return p
]]

local function new_projection(src)
  return assert(projection.from_source("bal", src or SRC, "projections/bal.lua"))
end

local function ev(id, version, type_, data)
  return { stream = "account#" .. id, aggregate = "account", id = id, version = version, type = type_,
           data = data or {}, meta = {} }
end

-- The events of account id from 1 to n: Opened then Deposited {amount = v}.
local function history(id, n)
  local out = { ev(id, 1, "Opened", { owner = "o-" .. id }) }
  for v = 2, n do out[v] = ev(id, v, "Deposited", { amount = v }) end
  return out
end

local function run(p, backend, events)
  local plan, err = p:apply(events)
  assert(plan, err and tostring(err))
  assert(backend:write(p.name, plan))
  p:committed(plan)
  return plan
end

describe("tide.projector", function()
  it("applies events, with guards on items that handlers never see", function()
    local proj, b = new_projection(), mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    local plan = run(p, b, history("a", 3))
    assert.equal(3, plan.applied)
    assert.same({ ["account#a"] = 3 }, plan.positions)
    assert.equal(1, #plan.items)
    local it = b:item("balances", "a")
    assert.equal(5, it.balance)
    assert.equal(3, it.version)
    assert.same({ ["account#a"] = 3 }, it._tide)
    assert.equal(1, it._rev)
    assert.is_false(proj.module.saw_guards)
  end)

  it("skips duplicates, within a batch and across batches", function()
    local proj, b = new_projection(), mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    local h = history("a", 4)
    run(p, b, { h[1], h[2], h[2], h[1] })
    local plan = run(p, b, { h[2], h[3], h[3], h[4] })
    assert.equal(2, plan.applied)
    assert.equal(2, plan.skipped)
    assert.equal(2 + 3 + 4, b:item("balances", "a").balance)
    assert.same({ "account#a:1", "account#a:2", "account#a:3", "account#a:4" }, proj.module.calls)
    -- a fresh projector reads the positions from the backend
    local p2 = projector.new{ projection = proj, backend = b }
    plan = assert(p2:apply(h))
    assert.equal(4, plan.skipped)
    assert.equal(0, plan.applied)
    assert.same({}, plan.items)
  end)

  it("fills a gap from the reader before the event above it", function()
    local proj, b = new_projection(), mem_backend()
    local h = history("a", 6)
    local asked = {}
    local reader = function(stream, after, before)
      asked[#asked + 1] = { stream, after, before }
      local out = {}
      for _, e in ipairs(h) do
        if e.version > after and e.version < before then out[#out + 1] = e end
      end
      return out
    end
    local p = projector.new{ projection = proj, backend = b, reader = reader }
    run(p, b, { h[1], h[2] })
    local plan = run(p, b, { h[5], h[4], h[6] }) -- 3 and 4 missing before 5; 4 is then a duplicate
    assert.same({ { "account#a", 2, 5 } }, asked)
    assert.equal(2, plan.filled)
    assert.equal(1, plan.skipped)
    assert.same({ "account#a:1", "account#a:2", "account#a:3", "account#a:4", "account#a:5", "account#a:6" },
      proj.module.calls)
    assert.equal(2 + 3 + 4 + 5 + 6, b:item("balances", "a").balance)
    assert.equal(6, b:item("balances", "a").version)
  end)

  it("fails with kind gap when the reader cannot fill it", function()
    local proj, b = new_projection(), mem_backend()
    local p = projector.new{ projection = proj, backend = b, reader = function() return {} end }
    local plan, err = p:apply({ ev("a", 3, "Deposited", { amount = 1 }) })
    assert.is_nil(plan)
    assert.equal("gap", err.kind)
    assert.matches("projection bal, stream account#a version 3: gap: version 3 follows 0 and the reader has no version 1",
      tostring(err), nil, true)
    local p2 = projector.new{ projection = proj, backend = b }
    plan, err = p2:apply({ ev("a", 3, "Deposited", { amount = 1 }) })
    assert.matches("no reader", err.message)
  end)

  it("makes a replayed batch a no-op through the item guards when positions were lost", function()
    local proj, b = new_projection(), mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    local h = history("a", 5)
    run(p, b, h)
    local before = projector.copy(b:item("balances", "a"))
    b.positions = {} -- the positions were lost (a crash between items and positions)
    local p2 = projector.new{ projection = proj, backend = b }
    local plan = run(p2, b, h)
    assert.equal(5, plan.applied)     -- the handlers ran...
    assert.equal(5, plan.ignored)     -- ...and every put was ignored
    assert.same({}, plan.items)
    assert.same(before, b:item("balances", "a"))
    -- and the next new event applies on top
    run(p2, b, { ev("a", 6, "Deposited", { amount = 100 }) })
    assert.equal(before.balance + 100, b:item("balances", "a").balance)
  end)

  it("prunes the guards of an item fed by many streams to those whose positions may not be durable", function()
    local proj = new_projection([[
local p = {}
p.subscribe = { aggregates = { "account" } }
p.tables = { stats = { key = "name", mode = "conditional" } }
p.handlers = {
  Opened = function(e, ctx)
    local t = ctx:get("stats", "total") or { name = "total", n = 0 }
    t.n = t.n + 1
    ctx:put("stats", t)
  end,
}
return p
]])
    local b = mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    local function opened(batch)
      local out = {}
      for i = 1, 10 do out[i] = ev(string.format("s%03d-%02d", batch, i), 1, "Opened") end
      return out
    end
    local function guards() local n = 0 for _ in pairs(b:item("stats", "total")._tide) do n = n + 1 end return n end
    local pruned = 0
    for batch = 1, 30 do pruned = pruned + (run(p, b, opened(batch)).pruned or 0) end
    assert.equal(300, b:item("stats", "total").n)
    -- 300 streams fed it: only the entries not yet known durable are kept
    assert.is_true(guards() <= projector.GUARD_PRUNE_AT + 10, guards() .. " guard entries")
    assert.is_true(pruned > 200)
    -- a crash between the items and the positions: the last batch's
    -- entries are kept, so a fresh worker delivering it again changes nothing
    local evs = opened(31)
    local plan = assert(p:apply(evs))
    plan.positions = {}
    assert(b:write(p.name, plan))
    assert.equal(310, b:item("stats", "total").n)
    local p2 = projector.new{ projection = proj, backend = b }
    plan = run(p2, b, evs)
    assert.equal(10, plan.ignored)
    assert.equal(310, b:item("stats", "total").n)
    -- a fresh worker (no positions cached) reads the positions it needs to prune
    local before = b.calls.get_positions
    for batch = 32, 40 do run(p2, b, opened(batch)) end
    assert.equal(400, b:item("stats", "total").n)
    assert.is_true(guards() <= projector.GUARD_PRUNE_AT + 10, guards() .. " guard entries")
    assert.is_true(b.calls.get_positions > before)
  end)

  it("stops the batch at a handler error: nothing in a plan, the event and the traceback named", function()
    local proj, b = new_projection(), mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    run(p, b, history("a", 2))
    local plan, err = p:apply({ ev("b", 1, "Opened", { owner = "x" }), ev("a", 3, "Deposited", { amount = 666 }),
                                ev("a", 4, "Deposited", { amount = 1 }) })
    assert.is_nil(plan)
    assert.equal("handler_error", err.kind)
    assert.equal("account#a", err.event.stream)
    assert.equal(3, err.event.version)
    assert.matches("cursed amount", err.message)
    -- the user's frames only, not tide's
    assert.matches("\tprojections/bal.lua:%d+: in ", err.message)
    assert.not_matches("lua/tide/", err.message)
    assert.matches("^projection bal, stream account#a version 3 %(Deposited%): handler_error: bal.handlers.Deposited raised",
      tostring(err))
    assert.equal(1, b.calls.write)
    assert.is_nil(b:item("balances", "b"))
    -- the projector is unchanged: the same batch without the bad event applies
    plan = run(p, b, { ev("b", 1, "Opened", { owner = "x" }), ev("a", 3, "Deposited", { amount = 3 }) })
    assert.equal(2, plan.applied)
    assert.equal(5, b:item("balances", "a").balance)
  end)

  it("runs before_batch and after_batch around the handlers, and their errors stop the batch", function()
    local src = SRC:gsub("return p\n$", [[
p.log = {}
p.before_batch = function(ctx) p.log[#p.log + 1] = "before" end
p.after_batch = function(ctx)
  p.log[#p.log + 1] = "after"
  if p.fail_after then error("after failed") end
  local s = ctx:get("stats", "all") or { name = "all", batches = 0 }
  s.batches = s.batches + 1
  ctx:put("stats", s)
end
local opened = p.handlers.Opened
p.handlers.Opened = function(e, ctx) p.log[#p.log + 1] = "Opened"; opened(e, ctx) end
return p
]])
    local proj, b = new_projection(src), mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    local plan = run(p, b, { ev("a", 1, "Opened", { owner = "x" }), ev("b", 1, "Opened", { owner = "y" }) })
    assert.same({ "before", "Opened", "Opened", "after" }, proj.module.log)
    assert.equal(1, b:item("stats", "all").batches)
    assert.equal(3, #plan.items)
    for _, it in ipairs(plan.items) do
      if it.table == "stats" then
        assert.equal("conditional", it.mode)
        assert.is_false(it.expected_rev)
      end
    end
    plan = run(p, b, { ev("c", 1, "Opened", { owner = "z" }) })
    assert.equal(2, b:item("stats", "all").batches)
    assert.equal(2, b:item("stats", "all")._rev)
    proj.module.fail_after = true
    local err
    plan, err = p:apply({ ev("d", 1, "Opened", { owner = "w" }) })
    assert.is_nil(plan)
    assert.equal("handler_error", err.kind)
    assert.matches("bal.after_batch raised: .*after failed", err.message)
  end)

  it("deletes and updates items, with guards", function()
    local proj, b = new_projection(), mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    run(p, b, history("a", 2))
    local plan = run(p, b, { ev("a", 3, "Noted", { note = "hi" }) })
    local it = b:item("balances", "a")
    assert.equal("hi", it.note)
    assert.equal(2, it.balance) -- merged
    assert.equal(3, it.version)
    assert.equal(1, #plan.items)
    -- update of an absent item creates it, with its key
    run(p, b, { ev("n", 1, "Noted", { note = "new" }) })
    assert.same({ id = "n", note = "new", version = 1 }, projector.user_view(b:item("balances", "n")))
    plan = run(p, b, { ev("a", 4, "Closed") })
    assert.is_nil(plan.items[1].item)
    assert.is_nil(b:item("balances", "a"))
  end)

  it("prefetches the batch's items with one get_items", function()
    local src = SRC:gsub("return p\n$", "p.prefetch = function(e) return 'balances', e.id end\nreturn p\n")
    local proj, b = new_projection(src), mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    run(p, b, { ev("a", 1, "Opened", { owner = "x" }), ev("b", 1, "Opened", { owner = "y" }),
                ev("a", 2, "Deposited", { amount = 2 }) })
    assert.equal(1, b.calls.get_items)
    assert.same({ "balances/a", "balances/b" }, b.requested)
    -- the next batch finds them in the projector's cache
    run(p, b, { ev("a", 3, "Deposited", { amount = 3 }), ev("b", 2, "Deposited", { amount = 2 }) })
    assert.equal(1, b.calls.get_items)
  end)

  it("tells a handler how to fix a bad ctx call", function()
    local cases = {
      { "ctx:put('balance', { id = e.id })", "ctx:put: unknown table 'balance' %(did you mean 'balances'%?%); bal declares: balances, stats %(add it to bal.tables%)" },
      { "ctx:put('balances', { owner = 'x' })", "ctx:put%(\"balances\", item%): the item has no `id`, the table's key attribute: set item.id" },
      { "ctx:put('balances', { id = 42 })", "item.id is a number; keys are strings" },
      { "ctx:get('balances', 42)", "keys are strings: pass tostring%(42%)" },
      { "ctx:update('balances', e.id, 'x')", "fields must be a table" },
    }
    for _, c in ipairs(cases) do
      local src = ([[return { subscribe = { aggregates = { "account" } },
        tables = { balances = { key = "id" }, stats = { key = "name" } },
        handlers = { Opened = function(e, ctx) %s end } }]]):format(c[1])
      local proj, b = new_projection(src), mem_backend()
      local plan, err = projector.new{ projection = proj, backend = b }:apply({ ev("a", 1, "Opened") })
      assert.is_nil(plan)
      assert.equal("handler_error", err.kind)
      assert.matches(c[2], err.message)
    end
  end)

  it("ignores streams it does not track and moves positions over events it does not handle", function()
    local proj, b = new_projection(), mem_backend()
    local p = projector.new{ projection = proj, backend = b }
    local plan = run(p, b, { { stream = "user#u", version = 1, type = "Opened", data = {}, meta = {} },
      ev("a", 1, "Opened", { owner = "x" }), ev("a", 2, "Renamed", { name = "y" }) })
    assert.equal(1, plan.untracked)
    assert.equal(1, plan.applied)
    assert.same({ ["account#a"] = 2 }, plan.positions)
  end)

  it("decodes stored rows (AttributeValue data, JSON meta), upcast by the aggregate's module", function()
    local reg = aggregate.registry("spec/fixtures/aggregates")
    reg:add(assert(aggregate.load_file("spec/fixtures/aggregates/counter_v2.lua", "counter")))
    local row = { position = 7, stream = "counter#c1", version = 1, type = "Added",
                  data = core.encode_value({ n = 5 }), meta = '{"schema":1,"command_id":"x"}' }
    local e = assert(projector.decode(row, reg))
    assert.same({ amount = 5 }, e.data)
    assert.equal("counter", e.aggregate)
    assert.equal("c1", e.id)
    assert.equal("x", e.meta.command_id)
    assert.equal(7, e.position)
    e = assert(projector.decode(row))
    assert.same({ n = 5 }, e.data)
    local bad, err = projector.decode({ stream = "counter#c1", version = 1, type = "Added", data = "{nope" })
    assert.is_nil(bad)
    assert.matches("event data is not valid", err)
    -- the projector decodes rows itself, and names an undecodable one
    local proj, b = new_projection(), mem_backend()
    local plan
    plan, err = projector.new{ projection = proj, backend = b }:apply({
      { stream = "account#a", version = 1, type = "Opened", data = "{nope", meta = "{}" } })
    assert.is_nil(plan)
    assert.equal("invalid_event", err.kind)
    assert.matches("stream account#a version 1", tostring(err))
  end)

  it("keeps a deleted item's last state and guards (a tombstone) so that events delivered again change nothing", function()
    -- A store like DynamoDB's: a deletion is written as a tombstone, and the
    -- positions are a separate write that a dying worker may not reach.
    local proj, b = new_projection(), mem_backend()
    local crash = false
    function b:write(name, plan)
      for _, it in ipairs(plan.items) do
        local stored = it.item or it.tomb
        self.items[it.table .. SEP .. it.key] = stored and projector.copy(stored) or nil
      end
      if crash then return nil, "died before the positions" end
      for st, v in pairs(plan.positions) do self.positions[name .. SEP .. st] = v end
      return true
    end
    local events = { ev("a", 1, "Opened", { owner = "x" }), ev("a", 2, "Deposited", { amount = 5 }), ev("a", 3, "Closed") }
    crash = true
    local plan = assert(projector.new{ projection = proj, backend = b }:apply(events))
    assert.is_nil(b:write("bal", plan))
    local tomb = b:item("balances", "a")
    assert.is_true(tomb._deleted)
    assert.equal(3, tomb._tide["account#a"])
    assert.equal(5, tomb.balance)
    assert.equal(1, tomb._rev)
    -- Restarted: no positions, the same events again. Deposited reads the
    -- state before the deletion (without it the handler would fail on an
    -- absent item), and every write is ignored.
    crash = false
    local q = projector.new{ projection = proj, backend = b }
    plan = assert(q:apply(events))
    assert.equal(3, plan.applied)
    assert.equal(2, plan.ignored)
    assert.same({}, plan.items)
    assert(b:write("bal", plan))
    q:committed(plan)
    assert.same({ ["account#a"] = 3 }, plan.positions)
    -- To a later event the item is absent: its put replaces the tombstone.
    plan = assert(q:apply({ ev("a", 4, "Opened", { owner = "y" }) }))
    assert(b:write("bal", plan))
    local it = b:item("balances", "a")
    assert.is_nil(it._deleted)
    assert.same({ id = "a", owner = "y", balance = 0, version = 4 },
      { id = it.id, owner = it.owner, balance = it.balance, version = it.version })
    assert.equal(4, it._tide["account#a"])
    assert.equal(2, it._rev)
  end)

  it("upcasts events decoded by their source (as_stored) once, in place, also when the batch is retried", function()
    local reg = aggregate.registry("spec/fixtures/aggregates")
    reg:add(assert(aggregate.load_file("spec/fixtures/aggregates/counter_v2.lua", "counter")))
    local src = [[
local p = { subscribe = { aggregates = { "counter" } }, tables = { totals = { key = "id" } }, seen = {} }
p.handlers = { Added = function(e, ctx)
  p.seen[#p.seen + 1] = e.data
  if p.fail then p.fail = nil; error("once") end
  local it = ctx:get("totals", e.id) or { id = e.id, total = 0 }
  it.total = it.total + e.data.amount
  ctx:put("totals", it)
end }
return p
]]
    local proj, b = assert(projection.from_source("tot", src, "projections/tot.lua")), mem_backend()
    local p = projector.new{ projection = proj, backend = b, aggregates = reg }
    local function stored(v, data, schema)
      return { stream = "counter#c1", aggregate = "counter", id = "c1", version = v, type = "Added",
               data = data, meta = { schema = schema }, as_stored = true }
    end
    local events = { stored(1, { n = 5 }, 1), stored(2, { amount = 7 }, 2) }
    proj.module.fail = true
    local plan, err = p:apply(events)
    assert.is_nil(plan)
    assert.equal("handler_error", err.kind)
    p:reset()
    plan = assert(p:apply(events)) -- the same events: the runner retries its batch
    assert(b:write("tot", plan))
    assert.same({ amount = 5 }, proj.module.seen[#proj.module.seen - 1])
    assert.same({ amount = 7 }, proj.module.seen[#proj.module.seen])
    assert.equal(12, b:item("totals", "c1").total)
    assert.is_nil(events[1].as_stored)
    -- without a registry there is nothing to upcast with: data is used as it is
    local q = projector.new{ projection = proj, backend = mem_backend() }
    assert(q:apply({ stored(1, { amount = 3 }, 1) }))
    assert.same({ amount = 3 }, proj.module.seen[#proj.module.seen])
    -- an event newer than the module: an invalid event, not a handler error
    local r = projector.new{ projection = proj, backend = mem_backend(), aggregates = reg }
    plan, err = r:apply({ stored(1, { amount = 1 }, 9) })
    assert.is_nil(plan)
    assert.equal("invalid_event", err.kind)
    assert.matches("schema 9", tostring(err))
  end)
end)
