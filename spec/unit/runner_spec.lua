-- The one interface of projection runners (tide.projection.runner): both
-- feeds have its methods, and the embedded feed's runner keeps its meaning
-- (run ended by stop from another thread, results and status with the
-- common fields) on a small SQLite store.
local helpers = require "helpers"
local sched = require "tide.sched"
local runner = require "tide.projection.runner"
local store_mod = require "tide.store.sqlite"
local aggregate = require "tide.aggregate"
local projection = require "tide.projection"
local repository = require "tide.repository"

local INTERFACE = { "start", "run", "run_until_caught_up", "status", "stop" }

local dirs = {}
teardown(function()
  for _, d in ipairs(dirs) do os.execute("rm -rf " .. helpers.shell_quote(d)) end
end)

local function sqlite_store()
  local dir = helpers.tmpdir()
  dirs[#dirs + 1] = dir
  local store = assert(store_mod.new{ path = dir .. "/tide.db" })
  assert(store:init())
  return store
end

local function balances()
  return assert(projection.registry("projections"):get("balances"))
end

describe("tide.projection.runner", function()
  it("reads run's stop argument: nil, a function, or a table with a stop field", function()
    local cases = {
      { nil, false },
      { function() return false end, false },
      { function() return 1 end, true },
      { { stop = false }, false },
      { { stop = true }, true },
    }
    for i, c in ipairs(cases) do
      assert.equal(c[2], runner.should_stop(c[1]), "case " .. i)
    end
  end)

  it("backs off from base doubling up to cap, with jitter of at most half", function()
    for _ = 1, 100 do
      local first = runner.backoff_delay(1, 0.1, 30)
      assert.is_true(first >= 0.05 and first <= 0.1, tostring(first))
      local fourth = runner.backoff_delay(4, 0.1, 30)
      assert.is_true(fourth >= 0.4 and fourth <= 0.8, tostring(fourth))
      local capped = runner.backoff_delay(200, 0.1, 30)
      assert.is_true(capped >= 15 and capped <= 30, tostring(capped))
    end
  end)

  it("is what both feeds' runners offer", function()
    local sqlite_runner = require("tide.projection.runner.sqlite").new{ store = sqlite_store(),
                                                                       projection = balances() }
    local db = assert(require("tide.dynamodb").new{ endpoint = "http://127.0.0.1:9", region = "us-east-1",
      credentials = { access_key_id = "k", secret_access_key = "s" } })
    local streams_runner = require("tide.projection.runner.streams").new{
      client = db, store = { prefix = "tide_", events_table = "tide_events" },
      backend = require("tide.projection.dynamodb").new{ client = db }, projection = balances() }
    for _, r in ipairs({ sqlite_runner, streams_runner }) do
      for _, method in ipairs(INTERFACE) do
        assert.is_function(r[method], method)
      end
    end
  end)

  it("on the embedded feed: results and status carry the common fields, stop ends a run", function()
    local store = sqlite_store()
    local repo = repository.new{ store = store, registry = aggregate.registry("aggregates") }
    sched.run(function()
      assert(repo:execute("account", "a1", { type = "Open", owner = "ada" }))
      assert(repo:execute("account", "a1", { type = "Deposit", amount = 5 }))
      local r = require("tide.projection.host").runner({ cfg = { store = "sqlite" }, store = store }, balances(),
        { owner = "spec", log = function() end })
      assert(r:start())
      assert.same({ handled = 2 }, assert(r:run_until_caught_up()))
      local st = assert(r:status())
      assert.equal("balances", st.projection)
      assert.equal("sqlite", st.feed)
      assert.equal("spec", st.owner)
      assert.equal(2, st.handled)
      assert.is_nil(st.error)
      -- run goes on in a thread of its own until stop(), which then releases the lease
      local th = sched.spawn(function() return r:run(nil, { idle = 0.01 }) end)
      assert(repo:execute("account", "a1", { type = "Deposit", amount = 7 }))
      local t0 = sched.now()
      while r.handled < 3 and sched.now() - t0 < 5 do sched.sleep(0.01) end
      assert.is_true(r:stop())
      assert.same({ true, true }, { sched.wait(th) })
      st = assert(r:status())
      assert.equal(3, st.handled)
      assert.is_false(st.held)
      assert.is_nil(st.holder)
      assert.equal(12, r:read("balances", "a1").balance)
    end)
    store:close()
  end)
end)
