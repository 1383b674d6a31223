-- tide.sink (the contract, messages), the kafka configuration section and
-- tide.sink.kafka's properties (secrets from the environment or a file,
-- never in an error), and the producer binding's errors.
local helpers = require "helpers"
local sink = require "tide.sink"
local projection = require "tide.projection"
local config = require "tide.config"
local cjson = require "cjson"

local function load(src)
  return projection.from_source("account_events", src, "account_events.lua")
end

describe("a sink module", function()
  it("loads with sink in place of tables and handlers", function()
    local p = assert(load([[return { subscribe = { aggregates = { "account" } },
                                      sink = { kind = "kafka", topic = "account-events" } }]]))
    assert.same({ kind = "kafka", topic = "account-events" }, p.sink)
    assert.same({}, p:table_names())
    assert.is_true(p:tracks("account"))
    assert.is_false(p:tracks("loan"))
    assert.truthy(p:handler("Opened"))
  end)

  it("says what is wrong with a bad one", function()
    local _, err = load([[return { subscribe = { aggregates = { "account" } }, sink = { kind = "kafka" } }]])
    assert.matches("sink.topic must be a Kafka topic name", err, 1, true)
    _, err = load([[return { subscribe = { aggregates = { "account" } }, sink = { kind = "sns", topic = "t" } }]])
    assert.matches('sink.kind must be one of "kafka", got sns', err, 1, true)
    _, err = load([[return { subscribe = { aggregates = { "account" } }, sink = { kind = "kafka", topc = "t" } }]])
    assert.matches("sink.topc is not a sink field (did you mean `topic`?)", err, 1, true)
    _, err = load([[return { subscribe = { aggregates = { "account" } }, sink = { kind = "kafka", topic = "t" },
                             tables = { x = { key = "id" } } }]])
    assert.matches("`tables` is a read-model projection's field", err, 1, true)
    _, err = load([[return { subscribe = { aggregates = { "account" } }, sink = { kind = "kafka", topic = "t" },
                             publish = 3 }]])
    assert.matches("`publish` must be a function", err, 1, true)
    _, err = load([[return { subscribe = { aggregates = { "account" } }, sink = { kind = "kafka", topic = "a b" } }]])
    assert.matches("sink.topic must be", err, 1, true)
  end)
end)

describe("sink messages", function()
  local spec = { kind = "kafka", topic = "account-events" }
  local ev = { stream = "account#a1", aggregate = "account", id = "a1", version = 3, type = "Deposited",
               data = { amount = 5 }, meta = { correlation_id = "c-1", command_id = "x" } }

  it("default to the stream as key, the event as JSON and tide's headers", function()
    local m = assert(sink.message(spec, ev))
    assert.equal("account-events", m.topic)
    assert.equal("account#a1", m.key)
    assert.same({ stream = "account#a1", version = 3, type = "Deposited", data = { amount = 5 },
                  meta = { correlation_id = "c-1", command_id = "x" } }, cjson.decode(m.value))
    assert.same({ "tide-stream", "account#a1", "tide-version", "3", "tide-type", "Deposited",
                  "tide-event-id", "account#a1@3", "tide-correlation-id", "c-1" }, m.headers)
  end)

  it("take what publish gives, over the defaults", function()
    local m = assert(sink.message(spec, ev, { topic = "other", value = { n = 1 },
                                             headers = { ["x-a"] = "1", ["tide-type"] = "T" } }))
    assert.equal("other", m.topic)
    assert.equal("account#a1", m.key)
    assert.equal('{"n":1}', m.value)
    assert.same({ "tide-stream", "account#a1", "tide-version", "3", "tide-type", "T",
                  "tide-event-id", "account#a1@3", "tide-correlation-id", "c-1", "x-a", "1" }, m.headers)
    local _, err = sink.message(spec, ev, { key = 1 })
    assert.matches("message.key must be a string", err, 1, true)
    _, err = sink.message(spec, ev, { valeu = "x" })
    assert.matches("message.valeu is not a message field", err, 1, true)
  end)

  it("are rendered by publish, skipped on nil, several from a list", function()
    local p = assert(load([[return { subscribe = { aggregates = { "account" } },
      sink = { kind = "kafka", topic = "t" },
      publish = function(e)
        if e.type == "Closed" then return nil end
        if e.type == "Opened" then return { { key = "a" }, { key = "b" } } end
        error("boom")
      end }]]))
    local sent
    local publisher = { publish = function(_, name, msgs) sent = { name = name, msgs = msgs }; return true end }
    package.loaded["tide.sink.test_kind"] = { new = function() return publisher end }
    sink.KINDS.test_kind = "tide.sink.test_kind"
    p.sink.kind = "test_kind"
    local new_error = require("tide.projector").new_error
    local n = assert(sink.publish(p, { { stream = "account#1", version = 1, type = "Opened", data = {}, meta = {} },
                                       { stream = "account#1", version = 2, type = "Closed", data = {}, meta = {} } },
                                  new_error))
    assert.equal(2, n)
    assert.equal("t", sent.msgs[1].topic)
    assert.same({ "a", "b" }, { sent.msgs[1].key, sent.msgs[2].key })
    local _, err = sink.publish(p, { { stream = "account#1", version = 3, type = "Deposited", data = {}, meta = {} } },
                                new_error)
    assert.equal("handler_error", err.kind)
    assert.matches("account_events.publish raised", tostring(err), 1, true)
    sink.KINDS.test_kind = nil
  end)
end)

