-- The DynamoDB event store (lua/tide/store/dynamodb.lua) against DynamoDB
-- Local: the store interface of docs/data-model.md, the optimistic
-- concurrency check, atomic multi-event appends, limits, snapshots, and the
-- read-back that settles an ambiguous (retried) conditional write.
local helpers = require "helpers"
local core = require "tide.core"
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"
local dstore = require "tide.store.dynamodb"

-- many events on tables with streams: a DynamoDB Local of this file's own
helpers.private_dynamodb()

local CREDS = { access_key_id = "tidetest", secret_access_key = "tidetestsecret" }

local function new_client()
  local endpoint = assert(helpers.dynamodb_endpoint(),
    "DynamoDB Local endpoint not set: run the suite with tools/test.sh (make test)")
  return assert(dynamodb.new{ endpoint = endpoint, region = "us-east-1", credentials = CREDS,
                              base_delay = 0.01 })
end

local function run(fn) return sched.run(fn) end

local seq = 0
local function meta(extra)
  seq = seq + 1
  return string.format('{"command_id":"cmd-%d-%s","timestamp":%d%s}', seq, core.random_hex(8),
                       os.time() * 1000, extra and ("," .. extra) or "")
end

local function event(etype, data)
  return { type = etype, data = data or '{}', meta = meta() }
end

local function events(n, etype)
  local list = {}
  for i = 1, n do list[i] = event(etype or "Deposited", '{"amount":' .. i .. '}') end
  return list
end

