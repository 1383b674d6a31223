-- Aggregates through the repository, the same specs on both stores: the
-- embedded SQLite store and DynamoDB (DynamoDB Local).
local helpers = require "helpers"
local stores = require "stores"
local sched = require "tide.sched"
local aggregate = require "tide.aggregate"
local repository = require "tide.repository"

-- many events on tables with streams: a DynamoDB Local of this file's own
helpers.private_dynamodb()

local FIXTURES = helpers.root .. "/spec/fixtures/aggregates"

local function registry()
  local reg = aggregate.registry(FIXTURES)
  reg:add(assert(aggregate.load_file(helpers.root .. "/aggregates/account.lua")))
  reg:add(assert(aggregate.load_file(FIXTURES .. "/counter_v1.lua", "counter")))
  return reg
end

local function kinds_of(store, stream)
  local events = assert(store:load(stream, 0))
  local types = {}
  for i, e in ipairs(events) do types[i] = e.type end
  return types
end

stores.each(function(kind, open)
  describe("aggregates on the " .. kind .. " store", function()
    local store, repo

    local function run(fn)
      return sched.run(function()
        store = open()
        repo = repository.new{ store = store, registry = registry() }
        fn()
        store:close()
      end)
    end

    local function exec(id, cmd) return repo:execute("account", id, cmd) end

    it("opens, deposits, withdraws and closes an account", function()
      run(function()
        local r = assert(exec("a1", { type = "Open", owner = "ada" }))
        assert.equal("account#a1", r.stream)
        assert.equal(1, r.version)
        assert.equal("Opened", r.events[1].type)
        assert.equal("ada", r.events[1].data.owner)
        assert.equal(2, assert(exec("a1", { type = "Deposit", amount = 100 })).version)
        assert.equal(3, assert(exec("a1", { type = "Withdraw", amount = 30 })).version)
        local st = assert(repo:state("account", "a1"))
        assert.same({ owner = "ada", balance = 70, status = "open" }, st.state)
        assert.equal(3, st.version)
        assert(exec("a1", { type = "Withdraw", amount = 70 }))
        assert(exec("a1", { type = "Close" }))
        assert.same({ "Opened", "Deposited", "Withdrawn", "Withdrawn", "Closed" }, kinds_of(store, "account#a1"))
      end)
    end)

    it("enforces every rule of the account", function()
      run(function()
        local function rejected(id, cmd, pattern)
          local r, err = exec(id, cmd)
          assert.is_nil(r)
          assert.equal("rejected", err.kind, tostring(err))
          assert.matches(pattern, err.message)
          assert.equal("account#" .. id, err.stream)
          assert.equal(cmd.type, err.command)
        end
        local function invalid(id, cmd, pattern)
          local r, err = exec(id, cmd)
          assert.is_nil(r)
          assert.equal("invalid", err.kind, tostring(err))
          assert.matches(pattern, err.message)
        end
        rejected("r1", { type = "Deposit", amount = 5 }, "not open")
        rejected("r1", { type = "Withdraw", amount = 5 }, "not open")
        rejected("r1", { type = "Close" }, "not open")
        assert(exec("r1", { type = "Open", owner = "bob" }))
        rejected("r1", { type = "Open", owner = "bob" }, "already open")
        invalid("r1", { type = "Deposit", amount = 0 }, "amount' must be at least 1")
        invalid("r1", { type = "Deposit", amount = -3 }, "amount' must be at least 1")
        invalid("r1", { type = "Deposit", amount = 2.5 }, "amount' must be an integer")
        invalid("r1", { type = "Deposit", amount = "10" }, "amount' must be an integer")
        invalid("r1", { type = "Deposit" }, "missing required field 'amount'")
        invalid("r1", { type = "Deposit", amout = 5 }, "did you mean 'amount'")
        invalid("r1", { type = "Depositt", amount = 5 }, "unknown command 'Depositt'.*did you mean 'Deposit'")
        invalid("r1", { amount = 5 }, "type")
        assert(exec("r1", { type = "Deposit", amount = 10 }))
        rejected("r1", { type = "Withdraw", amount = 11 }, "insufficient funds: balance 10, withdrawal 11")
        assert(exec("r1", { type = "Withdraw", amount = 10 }))
        assert(exec("r1", { type = "Close" }))
        rejected("r1", { type = "Deposit", amount = 1 }, "closed")
        rejected("r1", { type = "Withdraw", amount = 1 }, "closed")
        rejected("r1", { type = "Close" }, "closed")
        rejected("r1", { type = "Open", owner = "bob" }, "closed")
        local r, err = repo:execute("acount", "x", { type = "Open", owner = "a" })
        assert.is_nil(r)
        assert.equal("invalid", err.kind)
        assert.matches("did you mean 'account'", err.message)
        -- nothing the rejections touched was written
        assert.same({ "Opened", "Deposited", "Withdrawn", "Closed" }, kinds_of(store, "account#r1"))
      end)
    end)

    it("remembers the ids of a stream's last 128 commands, in the cache and through a snapshot", function()
      run(function()
        assert(exec("w1", { type = "Open", owner = "ada" }))
        for i = 1, 300 do assert(exec("w1", { type = "Deposit", amount = 1, id = "w-" .. i })) end
        -- a fresh repository reads the ids back from the snapshot (every 100
        -- versions) and the events after it
        local fresh = repository.new{ store = store, registry = registry(), snapshot_every = 100 }
        for _, r in ipairs{ repo, fresh } do
          for i = 300 - 127, 300 do
            local again = assert(r:execute("account", "w1", { type = "Deposit", amount = 1, id = "w-" .. i }))
            assert.is_true(again.duplicate, "w-" .. i)
            assert.equal(i + 1, again.version)
          end
        end
        -- an id older than the window is a new command
        local old = assert(exec("w1", { type = "Deposit", amount = 1, id = "w-1" }))
        assert.is_falsy(old.duplicate)
        assert.equal(302, old.version)
        assert.equal(301, assert(repo:state("account", "w1")).state.balance)
      end)
    end)

    it("appends nothing for a command sent again with the same id, and returns the original result", function()
      run(function()
        assert(exec("i1", { type = "Open", owner = "ada" }))
        local first = assert(exec("i1", { type = "Deposit", amount = 5, id = "cmd-42" }))
        local again = assert(exec("i1", { type = "Deposit", amount = 5, id = "cmd-42" }))
        assert.is_true(again.duplicate)
        assert.equal(first.version, again.version)
        assert.equal(1, #again.events)
        assert.equal(first.events[1].version, again.events[1].version)
        assert.equal("cmd-42", again.events[1].meta.command_id)
        -- a fresh repository (no cache) finds the id in the stored events
        local repo2 = repository.new{ store = store, registry = registry() }
        local third = assert(repo2:execute("account", "i1", { type = "Deposit", amount = 5, id = "cmd-42" }))
        assert.is_true(third.duplicate)
        assert.equal(5, assert(repo2:state("account", "i1")).state.balance)
        -- racing copies of one command: exactly one append
        local threads = {}
        for i = 1, 10 do
          local r = repository.new{ store = store, registry = registry() }
          threads[i] = sched.spawn(r.execute, r, "account", "i1", { type = "Deposit", amount = 7, id = "race" })
        end
        local dup = 0
        for _, th in ipairs(threads) do
          local ok, res = sched.wait(th)
          assert.is_true(ok)
          assert.truthy(res)
          if res.duplicate then dup = dup + 1 end
        end
        assert.equal(9, dup)
        assert.equal(12, assert(repo2:state("account", "i1")).state.balance)
        assert.equal(3, #assert(store:load("account#i1", 0)))
      end)
    end)

    it("records command, correlation and causation ids, timestamp, schema and module version", function()
      run(function()
        local agg = assert(registry():get("account"))
        local r = assert(repo:execute("account", "m1", { type = "Open", owner = "ada", id = "c-1" },
                                      { correlation_id = "corr-9", causation_id = "cause-3" }))
        local meta = r.events[1].meta
        assert.equal("c-1", meta.command_id)
        assert.equal("Open", meta.command)
        assert.equal("corr-9", meta.correlation_id)
        assert.equal("cause-3", meta.causation_id)
        assert.equal(1, meta.schema)
        assert.equal(agg.version, meta.handler)
        assert.is_true(meta.timestamp > 1.7e12)
        local stored = assert(repo:events("account", "m1"))
        assert.same(meta, stored[1].meta)
      end)
    end)

    it("keeps the balance exact with 50 concurrent writers in one process", function()
      run(function()
        assert(exec("c1", { type = "Open", owner = "ada" }))
        local threads = {}
        for i = 1, 50 do
          -- separate repositories: separate caches, so stale states conflict
          local r = repository.new{ store = store, registry = registry(), max_attempts = 200 }
          threads[i] = sched.spawn(r.execute, r, "account", "c1", { type = "Deposit", amount = i })
        end
        for _, th in ipairs(threads) do
          local ok, res, err = sched.wait(th)
          assert.is_true(ok)
          assert.truthy(res, tostring(err))
        end
        assert.equal(50 * 51 / 2, assert(repo:state("account", "c1")).state.balance)
        local events = assert(store:load("account#c1", 0))
        assert.equal(51, #events)
        for i, e in ipairs(events) do assert.equal(i, e.version) end
      end)
    end)

    it("writes all events of one command or none", function()
      run(function()
        local r = assert(repo:execute("faulty", "f1", { type = "Two" }))
        assert.equal(2, r.version)
        assert.equal(2, #r.events)
        -- a stale repository decides on version 0: its two events conflict as a whole
        local stale = repository.new{ store = store, registry = registry(), max_attempts = 1 }
        assert(stale:state("faulty", "f2"))
        assert(repo:execute("faulty", "f2", { type = "Fine" }))
        local res, err = stale:execute("faulty", "f2", { type = "Two" })
        assert.is_nil(res)
        assert.equal("conflict", err.kind)
        assert.equal(1, #assert(store:load("faulty#f2", 0)))
        local noop = assert(repo:execute("faulty", "f2", { type = "Noop" }))
        assert.equal(1, noop.version)
        assert.equal(0, #noop.events)
      end)
    end)

    it("refuses more than 100 events and an oversized event before writing anything", function()
      run(function()
        assert(repo:execute("faulty", "l1", { type = "Many", count = 100 }))
        local res, err = repo:execute("faulty", "l2", { type = "Many", count = 101 })
        assert.is_nil(res)
        assert.equal("too_many_events", err.kind)
        assert.matches("101 events", err.message)
        res, err = repo:execute("faulty", "l3", { type = "Huge", bytes = 420 * 1024 })
        assert.is_nil(res)
        assert.equal("event_too_large", err.kind)
        assert.matches("item limit", err.message)
        assert.equal(100, #assert(store:load("faulty#l1", 0)))
        assert.equal(0, #assert(store:load("faulty#l2", 0)))
        assert.equal(0, #assert(store:load("faulty#l3", 0)))
      end)
    end)

    it("reports a handler that raises or breaks the contract, writing nothing", function()
      run(function()
        local function handler_error(ctype, pattern)
          local res, err = repo:execute("faulty", "h1", { type = ctype })
          assert.is_nil(res)
          assert.equal("handler_error", err.kind, tostring(err))
          assert.matches(pattern, err.message)
        end
        handler_error("Boom", "boom in the handler")
        handler_error("Boom", "\t[^\n]*faulty.lua:%d+: in ") -- the user's frames, not tide's
        handler_error("Nothing", "returned nothing: return an event")
        handler_error("Unknown", "NoSuchEvent', which has no applier")
        handler_error("BadApply", "returned nothing: an applier must return the new state")
        assert.equal(0, #assert(store:load("faulty#h1", 0)))
        assert(repo:execute("faulty", "h1", { type = "Fine" }))
      end)
    end)

    it("takes snapshots and upcasts old events on load", function()
      run(function()
        for i = 1, 7 do assert(repo:execute("counter", "k1", { type = "Add", n = i })) end
        local snap = assert(store:get_snapshot("counter#k1"))
        assert.equal(6, snap.version)
        -- a fresh repository loads from the snapshot plus event 7
        local fresh = repository.new{ store = store, registry = registry() }
        local st = assert(fresh:state("counter", "k1"))
        assert.same({ total = 28, adds = 7 }, st.state)
        assert.equal(1, fresh.stats.loads)
        -- the module changes: Added is now {amount} (schema 2) with an upcaster
        local reg2 = aggregate.registry(FIXTURES)
        reg2:add(assert(aggregate.load_file(FIXTURES .. "/counter_v2.lua", "counter")))
        local v2 = repository.new{ store = store, registry = reg2 }
        st = assert(v2:state("counter", "k1"))
        assert.same({ total = 28, adds = 7 }, st.state)
        local r = assert(v2:execute("counter", "k1", { type = "Add", n = 100 }))
        assert.equal(2, r.events[1].meta.schema)
        assert.equal(128, assert(v2:state("counter", "k1")).state.total)
        -- old events are upcast on read, never rewritten
        local events = assert(v2:events("counter", "k1"))
        assert.equal(1, events[1].data.amount)
        assert.is_nil(events[1].data.n)
        -- the meta describes the data shown: upcast to schema 2, stored as 1
        assert.same({ 2, 1 }, { events[1].meta.schema, events[1].meta.stored_schema })
        local stored = assert(v2:events("counter", "k1", nil, { stored = true }))
        assert.same({ n = 1 }, stored[1].data)
        assert.same({ 1, nil }, { stored[1].meta.schema, stored[1].meta.stored_schema })
        local raw = assert(store:load("counter#k1", 0))
        assert.matches('"n"', raw[1].data)
      end)
    end)
  end)
end)
