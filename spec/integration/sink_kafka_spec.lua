-- Sinks publishing to Kafka (docs/projections.md, "Sinks"): `tide run`
-- with the example sink (examples/kafka/projections/account_events.lua)
-- against librdkafka's mock cluster (3 brokers on loopback, a process of
-- the suite's own), the topic read back with kcat. On both feeds (the
-- embedded store's, DynamoDB Local's Streams): every account's events
-- present once or more, in version order, no gap, after SIGKILLs of
-- `tide run` in the middle of publishing, a broker fault injected mid-run,
-- and two workers sharing the projection by leases.
local helpers = require "helpers"
local stores = require "stores"
local kafka = require "kafka"
local cjson = require "cjson"

-- (a few dozen events: the suite's DynamoDB Local is enough)

local q = helpers.shell_quote
local TOPIC = "account-events"
local PROJECTIONS = helpers.root .. "/examples/kafka/projections"

-- n accounts, each given `per` more events (the first round opens them);
-- returns the new last version of each stream.
local function write_round(dir, ids, expected, per)
  local lines = {}
  for _, id in ipairs(ids) do
    local stream = "account#" .. id
    for _ = 1, per do
      local cmd = (expected[stream] or 0) == 0 and { type = "Open", owner = id } or { type = "Deposit", amount = 1 }
      lines[#lines + 1] = cjson.encode{ aggregate = "account", id = id, command = cmd }
      expected[stream] = (expected[stream] or 0) + 1
    end
  end
  helpers.write_file(dir .. "/cmds.ndjson", table.concat(lines, "\n") .. "\n")
  local out, status = stores.tide(dir, "batch < cmds.ndjson", nil, true)
  assert(status == 0, out)
end

-- Starts `tide run` in dir as worker `name` (its pid in name.pid, log in name.log).
local function start_worker(dir, name)
  local inner = "echo $$ > " .. name .. ".pid; exec env TIDE_TEST_LEASE_MS=1500 " .. stores.CLI_ENV
    .. q(helpers.tide_bin) .. " run"
  helpers.run("cd " .. q(dir) .. " && (sh -c " .. q(inner) .. " > /dev/null 2>> " .. name .. ".log; echo $? > "
    .. name .. ".exit) > /dev/null 2>&1 & true")
  for _ = 1, 100 do
    if helpers.read_file(dir .. "/" .. name .. ".pid") then return end
    os.execute("sleep 0.02")
  end
end

local function signal(dir, name, sig)
  helpers.run("kill -" .. sig .. " $(cat " .. q(dir .. "/" .. name .. ".pid") .. ") 2>/dev/null")
  for _ = 1, 300 do
    if helpers.read_file(dir .. "/" .. name .. ".exit") then break end
    os.execute("sleep 0.05")
  end
  os.remove(dir .. "/" .. name .. ".pid")
  os.remove(dir .. "/" .. name .. ".exit")
end

local function kill_all(dir)
  helpers.run("cd " .. q(dir) .. " && for f in *.pid; do [ -f \"$f\" ] && kill -9 $(cat \"$f\") 2>/dev/null; done; true")
end

-- waits until the topic holds more than n messages; returns the count
local function wait_more(bootstrap, n)
  for _ = 1, 150 do
    local c = #kafka.read(bootstrap, TOPIC)
    if c > n then return c end
    os.execute("sleep 0.05")
  end
  error("no new message on the topic")
end

local function status_of(dir)
  local out = stores.tide(dir, "status --json", nil, true)
  for line in out:gmatch("[^\n]+") do
    local r = cjson.decode(line)
    if r.projection == "account_events" then return r.status or r end
  end
end

-- the error tide status shows for the sink (sqlite: the checkpoint's;
-- streams: the first shard's)
local function status_error(st)
  return st and st.error
end

for _, kind in ipairs{ "sqlite", "dynamodb" } do
  describe("a Kafka sink on the " .. (kind == "sqlite" and "embedded store's feed" or "DynamoDB Streams"), function()
    local dir, mock
    setup(function()
      dir = helpers.tmpdir()
      mock = kafka.mock(dir, { TOPIC .. ":3" })
      local desc
      if kind == "sqlite" then
        desc = { path = dir .. "/tide.db" }
      else
        require("tide.sched").run(function() local _, d = stores.open_dynamodb(); desc = d end)
      end
      stores.write_config(dir, kind, desc, {
        "projections: " .. PROJECTIONS,
        "log:", "  format: json",
        "kafka:", "  brokers: " .. mock.bootstrap, "  wait_ms: 1000", "  properties:",
        "    reconnect.backoff.max.ms: 200",
      })
      if kind == "dynamodb" then
        local out, status = stores.tide(dir, "init")
        assert(status == 0, out)
      end
    end)
    teardown(function()
      kill_all(dir)
      if mock then mock:stop() end
      helpers.run("rm -rf " .. q(dir))
    end)

    local ids = { "a1", "a2", "a3", "a4", "a5", "a6" }
    local expected = {}

    it("publishes every account's events in order, with no gap, across SIGKILLs in the middle of publishing",
      function()
        -- each round, broker 3 answers its first Produce requests 2 s late:
        -- the partitions it leads wait while the others take their
        -- messages, so the batch is still in flight when its first
        -- messages are on the topic, and the kill lands in its middle
        local count = 0
        for _ = 1, 3 do
          mock:command("delay 3 0 2 2000")
          write_round(dir, ids, expected, 2)
          start_worker(dir, "w")
          -- the first messages of this round are on the topic: kill now,
          -- while the rest of the batch is in flight
          local seen = wait_more(mock.bootstrap, count)
          signal(dir, "w", "KILL")
          count = seen
          local msgs = kafka.read(mock.bootstrap, TOPIC)
          kafka.check(msgs, (function()
            -- what was published so far: a prefix of each stream, in order
            local top = {}
            for _, m in ipairs(msgs) do if (top[m.key] or 0) < m.version then top[m.key] = m.version end end
            for s in pairs(expected) do top[s] = top[s] or 0 end
            return top
          end)())
          count = #msgs
        end
        -- a last run publishes what the killed ones left
        start_worker(dir, "w")
        local msgs = kafka.wait_for(mock.bootstrap, TOPIC, expected, 90)
        local report = kafka.check(msgs, expected)
        signal(dir, "w", "TERM")
        print(("\n  %s: %d events, %d messages after 3 SIGKILLs (%d delivered again)"):format(kind,
          (function() local n = 0; for _, v in pairs(expected) do n = n + v end; return n end)(),
          report.messages, report.duplicates))
      end)

    it("waits while a broker is down, says why in tide status, and goes on in order when it is back", function()
      start_worker(dir, "w")
      -- every Produce request fails a few times (retried by librdkafka,
      -- without reordering: idempotence), and broker 1 goes down
      mock:command("errors 0 6 6 7")
      mock:command("down 1")
      write_round(dir, ids, expected, 3)
      local st
      for _ = 1, 150 do
        st = status_of(dir)
        if status_error(st) and status_error(st):find("waiting for Kafka", 1, true) then break end
        os.execute("sleep 0.1")
      end
      assert.matches("waiting for Kafka", tostring(status_error(st)), 1, true)
      mock:command("up 1")
      local msgs = kafka.wait_for(mock.bootstrap, TOPIC, expected, 90)
      kafka.check(msgs, expected)
      -- delivered: the checkpoint moved and the error is gone
      for _ = 1, 100 do
        st = status_of(dir)
        if not status_error(st) then break end
        os.execute("sleep 0.1")
      end
      assert.is_nil(status_error(st))
      signal(dir, "w", "TERM")
      local log = helpers.read_file(dir .. "/w.log") or ""
      assert.matches("waiting for Kafka", log, 1, true)
    end)

    it("shares the projection between two workers by leases", function()
      start_worker(dir, "w1")
      start_worker(dir, "w2")
      local before = #kafka.read(mock.bootstrap, TOPIC)
      write_round(dir, ids, expected, 3)
      local seen = wait_more(mock.bootstrap, before)
      -- one worker stops (it finishes its batch and gives its leases back),
      -- the other takes over; more events go on to the survivor
      signal(dir, "w1", "TERM")
      write_round(dir, ids, expected, 2)
      local msgs = kafka.wait_for(mock.bootstrap, TOPIC, expected, 90)
      kafka.check(msgs, expected)
      assert.is_true(#msgs >= seen)
      signal(dir, "w2", "TERM")
      -- the password and other secrets never appear in the logs
      local logs = (helpers.read_file(dir .. "/w1.log") or "") .. (helpers.read_file(dir .. "/w2.log") or "")
      assert.not_matches("Traceback", logs, 1, true)
    end)
  end)
end