describe("DynamoDB event store", function()
  local db, store, prefix, sn

  -- A fresh stream name per use.
  local function stream()
    sn = sn + 1
    return "account#" .. helpers.unique("acc") .. "-" .. sn
  end

  setup(function()
    prefix = helpers.unique("tide_store") .. "_"
    sn = 0
    run(function()
      db = new_client()
      store = dstore.new{ client = db, table_prefix = prefix }
      assert(store:init())
    end)
  end)

  teardown(function()
    run(function()
      db:delete_table{ TableName = prefix .. "events" }
      db:delete_table{ TableName = prefix .. "snapshots" }
    end)
  end)

  describe("new", function()
    it("raises on a missing client or a wrong prefix type", function()
      assert.has_error(function() dstore.new{} end)
      assert.has_error(function() dstore.new{ client = db, table_prefix = 5 } end)
      assert.has_error(function() dstore.new("x") end)
    end)

    it("names its tables after the prefix, tide_ by default", function()
      local s = dstore.new{ client = db }
      assert.equal("tide_events", s.events_table)
      assert.equal("tide_snapshots", s.snapshots_table)
    end)
  end)

  describe("init", function()
    it("is idempotent and describes both tables with the events stream ARN", function()
      run(function()
        assert.is_true(store:init())
        assert.is_true(dstore.new{ client = db, table_prefix = prefix }:init())
        local d = assert(store:describe())
        assert.equal(prefix .. "events", d.events.table)
        assert.equal(prefix .. "snapshots", d.snapshots.table)
        assert.matches(":table/" .. prefix .. "events$", d.events.arn)
        assert.matches(":table/" .. prefix .. "snapshots$", d.snapshots.arn)
        assert.matches(":table/" .. prefix .. "events/stream/", d.events.stream_arn)
        assert.equal("ACTIVE", d.events.status)
        local t = assert(db:describe_table{ TableName = prefix .. "events" }).Table
        assert.equal("PAY_PER_REQUEST", t.BillingModeSummary.BillingMode)
        assert.equal("NEW_IMAGE", t.StreamSpecification.StreamViewType)
      end)
    end)

    it("creates the tables concurrently from several stores without failing", function()
      local p2 = helpers.unique("tide_store2") .. "_"
      run(function()
        local threads = {}
        for i = 1, 4 do
          threads[i] = sched.spawn(function()
            return dstore.new{ client = db, table_prefix = p2 }:init()
          end)
        end
        for _, th in ipairs(threads) do
          local ok, res, err = sched.wait(th)
          assert.is_true(ok)
          assert.is_true(res, tostring(err))
        end
        db:delete_table{ TableName = p2 .. "events" }
        db:delete_table{ TableName = p2 .. "snapshots" }
      end)
    end)

    it("refuses an existing table with another key schema", function()
      local p3 = helpers.unique("tide_store3") .. "_"
      run(function()
        assert(db:create_table{
          TableName = p3 .. "events",
          AttributeDefinitions = { { AttributeName = "id", AttributeType = "S" } },
          KeySchema = { { AttributeName = "id", KeyType = "HASH" } },
          BillingMode = "PAY_PER_REQUEST",
        })
        local ok, err = dstore.new{ client = db, table_prefix = p3 }:init()
        db:delete_table{ TableName = p3 .. "events" }
        assert.is_nil(ok)
        assert.equal("TableMismatch", err.type)
        assert.matches(p3 .. "events", tostring(err), 1, true)
      end)
    end)

    it("reports a missing table with the client's error type", function()
      run(function()
        local s = dstore.new{ client = db, table_prefix = helpers.unique("missing") .. "_" }
        local ok, err = s:load("account#x", 0)
        assert.is_nil(ok)
        assert.equal("ResourceNotFoundException", err.type)
        assert.equal("account#x", err.stream)
        local text = tostring(err)
        assert.matches("account#x", text, 1, true)
        assert.matches(s.events_table, text, 1, true)
        assert.matches("ResourceNotFoundException", text, 1, true)
      end)
    end)
  end)

  describe("append and load", function()
    it("round-trips type, data and meta text exactly, unicode included, from version 1", function()
      run(function()
        local s = stream()
        local e = { type = "Opened", data = '{"owner":"Zoë Ünïcødé ✓ 🎉 日本語","note":"a\\nb"}',
                    meta = meta('"correlation_id":"ü-1"') }
        assert.equal(1, assert(store:append(s, 0, { e })))
        local got = assert(store:load(s, 0))
        assert.equal(1, #got)
        assert.same({ version = 1, type = "Opened", data = e.data, meta = e.meta }, got[1])
        assert.same({}, assert(store:load("account#never-written", 0)))
      end)
    end)

    it("keeps 38 single appends in order and loads after a version", function()
      run(function()
        local s = stream()
        for v = 1, 38 do
          assert.equal(v, assert(store:append(s, v - 1, { event("Deposited", '{"amount":' .. v .. '}') })))
        end
        local all = assert(store:load(s, 0))
        assert.equal(38, #all)
        for i, e in ipairs(all) do
          assert.equal(i, e.version)
          assert.equal('{"amount":' .. i .. '}', e.data)
        end
        local tail = assert(store:load(s, 30))
        assert.equal(8, #tail)
        assert.equal(31, tail[1].version)
        assert.equal(38, tail[8].version)
        assert.same({}, assert(store:load(s, 38)))
        assert.equal(38, #assert(store:load(s))) -- after_version defaults to 0
      end)
    end)

    it("loads every page of a stream over 1 MB (Query pages)", function()
      run(function()
        local s = stream()
        local big = '{"blob":"' .. string.rep("x", 100 * 1024) .. '"}'
        -- 14 events of ~100 KB: ~1.4 MB, in two transactions (4 MB limit).
        local batch = {}
        for i = 1, 7 do batch[i] = event("Blob", big) end
        assert.equal(7, assert(store:append(s, 0, batch)))
        batch = {}
        for i = 1, 7 do batch[i] = event("Blob", big) end
        assert.equal(14, assert(store:append(s, 7, batch)))
        local pages = 0
        for page in db:query_pages{ TableName = store.events_table, KeyConditionExpression = "#s = :s",
                                    ExpressionAttributeNames = { ["#s"] = "stream" },
                                    ExpressionAttributeValues = { [":s"] = s },
                                    ConsistentRead = true } do
          assert(page)
          pages = pages + 1
        end
        assert.is_true(pages >= 2, "expected several Query pages, got " .. pages)
        local all = assert(store:load(s, 0))
        assert.equal(14, #all)
        for i, e in ipairs(all) do
          assert.equal(i, e.version)
          assert.equal(big, e.data)
        end
        assert.equal(4, #assert(store:load(s, 10)))
      end)
    end)

    it("raises on wrong argument types", function()
      run(function()
        assert.has_error(function() store:append(nil, 0, {}) end)
        assert.has_error(function() store:append("", 0, {}) end)
        assert.has_error(function() store:append("a#1", -1, {}) end)
        assert.has_error(function() store:append("a#1", 1.5, {}) end)
        assert.has_error(function() store:append("a#1", 0, "x") end)
        assert.has_error(function() store:append("a#1", 0, { { type = "T", data = {}, meta = "{}" } }) end)
        assert.has_error(function() store:append("a#1", 0, { { data = "{}", meta = "{}" } }) end)
        assert.has_error(function() store:load(5, 0) end)
        assert.has_error(function() store:put_snapshot("a#1", 1, nil, "{}") end)
      end)
    end)

    it("stores a nil data or meta as a missing attribute", function()
      run(function()
        local s = stream()
        assert.equal(1, assert(store:append(s, 0, { { type = "Bare" } })))
        assert.same({ { version = 1, type = "Bare" } }, assert(store:load(s, 0)))
        assert.is_false(dstore._is_own_write(store, s, 1, nil))
      end)
    end)

    it("writes nothing for an empty event list", function()
      run(function()
        local s = stream()
        assert.equal(0, assert(store:append(s, 0, {})))
        assert.same({}, assert(store:load(s, 0)))
      end)
    end)
  end)

  describe("optimistic concurrency", function()
    it("refuses an expected version that is too low with a Conflict naming the stream", function()
      run(function()
        local s = stream()
        assert.equal(3, assert(store:append(s, 0, events(3))))
        local ok, err = store:append(s, 1, { event("Withdrawn") })
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        assert.equal(s, err.stream)
        assert.equal("ConditionalCheckFailedException", err.cause.type)
        local text = tostring(err)
        assert.matches(s, text, 1, true)
        assert.matches(store.events_table, text, 1, true)
        assert.matches("ConditionalCheckFailedException", text, 1, true)
        ok, err = store:append(s, 0, events(2))
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        assert.equal("TransactionCanceledException", err.cause.type)
        assert.equal(3, #assert(store:load(s, 0)))
      end)
    end)

    it("leaves an expected version that is too high to the caller by default, "
       .. "and refuses it with check_expected", function()
      run(function()
        -- Default (the data model's layout: one PutItem per event): the
        -- condition is on the new item only, so a version beyond the head
        -- is written, as docs/dynamodb-layout.md says; the repository
        -- always passes the version it loaded.
        local s = stream()
        assert.equal(2, assert(store:append(s, 0, events(2))))
        assert.equal(6, assert(store:append(s, 5, { event("Deposited") })))
        local all = assert(store:load(s, 0))
        assert.equal(3, #all)
        assert.equal(6, all[3].version)

        local strict = dstore.new{ client = db, table_prefix = prefix, check_expected = true }
        local s2 = stream()
        assert.equal(1, assert(strict:append(s2, 0, { event("Opened") })))
        local ok, err = strict:append(s2, 3, { event("Deposited") })
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        assert.matches("too high", err.message)
        ok, err = strict:append(s2, 2, events(3))
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        -- too low is still a Conflict, exactly version+1 still works
        ok, err = strict:append(s2, 0, { event("Opened") })
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        assert.equal(3, assert(strict:append(s2, 1, events(2))))
        assert.equal(4, assert(strict:append(s2, 3, { event("Deposited") })))
        assert.equal(4, #assert(strict:load(s2, 0)))
        -- 99 events fit next to the check, 100 do not
        ok, err = strict:append(s2, 4, events(100))
        assert.is_nil(ok)
        assert.equal("TooManyEvents", err.type)
        assert.equal(103, assert(strict:append(s2, 4, events(99))))
      end)
    end)

    for _, k in ipairs({ 1, 3 }) do
      it("lets exactly one of 20 concurrent appenders of " .. k .. " event(s) at the same version win", function()
        run(function()
          local s = stream()
          assert.equal(5, assert(store:append(s, 0, events(5))))
          local threads, metas = {}, {}
          for i = 1, 20 do
            local evs = events(k)
            metas[i] = evs[1].meta
            threads[i] = sched.spawn(function() return store:append(s, 5, evs) end)
          end
          local wins, conflicts, winner = 0, 0, nil
          for i, th in ipairs(threads) do
            local ok, res, err = sched.wait(th)
            assert.is_true(ok, tostring(res))
            if res then
              assert.equal(5 + k, res)
              wins, winner = wins + 1, i
            else
              assert.equal("Conflict", err.type, tostring(err))
              conflicts = conflicts + 1
            end
          end
          assert.equal(1, wins)
          assert.equal(19, conflicts)
          local all = assert(store:load(s, 0))
          assert.equal(5 + k, #all)
          assert.equal(metas[winner], all[6].meta)
        end)
      end)
    end
  end)

  describe("multi-event appends", function()
    it("writes 2..100 events atomically with consecutive versions", function()
      run(function()
        local s = stream()
        assert.equal(2, assert(store:append(s, 0, events(2))))
        assert.equal(102, assert(store:append(s, 2, events(100))))
        local all = assert(store:load(s, 0))
        assert.equal(102, #all)
        for i, e in ipairs(all) do assert.equal(i, e.version) end
      end)
    end)

    it("writes none of the events when one version already exists", function()
      run(function()
        local s = stream()
        assert.equal(1, assert(store:append(s, 0, events(1))))
        -- someone else wrote version 4 (as a stale writer would)
        assert.equal(4, assert(store:append(s, 3, events(1))))
        local ok, err = store:append(s, 1, events(5)) -- versions 2..6, 4 exists
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        local all = assert(store:load(s, 0))
        assert.equal(2, #all)
        assert.equal(1, all[1].version)
        assert.equal(4, all[2].version)
      end)
    end)

    it("refuses 101 events without writing any", function()
      run(function()
        local s = stream()
        local ok, err = store:append(s, 0, events(101))
        assert.is_nil(ok)
        assert.equal("TooManyEvents", err.type)
        assert.equal(s, err.stream)
        assert.matches("101", tostring(err))
        assert.same({}, assert(store:load(s, 0)))
      end)
    end)

    it("refuses an append over the 4 MB transaction limit without writing any", function()
      run(function()
        local s = stream()
        local big = '{"blob":"' .. string.rep("y", 300 * 1024) .. '"}'
        local list = {}
        for i = 1, 15 do list[i] = event("Blob", big) end -- ~4.5 MB
        local ok, err = store:append(s, 0, list)
        assert.is_nil(ok)
        assert.equal("AppendTooLarge", err.type)
        assert.same({}, assert(store:load(s, 0)))
      end)
    end)
  end)

  describe("oversized and invalid events", function()
    it("refuses an event over 400 KB as EventTooLarge naming stream and version", function()
      run(function()
        local s = stream()
        assert.equal(1, assert(store:append(s, 0, events(1))))
        local huge = '{"blob":"' .. string.rep("z", 400 * 1024) .. '"}'
        local ok, err = store:append(s, 1, { event("Blob", huge) })
        assert.is_nil(ok)
        assert.equal("EventTooLarge", err.type)
        assert.equal(s, err.stream)
        assert.matches("version 2", tostring(err))
        assert.matches(s, tostring(err), 1, true)
        -- in a multi-event append, nothing is written
        local list = events(3)
        list[3] = event("Blob", huge)
        ok, err = store:append(s, 1, list)
        assert.is_nil(ok)
        assert.equal("EventTooLarge", err.type)
        assert.matches("version 4", tostring(err))
        assert.equal(1, #assert(store:load(s, 0)))
        -- just under the limit is fine
        local fits = '{"blob":"' .. string.rep("z", 399 * 1024) .. '"}'
        assert.equal(2, assert(store:append(s, 1, { event("Blob", fits) })))
      end)
    end)

    it("refuses text that is not UTF-8 with InvalidValue", function()
      run(function()
        local s = stream()
        local ok, err = store:append(s, 0, { event("Bad", '{"x":"\255\254"}') })
        assert.is_nil(ok)
        assert.equal("InvalidValue", err.type)
        assert.same({}, assert(store:load(s, 0)))
      end)
    end)
  end)

  describe("snapshots", function()
    it("returns false when there is none and round-trips one", function()
      run(function()
        local s = stream()
        assert.is_false(store:get_snapshot(s))
        assert.is_true(store:put_snapshot(s, 5, '{"balance":5,"owner":"Zoë"}', '{"handler":"abc"}'))
        assert.same({ version = 5, state = '{"balance":5,"owner":"Zoë"}', meta = '{"handler":"abc"}' },
                    assert(store:get_snapshot(s)))
      end)
    end)

    it("keeps the newer snapshot", function()
      run(function()
        local s = stream()
        assert.is_true(store:put_snapshot(s, 10, '{"v":10}', '{}'))
        assert.is_true(store:put_snapshot(s, 7, '{"v":7}', '{}'))   -- older: ignored, still true
        assert.equal(10, assert(store:get_snapshot(s)).version)
        assert.is_true(store:put_snapshot(s, 10, '{"v":"again"}', '{}'))
        assert.equal('{"v":10}', assert(store:get_snapshot(s)).state)
        assert.is_true(store:put_snapshot(s, 12, '{"v":12}', '{}'))
        local snap = assert(store:get_snapshot(s))
        assert.equal(12, snap.version)
        assert.equal('{"v":12}', snap.state)
      end)
    end)

    it("refuses a snapshot over 400 KB with SnapshotTooLarge and keeps the old one", function()
      run(function()
        local s = stream()
        assert.is_true(store:put_snapshot(s, 1, '{"v":1}', '{}'))
        local ok, err = store:put_snapshot(s, 2, '{"blob":"' .. string.rep("s", 410 * 1024) .. '"}', '{}')
        assert.is_nil(ok)
        assert.equal("SnapshotTooLarge", err.type)
        assert.equal(s, err.stream)
        assert.matches(store.snapshots_table, tostring(err), 1, true)
        assert.equal(1, assert(store:get_snapshot(s)).version)
      end)
    end)
  end)

  describe("ambiguous writes", function()
    it("_is_own_write reads back the stored event and compares its meta", function()
      run(function()
        local s = stream()
        local e = event("Opened", '{"owner":"ada"}')
        assert.equal(1, assert(store:append(s, 0, { e })))
        assert.is_true(dstore._is_own_write(store, s, 1, e.meta))
        assert.is_false(dstore._is_own_write(store, s, 1, meta()))
        assert.is_false(dstore._is_own_write(store, s, 2, e.meta)) -- no such event
        local bad = dstore.new{ client = db, table_prefix = helpers.unique("missing") .. "_" }
        local ok, err = dstore._is_own_write(bad, s, 1, e.meta)
        assert.is_nil(ok)
        assert.equal("ResourceNotFoundException", err.type)
      end)
    end)

    -- A client whose write is applied but whose answer is lost: the retry
    -- then fails its condition and the client marks it ambiguous. Simulated
    -- by a wrapper that performs the real write, then reports what the
    -- retried attempt would have seen.
    local function lossy_client(real)
      local c = setmetatable({}, { __index = function(_, k)
        local v = real[k]
        if type(v) == "function" then return function(_, ...) return v(real, ...) end end
        return v
      end })
      c.put_item = function(_, params)
        local ok, err = real:put_item(params)
        if not ok then return nil, err end
        local again
        again, err = real:put_item(params)
        assert(not again)
        err.ambiguous = true
        return nil, err
      end
      c.transact_write = function(_, params)
        params.ClientRequestToken = nil
        local ok, err = real:transact_write(params)
        if not ok then return nil, err end
        local again
        again, err = real:transact_write(params) -- a new token: evaluated again, fails
        assert(not again)
        err.ambiguous = true
        return nil, err
      end
      return c
    end

    it("turns an ambiguous conditional failure of our own write into success", function()
      run(function()
        local s = stream()
        local lossy = dstore.new{ client = lossy_client(db), table_prefix = prefix }
        assert.equal(1, assert(lossy:append(s, 0, events(1))))
        assert.equal(4, assert(lossy:append(s, 1, events(3))))
        local all = assert(store:load(s, 0))
        assert.equal(4, #all)
      end)
    end)

    it("keeps an ambiguous conditional failure on another writer's event a Conflict", function()
      run(function()
        local s = stream()
        assert.equal(1, assert(store:append(s, 0, events(1))))
        local fake = setmetatable({
          put_item = function(_, params)
            local ok, err = db:put_item(params)
            assert(not ok)
            err.ambiguous = true
            return nil, err
          end,
        }, { __index = function(_, k)
          local v = db[k]
          if type(v) == "function" then return function(_, ...) return v(db, ...) end end
          return v
        end })
        local st = dstore.new{ client = fake, table_prefix = prefix }
        local ok, err = st:append(s, 0, events(1))
        assert.is_nil(ok)
        assert.equal("Conflict", err.type)
        assert.is_true(err.cause.ambiguous)
      end)
    end)

    -- The client's retries ran out on transport failures: the outcome is
    -- unknown, so the store looks before reporting the failure.
    local function failing_client(apply)
      return setmetatable({
        put_item = function(_, params)
          if apply then assert(db:put_item(params)) end
          return nil, setmetatable({ type = "TransportError", kind = "reset", status = 0,
                                     message = "connection reset", retryable = true, attempts = 8,
                                     op = "PutItem", table = params.TableName }, dynamodb.Error)
        end,
      }, { __index = function(_, k)
        local v = db[k]
        if type(v) == "function" then return function(_, ...) return v(db, ...) end end
        return v
      end })
    end

    it("reports success when a write whose answer was lost is found to be ours", function()
      run(function()
        local s = stream()
        local st = dstore.new{ client = failing_client(true), table_prefix = prefix }
        assert.equal(1, assert(st:append(s, 0, events(1))))
        assert.equal(1, #assert(store:load(s, 0)))
      end)
    end)

    it("passes the transport error through when the write is not there", function()
      run(function()
        local s = stream()
        local st = dstore.new{ client = failing_client(false), table_prefix = prefix }
        local ok, err = st:append(s, 0, events(1))
        assert.is_nil(ok)
        assert.equal("TransportError", err.type)
        assert.equal(s, err.stream)
        assert.is_true(err.retryable)
        assert.matches("connection reset", tostring(err))
        assert.matches(s, tostring(err), 1, true)
      end)
    end)
  end)

  it("close releases nothing and leaves the client usable", function()
    run(function()
      local s = dstore.new{ client = db, table_prefix = prefix }
      assert.is_true(s:close())
      assert(db:describe_table{ TableName = prefix .. "events" })
    end)
  end)
end)
