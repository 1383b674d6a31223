-- Client CPU per request of tide's DynamoDB client (lua/tide/dynamodb.lua on
-- the engine transport), to set next to bench/client_cpu_sdk.js (the AWS SDK
-- for JavaScript v3): same requests, same item, same concurrency.
--
--   build/tide script bench/client_cpu.lua ENDPOINT TABLE OP [CONCURRENCY N WARMUP ROUNDS]
--     OP = PutItem | GetItem | setup (creates TABLE when absent and writes
--          the KEYS items GetItem reads)
--
-- Prints one JSON line. CPU is getrusage(RUSAGE_SELF) user + sys (the whole
-- process, every thread) taken around the measured loop only: start-up,
-- client construction and the WARMUP requests are excluded; with ROUNDS > 1
-- it measures ROUNDS windows of N requests and reports the median one. The requests
-- are spread over CONCURRENCY coroutines pulling from one counter, on one
-- client with max_connections = CONCURRENCY.
local sched = require "tide.sched"
local dynamodb = require "tide.dynamodb"

local args = { ... }
if #args == 0 and type(arg) == "table" then args = arg end
local endpoint, tname, op = args[1], args[2], args[3]
local concurrency = tonumber(args[4]) or 1
local N = tonumber(args[5]) or 2000
local WARMUP = tonumber(args[6]) or 3000
local ROUNDS = tonumber(args[7]) or 1
if not (endpoint and tname and op) then
  io.stderr:write("usage: tide script bench/client_cpu.lua ENDPOINT TABLE PutItem|GetItem|setup [CONCURRENCY N WARMUP ROUNDS]\n")
  os.exit(2)
end

------------------------------------------------------------------------
-- Process CPU (bench/cpu.lua).

-- -> user seconds, system seconds of this process so far
local cpu = dofile("bench/cpu.lua")

------------------------------------------------------------------------
-- The item: must match bench/client_cpu_sdk.js.

local KEYS = 1000
local PAYLOAD = string.rep("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 15):sub(1, 900)

local function key(i) return string.format("bench#%06d", i % KEYS) end

local function item(i)
  return {
    pk = key(i), seq = i, kind = "bench-item", active = true,
    created_at = "2024-05-01T12:00:00Z",
    meta = { source = "client_cpu", version = 3 },
    payload = PAYLOAD,
  }
end

local db = assert(dynamodb.new{
  endpoint = endpoint, region = "us-east-1",
  credentials = { access_key_id = "tidebench", secret_access_key = "tidebenchsecret" },
  max_connections = op == "setup" and 16 or concurrency,
  -- BENCH_GATHER_US: the engine's gather_us (unset: its default); run.sh
  -- also measures the c=64 cells with 0, gathering off
  gather_us = tonumber(os.getenv("BENCH_GATHER_US") or ""),
})

local errors, first_err, items_read = 0, nil, 0

local function one(i)
  local res, err
  if op == "PutItem" then
    res, err = db:put_item{ TableName = tname, Item = item(i) }
  else
    res, err = db:get_item{ TableName = tname, Key = { pk = key(i) } }
    if res and res.Item then items_read = items_read + 1 end
  end
  if not res then
    errors = errors + 1
    first_err = first_err or err
  end
end

-- n requests from index start, over `workers` coroutines. A Lua error in
-- one request stops them all and is raised once.
local function loop(start, n, workers, fn)
  local next_i, last = start, start + n - 1
  local failure
  local function worker()
    while next_i <= last do
      local i = next_i
      next_i = i + 1
      local ok, e = xpcall(fn, debug.traceback, i)
      if not ok then
        failure = failure or e
        next_i = last + 1
      end
    end
  end
  local threads = {}
  for w = 1, workers do threads[w] = sched.spawn(worker) end
  for w = 1, workers do sched.wait(threads[w]) end
  if failure then error(failure, 0) end
end

local function json_line(t, order)
  local parts = {}
  for _, k in ipairs(order) do
    local v = t[k]
    if v ~= nil then
      local s
      if type(v) == "string" and v:sub(1, 1) == "[" then
        s = v -- pre-rendered JSON array of numbers
      elseif type(v) == "string" then
        s = '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
      elseif v == math.floor(v) and math.abs(v) < 2^53 then
        s = string.format("%d", v)
      else
        s = string.format("%.6g", v)
      end
      parts[#parts + 1] = '"' .. k .. '":' .. s
    end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function setup()
  local res, err = db:create_table{
    TableName = tname, BillingMode = "PAY_PER_REQUEST",
    AttributeDefinitions = { { AttributeName = "pk", AttributeType = "S" } },
    KeySchema = { { AttributeName = "pk", KeyType = "HASH" } },
  }
  if not res and err.type ~= "ResourceInUseException" then error(tostring(err), 0) end
  assert(db:wait_for_table(tname, 60))
  loop(0, KEYS, 16, function(i) assert(db:put_item{ TableName = tname, Item = item(i) }) end)
  local core = require "tide.core"
  print(json_line({ client = "tide", op = "setup", table = tname, keys = KEYS, item_bytes = core.item_size(item(0)) },
                  { "client", "op", "table", "keys", "item_bytes" }))
end

if op == "setup" then
  setup()
  return
end
if op ~= "PutItem" and op ~= "GetItem" then
  io.stderr:write("client_cpu: OP must be PutItem, GetItem or setup\n")
  os.exit(2)
end

-- Warm-up: opens the connections, lets the JIT compile the hot paths.
loop(0, WARMUP, concurrency, one)
if errors > 0 then
  io.stderr:write("client_cpu: warm-up failed: ", tostring(first_err), "\n")
  os.exit(1)
end

-- ROUNDS measured windows of N requests each; the figures are those of the
-- median window (by CPU per request), which damps the noise of a machine
-- shared with DynamoDB Local.
local rounds = {}
local start = WARMUP
for r = 1, ROUNDS do
  items_read = 0
  local u0, s0 = cpu()
  local t0 = sched.now()
  loop(start, N, concurrency, one)
  local t1 = sched.now()
  local u1, s1 = cpu()
  start = start + N
  rounds[r] = { wall = t1 - t0, user = u1 - u0, sys = s1 - s0,
                us = ((u1 - u0) + (s1 - s0)) * 1e6 / N, items_read = items_read }
end
local sorted = {}
for r = 1, ROUNDS do sorted[r] = rounds[r] end
table.sort(sorted, function(a, b) return a.us < b.us end)
local med = sorted[math.floor((ROUNDS + 1) / 2)]
local all = {}
for r = 1, ROUNDS do all[r] = string.format("%.1f", rounds[r].us) end

local out = {
  client = os.getenv("BENCH_GATHER_US") == "0" and "tide-nogather" or "tide",
  luajit = jit and jit.version or "?", op = op, concurrency = concurrency,
  requests = N, rounds = ROUNDS, errors = errors,
  items_read = op == "GetItem" and med.items_read or nil,
  wall_s = med.wall, cpu_user_s = med.user, cpu_sys_s = med.sys,
  cpu_us_per_req = med.us, req_per_s = N / med.wall,
  cpu_us_per_req_rounds = "[" .. table.concat(all, ",") .. "]",
}
print(json_line(out, { "client", "luajit", "op", "concurrency", "requests", "rounds", "errors", "items_read",
                       "wall_s", "cpu_user_s", "cpu_sys_s", "cpu_us_per_req", "req_per_s",
                       "cpu_us_per_req_rounds" }))
io.stdout:flush()
if errors > 0 then
  io.stderr:write("client_cpu: ", errors, " errors; first: ", tostring(first_err), "\n")
end
