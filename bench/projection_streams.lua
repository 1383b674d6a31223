-- Throughput and client CPU of a projection fed by DynamoDB Streams: the
-- balances projection (projections/balances.lua) run by
-- tide.projection.streams against DynamoDB Local.
--
--   build/tide script bench/projection_streams.lua ENDPOINT [EVENTS ACCOUNTS BATCH]
--     EVENTS    events written first (default 20000), spread over
--     ACCOUNTS  account streams (default 500): an Opened, then deposits and
--               withdrawals, appended one event per PutItem by 64 threads
--     BATCH     GetRecords Limit (default 1000)
--
-- Fresh tables per run (a random prefix), dropped at the end. Measured:
-- run_until_caught_up from TRIM_HORIZON only (table creation and the
-- writes are excluded): wall time -> records/s; getrusage(RUSAGE_SELF)
-- user + sys of this process -> client CPU µs per record (DynamoDB Local's
-- own CPU is another process and not counted). Prints one JSON line and
-- one human line.
local core = require "tide.core"
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"
local dstore = require "tide.store.dynamodb"
local projection = require "tide.projection"
local backend_mod = require "tide.projection.dynamodb"
local streams = require "tide.projection.streams"

local args = { ... }
if #args == 0 and type(arg) == "table" then args = arg end
local endpoint = args[1] or os.getenv("TIDE_TEST_DYNAMODB_ENDPOINT")
local EVENTS = tonumber(args[2]) or 20000
local ACCOUNTS = tonumber(args[3]) or 500
local BATCH = tonumber(args[4]) or 1000
if not endpoint then
  io.stderr:write("usage: tide script bench/projection_streams.lua ENDPOINT [EVENTS ACCOUNTS BATCH]\n")
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
local prefix = "bench_proj_" .. core.random_hex(4) .. "_"
local store = dstore.new{ client = db, table_prefix = prefix }
assert(store:init())
local proj = assert(projection.load_file(root .. "/projections/balances.lua", "balances"))
local backend = backend_mod.new{ client = db, table_prefix = prefix }

-- The events: per account an Opened, then deposits (and a withdrawal every
-- third event), one PutItem each, 64 threads.
local per = math.max(1, math.floor(EVENTS / ACCOUNTS))
local t_write = sched.now()
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
local written = per * ACCOUNTS
t_write = sched.now() - t_write

local runner = streams.new{ client = db, store = store, backend = backend, projection = proj,
                            owner = "bench", lease_ms = 10000, poll_ms = 20, batch_limit = BATCH,
                            log = function(level, msg) if level == "error" then io.stderr:write(msg, "\n") end end }
assert(runner:init())
collectgarbage()
local c0, t0 = cpu(), sched.now()
local res = assert(runner:run_until_caught_up{ timeout = 600 })
local secs, cpus = sched.now() - t0, cpu() - c0
assert(res.records == written, "records read " .. res.records .. " ~= events written " .. written)

-- A spot check: one account's item against its events.
local item = assert(backend:read_item("balances", "b00001"))
assert(item.version == per, "b00001 at version " .. tostring(item.version) .. ", want " .. per)

local n_shards = #assert(runner:status())
-- BENCH_KEEP_TABLES=1 leaves the events table for the Node baseline
-- (bench/projection_streams_sdk.js), which consumes the same stream.
local keep = os.getenv("BENCH_KEEP_TABLES") == "1"
for _, t in ipairs({ "events", "snapshots", "leases", "positions", "rm_balances" }) do
  if not (keep and t == "events") then db:delete_table{ TableName = prefix .. t } end
end

-- The caught-up check itself costs caught_up_empty empty polls at the end
-- (about 2 x poll_ms), included in the wall time.
local rps = res.records / secs
local us = cpus / res.records * 1e6
print(core.json_encode{
  bench = "projection_streams", projection = "balances", source = "DynamoDB Streams (DynamoDB Local)",
  events = written, accounts = ACCOUNTS, shards = n_shards, batch_limit = BATCH, batches = res.batches,
  seconds = secs, records_per_s = math.floor(rps + 0.5), client_cpu_us_per_record = math.floor(us * 10 + 0.5) / 10,
  client_cpu_s = cpus, write_seconds = t_write, events_table = prefix .. "events",
})
print(string.format("projection balances from DynamoDB Streams (DynamoDB Local %s): %d records over %d accounts, "
  .. "%d shard(s), GetRecords Limit %d: %.0f records/s, client CPU %.1f µs/record (%.2f s wall, %.2f s CPU; "
  .. "writing the events took %.1f s)", endpoint, res.records, ACCOUNTS, n_shards, BATCH, rps, us, secs, cpus, t_write))
