-- The Kafka side of the sink specs: librdkafka's mock cluster as a process
-- of the suite's own (build/test/kafka_mock, spec/fixtures/kafka_mock.c:
-- 3 brokers on loopback, fault injection on its stdin), and topics read
-- back with kcat, an independent client.
local helpers = require "helpers"

local q = helpers.shell_quote

local M = {}

local Mock = {}
Mock.__index = Mock

-- kafka.mock(dir, {"topic:partitions", ...}) -> mock (mock.bootstrap: "host:port,...")
function M.mock(dir, topics)
  local bin = helpers.root .. "/" .. helpers.build .. "/test/kafka_mock"
  local fifo = dir .. "/mock.in"
  assert(os.execute("mkfifo " .. q(fifo)) == 0)
  -- the mock and kcat run without the sanitizer's preload (they are not tide)
  helpers.run("cd " .. q(dir) .. " && (env -u LD_PRELOAD " .. q(bin) .. " " .. table.concat(topics or {}, " ")
    .. " < mock.in > mock.out 2> mock.err & echo $! > mock.pid) >/dev/null 2>&1")
  local self = setmetatable({ dir = dir, answers = 0 }, Mock)
  self.ctl = assert(io.open(fifo, "w")) -- waits for the mock to open its end
  for _ = 1, 200 do
    local out = helpers.read_file(dir .. "/mock.out") or ""
    self.bootstrap = out:match("bootstrap (%S+)")
    if self.bootstrap then break end
    os.execute("sleep 0.05")
  end
  assert(self.bootstrap, "the mock cluster did not start: " .. tostring(helpers.read_file(dir .. "/mock.err")))
  return self
end

-- mock:command("down 1") -> waits for the mock's answer
function Mock:command(line)
  self.ctl:write(line, "\n")
  self.ctl:flush()
  self.answers = self.answers + 1
  for _ = 1, 200 do
    local out = helpers.read_file(self.dir .. "/mock.out") or ""
    local n = select(2, out:gsub("\nok", "")) + select(2, out:gsub("\nerror", ""))
    if n >= self.answers then
      assert(not out:find("\nerror"), "mock: " .. out)
      return
    end
    os.execute("sleep 0.02")
  end
  error("the mock did not answer " .. line)
end

function Mock:stop()
  if self.ctl then
    self.ctl:close() -- end of input: the mock exits
    self.ctl = nil
    helpers.run("p=$(cat " .. q(self.dir .. "/mock.pid") .. " 2>/dev/null); for i in 1 2 3 4 5 6 7 8 9 10; do "
      .. "kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done; kill -9 $p 2>/dev/null")
  end
end

-- kafka.read(bootstrap, topic) -> the topic's messages, each {partition=,
-- offset=, key=, version=, id=} (all partitions, each in offset order)
function M.read(bootstrap, topic)
  -- kcat -e waits for the end of every partition: bounded, for a partition
  -- whose leader is down
  local out, status = helpers.run("env -u LD_PRELOAD timeout 20 kcat -C -b " .. q(bootstrap) .. " -t " .. q(topic)
    .. " -e -q -f '%p %o %k %h\\n' 2>&1")
  assert(status == 0, "kcat: " .. out)
  local msgs = {}
  for line in out:gmatch("[^\n]+") do
    local p, o, k, h = line:match("^(%d+) (%d+) (%S+) (.*)$")
    assert(p, "kcat line: " .. line)
    msgs[#msgs + 1] = { partition = tonumber(p), offset = tonumber(o), key = k,
                        version = tonumber(h:match("tide%-version=(%d+)")), id = h:match("tide%-event%-id=([^,]+)") }
  end
  return msgs
end

-- kafka.check(msgs, expected) -> report
-- expected: {[stream] = last version}. Asserts, per stream: one partition;
-- every message's version at most one past the highest seen before it on
-- the partition (never an event ahead of an earlier one: no gap, in
-- order); every version 1..last present. Returns {messages=, duplicates=}.
function M.check(msgs, expected)
  table.sort(msgs, function(a, b)
    if a.partition ~= b.partition then return a.partition < b.partition end
    return a.offset < b.offset
  end)
  local top, part, dups = {}, {}, 0
  for _, m in ipairs(msgs) do
    assert(expected[m.key], "a message of an unknown stream: " .. tostring(m.key))
    assert(m.id == m.key .. "@" .. m.version, "tide-event-id " .. tostring(m.id))
    part[m.key] = part[m.key] or m.partition
    assert(part[m.key] == m.partition, m.key .. " on two partitions")
    local seen = top[m.key] or 0
    assert(m.version <= seen + 1, ("%s: version %d published after version %d (a gap or out of order)"):format(
      m.key, m.version, seen))
    if m.version <= seen then dups = dups + 1 else top[m.key] = m.version end
  end
  for stream, last in pairs(expected) do
    assert((top[stream] or 0) == last, ("%s: versions up to %d published, expected %d"):format(stream,
      top[stream] or 0, last))
  end
  return { messages = #msgs, duplicates = dups }
end

-- kafka.wait_for(bootstrap, topic, expected, timeout) -> msgs: reads until
-- every stream of expected reached its last version (or timeout seconds).
function M.wait_for(bootstrap, topic, expected, timeout)
  local deadline = os.time() + (timeout or 60)
  local msgs
  repeat
    msgs = M.read(bootstrap, topic)
    local top = {}
    for _, m in ipairs(msgs) do
      if (top[m.key] or 0) < m.version then top[m.key] = m.version end
    end
    local done = true
    for s, last in pairs(expected) do
      if (top[s] or 0) < last then done = false; break end
    end
    if done then return msgs end
    os.execute("sleep 0.2")
  until os.time() > deadline
  return msgs
end

return M
