-- Metrics an operator scrapes (docs/operations.md, "Metrics"): the tide
-- process's page (libmicrohttpd in the scheduler's loop) for tide batch and
-- tide run, the nginx site's page for all workers together, each checked
-- by promtool, and read back through a real Prometheus server that scrapes
-- them on loopback.
local helpers = require "helpers"
local stores = require "stores"
local cjson = require "cjson"

-- a projection reads the stream of many events: a DynamoDB Local of this file's own
helpers.private_dynamodb()

local q = helpers.shell_quote
local ROOT = helpers.root

-- Tools the specs start never run under the sanitizer run's LD_PRELOAD
-- (curl deadlocks under it); tide itself keeps it.
local function tool(cmd)
  return helpers.run("env -u LD_PRELOAD " .. cmd)
end

local free_port = helpers.free_port

-- GET url -> status, body (status 0 when nothing answered)
local function get(url)
  local out = tool("curl -s -m 20 -o - -w '\\n%{http_code}' " .. q(url))
  local body, code = out:match("^(.*)\n(%d+)%s*$")
  return tonumber(code) or 0, body or out
end

local function wait_until(what, fn, tries)
  for _ = 1, tries or 600 do
    local v = fn()
    if v then return v end
    os.execute("sleep 0.1")
  end
  error("gave up waiting for " .. what)
end

-- promtool's verdict on a page: "" when clean
local function promtool_check(dir, page)
  local f = dir .. "/page.txt"
  helpers.write_file(f, page)
  local out, status = tool("promtool check metrics < " .. q(f) .. " 2>&1")
  return status, out
end

-- every sample of a family in a page: {labels text -> value}
local function samples(page, name)
  local out = {}
  for labels, value in page:gmatch("\n" .. name .. "(%b{}) (%S+)") do out[labels] = tonumber(value) end
  for value in page:gmatch("\n" .. name .. " (%S+)") do out[""] = tonumber(value) end
  return out
end

local function label_values(page, name, label)
  local seen = {}
  for labels in pairs(samples(page, name)) do
    local v = labels:match(label .. '="([^"]*)"')
    if v then seen[v] = true end
  end
  return seen
end

-- Starts `tide ARGS` in dir in the background, stdin from the file
-- `input` followed by an open pipe (so that it keeps running until
-- stopped); returns stop(): closes its stdin (tide batch then finishes),
-- sends SIGTERM when signal is set (tide run), waits, returns the exit
-- status.
local function start_tide(dir, args, input, signal)
  local feed = input and ("cat " .. q(input) .. "; exec sleep 600") or "exec sleep 600"
  local inner = "echo $$ > tide.pid; exec env " .. stores.CLI_ENV .. q(helpers.tide_bin) .. " " .. args
  helpers.run("cd " .. q(dir) .. " && ( (sh -c " .. q(feed) .. " & echo $! > feed.pid; wait) | sh -c " .. q(inner)
    .. " > tide.out 2> tide.log; echo $? > tide.exit ) > /dev/null 2>&1 & true")
  return function()
    helpers.run("cd " .. q(dir) .. " && kill $(cat feed.pid) 2>/dev/null"
      .. (signal and "; kill -TERM $(cat tide.pid) 2>/dev/null" or ""))
    wait_until("tide to exit", function() return helpers.read_file(dir .. "/tide.exit") end)
    return helpers.read_file(dir .. "/tide.exit"):gsub("%s+", "")
  end
end

local function command_lines(path, lines)
  local out = {}
  for i, l in ipairs(lines) do out[i] = cjson.encode(l) end
  helpers.write_file(path, table.concat(out, "\n") .. "\n")
end

