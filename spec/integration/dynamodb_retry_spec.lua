-- Retries and failure handling of the DynamoDB client against the suite's
-- own loopback fault server (spec/fixtures/fault_server.js): throttling,
-- 500s, non-JSON pages, truncated bodies, dropped connections.
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"
local cjson = require "cjson.safe"

local CREDS = { access_key_id = "tidetest", secret_access_key = "tidetestsecret" }
local PREFIX = "com.amazonaws.dynamodb.v20120810#"

local fault = require "fixtures.fault_server"

local server

local function script(actions)
  server:reset()
  server:script(actions)
end

local function requests()
  return server:requests()
end

local function error_body(t, msg)
  return cjson.encode{ __type = PREFIX .. t, message = msg or (t .. " from the fault server") }
end

local function new_client(opts)
  local o = { endpoint = server.url, region = "us-east-1", credentials = CREDS,
              base_delay = 0.001, max_delay = 0.01, max_attempts = 4, timeout_ms = 2000 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(dynamodb.new(o))
end

local OK_GET = { status = 200, body = cjson.encode{ Item = { pk = { S = "a" }, n = { N = "7" } } },
                 headers = { ["content-type"] = "application/x-amz-json-1.0" } }

describe("DynamoDB client retries", function()
  setup(function() server = fault.start() end)
  teardown(function() server:stop() end)

  local function recovers_after(actions, label)
    it("recovers after " .. label, function()
      sched.run(function()
        local s = {}
        for _, a in ipairs(actions) do s[#s + 1] = a end
        s[#s + 1] = OK_GET
        script(s)
        local db = new_client()
        local res = assert(db:get_item{ TableName = "t", Key = { pk = "a" } })
        assert.equal(7, res.Item.n)
        assert.equal(#actions + 1, #requests())
      end)
    end)
  end

  recovers_after({ { status = 400, body = error_body("ProvisionedThroughputExceededException") },
                   { status = 400, body = error_body("ThrottlingException") } }, "throttling")
  recovers_after({ { status = 400, body = error_body("RequestLimitExceeded") } }, "RequestLimitExceeded")
  recovers_after({ { status = 500, body = "<html><body>Internal error</body></html>",
                     headers = { ["content-type"] = "text/html" } } }, "a 500 HTML page")
  recovers_after({ { status = 503, body = error_body("ServiceUnavailable") } }, "a 503")
  recovers_after({ { truncate = true, body = string.rep("{\"Item\":{}}", 100) } }, "a truncated body")
  recovers_after({ { drop = true } }, "a dropped connection")
  recovers_after({ { status = 200, body = "this is not json" } }, "a 200 with a body that is not JSON")

  it("returns a definite error at once, without retrying", function()
    sched.run(function()
      script({ { status = 400, body = error_body("ValidationException", "One or more parameter values were invalid") } })
      local db = new_client()
      local res, err = db:get_item{ TableName = "orders", Key = { pk = "a" } }
      assert.is_nil(res)
      assert.equal("ValidationException", err.type)
      assert.equal("One or more parameter values were invalid", err.message)
      assert.equal(400, err.status)
      assert.is_false(err.retryable)
      assert.equal(1, err.attempts)
      assert.equal(1, #requests())
      assert.matches("GetItem on table 'orders': ValidationException", tostring(err), 1, true)
    end)
  end)

  it("keeps an unknown error type and does not retry it", function()
    sched.run(function()
      script({ { status = 400, body = error_body("SomethingNewException", "new") } })
      local res, err = new_client():get_item{ TableName = "t", Key = { pk = "a" } }
      assert.is_nil(res)
      assert.equal("SomethingNewException", err.type)
      assert.equal(1, #requests())
    end)
  end)

  it("gives up after max_attempts with the last error", function()
    sched.run(function()
      local s = {}
      for i = 1, 6 do s[i] = { status = 500, body = "<html>down</html>" } end
      script(s)
      local res, err = new_client{ max_attempts = 3 }:get_item{ TableName = "t", Key = { pk = "a" } }
      assert.is_nil(res)
      assert.equal("HTTP500", err.type)
      assert.matches("non-JSON", err.message, 1, true)
      assert.is_true(err.retryable)
      assert.equal(3, err.attempts)
      assert.equal(3, #requests())
    end)
  end)

  it("replays a transaction with the same ClientRequestToken after a dropped connection", function()
    sched.run(function()
      script({ { drop = true }, { status = 500, body = error_body("InternalServerError") },
               { status = 200, body = "{}" } })
      local db = new_client()
      assert(db:transact_write{ TransactItems = {
        { Put = { TableName = "t", Item = { pk = "a", v = 1 } } },
        { Put = { TableName = "t", Item = { pk = "b", v = 2 } } },
      } })
      local reqs = requests()
      assert.equal(3, #reqs)
      local tokens = {}
      for _, r in ipairs(reqs) do
        local body = cjson.decode(r.body)
        assert.is_string(body.ClientRequestToken)
        tokens[body.ClientRequestToken] = true
      end
      local n = 0
      for _ in pairs(tokens) do n = n + 1 end
      assert.equal(1, n)
    end)
  end)

  it("marks a failed condition seen after a lost response as ambiguous", function()
    sched.run(function()
      script({ { drop = true },
               { status = 400, body = error_body("ConditionalCheckFailedException", "The conditional request failed") } })
      local res, err = new_client():put_item{ TableName = "t", Item = { pk = "a" },
                                              ConditionExpression = "attribute_not_exists(pk)" }
      assert.is_nil(res)
      assert.equal("ConditionalCheckFailedException", err.type)
      assert.is_true(err.ambiguous)
      assert.equal(2, err.attempts)
    end)
  end)

  it("retries a transaction cancelled only by conflicts, not one with a failed condition", function()
    sched.run(function()
      local conflict = cjson.encode{ __type = PREFIX .. "TransactionCanceledException", message = "conflict",
        CancellationReasons = { { Code = "None" }, { Code = "TransactionConflict", Message = "conflict" } } }
      local failed = cjson.encode{ __type = PREFIX .. "TransactionCanceledException", message = "failed",
        CancellationReasons = { { Code = "ConditionalCheckFailed", Message = "failed",
                                  Item = { pk = { S = "a" }, version = { N = "3" } } }, { Code = "None" } } }
      script({ { status = 400, body = conflict }, { status = 400, body = failed } })
      local res, err = new_client():transact_write{ TransactItems = {
        { Put = { TableName = "t", Item = { pk = "a" } } }, { Put = { TableName = "t", Item = { pk = "b" } } } } }
      assert.is_nil(res)
      assert.equal("TransactionCanceledException", err.type)
      assert.equal(2, err.attempts)
      assert.equal("ConditionalCheckFailed", err.reasons[1].Code)
      assert.equal(3, err.reasons[1].Item.version)
    end)
  end)

  it("resends only the UnprocessedItems of a BatchWriteItem", function()
    sched.run(function()
      local unprocessed = cjson.encode{ UnprocessedItems = { t = {
        { PutRequest = { Item = { pk = { S = "k3" } } } } } } }
      script({ { status = 200, body = unprocessed }, { status = 200, body = "{\"UnprocessedItems\":{}}" } })
      local reqs = {}
      for i = 1, 5 do reqs[i] = { PutRequest = { Item = { pk = "k" .. i } } } end
      assert(new_client():batch_write{ t = reqs })
      local seen = requests()
      assert.equal(2, #seen)
      local second = cjson.decode(seen[2].body)
      assert.equal(1, #second.RequestItems.t)
      assert.equal("k3", second.RequestItems.t[1].PutRequest.Item.pk.S)
    end)
  end)

  it("signs every request with SigV4 for the dynamodb service", function()
    sched.run(function()
      script({ OK_GET })
      assert(new_client():get_item{ TableName = "t", Key = { pk = "a" } })
      local r = requests()[1]
      local auth = r.headers.authorization
      assert.matches("^AWS4%-HMAC%-SHA256 Credential=tidetest/%d+/us%-east%-1/dynamodb/aws4_request", auth)
      assert.matches("SignedHeaders=content%-type;host;x%-amz%-date;x%-amz%-target", auth)
      assert.equal("DynamoDB_20120810.GetItem", r.headers["x-amz-target"])
      assert.is_nil(auth:find("tidetestsecret", 1, true))
    end)
  end)

  it("returns a transport error for a closed port after its attempts", function()
    sched.run(function()
      local db = assert(dynamodb.new{ endpoint = "http://127.0.0.1:1", region = "us-east-1", credentials = CREDS,
                                      base_delay = 0.001, max_attempts = 2 })
      local res, err = db:get_item{ TableName = "t", Key = { pk = "a" } }
      assert.is_nil(res)
      assert.equal("TransportError", err.type)
      assert.equal("connect", err.kind)
      assert.equal(2, err.attempts)
    end)
  end)
end)
