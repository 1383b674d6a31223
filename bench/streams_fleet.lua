-- bench/streams_fleet.lua: `tide run` workers on 64 virtual shards (the
-- Streams stand-in, spec/fixtures/streams_standin.js, in front of DynamoDB
-- Local). Run by bench/streams_fleet.sh (make bench):
--
--   build/tide script bench/streams_fleet.lua DYNAMODB_ENDPOINT STANDIN_URL [EVENTS] [WORKERS...]
--
-- For each worker count (default 1 4 8): fresh tables, EVENTS events
-- written first (one per append, over EVENTS/4 accounts), then the workers
-- start and the clock runs until the read model `balances` holds every
-- account at its last version: records/s = EVENTS / that time (start-up and
-- lease taking included). Then, idle, the lease-table requests per second
-- per worker over 10 s (counted by the stand-in, which forwards the
-- workers' DynamoDB calls). With the last count: the takeover time of the
-- shards of a worker killed with SIGKILL, then of one stopped with SIGTERM
-- (until another worker holds each of its leases). Last, the ceiling:
-- conditional PutItems from this one process, 64 in flight, through the
-- stand-in and straight to DynamoDB Local, and for each count the DynamoDB
-- requests the workers made per record: no worker count can pass ceiling /
-- requests per record (docs/projections.md, "Request budgets", the bench).
local sched = require "tide.sched"
local core = require "tide.core"
local dynamodb = require "tide.dynamodb"
local dstore = require "tide.store.dynamodb"
local cjson = require "cjson"

local endpoint, standin = arg[1], arg[2]
local EVENTS = tonumber(arg[3]) or 6000
local counts = {}
for i = 4, #arg do counts[#counts + 1] = tonumber(arg[i]) end
if #counts == 0 then counts = { 1, 4, 8 } end
local LEASE_MS = 3000
local TIDE = os.getenv("PWD") .. "/build/tide"
local q = function(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local db = assert(dynamodb.new{ endpoint = endpoint, region = "us-east-1", base_delay = 0.005,
  credentials = { access_key_id = "tidetest", secret_access_key = "tidetestsecret" } })

local function control(op, body)
  local resp = assert(sched.request{ method = "POST", url = standin .. "/", body = cjson.encode(body or {}),
    headers = { ["content-type"] = "application/x-amz-json-1.0", ["x-amz-target"] = "TideStandIn." .. op } })
  assert(resp.status == 200, resp.body)
  return cjson.decode(resp.body)
end

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

local function write_events(store, n)
  local accounts = math.max(1, math.floor(n / 4))
  local nexti, final = 0, {}
  local function worker()
    while nexti < accounts do
      nexti = nexti + 1
      local i = nexti
      local stream = string.format("account#f-%05d", i)
      local per = (i <= n % accounts) and 5 or 4
      for v = 1, per do
        local e = v == 1 and { type = "Opened", data = core.encode_value{ owner = "o" .. (i % 7) }, meta = "{}" }
                          or { type = "Deposited", data = core.encode_value{ amount = v }, meta = "{}" }
        assert(store:append(stream, v - 1, { e }))
      end
      final[string.format("f-%05d", i)] = per
    end
  end
  local th = {}
  for t = 1, 32 do th[t] = sched.spawn(worker) end
  for _, t in ipairs(th) do assert(sched.wait(t)) end
  return final
end

local function caught_up(prefix, final)
  local res = db:scan({ TableName = prefix .. "rm_balances", ProjectionExpression = "id, version" }, { segments = 4 })
  if not res then return false end
  local n = 0
  for _, it in ipairs(res.Items) do
    if final[it.id] == it.version then n = n + 1 end
  end
  local want = 0
  for _ in pairs(final) do want = want + 1 end
  return n == want
end

local function lease_owners(prefix)
  local res = assert(db:query{ TableName = prefix .. "leases", KeyConditionExpression = "#p = :p",
    ExpressionAttributeNames = { ["#p"] = "projection" }, ExpressionAttributeValues = { [":p"] = "*" },
    ConsistentRead = true })
  local by = {}
  for _, it in ipairs(res.Items) do by[it.shard] = it.owner end
  return by
end

-- DynamoDB requests the stand-in forwarded for the tables of prefix.
local function prefix_calls(prefix)
  local n = 0
  for t, ops in pairs(control("TableCalls").Tables) do
    if t:sub(1, #prefix) == prefix then for _, c in pairs(ops) do n = n + c end end
  end
  return n
end

-- The ceiling: conditional PutItems (what a projection's item writes are)
-- from this one process, 64 in flight, through the stand-in and straight
-- to DynamoDB Local: requests/s that DynamoDB Local (and the stand-in's
-- forwarding) serve on this machine, whoever sends them.
local function ceiling(url, n)
  local c = assert(dynamodb.new{ endpoint = url, region = "us-east-1", base_delay = 0.005,
    credentials = { access_key_id = "tidetest", secret_access_key = "tidetestsecret" } })
  local t = string.format("ceiling_%d_%d", os.time(), math.random(1e6))
  assert(c:create_table{ TableName = t, BillingMode = "PAY_PER_REQUEST",
    AttributeDefinitions = { { AttributeName = "id", AttributeType = "S" } },
    KeySchema = { { AttributeName = "id", KeyType = "HASH" } } })
  assert(c:wait_for_table(t, 60))
  local nexti = 0
  local t0 = sched.now()
  local th = {}
  for w = 1, 64 do
    th[w] = sched.spawn(function()
      while nexti < n do
        nexti = nexti + 1
        assert(c:put_item{ TableName = t, Item = { id = "k" .. nexti, balance = nexti, _rev = 1 },
          ConditionExpression = "attribute_not_exists(id)" })
      end
    end)
  end
  for _, x in ipairs(th) do assert(sched.wait(x)) end
  local secs = sched.now() - t0
  c:call("DeleteTable", { TableName = t })
  return n / secs
end

local function lease_calls(prefix)
  local t = control("TableCalls").Tables[prefix .. "leases"] or {}
  local n = 0
  for _, c in pairs(t) do n = n + c end
  return n
end

local results = {}
for _, k in ipairs(counts) do
  local dir = sh("mktemp -d"):gsub("%s+$", "")
  local prefix = string.format("fleet%d_%d_", k, os.time())
  os.execute("mkdir -p " .. q(dir .. "/projections") .. " && cp projections/balances.lua " .. q(dir .. "/projections/"))
  local f = assert(io.open(dir .. "/tide.yaml", "w"))
  f:write("store: dynamodb\ndynamodb:\n  region: us-east-1\n  endpoint: ", standin, "\n  table_prefix: ", prefix,
          "\naggregates: ", os.getenv("PWD"), "/aggregates\nprojections: ", dir, "/projections\nlog:\n  format: json\n",
          "  level: warn\nstreams:\n  lease_ms: ", LEASE_MS, "\n")
  f:close()
  local store = dstore.new{ client = db, table_prefix = prefix }
  assert(store:init())
  local final = write_events(store, EVENTS)
  local pids = {}
  local calls0 = prefix_calls(prefix)
  local t0 = sched.now()
  for w = 1, k do
    local out = sh("cd " .. q(dir) .. " && env AWS_ACCESS_KEY_ID=tidetest AWS_SECRET_ACCESS_KEY=tidetestsecret"
      .. " AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" .. standin .. " " .. q(TIDE) .. " run > /dev/null 2> "
      .. q(dir .. "/w" .. w .. ".log") .. " & echo $!")
    pids[w] = tonumber(out:match("%d+"))
  end
  while not caught_up(prefix, final) do
    if sched.now() - t0 > 600 then error("workers=" .. k .. ": not caught up in 600 s") end
    sched.sleep(0.25)
  end
  local secs = sched.now() - t0
  local r = { workers = k, events = EVENTS, seconds = secs, records_per_s = EVENTS / secs }
  -- shards whose worker went past its fence in the catch-up (a heartbeat
  -- late by more than lease_ms / 3: the host's load): paused, then resumed
  -- or taken by another worker
  r.fences = tonumber(sh("cat " .. q(dir) .. "/w*.log | grep -c 'stopping writes' || true"):match("%d+")) or 0
  -- every DynamoDB request of the workers (read models, positions, leases,
  -- events table reads), less the bench's own scans while it waited
  r.requests = prefix_calls(prefix) - calls0
  r.requests_per_s = r.requests / secs
  -- idle lease-table traffic
  local c0, i0 = lease_calls(prefix), sched.now()
  sched.sleep(10)
  r.lease_requests_per_s_per_worker = (lease_calls(prefix) - c0) / (sched.now() - i0) / k
  if k == counts[#counts] and k >= 2 then
    for _, how in ipairs({ "KILL", "TERM" }) do
      local victim = table.remove(pids, 1)
      local owners = lease_owners(prefix)
      local mine = {}
      for shard, o in pairs(owners) do if o and o:match(":(%d+):") == tostring(victim) then mine[shard] = true end end
      local t1 = sched.now()
      os.execute("kill -" .. how .. " " .. victim)
      while next(mine) and sched.now() - t1 < 120 do
        local now_owners = lease_owners(prefix)
        for shard in pairs(mine) do
          local o = now_owners[shard]
          if o and o:match(":(%d+):") ~= tostring(victim) then mine[shard] = nil end
        end
        sched.sleep(0.05)
      end
      r["takeover_s_" .. how] = sched.now() - t1
    end
  end
  for _, pid in ipairs(pids) do os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
  sched.sleep(1)
  for _, pid in ipairs(pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  os.execute("rm -rf " .. q(dir))
  results[#results + 1] = r
  print(cjson.encode(r))
end

local via = ceiling(standin, 3000)
local direct = ceiling(endpoint, 3000)
local base = results[1]
print(string.format("ceiling of DynamoDB Local on this machine, conditional PutItems, 64 in flight from one process:"
  .. " %.0f requests/s through the stand-in, %.0f requests/s straight", via, direct))
for _, r in ipairs(results) do
  print(string.format("64 shards, %d worker(s): %.0f records/s (%.2fx the 1-worker run of this bench), %.1f s for %d events;"
    .. " lease table %.1f requests/s per worker (idle)", r.workers, r.records_per_s, r.records_per_s / base.records_per_s,
    r.seconds, r.events, r.lease_requests_per_s_per_worker))
  print(string.format("  %d worker(s): %d DynamoDB requests in the catch-up (%.2f per record), %.0f requests/s;"
    .. " %d shard pauses past the fence", r.workers, r.requests, r.requests / r.events, r.requests_per_s, r.fences))
  if r.takeover_s_KILL then
    print(string.format("takeover of a worker's shards (lease_ms %d): after SIGKILL %.1f s, after SIGTERM %.1f s",
      LEASE_MS, r.takeover_s_KILL, r.takeover_s_TERM))
  end
end
