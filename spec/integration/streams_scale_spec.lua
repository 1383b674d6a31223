-- DynamoDB Streams at scale: the Streams stand-in (spec/fixtures/streams_standin.js,
-- in front of DynamoDB Local: many virtual shards, splits, limits, trimming)
-- and the streams runner on it.
local helpers = require "helpers"
local core = require "tide.core"
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"
local dstore = require "tide.store.dynamodb"
local standin = require "fixtures.streams_standin"
local cjson = require "cjson"
local stores = require "stores"

-- many events on tables with streams: a DynamoDB Local of this file's own
helpers.private_dynamodb()

local CREDS = { access_key_id = "tidetest", secret_access_key = "tidetestsecret" }

local function run(fn) return sched.run(fn) end

local function client(streams_url, attempts, base_delay)
  return assert(dynamodb.new{ endpoint = helpers.dynamodb_endpoint(), streams_endpoint = streams_url,
                              region = "us-east-1", credentials = CREDS, base_delay = base_delay or 0.005,
                              max_attempts = attempts or 1 })
end

local function fresh_store(db, tag)
  local store = dstore.new{ client = db, table_prefix = helpers.unique(tag) .. "_" }
  assert(store:init())
  return store, assert(store:describe()).events.stream_arn
end

local function open(store, id, n, payload)
  local events = {}
  for v = 1, n do
    events[v] = { type = v == 1 and "Opened" or "Deposited",
                  data = core.encode_value(v == 1 and { owner = "o" } or { amount = v, pad = payload }),
                  meta = "{}" }
  end
  -- one event per append: one stream record each
  for v = 1, n do assert(store:append("account#" .. id, v - 1, { events[v] })) end
end

-- open(store, tag .. i, n) for i = 1..count, the accounts in parallel
local function open_many(store, tag, count, n)
  local ids = {}
  for i = 1, count do ids[i] = tag .. i end
  local err = store.client:run_parallel(ids, function(id) open(store, id, n); return true end)
  assert(err == nil, tostring(err))
end

