-- The cross-cutting contracts of the Lua library: tide.error (one error
-- type and its text), tide.clock (one way to read time), tide.stream
-- (stream names and stored events).
local terror = require "tide.error"
local clock = require "tide.clock"
local stream = require "tide.stream"
local core = require "tide.core"

describe("tide.error", function()
  -- fields -> tostring(err)
  for _, case in ipairs{
    { "a transport's kind alone", { kind = "timeout", message = "no answer in 30 s" },
      "timeout: no answer in 30 s" },
    { "the type before the kind", { kind = "conflict", type = "Conflict", message = "at version 3" },
      "Conflict: at version 3" },
    { "subjects in parentheses without a component",
      { kind = "conflict", type = "Conflict", message = "at version 3", stream = "account#1", table = "tide_events" },
      "Conflict: at version 3 (stream account#1, table tide_events)" },
    { "the projection heading its subjects",
      { kind = "handler_error", message = "boom", projection = "bal", stream = "account#a", version = 3,
        event_type = "Deposited", table = "balances", key = "a" },
      "projection bal, stream account#a version 3 (Deposited), table balances key a: handler_error: boom" },
    { "the DynamoDB operation with its table, status and attempts",
      { kind = "invalid", type = "ValidationException", message = "bad key", op = "GetItem", table = "orders",
        status = 400, attempts = 3 },
      "DynamoDB GetItem on table 'orders': ValidationException: bad key (HTTP 400, 3 attempts)" },
    { "a repository's stream and command",
      { kind = "rejected", message = "insufficient funds", stream = "account#a1", command = "Withdraw" },
      "rejected: insufficient funds (stream account#a1, command Withdraw)" },
    { "a file's error as its message alone",
      { kind = "invalid", type = "ConfigError", message = "tide.yaml:4: bad", source = "tide.yaml", line = 4 },
      "tide.yaml:4: bad" },
  } do
    it("writes " .. case[1], function()
      assert.equal(case[3], tostring(terror.new(case[2])))
    end)
  end

  it("names a cause of another type in brackets, and takes its type when it has none", function()
    local cause = terror.new{ kind = "conflict", type = "ConditionalCheckFailedException", message = "failed" }
    local e = terror.new{ kind = "conflict", type = "Conflict", message = "taken", stream = "s#1", cause = cause }
    assert.equal("Conflict: taken (stream s#1) [ConditionalCheckFailedException]", tostring(e))
    local wrapped = terror.new{ kind = "store", message = "loading failed", cause = cause }
    assert.equal("ConditionalCheckFailedException", wrapped.type)
  end)

  it("wraps a cause: its message after what, its kind, type and retryable", function()
    local cause = terror.new{ kind = "reset", type = "TransportError", message = "connection reset", retryable = true }
    local e = terror.wrap(cause, "loading events", { stream = "account#a" })
    assert.equal("reset", e.kind)
    assert.equal("TransportError", e.type)
    assert.is_true(e.retryable)
    assert.equal("loading events: connection reset", e.message)
    assert.equal(cause, e.cause)
    local s = terror.wrap("disk full")
    assert.equal("store", s.kind)
    assert.equal("disk full", s.message)
  end)

  it("concatenates as its text and tells its own from other values", function()
    local e = terror.new{ kind = "invalid", message = "no" }
    assert.equal("error: invalid: no", "error: " .. e)
    assert.is_true(terror.is(e))
    assert.is_true(terror.is(e, "invalid"))
    assert.is_false(terror.is(e, "store"))
    assert.is_false(terror.is({ kind = "invalid" }))
  end)

  it("raises without a kind", function()
    assert.has_error(function() terror.new{ message = "x" } end)
  end)
end)

describe("tide.clock", function()
  it("reads the wall clock in ms and s, and a monotonic clock that does not go back", function()
    local ms, s = clock.wall_ms(), clock.wall_s()
    assert.equal(math.floor(ms), ms)
    assert.is_true(math.abs(ms / 1000 - os.time()) <= 2)
    assert.is_true(math.abs(s - os.time()) <= 1)
    local m1, m2 = clock.mono(), clock.mono()
    assert.is_true(m2 >= m1)
    assert.is_true(math.abs(clock.mono_ms() - clock.mono() * 1000) < 1000)
  end)
end)

describe("tide.stream", function()
  for _, case in ipairs{
    { "account#a1", "account", "a1" },
    { "account#a#1", "account", "a#1" },
    { "#x", "", "x" },
    { "plain", "plain", "" },
  } do
    it("splits " .. case[1], function()
      local agg, id = stream.split(case[1])
      assert.equal(case[2], agg)
      assert.equal(case[3], id)
    end)
  end

  it("names a stream from its aggregate and id", function()
    assert.equal("account#a1", stream.of("account", "a1"))
    assert.equal("account#a1", stream.of(stream.split("account#a1")))
  end)

  it("decodes a stored event's data and meta", function()
    local stored = { version = 2, type = "Deposited", data = core.encode_value{ amount = 5 },
                     meta = '{"command_id":"c1","schema":1}' }
    local ev = assert(stream.decode_event(nil, stored))
    assert.same({ version = 2, type = "Deposited", data = { amount = 5 }, meta = { command_id = "c1", schema = 1 } }, ev)
    local bad, err = stream.decode_event(nil, { version = 1, type = "X", data = "{nope", meta = "{}" })
    assert.is_nil(bad)
    assert.matches("event data is not valid", err)
    bad, err = stream.decode_payload(nil, "X", core.encode_value{}, "[1")
    assert.is_nil(bad)
    assert.equal("event meta is not a JSON object", err)
  end)

  it("decodes a stored row into the projector's event, naming aggregate and id", function()
    local ev = assert(stream.decode{ stream = "account#a1", version = 1, type = "Opened",
                                     data = core.encode_value{ owner = "ada" }, meta = "{}", position = 7 })
    assert.equal("account", ev.aggregate)
    assert.equal("a1", ev.id)
    assert.equal("ada", ev.data.owner)
    assert.equal(7, ev.position)
  end)
end)
