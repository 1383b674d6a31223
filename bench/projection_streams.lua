-- Throughput and client CPU of a projection fed by DynamoDB Streams: the
-- balances projection (projections/balances.lua) run by
-- tide.projection.runner.streams against DynamoDB Local.
--
--   build/tide script bench/projection_streams.lua write ENDPOINT [EVENTS ACCOUNTS]
--     creates an events table (a random prefix) and writes EVENTS events
--     (default 20000) over ACCOUNTS account streams (default 500): an
--     Opened, then deposits and withdrawals, one event per PutItem, 64
--     threads. Prints one JSON line: prefix, events_table, events, seconds.
--   build/tide script bench/projection_streams.lua consume ENDPOINT PREFIX EVENTS [BATCH]
--     one pass of the projection over that stream from TRIM_HORIZON, with
--     fresh lease, position and read-model tables (dropped at the end),
--     GetRecords Limit BATCH (default 1000), until EVENTS records were
--     applied; checks one account's item. Prints one JSON line and one
--     human line.
--
-- Measured in consume: run_until_caught_up only (table creation excluded):
-- wall time -> records/s; getrusage(RUSAGE_SELF) user + sys of this
-- process -> client CPU µs per record (DynamoDB Local's own CPU is another
-- process and not counted). bench/run.sh runs the passes in turn with the
-- Node consumer's (bench/projection_streams_sdk.js), so that both meet
-- DynamoDB Local in the same states.
local core = require "tide.core"
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"
local dstore = require "tide.store.dynamodb"
local projection = require "tide.projection"
local backend_mod = require "tide.projection.dynamodb"
local streams = require "tide.projection.runner.streams"

local args = { ... }
if #args == 0 and type(arg) == "table" then args = arg end
local USAGE = "usage: tide script bench/projection_streams.lua write ENDPOINT [EVENTS ACCOUNTS]\n"
  .. "       tide script bench/projection_streams.lua consume ENDPOINT PREFIX EVENTS [BATCH]\n"
local mode, endpoint = args[1], args[2]
if (mode ~= "write" and mode ~= "consume") or not endpoint or (mode == "consume" and not (args[3] and args[4])) then
  io.stderr:write(USAGE)
  os.exit(2)
end

-- -> user + system seconds of this process so far
local process_cpu = dofile("bench/cpu.lua")
local function cpu()
  local user, sys = process_cpu()
  return user + sys
end

local root = os.getenv("PWD") or "."
local db = assert(dynamodb.new{ endpoint = endpoint, region = "us-east-1", base_delay = 0.005,
  credentials = { access_key_id = "tidebench", secret_access_key = "tidebenchsecret" } })

if mode == "write" then
  local EVENTS = tonumber(args[3]) or 20000
  local ACCOUNTS = tonumber(args[4]) or 500
  local prefix = "bench_proj_" .. core.random_hex(4) .. "_"
  local store = dstore.new{ client = db, table_prefix = prefix }
  assert(store:init())
  local per = math.max(1, math.floor(EVENTS / ACCOUNTS))
  local t0 = sched.now()
  local next_acc = 0
  local threads = {}
  for t = 1, 64 do
    threads[t] = sched.spawn(function()
      while next_acc < ACCOUNTS do
        next_acc = next_acc + 1
        local id = string.format("b%05d", next_acc)
        local v, bal = 0, 0
        for k = 1, per do
          local etype, data
          if k == 1 then etype, data = "Opened", { owner = "owner-" .. (next_acc % 50) }
          elseif k % 3 == 0 and bal >= 3 then etype, data = "Withdrawn", { amount = 3 }; bal = bal - 3
          else etype, data = "Deposited", { amount = k }; bal = bal + k end
          v = assert(store:append("account#" .. id, v, { { type = etype, data = core.encode_value(data),
            meta = core.json_encode{ command_id = id .. "-" .. k, timestamp = 0, schema = 1 } } }))
        end
      end
    end)
  end
  for _, th in ipairs(threads) do assert(sched.wait(th)) end
  print(core.json_encode{ bench = "projection_streams_write", prefix = prefix, events_table = prefix .. "events",
    events = per * ACCOUNTS, accounts = ACCOUNTS, per_account = per, seconds = sched.now() - t0 })
  return
end

local prefix, EVENTS = args[3], tonumber(args[4])
local BATCH = tonumber(args[5]) or 1000
local store = dstore.new{ client = db, table_prefix = prefix }
local proj = assert(projection.load_file(root .. "/projections/balances.lua", "balances"))
-- this pass's own leases, positions and read model
local pass = prefix .. "c" .. core.random_hex(3) .. "_"
local backend = backend_mod.new{ client = db, table_prefix = pass }
local runner = streams.new{ client = db, store = store, backend = backend, projection = proj, table_prefix = pass,
                            owner = "bench", lease_ms = 10000, poll_ms = 20, batch_limit = BATCH,
                            log = function(level, msg) if level == "error" then io.stderr:write(msg, "\n") end end }
assert(runner:start())
collectgarbage()
local c0, t0 = cpu(), sched.now()
local res = assert(runner:run_until_caught_up{ timeout = 600 })
local secs, cpus = sched.now() - t0, cpu() - c0
assert(res.records == EVENTS, "records read " .. res.records .. " ~= events written " .. EVENTS)

-- A spot check: the first account's item is at its last version.
local item = assert(backend:read_item("balances", "b00001"))
local last = assert(db:query{ TableName = prefix .. "events", KeyConditionExpression = "#s = :s",
  ExpressionAttributeNames = { ["#s"] = "stream" }, ExpressionAttributeValues = { [":s"] = "account#b00001" } })
assert(item.version == #last.Items, "b00001 at version " .. tostring(item.version) .. ", want " .. #last.Items)

local n_shards = #assert(runner:status()).shards
for _, t in ipairs({ "leases", "positions", "rm_balances" }) do db:delete_table{ TableName = pass .. t } end

-- The caught-up check itself costs caught_up_empty empty polls at the end
-- (about 2 x poll_ms), included in the wall time.
local rps = res.records / secs
local us = cpus / res.records * 1e6
print(core.json_encode{
  bench = "projection_streams", projection = "balances", source = "DynamoDB Streams (DynamoDB Local)",
  records = res.records, shards = n_shards, batch_limit = BATCH, batches = res.batches,
  seconds = secs, records_per_s = math.floor(rps + 0.5), client_cpu_us_per_record = math.floor(us * 10 + 0.5) / 10,
  client_cpu_s = cpus, events_table = prefix .. "events",
})
print(string.format("projection balances from DynamoDB Streams (DynamoDB Local %s): %d records, %d shard(s), "
  .. "GetRecords Limit %d: %.0f records/s, client CPU %.1f µs/record (%.2f s wall, %.2f s CPU)",
  endpoint, res.records, n_shards, BATCH, rps, us, secs, cpus))