-- Every record of every listed shard, read from TRIM_HORIZON to the tip
-- (the shards in parallel; the tip: the first empty page, as these specs
-- ask for no empty pages mid-shard while they read everything):
-- shard id -> list of {stream=, version=, seq=}.
local function read_all(db, arn)
  local desc = assert(db:describe_stream{ StreamArn = arn }).StreamDescription
  local out = {}
  local err = db:run_parallel(desc.Shards, function(s)
    local list = {}
    out[s.ShardId] = list
    local it = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = s.ShardId,
                                             ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
    while it do
      local r = assert(db:get_records{ ShardIterator = it })
      for _, rec in ipairs(r.Records) do
        local img = rec.dynamodb.NewImage
        list[#list + 1] = { stream = img.stream, version = img.version, seq = rec.dynamodb.SequenceNumber }
      end
      if #r.Records == 0 then break end
      it = r.NextShardIterator
    end
    return true
  end)
  assert(err == nil, tostring(err))
  return out, desc
end

describe("the DynamoDB Streams stand-in", function()
  local srv
  setup(function()
    srv = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 64 }
  end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function()
    srv:control("Configure", { GetRecordsPerSecond = 1000, DescribePerSecond = 1000, MaxReaders = 100,
                               EmptyEvery = 0 })
  end)

  it("spreads the real stream over 64 shards by partition key, pages DescribeStream by 100", function()
    run(function()
      local db = client(srv.url)
      local store, arn = fresh_store(db, "si_spread")
      open_many(store, "a", 40, 3)
      local by_shard, desc = read_all(db, arn)
      assert.equal(64, #desc.Shards)
      local seen, used = {}, 0
      for shard, list in pairs(by_shard) do
        if #list > 0 then used = used + 1 end
        local last
        for _, r in ipairs(list) do
          -- one stream's records all in one shard, in version order
          assert.is_nil(seen[r.stream] and seen[r.stream] ~= shard or nil, r.stream .. " in two shards")
          seen[r.stream] = shard
          if last then assert.is_true(#r.seq == #last and r.seq > last, "sequence order") end
          last = r.seq
        end
      end
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.equal(40, n)
      assert.is_true(used > 16, "40 keys over 64 shards used only " .. used)
      -- splits: 64 open shards -> 128 children, 192 listed; pages of 100
      assert.equal(128, #srv:control("Split", { StreamArn = arn }).Children)
      local page = assert(db:call("DescribeStream", { StreamArn = arn }, { streams = true })).StreamDescription
      assert.equal(100, #page.Shards)
      assert.is_string(page.LastEvaluatedShardId)
      local page2 = assert(db:call("DescribeStream", { StreamArn = arn, ExclusiveStartShardId = page.LastEvaluatedShardId },
                                   { streams = true })).StreamDescription
      assert.equal(92, #page2.Shards)
      assert.is_nil(page2.LastEvaluatedShardId)
      local _, lerr = db:call("DescribeStream", { StreamArn = arn, Limit = 101 }, { streams = true })
      assert.equal("ValidationException", lerr.type)
      -- every parent closed with an ending sequence number below its children's start
      local all = assert(db:describe_stream{ StreamArn = arn }).StreamDescription.Shards
      assert.equal(192, #all)
      local by = {}
      for _, s in ipairs(all) do by[s.ShardId] = s end
      local children = 0
      for _, s in ipairs(all) do
        if s.ParentShardId then
          children = children + 1
          local p = by[s.ParentShardId]
          local pend, cstart = p.SequenceNumberRange.EndingSequenceNumber, s.SequenceNumberRange.StartingSequenceNumber
          assert.is_string(pend)
          assert.is_true(#cstart == #pend and cstart > pend)
        end
      end
      assert.equal(128, children)
      -- later records go to the children; a parent read to its end has no next iterator
      open_many(store, "b", 40, 1)
      local after = read_all(db, arn)
      for id, list in pairs(after) do
        if by[id].SequenceNumberRange.EndingSequenceNumber then
          for _, r in ipairs(list) do assert.is_nil(r.stream:match("#b"), "a closed shard got a new record") end
        end
      end
      local p1 = all[1]
      local it = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = p1.ShardId,
                                               ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      local ends = false
      for _ = 1, 5 do
        local r = assert(db:get_records{ ShardIterator = it })
        if not r.NextShardIterator then ends = true; break end
        it = r.NextShardIterator
      end
      assert.is_true(ends, "a closed shard never ended")
      -- a second level: a child rolls over
      local child = srv:control("Rollover", { StreamArn = arn, ShardIds = { all[65].ShardId } })
      assert.equal(1, #child.Children)
    end)
  end)

  it("stops a page at 1000 records or 1 MB, serves empty pages mid-shard when told", function()
    run(function()
      local db = client(srv.url)
      local store, arn = fresh_store(db, "si_pages")
      -- ~60 KB events: 1 MB is about 17 of them
      open(store, "big", 40, string.rep("x", 60000))
      local by_shard = read_all(db, arn)
      local shard
      for id, list in pairs(by_shard) do if #list > 0 then shard = id end end
      local it = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = shard,
                                               ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      local _, verr = db:get_records{ ShardIterator = it, Limit = 1001 }
      assert.equal("ValidationException", verr.type)
      local r = assert(db:get_records{ ShardIterator = it })
      assert.is_true(#r.Records > 1 and #r.Records < 40, "one page held " .. #r.Records .. " records")
      local small = assert(db:get_records{ ShardIterator = it, Limit = 3 })
      assert.equal(3, #small.Records)
      srv:control("Configure", { EmptyEvery = 2 })
      local got, empties = 0, 0
      it = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = shard,
                                         ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      while got < 40 do
        local p = assert(db:get_records{ ShardIterator = it, Limit = 5 })
        if #p.Records == 0 then empties = empties + 1 end
        got = got + #p.Records
        it = p.NextShardIterator
      end
      assert.is_true(empties >= 3, "no empty pages mid-shard")
    end)
  end)

  it("throttles a third reader, a sixth GetRecords within a second, an eleventh DescribeStream", function()
    run(function()
      local db = client(srv.url)
      local store, arn = fresh_store(db, "si_limits")
      open(store, "one", 2)
      local shard = assert(db:describe_stream{ StreamArn = arn }).StreamDescription.Shards[1].ShardId
      srv:control("Configure", { MaxReaders = 2, GetRecordsPerSecond = 100 })
      local its = {}
      for i = 1, 3 do
        its[i] = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = shard,
                                               ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      end
      local nexts = {}
      for i = 1, 2 do nexts[i] = assert(db:get_records{ ShardIterator = its[i] }).NextShardIterator end
      local _, err3 = db:get_records{ ShardIterator = its[3] }
      assert.equal("LimitExceededException", err3.type)
      assert.equal("throttled", err3.retry_class)
      -- the two readers go on (their next iterators are the same readers)
      for i = 1, 2 do assert(db:get_records{ ShardIterator = nexts[i] }) end
      srv:control("Configure", { MaxReaders = 100, GetRecordsPerSecond = 5 })
      sched.sleep(1.05)
      local it = its[1]
      local refused
      for _ = 1, 6 do
        local r, err = db:get_records{ ShardIterator = it }
        if not r then refused = err; break end
        it = r.NextShardIterator
      end
      assert.equal("LimitExceededException", refused and refused.type)
      srv:control("Configure", { DescribePerSecond = 10 })
      sched.sleep(1.05)
      local derr
      for _ = 1, 11 do
        local ok, err = db:call("DescribeStream", { StreamArn = arn }, { streams = true })
        if not ok then derr = err; break end
      end
      assert.equal("LimitExceededException", derr and derr.type)
      -- the client retries it with backoff
      local patient = client(srv.url, 8, 0.2)
      assert(patient:call("DescribeStream", { StreamArn = arn }, { streams = true }))
    end)
  end)

  it("expires iterators after 15 minutes and trims records after 24 hours of its virtual clock", function()
    -- a stand-in of its own: its clock moves
    local own = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 2 }
    local ok, err = pcall(run, function()
      local db = client(own.url)
      local store, arn = fresh_store(db, "si_trim")
      open_many(store, "t", 6, 2)
      local d = assert(db:describe_stream{ StreamArn = arn }).StreamDescription
      local created = d.CreationRequestDateTime
      local shard = d.Shards[1].ShardId
      local it = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = shard,
                                               ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      local first = assert(db:get_records{ ShardIterator = it, Limit = 1 })
      local seq = first.Records[1].dynamodb.SequenceNumber
      own:control("Advance", { Seconds = 16 * 60 })
      local _, eerr = db:get_records{ ShardIterator = first.NextShardIterator }
      assert.equal("ExpiredIteratorException", eerr.type)
      -- a split now, then a day later the parent's records are gone
      own:control("Split", { StreamArn = arn })
      own:control("Advance", { Seconds = 24 * 3600 })
      local d2 = assert(db:describe_stream{ StreamArn = arn }).StreamDescription
      assert.equal(4, #d2.Shards, "the closed parents are no longer listed")
      assert.is_true(d2.CreationRequestDateTime < created - 24 * 3600 + 60, "the stream looks a day older")
      for _, s in ipairs(d2.Shards) do assert.is_not_equal(shard, s.ShardId) end
      local _, gone = db:get_shard_iterator{ StreamArn = arn, ShardId = shard, ShardIteratorType = "TRIM_HORIZON" }
      assert.equal("ResourceNotFoundException", gone.type)
      -- records written before the split but after the trim horizon stay; a
      -- checkpoint inside the trimmed part is an error, never a silent skip
      open_many(store, "u", 4, 1)
      -- the stand-in reads DynamoDB Local's stream again only 20 ms after
      -- its last read: a read_all sooner sees the children still empty
      sched.sleep(0.05)
      local child, start
      for id, list in pairs(read_all(db, arn)) do
        if #list > 0 then child = id end
      end
      for _, s in ipairs(d2.Shards) do
        if s.ShardId == child then start = s.SequenceNumberRange.StartingSequenceNumber end
      end
      own:control("Advance", { Seconds = 25 * 3600 })
      local _, terr = db:get_shard_iterator{ StreamArn = arn, ShardId = child,
                                             ShardIteratorType = "AFTER_SEQUENCE_NUMBER", SequenceNumber = start }
      assert.equal("TrimmedDataAccessException", terr.type)
      local th = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = child,
                                               ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      assert.equal(0, #assert(db:get_records{ ShardIterator = th }).Records)
      assert.is_string(seq)
    end)
    own:stop()
    assert(ok, err)
  end)
end)

------------------------------------------------------------------------
-- The runner on the stand-in, in one process

local projection = require "tide.projection"
local backend_mod = require "tide.projection.dynamodb"
local streams = require "tide.projection.runner.streams"
local BALANCES = helpers.root .. "/projections/balances.lua"

-- A runner of the balances projection on store's stream (log: a function
-- of level and message, default none; backend: another runner's, already
-- started, default a new one).
local function balances_runner(db, store, log, backend)
  local proj = assert(projection.load_file(BALANCES, "balances"))
  backend = backend or backend_mod.new{ client = db, table_prefix = store.prefix }
  return streams.new{ client = db, store = store, backend = backend, projection = proj, lease_ms = 1000,
                      poll_ms = 20, max_poll_ms = 100, log = log or function() end }
end

describe("the streams runner on the stand-in", function()
  it("marks `rebuild needed` when a projection starts from TRIM_HORIZON on a stream older than its retention,"
     .. " and goes on after a reset", function()
    local own = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 4 }
    local ok, err = pcall(run, function()
      local db = client(own.url, 8)
      local store = fresh_store(db, "si_rebuild")
      open_many(store, "r", 8, 2)
      own:control("Advance", { Seconds = 25 * 3600 })
      local r = balances_runner(db, store)
      assert(r:start())
      -- it stops at the first shard marked; the others are marked as it
      -- starts them again (none is ever read past the trimmed records)
      -- (a round can also end on a shard marked in memory whose lease write
      -- did not go out: its worker was fenced on a busy host; marked again
      -- in a later round)
      local marked
      for _ = 1, 8 do
        local res, rerr = r:run_until_caught_up{ timeout = 30 }
        assert.is_nil(res)
        assert.equal("RebuildNeeded", rerr.type)
        marked = 0
        for _, sh in ipairs(assert(r:status()).shards) do
          if sh.state == "rebuild needed" then marked = marked + 1
          else assert.is_nil(sh.checkpoint, "shard " .. sh.shard .. " read past trimmed records") end
        end
        if marked == 4 then break end
      end
      assert.equal(4, marked)
      -- `tide replay` resets the projection to "TRIM_HORIZON, the trimmed part covered"
      assert(r.leases:reset("balances"))
      local r2 = balances_runner(db, store, nil, r.backend)
      assert(r2:run_until_caught_up{ timeout = 30 })
    end)
    own:stop()
    assert(ok, err)
  end)

  it("reads again, never marks `rebuild needed`, when a stream younger than its retention answers"
     .. " TrimmedDataAccessException (DynamoDB Local does, now and then, on a new stream)", function()
    local own = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 4 }
    local ok, err = pcall(run, function()
      local db = client(own.url, 8)
      local store = fresh_store(db, "si_spurious")
      open_many(store, "q", 8, 2)
      own:control("SpuriousTrim", { Count = 3 })
      local warnings = {}
      local r = balances_runner(db, store, function(level, msg)
        if level == "warn" then warnings[#warnings + 1] = msg end
      end)
      assert(r:start())
      assert(r:run_until_caught_up{ timeout = 30 })
      for _, sh in ipairs(assert(r:status()).shards) do
        assert.are_not.equal("rebuild needed", sh.state, sh.shard)
      end
      assert.equal(16, r.stats.events) -- 8 accounts x 2 events, each applied once
      local seen = 0
      for _, w in ipairs(warnings) do
        if w:find("younger than its retention", 1, true) then seen = seen + 1 end
      end
      assert.equal(3, seen, table.concat(warnings, "\n"))
    end)
    own:stop()
    assert(ok, err)
  end)

  it("pauses a shard whose heartbeats stop past the fence, and resumes it without a new take when a renewal"
     .. " lands (nobody took the lease)", function()
    local own = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 4 }
    local ok, err = pcall(run, function()
      -- DynamoDB through the stand-in too: it simulates the lease table's outage
      local db = assert(dynamodb.new{ endpoint = own.url, streams_endpoint = own.url, region = "us-east-1",
                                      credentials = CREDS, base_delay = 0.005, max_attempts = 2 })
      local store = fresh_store(db, "si_fence")
      open_many(store, "f", 8, 2)
      local logs = {}
      local r = balances_runner(db, store, function(_, msg) logs[#logs + 1] = msg end)
      assert(r:start())
      local th = sched.spawn(function() return r:run() end)
      local function balance(id)
        local res = db:get_item{ TableName = store.prefix .. "rm_balances", Key = { id = id }, ConsistentRead = true }
        return res and res.Item and res.Item.balance
      end
      local function wait_balances(want)
        local t0 = sched.now()
        while sched.now() - t0 < 30 do
          local all = true
          for i = 1, 8 do if balance("f" .. i) ~= want then all = false break end end
          if all then return end
          sched.sleep(0.1)
        end
        error("balances not " .. want .. " after 30 s")
      end
      wait_balances(2)
      local held = {}
      for shard, st in pairs(r.state) do if not st.finished then held[shard] = st end end
      local n_held = 0
      for _ in pairs(held) do n_held = n_held + 1 end
      assert.equal(4, n_held)
      -- no heartbeat can land for 6 lease times. A shard learns that it
      -- passed its fence (2/3 of lease_ms) when it next has something to
      -- write: a deposit on each account 1.5 s into the outage, so every
      -- shard that reads one pauses, and applying it needs the resume
      own:control("Outage", { TableName = store.prefix .. "leases", Seconds = 6 })
      sched.sleep(1.5)
      for i = 1, 8 do
        assert(store:append("account#f" .. i, 2, { { type = "Deposited", data = core.encode_value{ amount = 3 },
                                                     meta = "{}" } }))
      end
      wait_balances(5)
      -- the same workers' states, never dropped and taken again (checked
      -- before stopping: a stopped runner forgets its finished shards)
      local text = table.concat(logs, "\n")
      for shard, st in pairs(held) do
        assert.is_true(st == r.state[shard] and not st.finished, "shard " .. shard .. " was dropped:\n" .. text)
      end
      local _, takes = text:gsub(" took shard ", "")
      assert.equal(4, takes, text)
      r:stop()
      assert(sched.wait(th))
      assert.is_true(r.stats.fenced >= 1, "no shard was fenced: " .. text)
      assert.is_true(r.stats.resumed >= r.stats.fenced, "a fenced shard did not resume: " .. text)
      assert.matches("stopping writes", text, 1, true)
      assert.matches("resuming from the checkpoints", text, 1, true)
    end)
    own:stop()
    assert(ok, err)
  end)

  it("keeps the other projections going while one fails on a shard, then lets it catch up", function()
    local own = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 4 }
    local ok, err = pcall(run, function()
      local db = client(own.url, 8)
      local store = fresh_store(db, "si_detach")
      open_many(store, "d", 12, 3)
      local good = assert(projection.load_file(BALANCES, "balances"))
      local src = helpers.read_file(BALANCES)
      -- a copy that fails on account d7 while `flaky` is set
      local bad_src = src:gsub('"balances"', '"flaky"'):gsub('balances%.tables = { balances = { key = "id" } }',
        'balances.tables = { flaky = { key = "id" } }')
      local bad = assert(projection.from_source("flaky", bad_src))
      local flaky = true
      for k, h in pairs(bad.module.handlers) do
        bad.module.handlers[k] = function(event, ctx)
          if event.id == "d7" and flaky then error("flaky on d7") end
          return h(event, ctx)
        end
      end
      local backend = backend_mod.new{ client = db, table_prefix = store.prefix }
      local r = streams.new{ client = db, store = store, backend = backend, projections = { good, bad }, group = "*",
                             lease_ms = 1000, poll_ms = 20, max_poll_ms = 100, retry_max_ms = 300,
                             log = function() end }
      assert(r:start())
      local th = sched.spawn(function() return r:run() end)
      local function count(tname)
        local res = assert(db:scan{ TableName = store.prefix .. "rm_" .. tname })
        return #res.Items
      end
      local t0 = sched.now()
      while count("balances") < 12 and sched.now() - t0 < 30 do sched.sleep(0.2) end
      assert.equal(12, count("balances"))                 -- the healthy projection is complete
      local st
      t0 = sched.now()
      repeat
        st = assert(r:status("flaky"))
        if not st.error then sched.sleep(0.2) end
      until st.error or sched.now() - t0 > 30
      assert.matches("flaky on d7", st.error or "")
      assert.is_true(count("flaky") < 12)
      flaky = false
      t0 = sched.now()
      while count("flaky") < 12 and sched.now() - t0 < 30 do sched.sleep(0.2) end
      assert.equal(12, count("flaky"))
      r:stop()
      assert(sched.wait(th))
    end)
    own:stop()
    assert(ok, err)
  end)
end)

describe("the streams runner's shard lineage on the stand-in", function()
  it("reads a child whose parent is stuck only after the operator's skip-parent decision, and deletes a"
     .. " finished parent's lease once it is trimmed", function()
    local leases_mod = require "tide.projection.leases"
    local own = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 2 }
    local ok, err = pcall(run, function()
      local db = client(own.url, 8)
      local store, arn = fresh_store(db, "si_lineage")
      open_many(store, "p", 8, 1)
      local parents = assert(db:describe_stream{ StreamArn = arn }).StreamDescription.Shards
      local stuck, fine = parents[1].ShardId, parents[2].ShardId
      local child_of = {}
      for _, id in ipairs({ stuck, fine }) do
        child_of[id] = own:control("Rollover", { StreamArn = arn, ShardIds = { id } }).Children[1]
      end
      open_many(store, "q", 8, 1)
      -- the stuck parent: its projection needs a rebuild there, so it never reaches SHARD_END
      local ops = leases_mod.new{ client = db, table_prefix = store.prefix, group = "*", owner = "operator" }
      assert(ops:init())
      assert(ops:ensure(stuck))
      assert(db:update_item{ TableName = ops.table, Key = { projection = "*", shard = stuck },
        UpdateExpression = "SET #e = :e", ExpressionAttributeNames = { ["#e"] = "err:balances" },
        ExpressionAttributeValues = { [":e"] = leases_mod.REBUILD_NEEDED } })
      local proj = assert(projection.load_file(BALANCES, "balances"))
      local backend = backend_mod.new{ client = db, table_prefix = store.prefix }
      local r = streams.new{ client = db, store = store, backend = backend, projections = { proj }, group = "*",
                             lease_ms = 1000, poll_ms = 20, max_poll_ms = 100, describe_ms = 300,
                             log = function() end }
      assert(r:start())
      local th = sched.spawn(function() return r:run() end)
      local function lease(id)
        local list = assert(ops:list())
        for _, l in ipairs(list) do if l.shard == id then return l end end
        return nil
      end
      local function wait(what, cond)
        local t0 = sched.now()
        while not cond() do
          assert(sched.now() - t0 < 30, "waited 30 s for " .. what)
          sched.sleep(0.1)
        end
      end
      -- the healthy lineage: parent read to its end, then its child
      wait("the healthy child's checkpoint", function()
        local c = lease(child_of[fine])
        return c and c.cps.balances ~= nil and lease(fine).checkpoint == leases_mod.SHARD_END
      end)
      -- the stuck parent's child is never read on its own
      sched.sleep(0.5)
      local c = lease(child_of[stuck])
      assert.is_truthy(c, "the child's lease was made")
      assert.is_nil(c.cps.balances)
      local function first_read(id)
        for _, sh in ipairs(own:stats(arn).Shards) do
          if sh.ShardId == id then return sh.FirstReadMs ~= cjson.null and sh.FirstReadMs or nil end
        end
      end
      assert.is_nil(first_read(child_of[stuck]), "a child read before its parent's end")
      -- the operator decides (tide skip-parent): start the child although its parent never ended
      local cli_dir = helpers.tmpdir()
      stores.write_config(cli_dir, "dynamodb", { endpoint = helpers.dynamodb_endpoint(), prefix = store.prefix })
      local out, status = stores.tide(cli_dir, "skip-parent " .. child_of[stuck], nil, true)
      assert.equal(0, status, out)
      assert.same({ ok = true, shard = child_of[stuck], decision = "skip-parent" }, cjson.decode(out))
      assert.equal("skip-parent", lease(child_of[stuck]).decision)
      wait("the child read after skip-parent", function()
        local l = lease(child_of[stuck])
        return l.cps.balances ~= nil
      end)
      assert.is_number(first_read(child_of[stuck]))
      -- a decision on a shard with no lease is refused, not recorded as a new lease
      out, status = stores.tide(cli_dir, "skip-parent shardId-nope")
      assert.equal(6, status, out)
      assert.matches("no lease for shard shardId%-nope", out)
      assert.is_nil(lease("shardId-nope"))
      helpers.run("rm -rf " .. helpers.shell_quote(cli_dir))
      -- a day later the finished parent is no longer listed: its child learns
      -- that it was finished, then its lease goes; the stuck one's stays
      own:control("Advance", { Seconds = 25 * 3600 })
      wait("the finished parent's lease deleted", function() return lease(fine) == nil end)
      assert.is_true(lease(child_of[fine]).parent_done)
      assert.is_truthy(lease(stuck))
      r:stop()
      assert(sched.wait(th))
      -- every account of the read children is in the read model
      local res = assert(db:scan{ TableName = store.prefix .. "rm_balances" })
      local ids = {}
      for _, it in ipairs(res.Items) do ids[it.id] = true end
      for i = 1, 8 do assert.is_true(ids["q" .. i] or false, "q" .. i .. " missing") end
    end)
    own:stop()
    assert(ok, err)
  end)
  it("finishes a parent whose projections all reached SHARD_END under a holder that stopped before the"
     .. " lease's own SHARD_END, then reads its child", function()
    local leases_mod = require "tide.projection.leases"
    local own = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 1 }
    local ok, err = pcall(run, function()
      local db = client(own.url, 8)
      local store, arn = fresh_store(db, "si_unfinished")
      open_many(store, "p", 4, 1)
      local parent = assert(db:describe_stream{ StreamArn = arn }).StreamDescription.Shards[1].ShardId
      local child = own:control("Rollover", { StreamArn = arn, ShardIds = { parent } }).Children[1]
      open_many(store, "q", 4, 1)
      -- a worker read the parent to its end for the projection, then stopped
      -- (SIGKILL, or SIGSTOP and fenced) before the lease said SHARD_END
      local gone = leases_mod.new{ client = db, table_prefix = store.prefix, group = "*", owner = "gone:1:dead",
                                   lease_ms = 1000 }
      assert(gone:init())
      assert(gone:ensure(parent))
      local l = assert(gone:take(assert(gone:get(parent))))
      -- (what it wrote of the parent's accounts does not matter here: only the child's are looked at)
      assert(gone:checkpoint(l, { balances = leases_mod.SHARD_END }))
      assert.is_nil(assert(gone:get(parent)).checkpoint)
      local proj = assert(projection.load_file(BALANCES, "balances"))
      local backend = backend_mod.new{ client = db, table_prefix = store.prefix }
      local r = streams.new{ client = db, store = store, backend = backend, projections = { proj }, group = "*",
                             lease_ms = 1000, poll_ms = 20, max_poll_ms = 100, describe_ms = 300,
                             log = function() end }
      assert(r:start())
      local th = sched.spawn(function() return r:run() end)
      local t0 = sched.now()
      local function ids()
        local out = {}
        for _, it in ipairs(assert(db:scan{ TableName = store.prefix .. "rm_balances" }).Items) do out[it.id] = true end
        return out
      end
      local function all_q()
        local got = ids()
        return got.q1 and got.q2 and got.q3 and got.q4
      end
      while not all_q() and sched.now() - t0 < 30 do sched.sleep(0.1) end
      r:stop()
      assert(sched.wait(th))
      local got = ids()
      for i = 1, 4 do assert.is_true(got["q" .. i] or false, "q" .. i .. " (the child's) missing") end
      local pl = assert(gone:get(parent))
      assert.equal(leases_mod.SHARD_END, pl.checkpoint, "the parent's lease was finished")
      assert.is_number(pl.ended)
      -- the normal path: the last projection's SHARD_END and the lease's in one write
      local cl = assert(gone:get(child))
      assert.is_nil(cl.checkpoint)
      local l2 = assert(gone:take(cl))
      assert(gone:checkpoint(l2, { balances = leases_mod.SHARD_END }, nil, true))
      assert.equal(leases_mod.SHARD_END, assert(gone:get(child)).checkpoint)
    end)
    own:stop()
    assert(ok, err)
  end)
end)

------------------------------------------------------------------------
-- A fleet of real `tide run` workers on 64 virtual shards

local q = helpers.shell_quote

-- Under ASan every process is 2-3 times slower and a lease-table round
-- trip on the shared 2-core machine can pass a second: a longer lease
-- there, so that a healthy holder's renewal comes back before its fence
-- (lease_ms * 2/3 after the last one); the waits scale with it.
local ASAN = helpers.build:match("asan") ~= nil
local LEASE_MS = ASAN and 6000 or 3000
local SLOW = ASAN and 1.5 or 1
local DESCRIBE_MS = 10000

-- Appends events to `n` accounts (ids tag-0001...), each 1..4 events.
local function write_accounts(store, n, tag)
  local next_i = 0
  local function worker()
    while next_i < n do
      next_i = next_i + 1
      local i = next_i
      local stream = string.format("account#%s-%04d", tag, i)
      local events = { { type = "Opened", data = core.encode_value{ owner = "owner-" .. (i % 7) }, meta = "{}" } }
      for v = 2, 1 + (i % 4) do
        events[v] = { type = (v % 3 == 0) and "Withdrawn" or "Deposited",
                      data = core.encode_value{ amount = (v % 3 == 0) and 1 or (v + i) }, meta = "{}" }
      end
      if i % 9 == 0 then events[#events + 1] = { type = "Closed", data = core.encode_value{}, meta = "{}" } end
      for v = 1, #events do assert(store:append(stream, v - 1, { events[v] })) end
    end
  end
  local threads = {}
  for t = 1, 16 do threads[t] = sched.spawn(worker) end
  for _, th in ipairs(threads) do assert(sched.wait(th)) end
end

-- The three read models recomputed from the events table.
local function recompute(db, events_table)
  local res = assert(db:scan({ TableName = events_table }, { segments = 4 }))
  local by = {}
  for _, item in ipairs(res.Items) do
    local list = by[item.stream] or {}
    by[item.stream] = list
    list[#list + 1] = item
  end
  local balances, owners = {}, {}
  for stream, list in pairs(by) do
    table.sort(list, function(a, b) return a.version < b.version end)
    local id = stream:match("^account#(.*)$")
    local it
    for _, e in ipairs(list) do
      local data = core.decode_value(e.data)
      if e.type == "Opened" then it = { id = id, owner = data.owner, balance = 0, status = "open" }
      elseif e.type == "Deposited" then it.balance = it.balance + data.amount
      elseif e.type == "Withdrawn" then it.balance = it.balance - data.amount
      elseif e.type == "Closed" then it.status = "closed" end
      it.version = e.version
    end
    balances[id] = it
    local o = owners[it.owner] or { owner = it.owner, accounts = 0, open = 0, total = 0 }
    owners[it.owner] = o
    o.accounts, o.total = o.accounts + 1, o.total + it.balance
    if it.status == "open" then o.open = o.open + 1 end
  end
  return balances, owners
end

local function model(db, tname, key)
  local out = {}
  local res, err = db:scan({ TableName = tname }, { segments = 4 })
  -- the workers make the read-model tables as they start
  if not res and err.type == "ResourceNotFoundException" then return out end
  assert(res, err)
  for _, item in ipairs(res.Items) do
    if not item._deleted then
      local c = {}
      for k, v in pairs(item) do if k ~= "_tide" and k ~= "_rev" then c[k] = v end end
      out[item[key]] = c
    end
  end
  return out
end

local function same_models(want, got)
  for k, w in pairs(want) do
    local g = got[k]
    if not g then return false, "missing " .. k end
    for f, v in pairs(w) do
      if g[f] ~= v then return false, string.format("%s.%s: want %s, got %s", k, f, tostring(v), tostring(g[f])) end
    end
  end
  for k in pairs(got) do if not want[k] then return false, "unexpected " .. k end end
  return true
end

describe("a fleet of `tide run` workers on 64 virtual shards", function()
  it("keeps three read models exact through joins, leaves, SIGKILL, SIGSTOP, skewed clocks, splits and a"
     .. " lease-table outage", function()
    local srv = standin.start{ upstream = helpers.dynamodb_endpoint(), shards = 64 }
    local dir = helpers.tmpdir()
    local prefix = helpers.unique("fleet") .. "_"
    local workers, order = {}, {}
    local ok, err = pcall(function()
      -- three projections: balances (batch mode), a conditional-mode copy, owners
      helpers.run("mkdir -p " .. q(dir .. "/projections"))
      local src = helpers.read_file(helpers.root .. "/projections/balances.lua")
      helpers.write_file(dir .. "/projections/balances.lua", src)
      helpers.write_file(dir .. "/projections/owners.lua", helpers.read_file(helpers.root .. "/projections/owners.lua"))
      local cond = src:gsub('balances%.tables = { balances = { key = "id" } }',
                            'balances.tables = { balances_c = { key = "id", mode = "conditional" } }')
                      :gsub('"balances"', '"balances_c"')
      helpers.write_file(dir .. "/projections/balances_c.lua", cond)
      -- the workers' DynamoDB calls go through the stand-in too (it
      -- forwards them, counts them per table, and simulates the outage)
      stores.write_config(dir, "dynamodb", { endpoint = srv.url, prefix = prefix },
        { "projections: " .. dir .. "/projections", "log:", "  format: json",
          "streams:", "  lease_ms: " .. LEASE_MS, "  steal_ms: 500", "  poll_ms: 100", "  describe_ms: " .. DESCRIBE_MS })

      local db = client(nil, 8)
      local store = dstore.new{ client = db, table_prefix = prefix }
      local arn, leases_table = nil, prefix .. "leases"
      run(function()
        assert(store:init())
        arn = assert(store:describe()).events.stream_arn
        write_accounts(store, 48, "a")
      end)

      local function start(name, skew)
        local inner = "echo $$ > " .. q(dir .. "/" .. name .. ".pid") .. "; exec env " .. stores.CLI_ENV
          .. "AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" .. srv.url .. " TIDE_TEST_CLOCK_SKEW_MS=" .. skew .. " "
          .. q(helpers.tide_bin) .. " run"
        helpers.run("cd " .. q(dir) .. " && (sh -c " .. q(inner) .. " > /dev/null 2> " .. q(dir .. "/" .. name .. ".log")
          .. "; echo $? > " .. q(dir .. "/" .. name .. ".exit") .. ") > /dev/null 2>&1 & true")
        local pid
        for _ = 1, 100 do
          pid = tonumber(helpers.read_file(dir .. "/" .. name .. ".pid") or "")
          if pid then break end
          helpers.run("sleep 0.05")
        end
        assert(pid, "worker " .. name .. " did not start")
        workers[name] = { pid = pid, alive = true, started_at = sched.now() }
        order[#order + 1] = name
      end
      local function signal(name, sig) helpers.run("kill -" .. sig .. " " .. workers[name].pid) end
      -- the exit status, once the shell has written it (the file exists a
      -- moment before its line)
      local function exited(name) return (helpers.read_file(dir .. "/" .. name .. ".exit") or ""):match("%d+") end

      -- what the lease table says, checked on every look: checkpoints only forward
      local cps_seen, violations, describer_owners = {}, {}, {}
      local phases = {}
      local function leases()
        local by, items = {}, {}
        local res, qerr = db:query{ TableName = leases_table, KeyConditionExpression = "#p = :p",
          ExpressionAttributeNames = { ["#p"] = "projection" }, ExpressionAttributeValues = { [":p"] = "*" },
          ConsistentRead = true }
        -- the first worker to start makes the lease table
        if not res and qerr.type == "ResourceNotFoundException" then return items, by end
        assert(res, qerr)
        for _, it in ipairs(res.Items) do
          if it.shard == "~describer" then
            describer_owners[it.owner or "-"] = true
            goto next_item
          end
          items[#items + 1] = it
          by[it.shard] = it
          for k, v in pairs(it) do
            if type(k) == "string" and k:match("^cp:") then
              local key = it.shard .. "/" .. k
              local before = cps_seen[key]
              if before and before > v then violations[#violations + 1] = key .. ": " .. before .. " -> " .. v end
              cps_seen[key] = v
            end
          end
          ::next_item::
        end
        return items, by
      end
      -- lease counts of the live workers over the eligible shards
      local function balanced(live)
        local items, by = leases()
        local pid_of = {}
        for name, w in pairs(workers) do if live[name] then pid_of[tostring(w.pid)] = name end end
        local counts, free = {}, 0
        for name in pairs(live) do counts[name] = 0 end
        for _, it in ipairs(items) do
          local parent = it.parent and by[it.parent]
          local eligible = it.checkpoint ~= "SHARD_END"
            and (not it.parent or it.parent_done or (parent and parent.checkpoint == "SHARD_END"))
          if eligible then
            local w = it.owner and pid_of[it.owner:match(":(%d+):")]
            if w then counts[w] = counts[w] + 1 else free = free + 1 end
          end
        end
        local lo, hi = math.huge, 0
        for _, c in pairs(counts) do lo, hi = math.min(lo, c), math.max(hi, c) end
        -- every shard of the stream has its lease (the describer makes them)
        return free == 0 and hi - lo <= 1 and #items >= 64,
          string.format("%d..%d, %d free, %d leases", lo, hi, free, #items)
      end
      local function live_set()
        local s = {}
        for name, w in pairs(workers) do if w.alive then s[name] = true end end
        return s
      end
      local function wait_balanced(label, seconds)
        local t0, ok_, how = sched.now(), false, ""
        while sched.now() - t0 < seconds do
          ok_, how = balanced(live_set())
          if ok_ then
            phases[#phases + 1] = string.format("%s balanced %.1f s", label, sched.now() - t0)
            return sched.now() - t0
          end
          sched.sleep(0.5)
        end
        error(label .. ": lease counts not within 1 after " .. seconds .. " s (" .. how .. ")")
      end
      local function wait_models(label, seconds)
        local t0, ok_, why = sched.now(), false, ""
        while sched.now() - t0 < seconds do
          leases()
          local b, o = recompute(db, store.events_table)
          ok_, why = same_models(b, model(db, prefix .. "rm_balances", "id"))
          if ok_ then ok_, why = same_models(b, model(db, prefix .. "rm_balances_c", "id")) end
          if ok_ then ok_, why = same_models(o, model(db, prefix .. "rm_owners", "owner")) end
          if ok_ then
            phases[#phases + 1] = string.format("%s exact %.1f s", label, sched.now() - t0)
            return sched.now() - t0
          end
          sched.sleep(0.5)
        end
        error(label .. ": read models not equal to the recomputation after " .. seconds .. " s: " .. why)
      end

      local t_fleet
      local skews = { -300000, 300000, 0, 120000, -120000, 7000, -7000, 0, 60000, -60000, 2000, -2000 }
      run(function()
        t_fleet = sched.now()
        -- 0 -> 8 workers, their wall clocks up to 5 minutes apart
        for i = 1, 8 do start("w" .. i, skews[i]) end
        wait_balanced("8 workers", 120 * SLOW)
        wait_models("8 workers", 120 * SLOW)
        -- -> 12
        for i = 9, 12 do start("w" .. i, skews[i]) end
        wait_balanced("12 workers", 120 * SLOW)
        write_accounts(store, 32, "b")
        -- every shard splits: the children wait for their parents' end
        srv:control("Split", { StreamArn = arn })
        write_accounts(store, 32, "c")
        -- SIGKILL one; SIGSTOP another for longer than the lease time
        signal("w1", "KILL")
        workers.w1.alive, workers.w1.killed_at = false, sched.now()
        signal("w2", "STOP")
        sched.sleep(LEASE_MS / 1000 + 1.5)
        signal("w2", "CONT")
        write_accounts(store, 24, "d")
        wait_models("after SIGKILL and SIGSTOP", 180 * SLOW)
        wait_balanced("11 workers", 120 * SLOW)
        -- a lease-table outage; SIGTERM six workers in it: 12 -> 5
        srv:control("Outage", { TableName = leases_table, Seconds = LEASE_MS / 1000 + 2 })
        local t_term = sched.now()
        for i = 2, 7 do signal("w" .. i, "TERM"); workers["w" .. i].alive = false end
        for i = 2, 7 do
          local name = "w" .. i
          while not exited(name) and sched.now() - t_term < 30 do sched.sleep(0.1) end
          assert.is_string(exited(name), name .. " did not exit within 30 s of SIGTERM in the outage")
          workers[name].exited_at = sched.now()
          assert.equal("0", exited(name))
        end
        local term_s = sched.now() - t_term
        write_accounts(store, 24, "e")
        wait_models("5 workers", 180 * SLOW)
        wait_balanced("5 workers", 120 * SLOW)
        assert.same({}, violations, "checkpoints moved backwards")

        -- no child read before its parent's end
        local st = srv:stats(arn)
        local by = {}
        for _, s in ipairs(st.Shards) do by[s.ShardId] = s end
        local children = 0
        for _, s in ipairs(st.Shards) do
          local p = s.ParentShardId and by[s.ParentShardId]
          if p and s.FirstReadMs ~= cjson.null and s.FirstReadMs then
            children = children + 1
            assert.is_number(p.EndReadMs, "child " .. s.ShardId .. " read, its parent never read to its end")
            assert.is_true(s.FirstReadMs >= p.EndReadMs, "child " .. s.ShardId .. " read before its parent's end")
          end
        end
        assert.is_true(children > 0)
        -- request budgets: refusals are rare retries, never the rule
        local gets, throttled = 0, 0
        for _, s in ipairs(st.Shards) do gets, throttled = gets + s.GetRecords, throttled + s.Throttled + s.ReadersRefused end
        assert.is_true(throttled <= gets / 20, throttled .. " GetRecords refused of " .. gets)
        assert.is_true(st.DescribeThrottled <= st.DescribeStream / 20,
          st.DescribeThrottled .. " DescribeStream refused of " .. st.DescribeStream)
        -- DescribeStream is shared: one describer (a lease) for the fleet,
        -- at most 2 pages every describe_ms, plus one look at each change
        -- of describer and a few early looks after the split; 12 workers
        -- describing each for itself would make 12 times that
        local fleet_s = sched.now() - t_fleet
        local bound = 2 * (fleet_s / (0.9 * DESCRIBE_MS / 1000) + 10)
        assert.is_true(st.DescribeStream <= bound, string.format("%d DescribeStream in %.0f s (bound %.0f)",
          st.DescribeStream, fleet_s, bound))
        assert.is_not_nil(next(describer_owners), "no describer lease in the lease table")
        -- lease-table requests per worker and second, over the whole run
        local calls = srv:control("TableCalls", {}).Tables[leases_table] or {}
        local total = 0
        for _, n in pairs(calls) do total = total + n end
        local worker_s = 0
        for _, w in pairs(workers) do
          worker_s = worker_s + ((w.killed_at or w.exited_at or sched.now()) - w.started_at)
        end
        io.stderr:write(string.format("\n  fleet: %d GetRecords, %d refused; %d DescribeStream, %d refused;"
          .. " %.1f lease-table requests/s per worker (%s); SIGTERM in the outage: all six out in %.1f s\n  phases: %s\n",
          gets, throttled, st.DescribeStream, st.DescribeThrottled, total / worker_s, cjson.encode(calls), term_s,
          table.concat(phases, "; ")))
      end)

      -- no two workers wrote for one shard at overlapping times
      local sessions = {}
      for _, name in ipairs(order) do
        local w = workers[name]
        local open = {}
        for line in (helpers.read_file(dir .. "/" .. name .. ".log") or ""):gmatch("[^\n]+") do
          local okj, rec = pcall(cjson.decode, line)
          if okj and type(rec) == "table" and rec.shard then
            if rec.msg == "shard writes begin" then
              open[rec.shard] = rec.at
            elseif rec.msg == "shard writes end" then
              sessions[#sessions + 1] = { shard = rec.shard, who = name, first = rec.first, last = rec.last }
              open[rec.shard] = nil
            end
          end
        end
        for shard, at in pairs(open) do
          sessions[#sessions + 1] = { shard = shard, who = name, first = at,
                                      last = w.killed_at or w.exited_at or math.huge }
        end
      end
      local per = {}
      for _, s in ipairs(sessions) do
        per[s.shard] = per[s.shard] or {}
        table.insert(per[s.shard], s)
      end
      local n = 0
      for shard, list in pairs(per) do
        table.sort(list, function(a, b) return a.first < b.first end)
        for i = 2, #list do
          local a, b = list[i - 1], list[i]
          if a.who ~= b.who then
            n = n + 1
            assert.is_true(b.first >= a.last, string.format("shard %s: %s wrote until %.3f, %s from %.3f",
              shard, a.who, a.last, b.who, b.first))
          end
        end
      end
      assert.is_true(n > 0, "no shard changed hands")
    end)
    for _, w in pairs(workers) do helpers.run("kill -9 " .. w.pid .. " 2>/dev/null") end
    if not ok then
      -- a post-mortem: the lease table and where the stand-in put each
      -- record go with the workers' logs into a directory that is kept
      pcall(run, function()
        local db = client(nil, 8)
        local res = db:scan{ TableName = prefix .. "leases" }
        helpers.write_file(dir .. "/leases.json", cjson.encode(res and res.Items or {}))
        local d = db:describe_table{ TableName = prefix .. "events" }
        local arn = d and d.Table.LatestStreamArn
        if arn then helpers.write_file(dir .. "/records.json", cjson.encode(srv:control("Records", { StreamArn = arn }))) end
      end)
    end
    srv:stop()
    if not ok then
      for _, name in ipairs(order) do
        io.stderr:write("---- ", name, "\n", (helpers.read_file(dir .. "/" .. name .. ".log") or ""):sub(-3000), "\n")
      end
      local keep = "/tmp/" .. helpers.unique("tide-fleet-failed")
      helpers.run("mv " .. q(dir) .. " " .. q(keep))
      err = tostring(err) .. " (the workers' logs, leases.json and records.json are kept in " .. keep .. ")"
    else
      helpers.run("rm -rf " .. q(dir))
    end
    assert(ok, err)
  end)
end)
