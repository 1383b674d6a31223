-- Request bodies of the DynamoDB client handed over as core buffers
-- (core.encode_request_buffer) instead of Lua strings: what is signed is
-- exactly what is sent, on both bindings of core.sign, and transports that
-- do not take buffers still get strings. Against spec/fixtures/fault_server.js.
local core = require "tide.core"
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"
local fault = require "fixtures.fault_server"

local CREDS = { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" }

local ITEM = { pk = "user#1", n = 42, tags = core.set("SS", { "a", "b" }), note = "caf\195\169 \0 end",
               blob = core.binary("\0\1\2"), doc = { list = { 1, "two", false } } }

describe("core.encode_request_buffer", function()
  it("holds the bytes of encode_request, with their length", function()
    local params = { TableName = "t", Item = ITEM }
    local buf, len = core.encode_request_buffer(params)
    local json = core.encode_request(params)
    assert.is_true(core.is_buffer(buf))
    assert.is_false(core.is_buffer(json))
    assert.is_false(core.is_buffer(io.stdout))
    assert.equal("userdata", type(buf))
    assert.equal(#json, len)
    assert.equal(#json, #buf)
    assert.equal(json, tostring(buf))
  end)

  it("fails like encode_request, with nil and the message", function()
    local buf, err = core.encode_request_buffer{ Item = { x = 0 / 0 } }
    assert.is_nil(buf)
    assert.equal(select(2, core.encode_request{ Item = { x = 0 / 0 } }), err)
    assert.has_error(function() core.encode_request_buffer("x") end)
  end)

  it("is signed like the same bytes as a string by core.sign, compiled or not", function()
    local params = { TableName = "t", Item = ITEM }
    local buf, json = core.encode_request_buffer(params), core.encode_request(params)
    local opts = { region = "us-east-1", service = "dynamodb", time = 1700000000, debug = true }
    -- many calls so that the JIT compiles core.sign; a numeric header
    -- value takes its other branch
    for i = 1, 200 do
      for _, extra in ipairs{ "v", 7 } do
        local function req(body)
          return { method = "POST", host = "h", path = "/", body = body,
                   headers = { ["x-amz-target"] = "DynamoDB_20120810.PutItem", ["x-extra"] = extra } }
        end
        local a, da = core.sign(req(json), CREDS, opts)
        local b, db = core.sign(req(buf), CREDS, opts)
        assert.equal(a.authorization, b.authorization, "call " .. i)
        assert.equal(da.canonical_request, db.canonical_request)
      end
    end
    assert.has_error(function()
      core.sign({ method = "POST", host = "h", body = setmetatable({}, getmetatable(buf)) }, CREDS, opts)
    end, "sign: req.body must be a string or nil (or a core.encode_request_buffer buffer)")
    assert.has_error(function() core.sign({ method = "POST", host = "h", body = io.stdout }, CREDS, opts) end)
  end)
end)

describe("DynamoDB client request bodies", function()
  local srv

  fault.around(function(s) srv = s end)

  -- Unix seconds of an X-Amz-Date ("YYYYMMDDTHHMMSSZ"), whatever the local zone.
  local function amz_time(d)
    local Y, M, D, h, m, s = d:match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
    local t = os.time{ year = Y, month = M, day = D, hour = h, min = m, sec = s }
    local now = os.time()
    return t + os.difftime(now, os.time(os.date("!*t", now)))
  end

  it("signs exactly the bytes the engine transport sends", function()
    local db = assert(dynamodb.new{ endpoint = srv.url, region = "us-east-1", credentials = CREDS })
    assert.is_true(db.buffer_bodies)
    local params = { TableName = "t", Item = ITEM }
    sched.run(function() assert(db:put_item(params)) end)
    local r = srv:requests()[1]
    assert.equal(core.encode_request(params), r.body)
    local signed = core.sign({ method = "POST", host = r.headers.host, path = "/", body = r.body,
                               headers = { ["content-type"] = r.headers["content-type"],
                                           ["x-amz-target"] = r.headers["x-amz-target"] } },
                             CREDS, { region = "us-east-1", service = "dynamodb",
                                      time = amz_time(r.headers["x-amz-date"]) })
    assert.equal(signed.authorization, r.headers.authorization)
    assert.equal("DynamoDB_20120810.PutItem", r.headers["x-amz-target"])
  end)

  it("gives transports that do not take buffers a string, and keeps the request id of errors", function()
    local seen = {}
    local transport = {
      request = function(_, req)
        seen[#seen + 1] = req
        return { status = 400, headers = { ["x-amzn-requestid"] = "RID-9" },
                 body = '{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"no"}' }
      end,
      sleep = function() end,
    }
    local db = assert(dynamodb.new{ endpoint = "http://127.0.0.1:1", region = "us-east-1",
                                    credentials = CREDS, transport = transport })
    assert.is_false(db.buffer_bodies)
    local res, err = db:put_item{ TableName = "t", Item = ITEM }
    assert.is_nil(res)
    assert.equal("ValidationException", err.type)
    assert.equal("RID-9", err.request_id)
    assert.equal("string", type(seen[1].body))
    assert.equal(core.encode_request{ TableName = "t", Item = ITEM }, seen[1].body)
    assert.same({ "x-amzn-requestid" }, seen[1].response_headers)
  end)

  it("asks a write's gate before every attempt, the retries included, and stops when it closes", function()
    local sent, open = 0, true
    local transport = {
      request = function()
        sent = sent + 1
        -- the first attempt fails as a busy service does; the writer's
        -- right to write (a lease) runs out during the backoff
        open = false
        return { status = 500, headers = {},
                 body = '{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"busy"}' }
      end,
      sleep = function() end,
    }
    local db = assert(dynamodb.new{ endpoint = "http://127.0.0.1:1", region = "us-east-1",
                                    credentials = CREDS, transport = transport, max_attempts = 5 })
    local asked = 0
    local gate = function()
      asked = asked + 1
      if open then return true end
      return nil, { type = "Fenced", message = "the lease may have passed" }
    end
    local res, err = db:put_item({ TableName = "t", Item = ITEM }, { gate = gate })
    assert.is_nil(res)
    assert.equal("Fenced", err.type)
    assert.equal(1, sent)
    assert.equal(2, asked)
    -- the same for batch_write's requests and resends; a gate with no error gives "Cancelled"
    sent, open = 0, true
    res, err = db:batch_write({ t = { { PutRequest = { Item = ITEM } } } }, { gate = function() return open end })
    assert.is_nil(res)
    assert.equal("Cancelled", err.type)
    assert.equal(1, sent)
    -- without a gate, the retries go on as before
    sent, open = 0, true
    res, err = db:put_item{ TableName = "t", Item = ITEM }
    assert.is_nil(res)
    assert.equal(5, sent)
  end)

  it("reports the request id of an error response through the engine transport", function()
    srv:script{ { status = 400, headers = { ["Content-Type"] = "application/x-amz-json-1.0" },
                  body = '{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"bad"}' } }
    local db = assert(dynamodb.new{ endpoint = srv.url, region = "us-east-1", credentials = CREDS })
    local res, err = sched.run(function() return db:get_item{ TableName = "t", Key = { pk = "x" } } end)
    assert.is_nil(res)
    assert.equal("ValidationException", err.type)
    assert.matches("^fault%-", err.request_id)
  end)

  it("still refuses values it cannot encode and items over the size limit", function()
    local db = assert(dynamodb.new{ endpoint = srv.url, region = "us-east-1", credentials = CREDS })
    local res, err = db:put_item{ TableName = "t", Item = { pk = "a", x = 0 / 0 } }
    assert.is_nil(res)
    assert.equal("InvalidValue", err.type)
    res, err = db:put_item{ TableName = "t", Item = { pk = "a", big = string.rep("x", 400 * 1024) } }
    assert.is_nil(res)
    assert.equal("ItemTooLarge", err.type)
    assert.equal(0, srv:stats().requests)
  end)
end)
