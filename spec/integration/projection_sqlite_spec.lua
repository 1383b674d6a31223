-- The embedded-feed runner (tide.projection.runner.sqlite) and the SQLite
-- backend against real SQLite files: 20,000 events of 500 accounts written
-- through the repository; balances and owners equal a recomputation from
-- the events table; the lease keeps a second runner out; SIGKILLed runner
-- processes and a final catch-up give the same read model with no event
-- applied twice; a handler error is recorded and retried.
local helpers = require "helpers"
local sched = require "tide.sched"
local core = require "tide.core"
local store_mod = require "tide.store.sqlite"
local aggregate = require "tide.aggregate"
local repository = require "tide.repository"
local projection = require "tide.projection"
local runner_mod = require "tide.projection.runner.sqlite"
local backend_mod = require "tide.projection.sqlite"

local q = helpers.shell_quote

local ACCOUNTS, PER_ACCOUNT, WRITERS = 500, 40, 100
local dirs = {}
local template -- the database with the 20,000 events
local aggregates = aggregate.registry("aggregates")
local projections = projection.registry("projections")

local function tmpdir()
  local d = helpers.tmpdir()
  dirs[#dirs + 1] = d
  return d
end

-- A fresh copy of the template database.
local function fresh_db()
  local path = tmpdir() .. "/tide.db"
  assert(os.execute("cp " .. q(template) .. " " .. q(path)) == 0)
  return path
end

local function open(path)
  local store = assert(store_mod.new{ path = path, busy_timeout_ms = 30000 })
  assert(store:init())
  return store
end

-- Writes the accounts' commands through the repository, WRITERS threads,
-- each owning ACCOUNTS / WRITERS accounts and interleaving them.
local function populate(path)
  local store = open(path)
  local repo = repository.new{ store = store, registry = aggregates }
  sched.run(function()
    local threads = {}
    for w = 1, WRITERS do
      threads[w] = sched.spawn(function()
        local mine, balance = {}, {}
        for a = w, ACCOUNTS, WRITERS do
          local id = ("acc-%03d"):format(a)
          mine[#mine + 1] = id
          assert(repo:execute("account", id, { type = "Open", owner = ("owner-%02d"):format(a % 37) }))
          balance[id] = 0
        end
        for step = 2, PER_ACCOUNT do
          for _, id in ipairs(mine) do
            local n = tonumber(id:sub(5))
            local cmd
            if step == PER_ACCOUNT and n % 10 == 0 then
              cmd = { type = "Close" }
            else
              local amount = math.random(1, 500)
              if step % 3 == 0 and balance[id] >= amount then
                cmd = { type = "Withdraw", amount = amount }
                balance[id] = balance[id] - amount
              else
                cmd = { type = "Deposit", amount = amount }
                balance[id] = balance[id] + amount
              end
            end
            local res, err = repo:execute("account", id, cmd)
            assert(res, err and tostring(err))
          end
        end
      end)
    end
    for _, r in ipairs(sched.wait_all(threads)) do assert(r[1], r[2]) end
  end)
  assert.equal(ACCOUNTS * PER_ACCOUNT, assert(store:last_position()))
  store:close()
end

-- balances and owners recomputed from the events table.
local function recompute(store)
  local balances, owners, pos = {}, {}, 0
  while true do
    local rows = assert(store:read_all(pos, 5000))
    if #rows == 0 then break end
    for _, r in ipairs(rows) do
      pos = r.position
      local id = r.stream:match("^account#(.*)$")
      local data = require("tide.stream").decode_data(r.data, r.format)
      local b = balances[id]
      if r.type == "Opened" then
        b = { id = id, owner = data.owner, balance = 0, status = "open" }
        balances[id] = b
        local o = owners[data.owner] or { owner = data.owner, accounts = 0, open = 0, total = 0 }
        owners[data.owner] = o
        o.accounts, o.open = o.accounts + 1, o.open + 1
      elseif r.type == "Deposited" then
        b.balance = b.balance + data.amount
        owners[b.owner].total = owners[b.owner].total + data.amount
      elseif r.type == "Withdrawn" then
        b.balance = b.balance - data.amount
        owners[b.owner].total = owners[b.owner].total - data.amount
      elseif r.type == "Closed" then
        b.status = "closed"
        owners[b.owner].open = owners[b.owner].open - 1
      end
      assert.equal((b.version or 0) + 1, r.version)
      b.version = r.version
    end
  end
  return balances, owners
end

local function assert_balances(runner, expected)
  local n = 0
  for id, want in pairs(expected) do
    local got = runner:read("balances", id)
    assert.same(want, got)
    n = n + 1
  end
  assert.equal(ACCOUNTS, n)
end

local function new_runner(store, name, opts)
  opts = opts or {}
  opts.store, opts.projection, opts.aggregates = store, assert(projections:get(name)), aggregates
  opts.log = opts.log or function() end
  return runner_mod.new(opts)
end

setup(function()
  template = tmpdir() .. "/template.db"
  local t0 = sched.now()
  populate(template)
  print(("\n  wrote %d events of %d accounts through the repository in %.2f s"):format(
    ACCOUNTS * PER_ACCOUNT, ACCOUNTS, sched.now() - t0))
end)

teardown(function()
  for _, d in ipairs(dirs) do helpers.run("rm -rf " .. q(d)) end
end)

describe("the embedded-feed runner", function()
  it("projects 20,000 events into balances equal, item by item, to a recomputation", function()
    local store = open(fresh_db())
    local expected = recompute(store)
    sched.run(function()
      local r = new_runner(store, "balances", { batch_size = 500 })
      local t0 = sched.now()
      assert.equal(ACCOUNTS * PER_ACCOUNT, assert(r:run_until_caught_up()).handled)
      local dt = sched.now() - t0
      print(("\n  balances: %d events in %.3f s = %.0f events/s (batch 500)"):format(r.handled, dt, r.handled / dt))
      assert_balances(r, expected)
      local st = assert(r:status())
      assert.equal(ACCOUNTS * PER_ACCOUNT, st.checkpoint)
      assert.equal(0, st.lag)
      assert.is_nil(st.error)
      assert.equal(r.owner, st.holder)
      -- caught up: a step reads nothing; a new event is then applied
      assert.equal(0, r:step())
      local repo = repository.new{ store = store, registry = aggregates }
      assert(repo:execute("account", "acc-001", { type = "Deposit", amount = 7 }))
      assert.equal(1, r:step())
      assert.equal(expected["acc-001"].balance + 7, r:read("balances", "acc-001").balance)
      assert.equal(expected["acc-001"].version + 1, r:read("balances", "acc-001").version)
    end)
    store:close()
  end)

  it("projects owners' totals equal to a recomputation (conditional mode)", function()
    local store = open(fresh_db())
    local _, expected = recompute(store)
    sched.run(function()
      local r = new_runner(store, "owners", { batch_size = 300 })
      assert(r:run_until_caught_up())
      local n = 0
      for owner, want in pairs(expected) do
        assert.same(want, r:read("owners", owner))
        n = n + 1
      end
      assert.equal(37, n)
    end)
    store:close()
  end)

  it("lets one runner at a time hold a projection's lease", function()
    local path = fresh_db()
    local s1, s2 = open(path), open(path)
    sched.run(function()
      local r1 = new_runner(s1, "balances", { batch_size = 1000, owner = "first" })
      local r2 = new_runner(s2, "balances", { batch_size = 1000, owner = "second" })
      assert.equal(1000, r1:step())
      local n, err = r2:step()
      assert.is_nil(n)
      assert.equal("LeaseHeld", err.type)
      assert.equal("first", err.holder)
      assert.matches("projection balances: LeaseHeld: owner first holds the lease", tostring(err))
      n, err = r2:run_until_caught_up()
      assert.is_nil(n)
      assert.equal("LeaseHeld", err.type)
      local st = assert(r2:status())
      assert.equal(1000, st.checkpoint)
      assert.equal("first", st.holder)
      assert.equal(0, r2.handled)
      -- the first goes on; once it releases, the second takes over from its checkpoint
      assert.equal(1000, r1:step())
      assert(r1:release())
      assert.equal(1000, r2:step())
      assert.equal(3000, assert(r2:status()).checkpoint)
      n, err = r1:step()
      assert.is_nil(n)
      assert.equal("second", err.holder)
      assert(r2:run_until_caught_up())
      assert_balances(r2, (recompute(s2)))
    end)
    s1:close()
    s2:close()
  end)

  it("gives the same read model after runner processes killed with SIGKILL, no event applied twice", function()
    local path = fresh_db()
    local store = open(path)
    local expected = recompute(store)
    local backend = backend_mod.new{ store = store }
    local kills, at = 0, {}
    sched.run(function()
      for i = 1, 4 do
        local log = path .. ".log" .. i
        local out = helpers.run(("cd %s && %s script spec/fixtures/projections/run_projection.lua %s balances crash-%d 300 %d > %s 2>&1 & echo $!")
          :format(q(helpers.root), q(helpers.tide_bin), q(path), i, 20 + 10 * i, q(log)))
        local pid = assert(tonumber(out:match("(%d+)")))
        -- wait until this child has committed a few batches, then kill it
        local target = i * 4000 + math.random(0, 1500)
        local deadline = sched.now() + 60
        local cp
        while sched.now() < deadline do
          cp = backend:checkpoint("balances")
          if cp and cp.owner == "crash-" .. i and cp.position >= target then break end
          sched.sleep(0.002)
        end
        helpers.run("kill -9 " .. pid .. " 2>/dev/null")
        kills = kills + 1
        helpers.run(("while kill -0 %d 2>/dev/null; do sleep 0.01; done"):format(pid))
        cp = assert(backend:checkpoint("balances"))
        at[#at + 1] = cp.position
        assert.equal("crash-" .. i, cp.owner)
        assert.is_true(cp.position >= target, "child " .. i .. " reached " .. cp.position)
        assert.is_true(cp.position < ACCOUNTS * PER_ACCOUNT)
      end
      -- the last child's lease is still running: the final runner waits it out
      local r = new_runner(store, "balances", { batch_size = 500, owner = "final" })
      local cp = assert(backend:checkpoint("balances"))
      if cp.lease_until - cp.now > 50 then
        local n, err = r:step()
        assert.is_nil(n)
        assert.equal("LeaseHeld", err.type)
        assert.equal("crash-4", err.holder)
      end
      sched.sleep(0.35)
      assert(r:run_until_caught_up())
      assert_balances(r, expected)
      -- positions: each stream's last version, once
      local rows = assert(store.db:query("SELECT count(*), sum(version) FROM projection_positions WHERE projection = 'balances'"))
      assert.equal(ACCOUNTS, rows[1][1])
      assert.equal(ACCOUNTS * PER_ACCOUNT, rows[1][2])
      -- _rev counts the writes of an item: one per event, so none was applied twice
      for id, want in pairs(expected) do
        local raw = assert(backend:read_item("balances", id))
        assert.equal(want.version, raw._rev)
        assert.same({ ["account#" .. id] = want.version }, raw._tide)
      end
    end)
    print(("\n  killed %d runner processes at checkpoints %s"):format(kills, table.concat(at, ", ")))
    store:close()
  end)

  it("records a handler error in the checkpoint row, backs off and retries the same batch", function()
    local store = open(fresh_db())
    -- it reads the spec's global: outside the sandbox
    local proj = assert(projection.load_file("spec/fixtures/projections/flaky.lua", nil, { sandbox = false }))
    local rows = assert(store:read_all(0, 2000))
    local bad = rows[1234]
    _G.TIDE_SPEC_FAIL = bad.stream .. ":" .. bad.version
    local logged = {}
    sched.run(function()
      local sleeps = {}
      local r = runner_mod.new{ store = store, projection = proj, batch_size = 1000, owner = "flaky",
        backoff_base = 0.01, log = function(level, msg) logged[#logged + 1] = level .. " " .. msg end,
        sleep = function(s) sleeps[#sleeps + 1] = s; sched.sleep(s) end }
      local n, err = r:run_until_caught_up{ max_failures = 3 }
      assert.is_nil(n)
      assert.equal("handler_error", err.kind)
      assert.equal(bad.stream, err.event.stream)
      assert.equal(bad.version, err.event.version)
      assert.equal(2, #sleeps) -- backed off between the 3 attempts, growing
      assert.is_true(sleeps[2] > sleeps[1] * 1.0 or sleeps[2] >= 0.01)
      local st = assert(r:status())
      -- the events before the failing one are applied; the checkpoint stops right before it
      assert.equal(bad.position - 1, st.checkpoint)
      assert.matches("projection flaky, stream " .. bad.stream:gsub("%-", "%%-") .. " version " .. bad.version, st.error)
      assert.matches("refusing", st.error)
      assert.matches("\tspec/fixtures/projections/flaky.lua:%d+: in ", st.error) -- the user's frames
      assert.not_matches("lua/tide/", st.error)
      assert.equal(err, st.last_error)
      assert.matches("^error projection flaky", logged[1])
      -- fixed: the same batch goes through, the error is cleared
      _G.TIDE_SPEC_FAIL = nil
      assert(r:run_until_caught_up())
      st = assert(r:status())
      assert.is_nil(st.error)
      assert.equal(0, st.lag)
      local balances = recompute(store)
      for id, want in pairs(balances) do
        local got = r:read("flaky_balances", id)
        assert.equal(want.balance, got.balance)
        assert.equal(want.version, got.version)
      end
    end)
    _G.TIDE_SPEC_FAIL = nil
    store:close()
  end)

  it("refuses a conditional write whose item changed, and writes nothing of the plan", function()
    local store = open(fresh_db())
    local backend = backend_mod.new{ store = store }
    local proj = assert(projections:get("owners"))
    assert(backend:init(proj))
    local item = { owner = "x", accounts = 1, open = 1, total = 0, _tide = { ["account#a"] = 1 }, _rev = 1 }
    assert(backend:write("owners", { items = { { table = "owners", key = "x", item = item, expected_rev = false,
      mode = "conditional" } }, positions = { ["account#a"] = 1 } }))
    local stale = { owner = "x", accounts = 2, open = 2, total = 0, _tide = { ["account#b"] = 1 }, _rev = 1 }
    local ok, err = backend:write("owners", { items = {
      { table = "owner_of", key = "b", item = { id = "b", owner = "x", _tide = {}, _rev = 1 }, expected_rev = false, mode = "batch" },
      { table = "owners", key = "x", item = stale, expected_rev = false, mode = "conditional" } },
      positions = { ["account#b"] = 1 } })
    assert.is_nil(ok)
    assert.equal("Conflict", err.type)
    assert.matches("projection owners, table owners key x: Conflict", tostring(err))
    assert.is_false(backend:read_item("owner_of", "b"))
    assert.same({}, backend:get_positions("owners", { "account#b" }))
    assert.equal(1, backend:read_item("owners", "x").accounts)
    store:close()
  end)

  it("clears a projection's tables, positions and checkpoint for a replay", function()
    local store = open(fresh_db())
    sched.run(function()
      local r = new_runner(store, "balances", { batch_size = 5000 })
      assert(r:run_until_caught_up())
      local proj = assert(projections:get("balances"))
      assert(r.backend:clear(proj))
      assert.is_false(r.backend:read_item("balances", "acc-001"))
      assert.same({}, r.backend:get_positions("balances", { "account#acc-001" }))
      assert.equal(0, r.backend:checkpoint("balances").position)
      local r2 = new_runner(store, "balances", { batch_size = 5000 })
      assert(r:release())
      assert(r2:run_until_caught_up())
      assert_balances(r2, (recompute(store)))
    end)
    store:close()
  end)
end)

describe("tide.sqlite db:exec and db:query", function()
  it("runs cached statements with parameters, NULLs, change counts and Conflict on a duplicate key", function()
    local sqlite = require "tide.sqlite"
    local db = assert(sqlite.open(tmpdir() .. "/q.db"))
    assert(db:init())
    assert(db:exec("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, r REAL, s TEXT)"))
    local rows, changes = db:query("INSERT INTO t VALUES (?1, ?2, ?3, ?4)", "a", 2 ^ 53, 1.5, nil)
    assert.same({}, rows)
    assert.equal(1, changes)
    assert(db:query("INSERT INTO t VALUES (?1, ?2, ?3, ?4)", "b\0x", true, nil, "text"))
    rows = assert(db:query("SELECT k, n, r, s FROM t ORDER BY k"))
    assert.same({ { "a", 2 ^ 53, 1.5 }, { "b\0x", 1, nil, "text" } }, rows)
    local ok, err = db:query("INSERT INTO t (k) VALUES (?1)", "a")
    assert.is_nil(ok)
    assert.equal("Conflict", err.type)
    rows, changes = assert(db:query("UPDATE t SET n = n + 1 WHERE k = ?1 OR k = ?2", "a", "b\0x"))
    assert.equal(2, changes)
    ok, err = db:query("SELECT nope FROM t")
    assert.is_nil(ok)
    assert.matches("cannot prepare", err.message)
    ok, err = db:query("SELECT ?1", 1, 2)
    assert.is_nil(ok)
    assert.matches("2 parameters given, the statement takes 1", err.message)
    assert.has_error(function() db:query("SELECT ?1", {}) end, "tide.sqlite: query: parameter 1 must be a string, number, boolean or nil, got table")
    -- more distinct statements than the cache holds: the oldest are finalized
    for i = 1, 100 do assert.same({ { i } }, assert(db:query("SELECT " .. i))) end
    db:close()
  end)
end)
