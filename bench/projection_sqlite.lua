-- Events per second of the embedded feed: the `balances` projection run by
-- tide.projection.runner.sqlite over the embedded store.
--
--   build/tide script bench/projection_sqlite.lua [EVENTS] [ACCOUNTS] [BATCH...]
--   (defaults: 20000 events, 500 accounts, batch sizes 100 500 2000)
--   BENCH_SQLITE_DIR=/tmp      where the database files go
--   BENCH_SQLITE_SYNC=normal   synchronous mode of the store ("normal" or "full")
--
-- The events are written once through the repository (aggregates/account.lua:
-- Open, then deposits and withdrawals, 100 concurrent writers); each cell
-- copies that file, then times run_until_caught_up of a fresh runner: read
-- the feed (read_all), decode (AttributeValue data, JSON meta), positions,
-- prefetch of the batch's items, the handlers, and one transaction per
-- batch with the items (AttributeValue JSON), the positions and the
-- checkpoint. Prints events/s and µs per event per batch size, and the
-- projections/owners figure (conditional mode) at batch 500.
local sched = require "tide.sched"
local store_mod = require "tide.store.sqlite"
local aggregate = require "tide.aggregate"
local repository = require "tide.repository"
local projection = require "tide.projection"
local runner_mod = require "tide.projection.runner.sqlite"

local EVENTS, ACCOUNTS = tonumber(arg[1]) or 20000, tonumber(arg[2]) or 500
local batches = {}
for i = 3, #arg do batches[#batches + 1] = tonumber(arg[i]) end
if #batches == 0 then batches = { 100, 500, 2000 } end
local dir = os.getenv("BENCH_SQLITE_DIR") or os.getenv("TMPDIR") or "/tmp"
local sync = os.getenv("BENCH_SQLITE_SYNC") or "normal"
local aggregates = aggregate.registry("aggregates")
local projections = projection.registry("projections")

local base = string.format("%s/tide-bench-proj-%d-%d", dir, os.time(), math.random(1, 1e9))
local function remove_db(path)
  for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
end

-- the template
do
  local store = assert(store_mod.new{ path = base .. ".db", synchronous = sync })
  assert(store:init())
  local repo = repository.new{ store = store, registry = aggregates }
  local per = math.floor(EVENTS / ACCOUNTS)
  local writers = math.min(100, ACCOUNTS)
  local threads = {}
  for w = 1, writers do
    threads[w] = sched.spawn(function()
      for a = w, ACCOUNTS, writers do
        local id = "acc-" .. a
        assert(repo:execute("account", id, { type = "Open", owner = "owner-" .. (a % 37) }))
        for i = 2, per do
          local cmd = (i % 3 == 0) and { type = "Withdraw", amount = 1 } or { type = "Deposit", amount = 10 }
          assert(repo:execute("account", id, cmd))
        end
      end
    end)
  end
  for _, r in ipairs(sched.wait_all(threads)) do assert(r[1], r[2]) end
  EVENTS = assert(store:last_position())
  store:close()
end

local function cell(name, batch)
  local path = base .. "-" .. name .. "-" .. batch .. ".db"
  assert(os.execute(("cp %s.db %s"):format(base, path)) == 0)
  local store = assert(store_mod.new{ path = path, synchronous = sync })
  local r = runner_mod.new{ store = store, projection = assert(projections:get(name)), aggregates = aggregates,
                            batch_size = batch }
  local t0 = sched.now()
  local n = assert(r:run_until_caught_up()).handled
  local dt = sched.now() - t0
  assert(n == EVENTS, "handled " .. n)
  store:close()
  remove_db(path)
  print(string.format("%-9s batch %5d: %8.0f events/s  %6.1f µs/event  (%d events, %d accounts, %d transactions, synchronous=%s)",
    name, batch, n / dt, dt * 1e6 / n, n, ACCOUNTS, math.ceil(n / batch), sync))
end

for _, b in ipairs(batches) do cell("balances", b) end
cell("owners", 500)
remove_db(base .. ".db")
