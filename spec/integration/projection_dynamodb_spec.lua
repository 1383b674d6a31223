-- Projections on DynamoDB (DynamoDB Local): the read-model backend
-- (lua/tide/projection/dynamodb.lua), shard leases (leases.lua) and the
-- DynamoDB Streams runner (runner/streams.lua) driving tide.projector.
local helpers = require "helpers"
local core = require "tide.core"
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"
local dstore = require "tide.store.dynamodb"
local projection = require "tide.projection"
local projector = require "tide.projector"
local backend_mod = require "tide.projection.dynamodb"
local leases_mod = require "tide.projection.leases"
local streams = require "tide.projection.runner.streams"

-- many events on tables with streams: a DynamoDB Local of this file's own
helpers.private_dynamodb()

local CREDS = { access_key_id = "tidetest", secret_access_key = "tidetestsecret" }
local BALANCES = helpers.root .. "/projections/balances.lua"

local function new_client()
  local endpoint = assert(helpers.dynamodb_endpoint(),
    "DynamoDB Local endpoint not set: run the suite with tools/test.sh (make test)")
  return assert(dynamodb.new{ endpoint = endpoint, region = "us-east-1", credentials = CREDS,
                              base_delay = 0.005 })
end

local function run(fn) return sched.run(fn) end

local function balances()
  return assert(projection.load_file(BALANCES, "balances"))
end

local quiet_log = function() end

