-- Decode cost of tide.core's DynamoDB JSON codec on two realistic bodies,
-- built here (no files needed):
--
--   * a GetItem response holding the ~1 KB item of bench/client_cpu.lua
--     (pk, seq, kind, active, created_at, meta{source, version}, a 900-byte
--     payload): about 1.1 KB of JSON;
--   * a Streams GetRecords response of 1000 INSERT records shaped like
--     DynamoDB Local's for the events table (envelope, Keys, NewImage with
--     stream, version, type and data/meta JSON text): about 560 KB.
--
-- Also item_size of the 1 KB item and decode_value of one AttributeValue;
-- core.decode_stream_records of the GetRecords page and of an empty one (an
-- idle stream); and the per-call fixed cost on small values: decode_value
-- of a small event payload (what the projection runner decodes once per
-- event) next to lua-cjson's cjson.decode of the same text, and
-- encode_request of a small GetItem.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/lua/?.so;;' luajit bench/decode.lua [SECONDS]
--
-- Each figure is the median of 7 timed windows of ~SECONDS/7 each (default
-- 2 s in all per figure), after a warm-up; wall clock time on one core.
local core = require "tide.core"
local budget = tonumber(arg and arg[1]) or 2

local clock = os.clock
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    pcall(ffi.cdef, [[
      typedef struct { long tv_sec; long tv_nsec; } tide_bench_timespec;
      int clock_gettime(int clk, tide_bench_timespec *ts);
    ]])
    local ts = ffi.new("tide_bench_timespec")
    clock = function()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
    end
  end
end

------------------------------------------------------------------------
-- The bodies.

