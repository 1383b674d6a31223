-- wrk script for bench/nginx_wrk.sh: Deposit commands spread at random
-- over pre-opened accounts, through POST /aggregates/account/{id}.
--
--   wrk -t2 -c64 -d10s --latency -s bench/wrk_deposit.lua URL -- ACCOUNTS AMOUNT ID_PREFIX
--
-- Counts responses by status in every thread and prints, at the end, one
-- line "WRK_RESULT {json}" with the counts, requests/s and latencies.
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  threads[#threads + 1] = thread
end

function init(args)
  accounts = tonumber(args[1]) or 1000
  prefix = args[3] or "acc-"
  body = '{"type":"Deposit","amount":' .. (tonumber(args[2]) or 1) .. '}'
  headers = { ["Content-Type"] = "application/json" }
  ok, non2xx, shown = 0, 0, 0
  math.randomseed(os.time() * 1000 + tid * 7919)
end

function request()
  return wrk.format("POST", "/aggregates/account/" .. prefix .. math.random(accounts), headers, body)
end

function response(status, _, resp_body)
  if status == 200 then
    ok = ok + 1
  else
    non2xx = non2xx + 1
    if shown < 3 then
      shown = shown + 1
      io.stderr:write("wrk_deposit: HTTP ", status, ": ", tostring(resp_body):sub(1, 300), "\n")
    end
  end
end

function done(summary, latency)
  local okc, bad = 0, 0
  for _, t in ipairs(threads) do
    okc = okc + t:get("ok")
    bad = bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format('WRK_RESULT {"requests":%d,"ok":%d,"non_2xx":%d,"duration_s":%.3f,"rps":%.1f,'
    .. '"p50_ms":%.2f,"p90_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f,"mean_ms":%.2f,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, okc, bad, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