-- Appends `per` events to each of `accounts` account streams, through
-- `concurrency` threads, `chunk` events per append (one transaction);
-- returns the expected balances items by id.
local function write_accounts(store, accounts, per, tag, concurrency, chunk)
  chunk = chunk or 1
  local expected = {}
  local next_acc = 0
  local function worker()
    while next_acc < accounts do
      next_acc = next_acc + 1
      local i = next_acc
      local id = string.format("%s-%04d", tag, i)
      local stream = "account#" .. id
      local bal, version = 0, 0
      local status = "open"
      local pending = {}
      for v = 1, per do
        local etype, data
        if v == 1 then
          etype, data = "Opened", { owner = "owner-" .. (i % 7) }
        elseif v == per and i % 10 == 0 then
          etype, data, status = "Closed", {}, "closed"
        elseif v % 3 == 0 and bal >= 5 then
          etype, data = "Withdrawn", { amount = 5 }
          bal = bal - 5
        else
          etype, data = "Deposited", { amount = v + i }
          bal = bal + v + i
        end
        local meta = core.json_encode{ command_id = id .. "-" .. v, timestamp = 0, schema = 1 }
        pending[#pending + 1] = { type = etype, data = core.encode_value(data), meta = meta }
        if #pending >= chunk or v == per then
          version = assert(store:append(stream, version, pending))
          pending = {}
        end
      end
      expected[id] = { id = id, owner = "owner-" .. (i % 7), balance = bal, version = per, status = status }
    end
  end
  local threads = {}
  for t = 1, concurrency or 64 do threads[t] = sched.spawn(worker) end
  for _, th in ipairs(threads) do
    local ok, err = sched.wait(th)
    assert(ok, err)
  end
  return expected
end

-- Recomputes every account's balances item from the events table (a Scan),
-- applying each stream's events in version order.
local function recompute(db, events_table)
  local res = assert(db:scan({ TableName = events_table }, { segments = 4 }))
  local by = {}
  for _, item in ipairs(res.Items) do
    local list = by[item.stream] or {}
    by[item.stream] = list
    list[#list + 1] = item
  end
  local out = {}
  for stream, list in pairs(by) do
    table.sort(list, function(a, b) return a.version < b.version end)
    local id = stream:match("^account#(.*)$")
    local it
    for _, e in ipairs(list) do
      local data = core.decode_value(e.data)
      if e.type == "Opened" then
        it = { id = id, owner = data.owner, balance = 0, status = "open" }
      elseif e.type == "Deposited" then it.balance = it.balance + data.amount
      elseif e.type == "Withdrawn" then it.balance = it.balance - data.amount
      elseif e.type == "Closed" then it.status = "closed" end
      it.version = e.version
    end
    out[id] = it
  end
  return out
end

-- The read model without its guards, by id.
local function read_model(db, tname)
  local res = assert(db:scan({ TableName = tname }, { segments = 4 }))
  local out = {}
  for _, item in ipairs(res.Items) do
    local c = {}
    for k, v in pairs(item) do if k ~= "_tide" and k ~= "_rev" then c[k] = v end end
    out[item.id] = c
  end
  return out, res.Items
end

local function assert_same_model(want, got)
  local n = 0
  for id, w in pairs(want) do
    n = n + 1
    assert.same(w, got[id], "item " .. id)
  end
  for id in pairs(got) do assert.is_not_nil(want[id], "unexpected item " .. id) end
  return n
end

local function drop_tables(db, prefix)
  local res = db:list_tables{}
  for _, name in ipairs(res and res.TableNames or {}) do
    if name:sub(1, #prefix) == prefix then db:delete_table{ TableName = name } end
  end
end

describe("projections on DynamoDB", function()
  local db
  local prefixes = {}

  local function fresh(tag)
    local prefix = helpers.unique(tag or "tide_proj") .. "_"
    prefixes[#prefixes + 1] = prefix
    local store = dstore.new{ client = db, table_prefix = prefix }
    assert(store:init())
    local backend = backend_mod.new{ client = db, table_prefix = prefix }
    return store, backend, prefix
  end

  setup(function()
    run(function() db = new_client() end)
  end)

  teardown(function()
    run(function()
      for _, p in ipairs(prefixes) do drop_tables(db, p) end
    end)
  end)

  describe("leases", function()
    local prefix
    local clock = 1000000
    local function L(owner)
      return leases_mod.new{ client = db, table_prefix = prefix, projection = "balances", owner = owner,
                             lease_ms = 1000, clock_ms = function() return clock end }
    end

    setup(function()
      run(function()
        local _
        _, _, prefix = fresh("tide_leases")
        assert(L("w1"):init())
      end)
    end)

    it("creates a lease once, takes it, renews it, checkpoints and releases it", function()
      run(function()
        local a = L("w1")
        assert.is_true(a:ensure("shard-1", "shard-0"))
        assert.is_true(a:ensure("shard-1", "ignored"))     -- already there: kept as it was
        local l = assert(a:get("shard-1"))
        assert.same({ projection = "balances", shard = "shard-1", counter = 0, beat = 0, parent = "shard-0" },
                    { projection = l.projection, shard = l.shard, counter = l.counter, beat = l.beat,
                      parent = l.parent })
        assert.is_nil(l.owner)
        l = assert(a:take(l))
        assert.equal("w1", l.owner)
        assert.equal(1, l.counter)
        local beat = l.beat
        l = assert(a:renew(l))
        assert.equal(beat + 1, l.beat)                      -- a renewal is a heartbeat
        assert.equal(1, l.counter)                          -- and keeps the fencing token
        l = assert(a:checkpoint(l, "100000000000000000042"))
        assert.equal("100000000000000000042", l.checkpoint)
        assert.is_true(a:record_error(l, "boom"))
        assert.equal("boom", assert(a:get("shard-1")).error)
        l = assert(a:checkpoint(l, "100000000000000000043"))
        assert.is_nil(l.error)                              -- a checkpoint clears the error
        -- checkpoints only move forward: an older one leaves the stored one
        l = assert(a:checkpoint(l, "99999999999999999999"))
        assert.equal("100000000000000000043", assert(a:get("shard-1")).checkpoint)
        assert.is_true(a:release(l))
        l = assert(a:get("shard-1"))
        assert.is_nil(l.owner)
        assert.equal("100000000000000000043", l.checkpoint)
        local list = assert(a:list())
        assert.equal(1, #list)
      end)
    end)

    it("lets only one of two workers take a free lease", function()
      run(function()
        local a, b = L("w1"), L("w2")
        assert(a:ensure("shard-2"))
        local seen = assert(a:get("shard-2"))
        local la, ea = a:take(seen)
        local lb, eb = b:take(seen)
        assert.is_table(la)
        assert.is_nil(lb)
        assert.equal("LeaseLost", eb.type)
        assert.is_nil(ea)
        local text = tostring(eb)
        assert.matches("balances", text, 1, true)
        assert.matches("shard-2", text, 1, true)
        assert.matches(prefix .. "leases", text, 1, true)
        assert.equal("w1", eb.current.owner)               -- the refusal shows who holds it
        assert.equal(la.counter, eb.current.counter)
        -- the same take sent again (its first answer lost, the client's retry
        -- refused) finds the lease ours at the next counter: it is taken
        local again, aerr = a:take(seen)
        assert.is_nil(aerr)
        assert.same({ "w1", la.counter, la.beat }, { again.owner, again.counter, again.beat })
        -- a checkpoint sent again after it landed is no lost lease either
        local cp = assert(a:checkpoint(la, "100000000000000000007"))
        local cp2, cerr = a:checkpoint(la, "100000000000000000007")
        assert.is_nil(cerr)
        assert.equal("100000000000000000007", cp2.checkpoint)
        assert.equal(cp.counter, cp2.counter)
      end)
    end)

    it("refuses to take a lease whose heartbeat moved, allows it once it stops, and fences the old owner", function()
      run(function()
        local a, b = L("w1"), L("w2")
        assert(a:ensure("shard-3"))
        local la = assert(a:take(assert(a:get("shard-3"))))
        local seen = assert(b:get("shard-3"))
        la = assert(a:renew(la))                            -- the owner's heartbeat after b looked
        local lb, err = b:take(seen)
        assert.is_nil(lb)
        assert.equal("LeaseLost", err.type)
        seen = assert(b:get("shard-3"))                     -- no heartbeat since: b may take it
        lb = assert(b:take(seen))
        assert.equal("w2", lb.owner)
        assert.equal(la.counter + 1, lb.counter)
        -- the old owner's checkpoint with the stale counter fails: fencing
        local ok
        ok, err = a:checkpoint(la, "100000000000000000099")
        assert.is_nil(ok)
        assert.equal("LeaseLost", err.type)
        ok, err = a:renew(la)
        assert.is_nil(ok)
        assert.equal("LeaseLost", err.type)
        assert.is_nil((a:release(la)))
        assert.is_nil(assert(b:get("shard-3")).checkpoint)
        assert(b:checkpoint(lb, "100000000000000000100"))
        -- a reset (replay) frees every lease, fences the holder and starts
        -- the projection again from TRIM_HORIZON (40 zeros)
        assert.is_true(b:reset())
        local l = assert(b:get("shard-3"))
        assert.is_nil(l.owner)
        assert.equal("0", l.checkpoint)
        ok, err = b:checkpoint(lb, "100000000000000000101")
        assert.is_nil(ok)
        assert.equal("LeaseLost", err.type)
      end)
    end)

    it("splits six shards between two owners by their fair share", function()
      run(function()
        local p = helpers.unique("fair")
        local function mk(owner)
          return leases_mod.new{ client = db, table_prefix = prefix, projection = p, owner = owner,
                                 lease_ms = 1000, clock_ms = function() return clock end }
        end
        local a, b = mk("w1"), mk("w2")
        for i = 1, 6 do assert(a:ensure("s" .. i)) end
        local shards = require "tide.projection.shards"
        local function round(w, running)
          local list = assert(w:list())
          local eligible = {}
          for _, l in ipairs(list) do eligible[l.shard] = true end
          local plan = shards.plan{ owner = w.owner, leases = list, eligible = eligible, running = running }
          for _, l in ipairs(plan.takes) do
            local nl = w:take(l)
            if nl then running[nl.shard] = true end
          end
          if plan.steal then
            local nl = w:take(plan.steal, true)             -- a hard steal (the runner asks first)
            if nl then running[nl.shard] = true end
          end
        end
        local ra, rb = {}, {}
        round(a, ra)                                        -- alone: takes all six
        local count = function(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end
        assert.equal(6, count(ra))
        for _ = 1, 4 do round(b, rb) end                    -- steals one per round until within 1
        assert.equal(3, count(rb))
        local owners = {}
        for _, l in ipairs(assert(a:list())) do owners[l.owner] = (owners[l.owner] or 0) + 1 end
        assert.same({ w1 = 3, w2 = 3 }, owners)
      end)
    end)
  end)

  describe("backend", function()
    local backend, prefix, owners_proj

    setup(function()
      run(function()
        local _
        _, backend, prefix = fresh("tide_rm")
        owners_proj = assert(projection.load_file(helpers.root .. "/projections/owners.lua", "owners"))
        assert(backend:init(balances()))
        assert(backend:init(owners_proj))
        assert(backend:init(owners_proj))                   -- idempotent
      end)
    end)

    it("creates on-demand tables named after the prefix", function()
      run(function()
        for _, t in ipairs({ "rm_balances", "rm_owners", "rm_owner_of", "positions" }) do
          local d = assert(db:describe_table{ TableName = prefix .. t }).Table
          assert.equal("PAY_PER_REQUEST", d.BillingModeSummary.BillingMode)
        end
        local d = assert(db:describe_table{ TableName = prefix .. "rm_owners" }).Table
        assert.equal("owner", d.KeySchema[1].AttributeName)
      end)
    end)

    it("round-trips a plan of batch and conditional items and positions", function()
      run(function()
        local items = {}
        for i = 1, 60 do
          items[#items + 1] = { table = "balances", key = "k" .. i, mode = "batch", expected_rev = false,
            item = { id = "k" .. i, balance = i, owner = "o", _tide = { ["account#k" .. i] = 1 }, _rev = 1 } }
        end
        items[#items + 1] = { table = "owners", key = "o", mode = "conditional", expected_rev = false,
          item = { owner = "o", total = 5, _tide = { ["account#k1"] = 1 }, _rev = 1 } }
        local positions = {}
        for i = 1, 60 do positions["account#k" .. i] = i end
        assert.is_true(backend:write("balances", { items = items, positions = positions }))
        local reqs = {}
        for i = 1, 60 do reqs[i] = { table = "balances", key = "k" .. i } end
        reqs[#reqs + 1] = { table = "owners", key = "o" }
        reqs[#reqs + 1] = { table = "owners", key = "missing" }
        local got = assert(backend:get_items(reqs))
        assert.equal(7, got["balances\0k7"].balance)
        assert.equal(1, got["balances\0k7"]._tide["account#k7"])
        assert.equal(1, got["owners\0o"]._rev)
        assert.is_nil(got["owners\0missing"])
        local pos = assert(backend:get_positions("balances", { "account#k3", "account#k60", "account#none" }))
        assert.same({ ["account#k3"] = 3, ["account#k60"] = 60 }, pos)
        assert.same({}, assert(backend:get_positions("owners", { "account#k3" })))
        assert.equal(5, assert(backend:read_item("owners", "o")).total)
        assert.is_false(backend:read_item("owners", "nobody"))

        -- a conditional item changed under us: Conflict; the right revision: written
        local ok, err = backend:write("owners", { items = {
          { table = "owners", key = "o", mode = "conditional", expected_rev = false,
            item = { owner = "o", total = 99, _rev = 1 } } }, positions = {} })
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        assert.matches("owners", tostring(err), 1, true)
        ok, err = backend:write("owners", { items = {
          { table = "owners", key = "o", mode = "conditional", expected_rev = 7,
            item = { owner = "o", total = 99, _rev = 8 } } }, positions = {} })
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        assert.is_true(backend:write("owners", { items = {
          { table = "owners", key = "o", mode = "conditional", expected_rev = 1,
            item = { owner = "o", total = 6, _rev = 2 } } }, positions = {} }))
        assert.equal(6, assert(backend:read_item("owners", "o")).total)
        -- deletes: batch and conditional
        assert.is_true(backend:write("owners", { items = {
          { table = "owners", key = "o", mode = "conditional", expected_rev = 2 },
          { table = "balances", key = "k1", mode = "batch", expected_rev = 1 } }, positions = {} }))
        assert.is_false(backend:read_item("owners", "o"))
        assert.is_false(backend:read_item("balances", "k1"))

        -- clear empties the projection's tables and positions, nothing else
        assert.is_true(backend:clear(balances()))
        assert.is_false(backend:read_item("balances", "k2"))
        assert.same({}, assert(backend:get_positions("balances", { "account#k3" })))
      end)
    end)

    it("raises on a table the projection does not declare", function()
      run(function()
        assert.has_error(function() backend:get_items({ { table = "nope", key = "x" } }) end)
      end)
    end)

    it("names the projection and table in a store failure", function()
      run(function()
        local b = backend_mod.new{ client = db, table_prefix = helpers.unique("absent") .. "_" }
        b:register(balances())
        local ok, err = b:write("balances", { items = { { table = "balances", key = "x", mode = "batch",
          expected_rev = false, item = { id = "x", _rev = 1 } } }, positions = {} })
        assert.is_nil(ok)
        assert.equal("ResourceNotFoundException", err.type)
        assert.matches("balances", tostring(err), 1, true)
      end)
    end)
  end)

  describe("deletions", function()
    -- Items deleted in batch mode (one stream per item) and in conditional
    -- mode: a tombstone keeps their last state and guards until the
    -- positions are written.
    local SRC = [[
local p = { subscribe = { aggregates = { "account" } },
            tables = { accts = { key = "id" }, shared = { key = "id", mode = "conditional" } } }
local function bump(e, ctx, t)
  local it = assert(ctx:get(t, e.id), "no item " .. e.id)
  it.n = it.n + 1
  ctx:put(t, it)
end
p.handlers = {
  Opened = function(e, ctx) ctx:put("accts", { id = e.id, n = 0 }); ctx:put("shared", { id = e.id, n = 0 }) end,
  Bumped = function(e, ctx) bump(e, ctx, "accts"); bump(e, ctx, "shared") end,
  Closed = function(e, ctx) ctx:delete("accts", e.id); ctx:delete("shared", e.id) end,
}
return p
]]
    local function ev(id, v, t)
      return { stream = "account#" .. id, aggregate = "account", id = id, version = v, type = t, data = {}, meta = {} }
    end

    it("leave no tombstone after a write, and one with the guards when a worker dies before the positions", function()
      run(function()
        local _, backend, prefix = fresh("tide_del")
        local proj = assert(projection.from_source("del", SRC, "projections/del.lua"))
        assert(backend:init(proj))
        local function raw(t, id)
          return assert(db:get_item{ TableName = prefix .. "rm_" .. t, Key = { id = id }, ConsistentRead = true }).Item
        end
        local events = { ev("a", 1, "Opened"), ev("a", 2, "Bumped"), ev("a", 3, "Closed") }
        local plan = assert(projector.new{ projection = proj, backend = backend }:apply(events))
        assert(backend:write("del", plan))
        assert.is_nil(raw("accts", "a"))
        assert.is_nil(raw("shared", "a"))
        assert.is_false(backend:read_item("accts", "a"))

        -- A client that dies at the positions write: the items are written.
        local dying = setmetatable({}, { __index = function(_, k)
          if k == "batch_write" then
            return function(_, ri)
              if ri[prefix .. "positions"] then return nil, { type = "Died", message = "killed before the positions" } end
              return db:batch_write(ri)
            end
          elseif k == "update_item" then
            -- positions are conditional updates (they only move forward)
            return function(_, p)
              if p.TableName == prefix .. "positions" then return nil, { type = "Died", message = "killed before the positions" } end
              return db:update_item(p)
            end
          end
          local v = db[k]
          if type(v) ~= "function" then return v end
          return function(_, ...) return v(db, ...) end
        end })
        local dying_backend = backend_mod.new{ client = dying, table_prefix = prefix }
        dying_backend:register(proj)
        events = { ev("b", 1, "Opened"), ev("b", 2, "Bumped"), ev("b", 3, "Closed") }
        plan = assert(projector.new{ projection = proj, backend = dying_backend }:apply(events))
        assert.is_nil(dying_backend:write("del", plan))
        for _, t in ipairs({ "accts", "shared" }) do
          local tomb = raw(t, "b")
          assert.is_true(tomb._deleted)
          assert.equal(3, tomb._tide["account#b"])
          assert.equal(1, tomb.n)
        end
        assert.is_false(backend:read_item("accts", "b"))

        -- Restarted: the same events again change nothing and do not fail;
        -- then the tombstones go.
        local p = projector.new{ projection = proj, backend = backend }
        plan = assert(p:apply(events))
        assert.equal(3, plan.applied)
        assert(backend:write("del", plan))
        p:committed(plan)
        assert.is_true(raw("accts", "b")._deleted)       -- nothing deleted it again: still a tombstone
        -- A later event re-creates the items over the tombstones.
        plan = assert(p:apply({ ev("b", 4, "Opened") }))
        assert(backend:write("del", plan))
        for _, t in ipairs({ "accts", "shared" }) do
          local it = raw(t, "b")
          assert.is_nil(it._deleted)
          assert.equal(0, it.n)
          assert.equal(4, it._tide["account#b"])
        end
        assert.same({ id = "b", n = 0 }, (function()
          local it = assert(backend:read_item("accts", "b"))
          return { id = it.id, n = it.n }
        end)())
      end)
    end)
  end)

  describe("streams runner", function()
    describe("two workers in one process", function()
      it("own each shard exactly once, and the survivor takes the shards of a dead one", function()
        run(function()
          local store, backend, prefix = fresh("tide_two")
          local expected = write_accounts(store, 30, 10, "two", 30)
          local function runner(owner)
            return streams.new{ client = db, store = store, backend = backend, projection = balances(),
                                owner = owner, lease_ms = 900, poll_ms = 20, max_poll_ms = 100,
                                describe_ms = 500, log = quiet_log }
          end
          local a, b = runner("worker-a"), runner("worker-b")
          assert(a:start())
          local ta = sched.spawn(function() return a:run() end)
          local tb = sched.spawn(function() return b:run() end)
          sched.sleep(1.5)
          local st = assert(a:status()).shards
          local n_shards, owned = 0, { ["worker-a"] = 0, ["worker-b"] = 0 }
          for _, s in ipairs(st) do
            if s.checkpoint ~= "SHARD_END" then
              n_shards = n_shards + 1
              assert.is_string(s.owner, "shard " .. s.shard .. " has no owner")
              owned[s.owner] = owned[s.owner] + 1
              -- exactly one runner runs it
              local ra = a.state[s.shard] and not a.state[s.shard].finished
              local rb = b.state[s.shard] and not b.state[s.shard].finished
              assert.is_true((ra and not rb) or (rb and not ra))
            end
          end
          assert.is_true(n_shards >= 1)
          if n_shards >= 2 then
            assert.is_true(owned["worker-a"] > 0 and owned["worker-b"] > 0)
          end
          -- the owner of the first shard dies: it stops renewing, releases nothing
          local first = st[1]
          local dead, alive = (first.owner == "worker-a") and a or b, (first.owner == "worker-a") and b or a
          dead:kill()
          -- the dead worker's leases as it left them
          local left = {}
          for _, l in ipairs(assert(dead.leases:list())) do
            if l.owner == dead.owner then left[l.shard] = l end
          end
          assert.is_not_nil(next(left))
          -- more events while nobody serves the dead worker's shards
          local more = write_accounts(store, 10, 5, "late", 10)
          local t0 = sched.now()
          local taken = {}
          while sched.now() - t0 < 10 and next(left) do
            for _, l in ipairs(assert(alive.leases:list())) do
              local old = left[l.shard]
              if old and l.owner == alive.owner then
                -- taken (a new fencing token) once the dead owner's heartbeat stopped
                assert.is_true(l.counter > old.counter)
                taken[#taken + 1], left[l.shard] = l.shard, nil
              end
            end
            sched.sleep(0.05)
          end
          assert.is_nil(next(left), "the survivor did not take the dead worker's shards")
          -- the survivor applies the events written after the death
          local t1 = sched.now()
          local function late_done()
            for id, w in pairs(more) do
              local it = backend:read_item("balances", id)
              if not it or it.version ~= w.version then return false end
            end
            return true
          end
          while not late_done() and sched.now() - t1 < 10 do sched.sleep(0.1) end
          assert.is_true(late_done(), "the survivor did not apply the later events")
          alive:stop()
          for _, th in ipairs({ ta, tb }) do assert.is_true((sched.wait(th))) end
          local c = streams.new{ client = db, store = store, backend = backend, projection = balances(),
                                 owner = "checker", lease_ms = 900, poll_ms = 20, log = quiet_log }
          assert(c:run_until_caught_up{ timeout = 60 })
          for k, v in pairs(more) do expected[k] = v end
          assert.equal(40, assert_same_model(expected, read_model(db, prefix .. "rm_balances")))
        end)
      end)
    end)

    -- The shell command of a spec/fixtures/streams_worker.lua process on
    -- the tables of prefix (its mode and options appended by the caller).
    local q = helpers.shell_quote
    local function worker_command(prefix)
      return string.format("%s script %s %s %s %s", q(helpers.tide_bin),
        q(helpers.root .. "/spec/fixtures/streams_worker.lua"), q(helpers.dynamodb_endpoint()), q(prefix),
        q(BALANCES))
    end

    -- A worker process catches up from the checkpoints; then the read model
    -- must hold `accounts` items equal to expected and to a recomputation
    -- from the events table.
    local function assert_caught_up(store, prefix, expected, accounts)
      local out, status = helpers.run(worker_command(prefix) .. " catchup 1000 500 2>&1")
      assert.equal(0, status, out)
      assert.matches("ok records=", out)
      run(function()
        local got = read_model(db, prefix .. "rm_balances")
        assert.equal(accounts, assert_same_model(expected, got))
        assert_same_model(recompute(db, store.events_table), got)
      end)
    end

    describe("a worker process killed with SIGKILL", function()
      it("leaves a read model that a restart completes with nothing applied twice", function()
        local store, prefix, expected
        run(function()
          local _
          store, _, prefix = fresh("tide_kill")
          expected = write_accounts(store, 60, 20, "kill", 60)
        end)
        local dir = helpers.tmpdir()
        local worker = worker_command(prefix)
        local kills = 0
        for round = 1, 3 do
          -- start a daemon, let it apply a few batches, kill -9 it mid-run
          local out = dir .. "/out." .. round
          local cmd = string.format("%s run 1000 40 > %s 2>&1 & pid=$!; "
            .. "for i in $(seq 80); do n=$(grep -c '^batch' %s); [ \"$n\" -ge 2 ] && break; sleep 0.05; done; "
            .. "kill -9 $pid; wait $pid 2>/dev/null; echo killed", worker, q(out), q(out))
          local res = helpers.run(cmd)
          assert.matches("killed", res)
          local log = helpers.read_file(out) or ""
          assert.matches("started", log, 1, true)
          kills = kills + 1
          -- a later life must wait for the dead one's lease (1 s) to expire
        end
        assert.equal(3, kills)
        assert_caught_up(store, prefix, expected, 60)
      end)
    end)

    describe("two worker processes", function()
      it("one serves the shard; when it is killed, the other takes it over and the read model stays exact", function()
        local store, prefix, expected
        run(function()
          local _
          store, _, prefix = fresh("tide_duo")
          expected = write_accounts(store, 20, 10, "duo", 20)
        end)
        local dir = helpers.tmpdir()
        local worker = worker_command(prefix) .. " run 1000 40"
        local out = { a = dir .. "/out.a", b = dir .. "/out.b" }
        local pid = {}
        for _, w in ipairs({ "a", "b" }) do
          pid[w] = tonumber(helpers.run(string.format("%s > %s 2>&1 & echo $!", worker, q(out[w]))):match("%d+"))
          assert.is_number(pid[w])
        end
        local function batches(w)
          local n = 0
          for _ in (helpers.read_file(out[w]) or ""):gmatch("\nbatch ") do n = n + 1 end
          return n
        end
        local function wait_for(cond, seconds)
          for _ = 1, seconds * 20 do
            if cond() then return true end
            helpers.run("sleep 0.05")
          end
          return cond()
        end
        local ok, err = pcall(function()
          -- the shard's owner applies the first events; the other waits
          assert.is_true(wait_for(function() return batches("a") + batches("b") >= 1 end, 30),
                         "no worker applied a batch")
          local owner = batches("a") > 0 and "a" or "b"
          local other = owner == "a" and "b" or "a"
          assert.equal(0, batches(other))
          helpers.run(string.format("kill -9 %d; wait %d 2>/dev/null", pid[owner], pid[owner]))
          pid[owner] = nil
          -- events written while the owner is dead reach the survivor once
          -- the dead owner's lease (1 s) expired
          local more
          run(function() more = write_accounts(store, 10, 5, "duo-late", 10) end)
          for k, v in pairs(more) do expected[k] = v end
          assert.is_true(wait_for(function() return batches(other) >= 1 end, 30),
                         "the surviving worker never took the shard over")
        end)
        for _, p in pairs(pid) do helpers.run(string.format("kill -9 %d 2>/dev/null", p)) end
        assert(ok, err)
        -- whatever the survivor had not applied yet, a catch-up finishes;
        -- nothing may be applied twice (balances would be off)
        assert_caught_up(store, prefix, expected, 30)
      end)
    end)

    describe("gap filling", function()
      it("applies a stream's missing versions from the events table before a later one", function()
        run(function()
          local store, backend, prefix = fresh("tide_gap")
          local expected = write_accounts(store, 3, 8, "gap", 3)
          local arn = assert(store:describe()).events.stream_arn
          local desc = assert(db:describe_stream{ StreamArn = arn }).StreamDescription
          local events = {}
          for _, sh in ipairs(desc.Shards) do
            local it = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = sh.ShardId,
                                                     ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
            while it do
              local r = assert(streams.get_events(db, { ShardIterator = it, Limit = 1000 }))
              for _, ev in ipairs(r.events) do events[#events + 1] = ev end
              if r.records == 0 then break end
              it = r.NextShardIterator
            end
          end
          assert.equal(24, #events)
          -- fresh event tables for every apply (the projector decodes in place)
          local function copies(list)
            local out = {}
            for i, ev in ipairs(list) do
              out[i] = {}
              for k, v in pairs(ev) do out[i][k] = v end
            end
            return out
          end
          -- a later version of each stream before the earlier ones: a child
          -- shard's records processed first would look like this
          local late, early = {}, {}
          for _, ev in ipairs(events) do
            if ev.version >= 6 then late[#late + 1] = ev else early[#early + 1] = ev end
          end
          local proj = balances()
          assert(backend:init(proj))
          local p = require("tide.projector").new{ projection = proj, backend = backend,
                                                   reader = streams.reader(db, store.events_table) }
          local plan = assert(p:apply(copies(late)))
          assert.equal(15, plan.filled)                     -- versions 1..5 of three streams
          assert.equal(24, plan.applied)
          assert(backend:write(proj.name, plan))
          p:committed(plan)
          local got = read_model(db, prefix .. "rm_balances")
          assert_same_model(expected, got)
          -- the earlier records arrive afterwards: all skipped
          plan = assert(p:apply(copies(early)))
          assert.equal(0, plan.applied)
          assert.equal(15, plan.skipped)
          -- and a fresh projector (positions from the table) skips them too
          local p2 = require("tide.projector").new{ projection = proj, backend = backend,
                                                    reader = streams.reader(db, store.events_table) }
          plan = assert(p2:apply(copies(events)))
          assert.equal(0, plan.applied)
          assert.equal(24, plan.skipped)
        end)
      end)

      it("reads a gap's versions with the reader: after < version < before", function()
        run(function()
          local store = fresh("tide_reader")
          write_accounts(store, 1, 12, "rd", 1)
          local read = streams.reader(db, store.events_table)
          local got = assert(read("account#rd-0001", 3, 9))
          assert.equal(5, #got)
          assert.equal(4, got[1].version)
          assert.equal(8, got[5].version)
          assert.same({}, assert(read("account#rd-0001", 3, 4)))
          assert.equal(9, #assert(read("account#rd-0001", 3)))
        end)
      end)
    end)

    -- Last: every stream record makes DynamoDB Local's later writes slower
    -- (its cost per write grows with the records it holds, of any table).
    describe("balances over 20,000 events", function()
      local store, backend, prefix, expected

      setup(function()
        run(function()
          store, backend, prefix = fresh("tide_bal")
          expected = write_accounts(store, 500, 40, "acc", 64)
        end)
      end)

      it("projects the stream into a read model equal to a recomputation from the events table", function()
        run(function()
          local r = streams.new{ client = db, store = store, backend = backend, projection = balances(),
                                 owner = "solo", lease_ms = 3000, poll_ms = 20, log = quiet_log }
          assert(r:start())
          local res = assert(r:run_until_caught_up{ timeout = 120 })
          assert.equal(20000, res.records)
          local want = recompute(db, store.events_table)
          local got = read_model(db, prefix .. "rm_balances")
          assert.equal(500, assert_same_model(want, got))
          assert.equal(500, assert_same_model(expected, got))
          -- the leases: every shard checkpointed, released
          local st = assert(r:status()).shards
          assert.is_true(#st >= 1)
          for _, s in ipairs(st) do
            assert.is_nil(s.owner)
            assert.is_string(s.checkpoint)
            assert.is_nil(s.error)
          end
          -- a second catch-up finds nothing new: nothing applied twice
          local again = assert(r:run_until_caught_up{ timeout = 60 })
          assert.equal(0, again.records - res.records)
          assert_same_model(want, read_model(db, prefix .. "rm_balances"))
        end)
      end)

      it("re-applies nothing when the stream is read again from TRIM_HORIZON", function()
        run(function()
          local r = streams.new{ client = db, store = store, backend = backend, projection = balances(),
                                 owner = "replayer", lease_ms = 3000, poll_ms = 20, log = quiet_log }
          assert(r.leases:reset())                        -- every checkpoint gone: all records again
          local res = assert(r:run_until_caught_up{ timeout = 120 })
          assert.equal(20000, res.records)
          assert_same_model(expected, read_model(db, prefix .. "rm_balances"))
        end)
      end)
    end)
  end)
end)