describe("tide batch --metrics", function()
  local dir, stop
  teardown(function()
    if stop then stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("answers scrapes while it runs commands, with bounded labels and a page promtool accepts", function()
    dir = stores.cli_dir("sqlite")
    local port = free_port()
    local lines, n_ok = {}, 0
    for i = 1, 6000 do
      lines[#lines + 1] = { aggregate = "account", id = "b" .. (i % 300), command = (i <= 300)
        and { type = "Open", owner = "o" } or { type = "Deposit", amount = 1 } }
      n_ok = n_ok + 1
    end
    -- made-up aggregates and command types: counted, under "unknown"
    for i = 1, 200 do
      lines[#lines + 1] = { aggregate = "made_up_" .. i, id = "x", command = { type = "Zap" .. i } }
      lines[#lines + 1] = { aggregate = "account", id = "b1", command = { type = "Zap" .. i } }
    end
    command_lines(dir .. "/in.ndjson", lines)
    stop = start_tide(dir, "batch --concurrency 64 --metrics 127.0.0.1:" .. port, dir .. "/in.ndjson")
    -- scrapes while the commands run (64 in flight): every one answers a
    -- page whose totals only grow
    local scrapes, last, prev_total = 0, nil, 0
    wait_until("the page to count every command", function()
      local status, page = get("http://127.0.0.1:" .. port .. "/metrics")
      if status == 0 then return false end -- not listening yet
      assert.equal(200, status, page)
      scrapes = scrapes + 1
      last = page
      local total = 0
      for _, v in pairs(samples(page, "tide_commands_total")) do total = total + v end
      assert.is_true(total >= prev_total)
      prev_total = total
      return total == #lines
    end)
    assert.is_true(scrapes >= 1)
    local ok_count = samples(last, "tide_commands_total")['{aggregate="account",command="Deposit",outcome="ok"}']
      + samples(last, "tide_commands_total")['{aggregate="account",command="Open",outcome="ok"}']
    assert.equal(n_ok, ok_count)
    assert.same({ account = true, unknown = true }, label_values(last, "tide_commands_total", "aggregate"))
    assert.same({ Open = true, Deposit = true, unknown = true }, label_values(last, "tide_commands_total", "command"))
    assert.equal(200, samples(last, "tide_commands_total")['{aggregate="unknown",command="unknown",outcome="invalid"}'])
    assert.equal(200, samples(last, "tide_commands_total")['{aggregate="account",command="unknown",outcome="invalid"}'])
    assert.equal(#lines, samples(last, "tide_command_duration_seconds_count")['{aggregate="account"}']
      + samples(last, "tide_command_duration_seconds_count")['{aggregate="unknown"}'])
    for _, family in ipairs{ "tide_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes",
                             "process_open_fds", "process_start_time_seconds", "tide_module_info" } do
      assert.truthy(last:find("\n# TYPE " .. family .. " ", 1, true), family)
    end
    local status, out = promtool_check(dir, last)
    assert.equal(0, status, out)
    assert.equal("", out)
    -- /health, /ready, and what is not there
    assert.equal(200, (get("http://127.0.0.1:" .. port .. "/health")))
    assert.equal(200, (get("http://127.0.0.1:" .. port .. "/ready")))
    local s404, body = get("http://127.0.0.1:" .. port .. "/nope")
    assert.equal(404, s404)
    assert.matches("/metrics", body)
    -- the made-up commands were bad input: batch's exit status says so
    assert.equal("2", stop())
    stop = nil
    -- every result was printed
    local printed = 0
    for _ in helpers.read_file(dir .. "/tide.out"):gmatch("[^\n]+") do printed = printed + 1 end
    assert.equal(#lines, printed)
  end)

  it("tide project NAME --metrics serves the projection's figures while it runs", function()
    local pdir = stores.cli_dir("sqlite", { "projections: " .. ROOT .. "/projections" })
    local lines = {}
    for i = 1, 30 do
      lines[i] = cjson.encode{ aggregate = "account", id = "p" .. (i % 3), command = (i <= 3)
        and { type = "Open", owner = "o" } or { type = "Deposit", amount = 1 } }
    end
    local out, status = stores.tide(pdir, "batch", table.concat(lines, "\n") .. "\n")
    assert.equal(0, status, out)
    local port = free_port()
    local pstop = start_tide(pdir, "project balances --metrics 127.0.0.1:" .. port, nil, true)
    local ok, err = pcall(function()
      local page = wait_until("the projection's events on the page", function()
        local st, body = get("http://127.0.0.1:" .. port .. "/metrics")
        return st == 200 and samples(body, "tide_projection_events_total")['{projection="balances"}'] == 30 and body
      end)
      assert.equal(200, (get("http://127.0.0.1:" .. port .. "/ready")))
      assert.equal(0, samples(page, "tide_projection_lag_events")['{projection="balances"}'])
      local pst, pout = promtool_check(pdir, page)
      assert.equal(0, pst, pout)
    end)
    local code = pstop()
    local log = helpers.read_file(pdir .. "/tide.log") or ""
    os.execute("rm -rf " .. q(pdir))
    assert(ok, tostring(err) .. "\n" .. log)
    assert.equal("0", code, log)
  end)

  it("refuses an address it cannot listen on, naming it", function()
    dir = dir or stores.cli_dir("sqlite")
    local out, status = stores.tide(dir, "batch --metrics 127.0.0.1:notaport", "")
    assert.equal(2, status, out)
    assert.matches("127.0.0.1:notaport", out, 1, true)
    out, status = stores.tide(dir, "batch --metrics 203.0.113.7:9", "")
    assert.equal(2, status, out)
    assert.matches("cannot listen on 203.0.113.7:9", out, 1, true)
  end)
end)

describe("tide run, the nginx site and batch scraped by Prometheus", function()
  local dir, site, stops, prom_pid = nil, nil, {}, nil
  teardown(function()
    for _, stop in ipairs(stops) do pcall(stop) end
    if prom_pid then helpers.run("kill " .. prom_pid .. " 2>/dev/null; sleep 0.2") end
    if site then helpers.run("env -u LD_PRELOAD tools/nginx.sh stop " .. q(site) .. " 2>&1") end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("reads back through Prometheus's query API exactly the commands and events sent", function()
    local desc
    dir, desc = stores.cli_dir("dynamodb", { "projections: " .. ROOT .. "/projections" })
    local out, status = stores.tide(dir, "init")
    assert.equal(0, status, out)
    -- the nginx site, two workers counting into one shared dict
    site = dir .. "/site"
    out, status = helpers.run("env -u LD_PRELOAD " .. stores.CLI_ENV .. " TIDE_NGINX_WORKERS=2 tools/nginx.sh start "
      .. q(site) .. " " .. q(dir .. "/tide.yaml") .. " 2>&1")
    assert.equal(0, status, out)
    local site_url = out:match("(http://127%.0%.0%.1:%d+)")
    -- tide run (the projections) and a tide batch that stays up
    local run_port, batch_port, prom_port = free_port(), free_port(), free_port()
    local run_dir = dir .. "/run"
    local batch_dir = dir .. "/batch"
    os.execute("mkdir -p " .. q(run_dir) .. " " .. q(batch_dir))
    os.execute("cp " .. q(dir .. "/tide.yaml") .. " " .. q(run_dir) .. " && cp " .. q(dir .. "/tide.yaml") .. " "
      .. q(batch_dir))
    -- Prometheus, scraping the three every second
    local prom_dir = dir .. "/prometheus"
    os.execute("mkdir -p " .. q(prom_dir))
    helpers.write_file(prom_dir .. "/prometheus.yml", table.concat({
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 900ms",
      "scrape_configs:",
      "  - job_name: tide-run",
      "    static_configs: [{targets: ['127.0.0.1:" .. run_port .. "']}]",
      "  - job_name: tide-batch",
      "    static_configs: [{targets: ['127.0.0.1:" .. batch_port .. "']}]",
      "  - job_name: nginx",
      "    static_configs: [{targets: ['" .. site_url:gsub("^http://", "") .. "']}]",
    }, "\n") .. "\n")
    out, status = tool("promtool check config " .. q(prom_dir .. "/prometheus.yml") .. " 2>&1")
    assert.equal(0, status, out)
    out = tool("sh -c " .. q("cd " .. prom_dir .. " && exec prometheus --config.file=prometheus.yml --storage.tsdb.path=data"
      .. " --web.listen-address=127.0.0.1:" .. prom_port .. " > prometheus.log 2>&1") .. " & echo $!")
    prom_pid = assert(tonumber(out:match("%d+")))
    local prom = "http://127.0.0.1:" .. prom_port
    wait_until("prometheus to be ready", function() return (get(prom .. "/-/ready")) == 200 end)

    -- commands: through nginx (both workers), and through tide batch
    local via_nginx = 0
    for i = 1, 40 do
      local cmd = i <= 10 and { type = "Open", owner = "n" } or { type = "Deposit", amount = 2 }
      local o = tool("curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Connection: close' -d "
        .. q(cjson.encode(cmd)) .. " " .. q(site_url .. "/aggregates/account/n" .. (i % 10)))
      assert.equal("200", o:gsub("%s+", ""))
      via_nginx = via_nginx + 1
    end
    -- one rejected (withdrawing more than the balance) and one invalid
    tool("curl -s -o /dev/null -X POST -d '{\"type\":\"Withdraw\",\"amount\":99999}' "
      .. q(site_url .. "/aggregates/account/n1"))
    tool("curl -s -o /dev/null -X POST -d '{\"type\":\"Nope\"}' " .. q(site_url .. "/aggregates/whatever/x"))
    -- the projections, from the start of the stream
    stops[#stops + 1] = start_tide(run_dir, "run --metrics 127.0.0.1:" .. run_port, nil, true)
    wait_until("tide run to be ready", function()
      return (get("http://127.0.0.1:" .. run_port .. "/ready")) == 200
    end)
    local lines = {}
    for i = 1, 60 do
      lines[i] = { aggregate = "account", id = "b" .. (i % 20), command = i <= 20 and { type = "Open", owner = "b" }
        or { type = "Deposit", amount = 1 } }
    end
    command_lines(batch_dir .. "/in.ndjson", lines)
    local stop_batch = start_tide(batch_dir, "batch --stats --metrics 127.0.0.1:" .. batch_port, batch_dir .. "/in.ndjson")
    stops[#stops + 1] = stop_batch
    local events = via_nginx + #lines -- one event per successful command

    local function query(expr)
      local _, body = get(prom .. "/api/v1/query?query=" .. expr:gsub("[^%w]", function(c)
        return string.format("%%%02X", c:byte()) end))
      local doc = cjson.decode(body)
      local r = doc and doc.data and doc.data.result and doc.data.result[1]
      return r and tonumber(r.value[2])
    end
    local function settles(expr, want)
      local got
      local ok = pcall(wait_until, expr, function()
        got = query(expr)
        return got == want
      end, 900)
      assert.equal(want, got, expr .. (ok and "" or " (waited)") .. "\n" .. (helpers.read_file(run_dir .. "/tide.log") or ""))
    end
    settles('sum(tide_commands_total{job="nginx",outcome="ok"})', via_nginx)
    settles('sum(tide_commands_total{job="nginx",outcome="rejected"})', 1)
    settles('sum(tide_commands_total{job="nginx",aggregate="unknown",outcome="invalid"})', 1)
    settles('sum(tide_commands_total{job="tide-batch",outcome="ok"})', #lines)
    settles('sum(tide_projection_events_total{job="tide-run",projection="balances"})', events)
    -- the capacity units Prometheus read are the ones the client added up
    -- (tide batch --stats prints them when it ends; nothing is billed
    -- after the last command)
    local units = query('sum(tide_dynamodb_consumed_capacity_units_total{job="tide-batch"})')
    assert.is_true((units or 0) > 0)
    -- (fewer requests than commands: a stream's queued commands share a
    -- write, loads share a snapshot read)
    local requests = query('sum(tide_dynamodb_requests_total{job="tide-batch"})') or 0
    -- (a target that went away has no latest value: stop it after the queries)
    assert.equal("0", stop_batch())
    local stats
    for line in helpers.read_file(batch_dir .. "/tide.log"):gmatch("[^\n]+") do
      if line:match("^{") then stats = cjson.decode(line) end
    end
    assert.truthy(stats, helpers.read_file(batch_dir .. "/tide.log"))
    local d = stats.stats.dynamodb
    assert.equal(d.read_units + d.write_units, units, cjson.encode(stats))
    -- one per request answered or failed, after its retries; the client
    -- counts every attempt
    assert.is_true(requests >= 1 and requests <= d.requests_total, requests .. " " .. cjson.encode(stats))
    -- the projection caught up: its shards' lag is 0, and it holds leases
    settles('max(tide_projection_lag_seconds{job="tide-run",projection="balances"})', 0)
    assert.is_true((query('sum(tide_leases_held{job="tide-run",projection="balances"})') or 0) >= 1)
    assert.is_true((query('sum(tide_dynamodb_request_duration_seconds_count{job="tide-run",operation="GetRecords"})')
      or 0) >= 1)
    -- both pages pass promtool
    for _, url in ipairs{ site_url .. "/metrics", "http://127.0.0.1:" .. run_port .. "/metrics" } do
      local st, page = get(url)
      assert.equal(200, st, url)
      local pst, pout = promtool_check(dir, page)
      assert.equal(0, pst, url .. ": " .. pout)
    end
  end)
end)