local PAYLOAD = string.rep("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 15):sub(1, 900)
local item = {
  pk = "bench#000042", seq = 42, kind = "bench-item", active = true,
  created_at = "2024-05-01T12:00:00Z",
  meta = { source = "client_cpu", version = 3 },
  payload = PAYLOAD,
}
local getitem = assert(core.encode_request { Item = item })

local TYPES = { "Opened", "Deposited", "Deposited", "Withdrawn", "Deposited" }
local function record(i)
  local acct = string.format("account#b%05d", i % 97)
  local version = math.floor(i / 97) + 1
  local typ = TYPES[i % #TYPES + 1]
  local data = typ == "Opened"
    and string.format('{\\"M\\":{\\"owner\\":{\\"S\\":\\"owner-%d\\"}}}', i % 97)
    or string.format('{\\"M\\":{\\"amount\\":{\\"N\\":\\"%d\\"}}}', i % 500 + 1)
  local meta = string.format('{\\"command_id\\":\\"b%05d-%d\\",\\"schema\\":1,\\"timestamp\\":0}', i % 97, version)
  return string.format(
    '{"eventID":"%08x-2e57-45a7-9820-%012x","eventName":"INSERT","eventVersion":"1.1",'
    .. '"eventSource":"aws:dynamodb","awsRegion":"ddblocal","dynamodb":{'
    .. '"ApproximateCreationDateTime":1795321020.000,'
    .. '"Keys":{"stream":{"S":"%s"},"version":{"N":"%d"}},'
    .. '"NewImage":{"data":{"S":"%s"},"stream":{"S":"%s"},"meta":{"S":"%s"},'
    .. '"type":{"S":"%s"},"version":{"N":"%d"}},'
    .. '"SequenceNumber":"%021d","SizeBytes":%d,"StreamViewType":"NEW_IMAGE"}}',
    i * 7919, i * 104729, acct, version, data, acct, meta, typ, version, i + 1, 150 + i % 9)
end
local recs = {}
for i = 1, 1000 do recs[i] = record(i) end
local getrecords = '{"Records":[' .. table.concat(recs, ",")
  .. '],"NextShardIterator":"000|arn:aws:dynamodb:ddblocal:000000000000:table/events/stream/'
  .. '2026-11-22T04:00:00.000|c2hhcmRJZC0wMDAwMDAwMTc5NTMyMTAyMDAwMC1hYmNkZWYxMnwwMDAwMDAwMDAwMDAwMDAwMDEwMDE="}'
local one_av = assert(core.encode_value(item))

-- Sanity: the bodies decode to what they should.
do
  local r = assert(core.decode_response(getitem))
  assert(r.Item.payload == PAYLOAD and r.Item.meta.version == 3 and r.Item.active == true)
  local g = assert(core.decode_response(getrecords))
  assert(#g.Records == 1000 and g.Records[1000].dynamodb.NewImage.version == math.floor(1000 / 97) + 1)
  assert(g.Records[1].dynamodb.Keys.stream == "account#b00001")
  assert(g.Records[1].dynamodb.ApproximateCreationDateTime == 1795321020)
  local s = assert(core.decode_stream_records(getrecords))
  assert(s.records == 1000 and #s.events == 1000 and s.events[1000].version == math.floor(1000 / 97) + 1)
end

-- The small ones: one event's data (as the stream and the events table
-- hold it) and a GetItem request by key.
local SMALL_EVENT = '{"M":{"amount":{"N":"5"}}}'
assert(core.decode_value(SMALL_EVENT).amount == 5)
local small_get = { TableName = "events", Key = { stream = "account#a1", version = 7 },
                    ConsistentRead = true }
assert(core.encode_request(small_get))
local has_cjson, cjson = pcall(require, "cjson")

------------------------------------------------------------------------
-- Timing.

local function measure(fn)
  -- calibrate: iterations per window of ~budget/7 s
  local n, t = 1, 0
  repeat
    local t0 = clock()
    for _ = 1, n do fn() end
    t = clock() - t0
    if t < 0.02 then n = n * 2 end
  until t >= 0.02
  local per_window = math.max(1, math.floor(n * (budget / 7) / t))
  for _ = 1, per_window do fn() end -- warm-up
  local samples = {}
  for w = 1, 7 do
    collectgarbage()
    local t0 = clock()
    for _ = 1, per_window do fn() end
    samples[w] = (clock() - t0) / per_window
  end
  table.sort(samples)
  return samples[4], per_window
end

local function row(name, bytes, fn)
  local s, n = measure(fn)
  local us = s * 1e6
  local mbps = bytes and string.format("%8.1f MB/s", bytes / s / 1e6) or string.rep(" ", 13)
  print(string.format("%-44s %9.2f us  %s  (%d bytes, %d calls/window)", name, us, mbps, bytes or 0, n))
end

print(string.format("tide.core decode bench (%s, median of 7 windows)", jit and jit.version or _VERSION))
row("decode_response GetItem (1 KB item)", #getitem, function() return core.decode_response(getitem) end)
row("decode_response GetRecords (1000 records)", #getrecords, function() return core.decode_response(getrecords) end)
row("decode_value (the 1 KB item as one M)", #one_av, function() return core.decode_value(one_av) end)
row("item_size (the 1 KB item)", nil, function() return core.item_size(item) end)
row("encode_request PutItem (the 1 KB item)", nil, function() return core.encode_request { TableName = "t", Item = item } end)
row("decode_stream_records (1000 records)", #getrecords, function() return core.decode_stream_records(getrecords) end)
local empty_page = '{"Records":[],"NextShardIterator":"000|arn:aws:dynamodb:ddblocal:000000000000:table/events/stream/x|abc"}'
row("decode_stream_records (an empty page)", #empty_page, function() return core.decode_stream_records(empty_page) end)
row("decode_value (small event payload)", #SMALL_EVENT, function() return core.decode_value(SMALL_EVENT) end)
if has_cjson then
  row("cjson.decode (the same small text)", #SMALL_EVENT, function() return cjson.decode(SMALL_EVENT) end)
end
row("encode_request GetItem (small)", nil, function() return core.encode_request(small_get) end)
