-- Appends per second on the embedded store (tide.store.sqlite), one event
-- per append, with 1 thread and with many concurrent threads (group commit).
--
--   build/tide script bench/sqlite_append.lua [N] [CONCURRENCY...]
--   (defaults: N = 20000 appends per cell, concurrency 1 and 256)
--   BENCH_SQLITE_SYNC="normal full"    synchronous modes to measure
--   BENCH_SQLITE_DIR=/tmp              where the database files go
--
-- Each cell: a fresh database file, WAL mode; C threads (coroutines of
-- tide.sched) each own one stream (`bench#<thread>`) and append N / C
-- events to it, one per append, at the version they know. An event is
-- ~180 bytes of data + ~200 bytes of meta (JSON text). A warm-up of 500
-- appends is not counted. "direct" is the same loop outside any scheduler
-- thread (a plain Lua coroutine): one transaction per append.
-- Prints one line per cell: appends/s, µs per append, transactions, events
-- per transaction.
local sched = require "tide.sched"
local store_mod = require "tide.store.sqlite"

local N = tonumber(arg[1]) or 20000
local concs = {}
for i = 2, #arg do concs[#concs + 1] = tonumber(arg[i]) end
if #concs == 0 then concs = { 1, 256 } end
local syncs = {}
for s in (os.getenv("BENCH_SQLITE_SYNC") or "normal full"):gmatch("%S+") do syncs[#syncs + 1] = s end
local dir = os.getenv("BENCH_SQLITE_DIR") or os.getenv("TMPDIR") or "/tmp"

local DATA = '{"amount":125,"currency":"EUR","reference":"' .. string.rep("r", 120) .. '"}'
local META = '{"command_id":"3f1c2a9e-0d4b-4c55-9a3e-6b1f0c2d7e88","command":"Deposit",'
  .. '"correlation_id":"3f1c2a9e-0d4b-4c55-9a3e-6b1f0c2d7e88","timestamp":1700000000000,'
  .. '"schema":1,"handler":"9b2e4c1d","index":1,"count":1}'

local function fresh_store(sync)
  local path = string.format("%s/tide-bench-%d-%d.db", dir, os.time(), math.random(1, 1e9))
  local store = assert(store_mod.new{ path = path, synchronous = sync })
  assert(store:init())
  return store, path
end

local function remove_db(path)
  for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
end

-- Runs c threads appending n events in all; returns seconds.
local function run_threads(store, c, n, prefix)
  local per = math.floor(n / c)
  local t0 = sched.now()
  local threads = {}
  for w = 1, c do
    threads[w] = sched.spawn(function()
      local stream, v = prefix .. w, 0
      local events = { { type = "Deposited", data = DATA, meta = META } }
      for _ = 1, per do
        v = assert(store:append(stream, v, events))
      end
    end)
  end
  for _, r in ipairs(sched.wait_all(threads)) do
    assert(r[1], r[2])
  end
  return sched.now() - t0, per * c
end

-- The same loop in a plain coroutine: the store sees no scheduler thread.
local function run_direct(store, n, prefix)
  local t0 = sched.now()
  local co = coroutine.create(function()
    local events = { { type = "Deposited", data = DATA, meta = META } }
    local v = 0
    for _ = 1, n do
      v = assert(store:append(prefix, v, events))
    end
  end)
  assert(coroutine.resume(co))
  return sched.now() - t0, n
end

local function report(label, sync, secs, n, store, tx0)
  local tx = store.stats.transactions - tx0
  print(string.format("sqlite append %-8s synchronous=%-6s: %9.0f appends/s  %7.2f us/append  (%d appends in %.3f s, %d transactions, %.1f appends/transaction)",
    label, sync, n / secs, secs * 1e6 / n, n, secs, tx, n / tx))
end

local cpu = "?"
local f = io.open("/proc/cpuinfo")
if f then
  cpu = (f:read("*a"):match("model name%s*:%s*([^\n]+)")) or "?"
  f:close()
end
print(string.format("conditions: %s; database files in %s; one event (~%d bytes data+meta) per append; %d appends per cell after 500 warm-up",
  cpu, dir, #DATA + #META, N))

for _, sync in ipairs(syncs) do
  do
    local store, path = fresh_store(sync)
    run_direct(store, 500, "warm")
    local tx0 = store.stats.transactions
    local secs, n = run_direct(store, N, "bench#direct")
    report("direct", sync, secs, n, store, tx0)
    store:close()
    remove_db(path)
  end
  for _, c in ipairs(concs) do
    local store, path = fresh_store(sync)
    run_threads(store, math.min(c, 500), 500, "warm#")
    local tx0 = store.stats.transactions
    local secs, n = run_threads(store, c, N, "bench#")
    report("c=" .. c, sync, secs, n, store, tx0)
    store:close()
    remove_db(path)
  end
end
