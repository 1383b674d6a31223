-- The DynamoDB client against real servers: DynamoDB Local (every
-- operation) and dynalite (a second, independent implementation, for the
-- operations it supports: no transactions, Streams or TTL).
local helpers = require "helpers"
local core = require "tide.core"
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"

local CREDS = { access_key_id = "tidetest", secret_access_key = "tidetestsecret" }

local function new_client(endpoint, opts)
  local o = { endpoint = endpoint, region = "us-east-1", credentials = CREDS, base_delay = 0.01 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(dynamodb.new(o))
end

-- Runs fn inside the engine's scheduler, as the tide process does.
local function run(fn)
  return sched.run(fn)
end

local function create_table(db, name, extra)
  local params = {
    TableName = name,
    AttributeDefinitions = { { AttributeName = "pk", AttributeType = "S" },
                             { AttributeName = "sk", AttributeType = "N" } },
    KeySchema = { { AttributeName = "pk", KeyType = "HASH" },
                  { AttributeName = "sk", KeyType = "RANGE" } },
    BillingMode = "PAY_PER_REQUEST",
  }
  for k, v in pairs(extra or {}) do params[k] = v end
  assert(db:create_table(params))
  assert(db:wait_for_table(name, 30))
end

local function client_suite(server, endpoint_fn, features)
  describe("DynamoDB client on " .. server, function()
    local endpoint, db, tname

    before_each(function()
      endpoint = assert(endpoint_fn(), server .. " endpoint not set: run the suite with tools/test.sh (make test)")
      tname = helpers.unique("client")
      run(function()
        db = new_client(endpoint)
        create_table(db, tname)
      end)
    end)

    after_each(function()
      run(function() db:delete_table{ TableName = tname } end)
    end)

    it("round-trips every attribute type through PutItem and GetItem", function()
      run(function()
        local item = {
          pk = "all-types", sk = 1,
          s = "héllo wörld ✓ 🎉", empty = "",
          n = 42, neg = -7.25, big = core.number("12345678901234567890123456789012345678"),
          tiny = core.number("-0.000000000000000000000000000000000001"),
          precise = core.number("-0.12345678901234567890123456789012345678"),
          b = core.binary("\0\1\2\255bytes\0"),
          yes = true, no = false, nothing = core.null,
          map = { nested = { deeper = { x = 1 } } }, list = { 1, "two", { three = 3 } },
          empty_list = core.list(), empty_map = {},
          ss = core.set("SS", { "a", "b" }), ns = core.set("NS", { 1, 2.5 }),
          bs = core.set("BS", { core.binary("\0x"), core.binary("y") }),
        }
        assert(db:put_item{ TableName = tname, Item = item })
        local res = assert(db:get_item{ TableName = tname, Key = { pk = "all-types", sk = 1 },
                                        ConsistentRead = true })
        local got = res.Item
        assert.equal(item.s, got.s)
        assert.equal("", got.empty)
        assert.equal(42, got.n)
        assert.equal(-7.25, got.neg)
        assert.equal("12345678901234567890123456789012345678", tostring(got.big))
        assert.equal(-1e-36, got.tiny) -- one significant digit: a plain Lua number
        assert.equal("-0.12345678901234567890123456789012345678", tostring(got.precise))
        assert.equal("\0\1\2\255bytes\0", core.bytes(got.b))
        assert.is_true(got.yes)
        assert.is_false(got.no)
        assert.equal(core.null, got.nothing)
        assert.equal(1, got.map.nested.deeper.x)
        assert.same({ 1, "two", { three = 3 } }, { got.list[1], got.list[2], { three = got.list[3].three } })
        assert.is_true(core.is_list(got.empty_list))
        assert.equal(0, #got.empty_list)
        assert.is_nil(next(got.empty_map))
        assert.is_false(core.is_list(got.empty_map))
        assert.equal("SS", got.ss.kind)
        local ss = { got.ss[1], got.ss[2] }
        table.sort(ss)
        assert.same({ "a", "b" }, ss)
        assert.equal("NS", got.ns.kind)
        assert.equal(2, #got.ns)
        assert.equal("BS", got.bs.kind)
        assert.equal(2, #got.bs)
      end)
    end)

    it("reports a failed condition as ConditionalCheckFailedException, not retried", function()
      run(function()
        local put = { TableName = tname, Item = { pk = "c", sk = 1, v = 1 },
                      ConditionExpression = "attribute_not_exists(pk)" }
        assert(db:put_item(put))
        local res, err = db:put_item(put)
        assert.is_nil(res)
        assert.equal("ConditionalCheckFailedException", err.type)
        assert.equal(400, err.status)
        assert.is_false(err.retryable)
        assert.equal(1, err.attempts)
        assert.matches(tname, tostring(err), 1, true)
        assert.matches("PutItem", tostring(err), 1, true)
      end)
    end)

    it("counts requests, reported capacity units and refused conditional writes in client.usage", function()
      run(function()
        local c = new_client(endpoint)
        local put = { TableName = tname, Item = { pk = "u", sk = 1, v = string.rep("x", 1500) },
                      ConditionExpression = "attribute_not_exists(pk)", ReturnConsumedCapacity = "TOTAL" }
        assert(c:put_item(put))
        assert.is_nil(c:put_item(put))
        assert(c:get_item{ TableName = tname, Key = { pk = "u", sk = 1 }, ConsistentRead = true,
                           ReturnConsumedCapacity = "TOTAL" })
        assert(c:get_item{ TableName = tname, Key = { pk = "u", sk = 1 } }) -- no units asked
        assert.same({ PutItem = 2, GetItem = 2 }, c.usage.requests)
        assert.same({ PutItem = 1 }, c.usage.failed_writes)
        local u = c.usage.capacity[tname]
        assert.equal(2, u.PutItem.write) -- a 1.5 KB item: 2 WCU
        assert.equal(0, u.PutItem.read)
        assert.equal(1, u.GetItem.read)  -- consistent, under 4 KB: 1 RCU
        assert.same({ requests = 4, read = 1, write = 2 }, c:usage_totals())
      end)
    end)

    it("updates with expression values and returns the new attributes", function()
      run(function()
        assert(db:put_item{ TableName = tname, Item = { pk = "u", sk = 1, balance = 10 } })
        local res = assert(db:update_item{
          TableName = tname, Key = { pk = "u", sk = 1 },
          UpdateExpression = "SET balance = balance + :d, tags = :t",
          ExpressionAttributeValues = { [":d"] = 5, [":t"] = core.set("SS", { "x" }) },
          ReturnValues = "ALL_NEW",
        })
        assert.equal(15, res.Attributes.balance)
        assert.equal("SS", res.Attributes.tags.kind)
        assert(db:delete_item{ TableName = tname, Key = { pk = "u", sk = 1 } })
        local got = assert(db:get_item{ TableName = tname, Key = { pk = "u", sk = 1 }, ConsistentRead = true })
        assert.is_nil(got.Item)
      end)
    end)

    it("paginates a Query over more than 1 MB, as pages and as one result", function()
      run(function()
        local blob = string.rep("x", 60 * 1024)
        local reqs = {}
        for i = 1, 30 do
          reqs[i] = { PutRequest = { Item = { pk = "big", sk = i, blob = blob } } }
        end
        assert(db:batch_write{ [tname] = reqs })
        local q = { TableName = tname, KeyConditionExpression = "pk = :p",
                    ExpressionAttributeValues = { [":p"] = "big" } }
        local pages, seen = 0, {}
        for page, err in db:query_pages(q) do
          assert.is_truthy(page, tostring(err))
          pages = pages + 1
          for _, it in ipairs(page.Items) do seen[#seen + 1] = it.sk end
        end
        assert.is_true(pages >= 2, "expected several 1 MB pages, got " .. pages)
        assert.equal(30, #seen)
        for i = 1, 30 do assert.equal(i, seen[i]) end
        local all = assert(db:query(q))
        assert.equal(30, #all.Items)
        assert.equal(30, all.Count)
        local n = 0
        for item in db:query_items(q) do n = n + 1; assert.equal(n, item.sk) end
        assert.equal(30, n)
      end)
    end)

    it("writes 1000 items with BatchWriteItem, reads them back by BatchGetItem and parallel Scan", function()
      run(function()
        local reqs, keys = {}, {}
        for i = 1, 1000 do
          reqs[i] = { PutRequest = { Item = { pk = "p" .. (i % 37), sk = i, v = i * 2 } } }
          keys[i] = { pk = "p" .. (i % 37), sk = i }
        end
        local res = assert(db:batch_write{ [tname] = reqs })
        assert.equal(1000, res.requests)
        assert.equal(40, res.batches)
        local got = assert(db:batch_get{ [tname] = { Keys = keys, ConsistentRead = true } })
        assert.equal(1000, #got.Responses[tname])
        local sum = 0
        for _, item in ipairs(got.Responses[tname]) do sum = sum + item.v end
        assert.equal(1000 * 1001, sum)
        local scan = assert(db:scan({ TableName = tname }, { segments = 4 }))
        assert.equal(1000, scan.Count)
        local seen = {}
        for _, item in ipairs(scan.Items) do
          assert.is_nil(seen[item.sk], "item seen twice by the parallel scan")
          seen[item.sk] = true
        end
      end)
    end)

    it("refuses an item over 400 KB before sending it", function()
      run(function()
        local res, err = db:put_item{ TableName = tname,
                                      Item = { pk = "huge", sk = 1, blob = string.rep("y", 410 * 1024) } }
        assert.is_nil(res)
        assert.equal("ItemTooLarge", err.type)
        assert.equal(0, err.attempts)
        assert.matches(tname, tostring(err), 1, true)
      end)
    end)

    it("returns a clear error for a value DynamoDB cannot store", function()
      run(function()
        local res, err = db:put_item{ TableName = tname, Item = { pk = "x", sk = 1, s = core.set("SS", {}) } }
        assert.is_nil(res)
        assert.equal("InvalidValue", err.type)
        assert.matches("empty", err.message)
        assert.matches("Item", err.message)
      end)
    end)

    it("returns ResourceNotFoundException for a missing table", function()
      run(function()
        local res, err = db:get_item{ TableName = tname .. "_missing", Key = { pk = "a", sk = 1 } }
        assert.is_nil(res)
        assert.equal("ResourceNotFoundException", err.type)
        assert.is_false(err.retryable)
      end)
    end)

    it("reports a ValidationException with the server's message", function()
      run(function()
        local res, err = db:put_item{ TableName = tname, Item = { pk = "no-sort-key" } }
        assert.is_nil(res)
        assert.equal("ValidationException", err.type)
        assert.equal(400, err.status)
        assert.truthy(#err.message > 0)
      end)
    end)

    if features.transactions then
      it("applies a transaction atomically and reports per-item cancellation reasons", function()
        run(function()
          assert(db:put_item{ TableName = tname, Item = { pk = "t", sk = 1, v = 1 } })
          local res, err = db:transact_write{ TransactItems = {
            { Put = { TableName = tname, Item = { pk = "t", sk = 2, v = 2 } } },
            { Put = { TableName = tname, Item = { pk = "t", sk = 1, v = 9 },
                      ConditionExpression = "attribute_not_exists(pk)" } },
          } }
          assert.is_nil(res)
          assert.equal("TransactionCanceledException", err.type)
          assert.is_false(err.retryable)
          assert.equal("None", err.reasons[1].Code)
          assert.equal("ConditionalCheckFailed", err.reasons[2].Code)
          local got = assert(db:get_item{ TableName = tname, Key = { pk = "t", sk = 2 }, ConsistentRead = true })
          assert.is_nil(got.Item, "a cancelled transaction wrote its first item")
          assert(db:transact_write{ TransactItems = {
            { Put = { TableName = tname, Item = { pk = "t", sk = 2, v = 2 } } },
            { Put = { TableName = tname, Item = { pk = "t", sk = 3, v = 3 } } },
          } })
          local q = assert(db:query{ TableName = tname, KeyConditionExpression = "pk = :p",
                                     ExpressionAttributeValues = { [":p"] = "t" } })
          assert.equal(3, q.Count)
        end)
      end)

      it("never applies a replayed transaction twice (same ClientRequestToken)", function()
        run(function()
          local params = { ClientRequestToken = core.random_hex(16), TransactItems = {
            { Update = { TableName = tname, Key = { pk = "ctr", sk = 1 },
                         UpdateExpression = "ADD n :one", ExpressionAttributeValues = { [":one"] = 1 } } },
          } }
          assert(db:transact_write(params))
          assert(db:transact_write(params))
          local got = assert(db:get_item{ TableName = tname, Key = { pk = "ctr", sk = 1 }, ConsistentRead = true })
          assert.equal(1, got.Item.n)
        end)
      end)

      it("refuses a transaction over 100 actions before sending it", function()
        run(function()
          local items = {}
          for i = 1, 101 do items[i] = { Put = { TableName = tname, Item = { pk = "l", sk = i } } } end
          local res, err = db:transact_write{ TransactItems = items }
          assert.is_nil(res)
          assert.equal("LimitExceeded", err.type)
          assert.matches("101", err.message)
        end)
      end)
    end

    if features.ttl then
      it("enables time to live", function()
        run(function()
          local res = assert(db:update_time_to_live{ TableName = tname,
            TimeToLiveSpecification = { AttributeName = "expires", Enabled = true } })
          assert.is_true(res.TimeToLiveSpecification.Enabled)
        end)
      end)
    end

    if features.streams then
      it("reads Streams records after writes (ListStreams, DescribeStream, GetShardIterator, GetRecords)", function()
        run(function()
          local sname = helpers.unique("streamed")
          create_table(db, sname, { StreamSpecification = { StreamEnabled = true, StreamViewType = "NEW_IMAGE" } })
          for i = 1, 3 do
            assert(db:put_item{ TableName = sname, Item = { pk = "s", sk = i, amount = i * 10,
                                                            big = core.number("98765432109876543210") } })
          end
          local streams = assert(db:list_streams{ TableName = sname })
          assert.equal(1, #streams.Streams)
          local arn = streams.Streams[1].StreamArn
          local desc = assert(db:describe_stream{ StreamArn = arn })
          assert.is_true(#desc.StreamDescription.Shards >= 1)
          local records = {}
          for _, shard in ipairs(desc.StreamDescription.Shards) do
            local it = assert(db:get_shard_iterator{ StreamArn = arn, ShardId = shard.ShardId,
                                                     ShardIteratorType = "TRIM_HORIZON" })
            local r = assert(db:get_records{ ShardIterator = it.ShardIterator })
            for _, rec in ipairs(r.Records) do records[#records + 1] = rec end
          end
          assert.equal(3, #records)
          for i, rec in ipairs(records) do
            assert.equal("INSERT", rec.eventName)
            assert.equal(i, rec.dynamodb.Keys.sk)
            assert.equal(i * 10, rec.dynamodb.NewImage.amount)
            assert.equal("98765432109876543210", tostring(rec.dynamodb.NewImage.big))
          end
          assert(db:delete_table{ TableName = sname })
        end)
      end)
    end
  end)
end

client_suite("DynamoDB Local", helpers.dynamodb_endpoint, { transactions = true, streams = true, ttl = true })
client_suite("dynalite", helpers.dynalite_endpoint, {})

describe("DynamoDB client configuration", function()
  it("rejects an invalid endpoint URL with a message naming it", function()
    local db, err = dynamodb.new{ endpoint = "localhost:8000", region = "us-east-1", credentials = CREDS }
    assert.is_nil(db)
    assert.equal("ConfigError", err.type)
    assert.matches("localhost:8000", err.message, 1, true)
  end)

  it("reports missing credentials without a request", function()
    run(function()
      local db = assert(dynamodb.new{ endpoint = "http://127.0.0.1:1", region = "us-east-1",
                                      credentials = {}, profile = "tide-no-such-profile" })
      -- The environment may hold real credentials; only check when it does not.
      if os.getenv("AWS_ACCESS_KEY_ID") then return end
      local res, err = db:get_item{ TableName = "t", Key = { pk = "a" } }
      assert.is_nil(res)
      assert.equal("CredentialsError", err.type)
      assert.is_false(err.retryable)
    end)
  end)

  it("raises on wrong argument types (programmer errors)", function()
    local db = assert(dynamodb.new{ endpoint = "http://127.0.0.1:1", region = "us-east-1", credentials = CREDS })
    assert.has_error(function() db:put_item("nope") end, "put_item: params must be a table")
    assert.has_error(function() db:get_item{} end, "get_item: params.TableName must be a string")
    assert.has_error(function() db:call(42, {}) end, "call: op must be a string")
    assert.has_error(function() db:batch_write{ t = { { Bogus = {} } } } end)
  end)
end)
