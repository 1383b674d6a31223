-- The recording calls of tide.metrics on their own (bench/metrics_cost.sh
-- prints these next to the whole-command figures): ns per call of what a
-- command and a DynamoDB request add, and the time to render a page.
--   build/tide script bench/metrics_calls.lua [N]
local metrics = require "tide.metrics"
local clock = require "tide.clock"
local n = tonumber(arg and arg[1]) or 2000000
metrics.enabled = true
local aggs = { "account", "ledger", "order" }
local cmds = { "Open", "Deposit", "Withdraw", "Close" }
local outs = { "ok", "ok", "ok", "rejected", "conflict" }
local ops = { "PutItem", "Query", "GetItem", "TransactWriteItems" }
local function per_call(fn)
  local t0 = os.clock()
  fn()
  return (os.clock() - t0) * 1e9 / n
end
-- label values rotate, so that no lookup is hoisted out of the loop
local c = per_call(function()
  for i = 1, n do
    metrics.command(aggs[i % 3 + 1], cmds[i % 4 + 1], outs[i % 5 + 1], (i % 100) * 0.0001)
  end
end)
local d = per_call(function()
  local mono = clock.mono
  for i = 1, n do metrics.dynamodb_result(ops[i % 4 + 1], mono(), {}) end
end)
local base = per_call(function()
  local mono = clock.mono
  local x = 0
  for i = 1, n do x = x + mono() end
  return x
end)
local pages, t0 = 2000, os.clock()
local page
for _ = 1, pages do page = metrics.render() end
local r = (os.clock() - t0) * 1e6 / pages
print(("metrics.command (a command's outcome and duration): %6.0f ns per call"):format(c))
print(("metrics.dynamodb_result (a request), clock read included: %6.0f ns per call (the clock read alone: %.0f ns)")
  :format(d, base))
print(("metrics.render (a /metrics page of %d bytes, %d series): %6.0f us per page"):format(#page,
  select(2, page:gsub("\n[^#]", "")), r))
