-- tide.metrics: the families, bounded labels and the text exposition
-- format (checked by promtool, Prometheus's own linter), and the alert
-- rules of examples/prometheus (promtool check rules / test rules).
local helpers = require "helpers"
local metrics = require "tide.metrics"

local q = helpers.shell_quote

local function promtool(page)
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/page.txt", page)
  local out, status = helpers.run("env -u LD_PRELOAD promtool check metrics < " .. q(dir .. "/page.txt") .. " 2>&1")
  os.execute("rm -rf " .. q(dir))
  return status, out
end

local function registry(entries)
  return { entries = entries }
end

describe("tide.metrics", function()
  before_each(function()
    metrics.reset()
    metrics.enabled = true
  end)
  after_each(function() metrics.reset() end)

  it("renders every family in the text format promtool accepts", function()
    metrics.know("aggregate", registry{ account = { version = "v1", module = { commands = { Open = true } } } })
    metrics.know("projection", registry{ balances = { version = "p1" } })
    metrics.command("account", "Open", "ok", 0.003)
    metrics.command("account", "Open", "rejected", 0.2)
    metrics.dynamodb_result("PutItem", require("tide.clock").mono(), {})
    -- capacity: the DynamoDB client's own running totals (client.usage)
    local client = assert(require("tide.dynamodb").new{ endpoint = "http://127.0.0.1:1", region = "us-east-1",
      credentials = { access_key_id = "a", secret_access_key = "b" } })
    client.usage.capacity.tide_events = { PutItem = { read = 0, write = 1 } }
    metrics.usage(client)
    metrics.dynamodb_failure("Query", require("tide.clock").mono(), { type = "ThrottlingException",
      retry_class = "throttled", status = 400 })
    metrics.dynamodb_retry("Query", { retry_class = "throttled" })
    metrics.dynamodb_retry("GetRecords", { type = "TransportError", retry_class = "transient" })
    metrics.projection_events("balances", 3)
    metrics.projection_error("balances")
    metrics.projection_checkpoint("balances", "shardId-1", os.time() - 5)
    metrics.leases_held_count("balances", { a = {}, b = { finished = true } })
    metrics.lease_takeover("balances")
    metrics.projection_lag_events("balances", 7)
    metrics.reload("aggregate", "ok")
    local page = metrics.render()
    local status, out = promtool(page)
    assert.equal(0, status, out .. page)
    assert.equal("", out)
    assert.matches('\ntide_commands_total{aggregate="account",command="Open",outcome="ok"} 1\n', page, 1, true)
    assert.matches('\ntide_dynamodb_consumed_capacity_units_total{table="tide_events",operation="PutItem",kind="write"} 1\n',
      page, 1, true)
    assert.matches('\ntide_dynamodb_requests_total{operation="Query",outcome="throttled"} 1\n', page, 1, true)
    assert.matches('\ntide_dynamodb_retries_total{operation="GetRecords",reason="transport"} 1\n', page, 1, true)
    assert.matches('\ntide_projection_events_total{projection="balances"} 3\n', page, 1, true)
    assert.matches('\ntide_leases_held{projection="balances"} 1\n', page, 1, true)
    assert.matches('\ntide_module_info{kind="aggregate",name="account",version="v1"} 1\n', page, 1, true)
    local lag = tonumber(page:match('\ntide_projection_lag_seconds{projection="balances",shard="shardId%-1"} (%S+)'))
    assert.is_true(lag >= 5)
    -- a read that came back empty: caught up
    metrics.projection_position("balances", "shardId-1", nil)
    assert.matches('\ntide_projection_lag_seconds{projection="balances",shard="shardId-1"} 0\n', metrics.render(), 1, true)
    -- the shard handed over: its series go
    metrics.projection_shard_gone("balances", "shardId-1")
    assert.is_nil(metrics.render():find("shardId-1", 1, true))
  end)

  it("keeps histograms cumulative, with _sum and _count", function()
    for _, v in ipairs{ 0.0005, 0.002, 0.002, 0.3, 20 } do metrics.command("a", "C", "ok", v) end
    local page = metrics.render()
    assert.matches('tide_command_duration_seconds_bucket{aggregate="a",le="0.001"} 1\n', page, 1, true)
    assert.matches('tide_command_duration_seconds_bucket{aggregate="a",le="0.0025"} 3\n', page, 1, true)
    assert.matches('tide_command_duration_seconds_bucket{aggregate="a",le="0.5"} 4\n', page, 1, true)
    assert.matches('tide_command_duration_seconds_bucket{aggregate="a",le="10"} 4\n', page, 1, true)
    assert.matches('tide_command_duration_seconds_bucket{aggregate="a",le="+Inf"} 5\n', page, 1, true)
    assert.matches('tide_command_duration_seconds_count{aggregate="a"} 5\n', page, 1, true)
    assert.matches('tide_command_duration_seconds_sum{aggregate="a"} 20.3045\n', page, 1, true)
  end)

  it("bounds label values: unknown names, and at most MAX_SERIES label sets per family", function()
    metrics.know("aggregate", registry{ account = { version = "v1", module = { commands = { Open = true } } } })
    metrics.command("account", "Nope", "invalid")
    metrics.command("nosuch", "Open", "invalid")
    metrics.command(nil, nil, "invalid")
    local page = metrics.render()
    assert.matches('tide_commands_total{aggregate="account",command="unknown",outcome="invalid"} 1\n', page, 1, true)
    assert.matches('tide_commands_total{aggregate="unknown",command="unknown",outcome="invalid"} 2\n', page, 1, true)
    -- tables come from configuration; a flood of names still stays bounded
    for i = 1, metrics.MAX_SERIES + 50 do
      metrics.dynamodb_capacity("PutItem", { TableName = "t" .. i, WriteCapacityUnits = 1 })
    end
    page = metrics.render()
    local n = 0
    for _ in page:gmatch("\ntide_dynamodb_consumed_capacity_units_total{") do n = n + 1 end
    assert.equal(metrics.MAX_SERIES + 1, n)
    assert.matches('tide_dynamodb_consumed_capacity_units_total{table="other",operation="other",kind="other"} 50\n',
      page, 1, true)
    -- label values are escaped
    metrics.know("aggregate", nil)
    metrics.command('we"ird\\', "C", "ok")
    local status, out = promtool(metrics.render())
    assert.equal(0, status, out)
  end)

  it("counts each command of a real repository, and logs it with the same names at log.level debug", function()
    local dir = helpers.tmpdir()
    local cfg = assert(require("tide.config").from_table({ store = "sqlite", sqlite = { path = dir .. "/t.db" },
      aggregates = helpers.root .. "/aggregates", log = { level = "debug" } }, "test"))
    local lines = {}
    local app = assert(require("tide").open{ cfg = cfg, log = function(level, msg, fields)
      if msg == "command" then lines[#lines + 1] = fields end
    end })
    assert(app.store:init())
    assert(app.repository:execute("account", "a1", { type = "Open", owner = "x" }))
    assert.is_nil(app.repository:execute("account", "a1", { type = "Withdraw", amount = 5 }))
    assert.is_nil(app.repository:execute("nosuch", "a1", { type = "Open" }))
    app.store:close()
    os.execute("rm -rf " .. q(dir))
    local page = metrics.render()
    assert.matches('tide_commands_total{aggregate="account",command="Open",outcome="ok"} 1\n', page, 1, true)
    assert.matches('tide_commands_total{aggregate="account",command="Withdraw",outcome="rejected"} 1\n', page, 1, true)
    assert.matches('tide_commands_total{aggregate="unknown",command="unknown",outcome="invalid"} 1\n', page, 1, true)
    assert.equal(3, #lines)
    assert.same({ "account", "Open", "ok", "account#a1" },
      { lines[1].aggregate, lines[1].command, lines[1].outcome, lines[1].stream })
    assert.equal("rejected", lines[2].outcome)
    assert.equal("invalid", lines[3].outcome)
  end)

  it("serves /metrics, /health and /ready from the loop that runs the client asking for them", function()
    local sched = require "tide.sched"
    local server = require "tide.metrics.server"
    local ready = false
    local got = sched.run(function()
      local srv = assert(server.start{ listen = "127.0.0.1:0", ready = function() return ready, "warming up" end })
      assert.is_true(srv.port > 0)
      metrics.command("a", "C", "ok", 0.001)
      local base = "http://127.0.0.1:" .. srv.port
      local out = {}
      for _, path in ipairs{ "/metrics", "/health", "/ready", "/nope" } do
        local resp = assert(sched.request{ url = base .. path, timeout_ms = 10000 })
        out[path] = resp
      end
      ready = true
      out.ready_after = assert(sched.request{ url = base .. "/ready", timeout_ms = 10000 })
      out.post = assert(sched.request{ method = "POST", url = base .. "/metrics", body = "x", timeout_ms = 10000 })
      srv:stop()
      -- stopped: nothing listens on the port any more
      local _, err = sched.request{ url = base .. "/health", timeout_ms = 10000 }
      out.after_stop = err
      return out
    end)
    assert.equal(200, got["/metrics"].status)
    assert.matches('tide_commands_total{aggregate="a",command="C",outcome="ok"} 1', got["/metrics"].body, 1, true)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", got["/metrics"].headers["content-type"])
    assert.equal(200, got["/health"].status)
    assert.equal(503, got["/ready"].status)
    assert.matches("warming up", got["/ready"].body)
    assert.equal(200, got.ready_after.status)
    assert.equal(404, got["/nope"].status)
    assert.equal(405, got.post.status)
    assert.equal("connect", got.after_stop and got.after_stop.kind)
  end)

  it("counts nothing while off", function()
    metrics.enabled = false
    metrics.command("account", "Open", "ok", 0.1)
    metrics.projection_events("balances", 3)
    assert.is_nil(metrics.render():find("tide_commands_total", 1, true))
  end)

  it("ships alert rules and a scrape configuration that promtool accepts and that fire as documented", function()
    local dir = helpers.root .. "/examples/prometheus"
    local out, status = helpers.run("env -u LD_PRELOAD promtool check rules " .. q(dir .. "/tide-alerts.yml") .. " 2>&1")
    assert.equal(0, status, out)
    out, status = helpers.run("cd " .. q(dir) .. " && env -u LD_PRELOAD promtool test rules tide-alerts-test.yml 2>&1")
    assert.equal(0, status, out)
    out, status = helpers.run("env -u LD_PRELOAD promtool check config " .. q(dir .. "/prometheus.yml") .. " 2>&1")
    assert.equal(0, status, out)
  end)
end)
