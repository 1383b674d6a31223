-- Hot-reload latency: from the write of a new version of an aggregate module
-- to the first command served by that version, while commands keep flowing.
--
--   build/tide script bench/reload_latency.lua [RELOADS] [CLIENTS]
--   (defaults: 50 reloads per write pattern, 4 client threads)
--   BENCH_RELOAD_DIR=/tmp   where the project folder goes
--
-- One tide process (this script): the embedded SQLite store (WAL,
-- synchronous=normal), tide.reload watching the aggregates folder with its
-- default debounce, and CLIENTS scheduler threads each sending Deposit
-- commands back to back to its own account. A writer thread rewrites
-- aggregates/account.lua (a valid version that differs by a constant) every
-- 120-170 ms and notes the time just before the write; a client notes the
-- time each command completes and the module version in its event's
-- metadata. Latency = completion of the first command served by the new
-- version - the moment the write began. Also shown: write -> swap (the
-- reloader's swap, from its log) and swap -> first command.
-- p99 over 50 samples is by nearest rank, i.e. the slowest of the 50.
-- Also printed: the loop's worst stall (a 1 ms timer firing late), which
-- bounds the tail: SQLite commits and checkpoints block the loop's thread,
-- and the reloader runs on that loop like every command.
local sched = require "tide.sched"
local core = require "tide.core"
local reload = require "tide.reload"

local RELOADS = tonumber(arg[1]) or 50
local CLIENTS = tonumber(arg[2]) or 4
local base_dir = os.getenv("BENCH_RELOAD_DIR") or os.getenv("TMPDIR") or "/tmp"

local function sh(cmd) assert(os.execute(cmd) == 0, cmd) end
local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local dir = ("%s/tide-reload-bench-%d-%d"):format(base_dir, os.time(), math.random(1, 1e9))
sh("mkdir -p '" .. dir .. "/aggregates'")
local here = arg[0]:match("^(.*)/[^/]+$") or "."
local BASE = assert(io.open(here .. "/../aggregates/account.lua", "rb")):read("*a")
local function version_source(rev)
  return (BASE:gsub("return account%s*$", ("account.REVISION = %d\nreturn account\n"):format(rev)))
end
local function version_of(source) return core.sha256_hex(source):sub(1, 16) end
write(dir .. "/aggregates/account.lua", version_source(0))
write(dir .. "/tide.yaml", table.concat({
  "store: sqlite", "sqlite:", "  path: " .. dir .. "/tide.db", "  synchronous: normal",
  "aggregates: " .. dir .. "/aggregates", "" }, "\n"))

local PATTERNS = {
  { name = "in place (open O_TRUNC, write, close)", write = function(path, data) write(path, data) end },
  { name = "write then rename", write = function(path, data)
      write(path .. ".tmp", data)
      assert(os.rename(path .. ".tmp", path))
    end },
}

local function percentile(sorted, p)
  return sorted[math.max(1, math.ceil(p * #sorted))]
end

local function summary(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v * 1000 end
  table.sort(s)
  local sum = 0
  for _, v in ipairs(s) do sum = sum + v end
  return { p50 = percentile(s, 0.5), p99 = percentile(s, 0.99), max = s[#s], mean = sum / #s, n = #s }
end

local results = {}
-- tide script runs this file as the main thread of sched.run
do
  local app = assert(require("tide").open{ config = dir .. "/tide.yaml" })
  assert(app.store:init())
  local swapped = {} -- version -> time the reloader swapped it in
  local w = assert(reload.start{
    dirs = { { path = dir .. "/aggregates", registry = app.registry } },
    log = function(level, msg, fields)
      if level == "info" and fields and fields.version and msg:find("reloaded") then
        swapped[fields.version] = swapped[fields.version] or sched.now()
      elseif level ~= "info" then
        io.stderr:write("reload: ", level, ": ", msg, "\n")
      end
    end,
  })
  local first_served = {} -- version -> completion time of its first command
  local stop, commands, failures = false, 0, 0
  local clients = {}
  for c = 1, CLIENTS do
    clients[c] = sched.spawn(function()
      local id = "bench" .. c
      assert(app.repository:execute("account", id, { type = "Open", owner = id }))
      while not stop do
        local r, err = app.repository:execute("account", id, { type = "Deposit", amount = 1 })
        local t = sched.now()
        commands = commands + 1
        if r then
          local v = r.events[1].meta.handler
          if not first_served[v] then first_served[v] = t end
        else
          failures = failures + 1
          io.stderr:write("command failed: ", tostring(err), "\n")
        end
      end
    end)
  end
  -- how long the loop goes without running a thread that asked to run
  -- after 1 ms: blocking work (SQLite commits and checkpoints run on the
  -- loop's thread) delays the reloader as much as any command
  local stall = { max = 0, over50 = 0 }
  local ticker = sched.spawn(function()
    while not stop do
      local t = sched.now()
      sched.sleep(0.001)
      local late = sched.now() - t - 0.001
      if late > stall.max then stall.max = late end
      if late > 0.05 then stall.over50 = stall.over50 + 1 end
    end
  end)
  sched.sleep(0.3) -- warm up
  local path = dir .. "/aggregates/account.lua"
  local rev = 0
  for _, pattern in ipairs(PATTERNS) do
    local total, to_swap, to_serve = {}, {}, {}
    local t_start, c_start = sched.now(), commands
    for _ = 1, RELOADS do
      rev = rev + 1
      local source = version_source(rev)
      local v = version_of(source)
      local t0 = sched.now()
      pattern.write(path, source)
      local deadline = t0 + 5
      while not first_served[v] and sched.now() < deadline do sched.sleep(0.001) end
      if not first_served[v] then error("version " .. v .. " never served a command within 5 s") end
      total[#total + 1] = first_served[v] - t0
      if swapped[v] then
        to_swap[#to_swap + 1] = swapped[v] - t0
        to_serve[#to_serve + 1] = first_served[v] - swapped[v]
      end
      sched.sleep(0.12 + math.random() * 0.05)
    end
    results[#results + 1] = { pattern = pattern.name, total = summary(total), swap = summary(to_swap),
                              serve = summary(to_serve),
                              rate = (commands - c_start) / (sched.now() - t_start) }
  end
  stop = true
  for _, th in ipairs(clients) do assert(sched.wait(th)) end
  assert(sched.wait(ticker))
  results.stall = stall
  w:stop()
  app.store:close()
  results.failures = failures
end
sh("rm -rf '" .. dir .. "'")

print(("conditions: one tide process, embedded SQLite (WAL, synchronous=normal) in %s; tide.reload debounce %d ms;")
  :format(base_dir, reload.DEBOUNCE * 1000))
print(("  %d client threads sending Deposit commands back to back; %d reloads per write pattern, one every 120-170 ms;")
  :format(CLIENTS, RELOADS))
print("  latency = first command completed on the new version - start of the file write (monotonic clock)")
print(("%-40s %9s %9s %9s %9s   %s"):format("write pattern", "p50 ms", "p99 ms", "max ms", "mean ms",
  "(write->swap p50/p99, swap->served p50/p99, commands/s)"))
local worst = 0
for _, r in ipairs(results) do
  print(("%-40s %9.1f %9.1f %9.1f %9.1f   (%.1f/%.1f ms, %.1f/%.1f ms, %.0f commands/s)"):format(r.pattern,
    r.total.p50, r.total.p99, r.total.max, r.total.mean, r.swap.p50 or 0, r.swap.p99 or 0, r.serve.p50 or 0,
    r.serve.p99 or 0, r.rate))
  worst = math.max(worst, r.total.p99)
end
print(("loop stalls (a 1 ms timer fired late): max %.1f ms, %d over 50 ms"):format(results.stall.max * 1000,
  results.stall.over50))
print(("reload latency p99 %.1f ms (target < 200 ms): %s; commands failed during the reloads: %d")
  :format(worst, worst < 200 and "met" or "NOT MET", results.failures))
