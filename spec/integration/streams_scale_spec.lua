-- DynamoDB Streams at scale: the Streams stand-in (spec/fixtures/streams_standin.js,
-- in front of DynamoDB Local: many virtual shards, splits, limits, trimming)
-- and the streams runner on it.
local helpers = require "helpers"
local core = require "tide.core"
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"
local dstore = require "tide.store.dynamodb"
local standin = require "fixtures.streams_standin"

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

-- Every record of every listed shard, read from TRIM_HORIZON to the tip:
-- shard id -> list of {stream=, version=, seq=}.
local function read_all(db, arn)
  local desc = assert(db:describe_stream{ StreamArn = arn }).StreamDescription
  local out = {}
  for _, s in ipairs(desc.Shards) do
    local list = {}
    out[s.ShardId] = list
    local it = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = s.ShardId,
                                             ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
    local empty = 0
    while it and empty < 2 do
      local r = assert(db:get_records{ ShardIterator = it })
      for _, rec in ipairs(r.Records) do
        local img = rec.dynamodb.NewImage
        list[#list + 1] = { stream = img.stream, version = img.version, seq = rec.dynamodb.SequenceNumber }
      end
      empty = #r.Records == 0 and empty + 1 or 0
      it = r.NextShardIterator
    end
  end
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
      for i = 1, 40 do open(store, "a" .. i, 3) end
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
      for i = 1, 40 do open(store, "b" .. i, 1) end
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
      for i = 1, 6 do open(store, "t" .. i, 2) end
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
      for i = 1, 4 do open(store, "u" .. i, 1) end
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