describe("the kafka configuration", function()
  local function cfg(t) return config.from_table(t, "tide.yaml") end

  it("takes brokers, security and raw properties", function()
    local c = assert(cfg{ kafka = { brokers = "b1:9092", client_id = "me",
      sasl = { mechanism = "SCRAM-SHA-512", username = "u", password = "env:KAFKA_PW" },
      ssl = { ca = "/etc/ca.pem" }, properties = { ["linger.ms"] = 10, ["enable.idempotence"] = true } } })
    assert.equal("b1:9092", c.kafka.brokers)
    assert.same({ ["linger.ms"] = "10", ["enable.idempotence"] = "true" }, c.kafka.properties)
    assert.equal(30000, c.kafka.wait_ms)
  end)

  it("refuses a password written in the file, without repeating it", function()
    local _, err = cfg{ kafka = { sasl = { mechanism = "PLAIN", username = "u", password = "hunter2" } } }
    assert.matches('kafka.sasl.password must say where the secret is: "env:VARIABLE" or "file:', tostring(err), 1, true)
    assert.not_matches("hunter2", tostring(err), 1, true)
    _, err = cfg{ kafka = { sasl = { mechanism = "GSSAPI" } } }
    assert.matches("kafka.sasl.mechanism must be one of", tostring(err), 1, true)
    _, err = cfg{ kafka = { properties = { ["linger.ms"] = { 1 } } } }
    assert.matches("kafka.properties.linger.ms must be a string, a number or true/false", tostring(err), 1, true)
  end)

  it("reads secrets from the environment or a file, and brokers from KAFKA_BOOTSTRAP_SERVERS", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/pw", "from-a-file\n")
    local props, err = helpers.child_lua{ home = dir,
      env = { KAFKA_BOOTSTRAP_SERVERS = "k1:9092,k2:9092", KAFKA_CLIENT_ID = "cid", TIDE_PW = "from-env" },
      arg = { dir = dir }, code = [[
        local kafka = require "tide.sink.kafka"
        local config = require "tide.config"
        local a = kafka.properties(assert(config.from_table({ kafka = { sasl = { mechanism = "PLAIN",
          username = "u", password = "env:TIDE_PW" } } })))
        local b = kafka.properties(assert(config.from_table({ kafka = { brokers = "x:1", sasl = {
          mechanism = "SCRAM-SHA-256", username = "u", password = "file:" .. arg.dir .. "/pw" },
          properties = { ["security.protocol"] = "sasl_plaintext" } } })))
        local _, e1 = kafka.properties(assert(config.from_table({ kafka = { sasl = { mechanism = "PLAIN",
          username = "u", password = "env:TIDE_UNSET" } } })))
        return { a = a, b = b }, tostring(e1)
      ]] }
    helpers.run("rm -rf " .. helpers.shell_quote(dir))
    assert.equal("k1:9092,k2:9092", props.a["bootstrap.servers"])
    assert.equal("cid", props.a["client.id"])
    assert.equal("from-env", props.a["sasl.password"])
    assert.equal("sasl_ssl", props.a["security.protocol"])
    assert.equal("x:1", props.b["bootstrap.servers"])
    assert.equal("from-a-file", props.b["sasl.password"])
    assert.equal("sasl_plaintext", props.b["security.protocol"])
    assert.matches("kafka.sasl.password names the environment variable TIDE_UNSET, which is not set", err, 1, true)
  end)

  it("names a property librdkafka refuses, never its value", function()
    local engine = require "tide.engine"
    local p, err = engine.kafka{ ["bootstrap.servers"] = "127.0.0.1:1", ["sasl.password"] = "s3cret-value",
                                 ["no.such.property"] = "s3cret-value" }
    assert.is_nil(p)
    assert.matches("kafka property 'no.such.property' is not accepted", err, 1, true)
    assert.not_matches("s3cret", err, 1, true)
    p = assert(engine.kafka{ ["bootstrap.servers"] = "127.0.0.1:1" })
    assert.is_number(p:fd())
    p:close()
  end)
end)

describe("the Kafka publisher", function()
  it("never puts the SASL password in a log line or an error", function()
    local kafka = require "kafka"
    local dir = helpers.tmpdir()
    local mock = kafka.mock(dir, { "t:1" })
    helpers.write_file(dir .. "/pw", "pw-7f3a9c-never-shown\n")
    local ok, res = pcall(function()
      local cfg = assert(config.from_table({ kafka = { brokers = mock.bootstrap, wait_ms = 300,
        sasl = { mechanism = "SCRAM-SHA-512", username = "tide", password = "file:" .. dir .. "/pw" },
        ssl = { enabled = false }, properties = { debug = "security,broker" } } }))
      local lines = {}
      local log = function(level, msg, fields) lines[#lines + 1] = level .. " " .. msg .. " " .. cjson.encode(fields or {}) end
      return require("tide.sched").run(function()
        local p = assert(require("tide.sink.kafka").new(cfg, { log = log }))
        local okp, err = p:publish("s", { { topic = "t", key = "k", value = "v", headers = {}, id = "k@1" } })
        p:close()
        return { ok = okp, err = tostring(err), lines = lines }
      end)
    end)
    mock:stop()
    helpers.run("rm -rf " .. helpers.shell_quote(dir))
    assert(ok, res)
    assert.is_nil(res.ok)
    assert.matches("waiting for Kafka", res.err, 1, true)
    assert.is_true(#res.lines > 0)
    local all = res.err .. "\n" .. table.concat(res.lines, "\n")
    assert.not_matches("pw-7f3a9c", all, 1, true)
    if os.getenv("SINK_SPEC_SHOW") then print(all) end
  end)
end)
