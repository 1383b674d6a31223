-- tide.sink.kafka: the Kafka publisher of sinks (tide.sink), over
-- librdkafka (tide.engine's kafka producer, runtime/engine/kafka.c),
-- driven by the scheduler's loop: the producer's queue signals a pipe that
-- is in the engine's epoll set (sched.watch) while messages are in flight;
-- one scheduler thread (the pump) serves the delivery reports on the
-- thread that owns the Lua state and wakes the batches they complete. No
-- call blocks; no librdkafka thread touches Lua.
--
--   local p = kafka.new(cfg, {log = log})   -- cfg: the whole configuration (its kafka section)
--   p:publish(name, messages) -> true | nil, err   -- inside sched.run
--   p:status() -> {brokers=, in_flight=, waiting_s=, last_error=, published=, failed=}
--   p:close()
--   kafka.properties(cfg) -> librdkafka properties | nil, err (secrets read here)
--
-- publish produces every message in order and returns when the delivery
-- report of each one succeeded, so the caller's checkpoint after it is the
-- "after delivery" point. The producer is idempotent (no duplicates or
-- reordering from librdkafka's own retries), has no local message timeout
-- (a message waits for the brokers as long as it takes) and keys go to
-- partitions as the Java client puts them (murmur2).
--
-- A batch whose reports have not all come after kafka.wait_ms returns an
-- error (the runner records it, `tide status` and the log show it, and the
-- batch is tried again from the checkpoint); its messages stay queued, and
-- the retried batch waits for them instead of producing them again, so a
-- slow or absent broker costs waiting, not duplicates. A failed report, or
-- a fatal producer error, fails the batch: the runner retries it from the
-- checkpoint (the consumers may then see the batch's first messages twice;
-- never a gap, never a stream's event ahead of an earlier one).
local terror = require "tide.error"
local metrics = require "tide.metrics"
local clock = require "tide.clock"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring

local M = {}

local function config_error(message)
  return terror.new{ kind = "invalid", type = "ConfigError", message = message, retryable = false }
end

local function getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

-- The secret a reference names ("env:NAME" | "file:PATH") | nil, err
-- (the error names the reference, never the value).
local function read_secret(ref, what)
  local var = ref:match("^env:(.+)$")
  if var then
    local v = getenv(var)
    if not v then return nil, config_error(what .. " names the environment variable " .. var .. ", which is not set") end
    return v
  end
  local path = ref:match("^file:(.+)$")
  local f, err = io.open(path, "rb")
  if not f then return nil, config_error(what .. " names the file " .. path .. ", which cannot be read: "
    .. tostring(err)) end
  local v = f:read("*a") or ""
  f:close()
  v = v:gsub("[\r\n]+$", "")
  if v == "" then return nil, config_error(what .. " names the file " .. path .. ", which is empty") end
  return v
end

-- kafka.properties(cfg) -> props (librdkafka name -> value), brokers | nil, err
function M.properties(cfg)
  local k = cfg.kafka or {}
  local props = {}
  local brokers = k.brokers or getenv("KAFKA_BOOTSTRAP_SERVERS")
  if not brokers then
    return nil, config_error("a sink publishes to Kafka but no brokers are set: set kafka.brokers in tide.yaml "
      .. "or KAFKA_BOOTSTRAP_SERVERS (host:port,host:port)")
  end
  props["bootstrap.servers"] = brokers
  props["client.id"] = k.client_id or getenv("KAFKA_CLIENT_ID") or "tide"
  local sasl, ssl = k.sasl or {}, k.ssl or {}
  local use_sasl = sasl.mechanism ~= nil
  if use_sasl then
    if not sasl.username or not sasl.password then
      return nil, config_error("kafka.sasl.mechanism is set: kafka.sasl.username and kafka.sasl.password "
        .. "(\"env:VARIABLE\" or \"file:/path\") are needed too")
    end
    local pw, err = read_secret(sasl.password, "kafka.sasl.password")
    if not pw then return nil, err end
    props["sasl.mechanism"] = sasl.mechanism
    props["sasl.username"] = sasl.username
    props["sasl.password"] = pw
  end
  local use_ssl = ssl.enabled
  if use_ssl == nil then use_ssl = use_sasl or ssl.ca ~= nil end
  if ssl.ca then props["ssl.ca.location"] = ssl.ca end
  props["security.protocol"] = (use_sasl and "sasl_" or "") .. (use_ssl and "ssl" or "plaintext")
  for name, v in pairs(k.properties or {}) do props[name] = v end
  return props, brokers
end

------------------------------------------------------------------------

local Publisher = {}
Publisher.__index = Publisher

function M.new(cfg, opts)
  local props, brokers = M.properties(cfg)
  if not props then return nil, brokers end
  local self = setmetatable({
    props = props, brokers = brokers,
    wait_s = ((cfg.kafka and cfg.kafka.wait_ms) or 30000) / 1000,
    log = opts and opts.log or require("tide.log").default,
    batches = {},       -- token -> batch
    inflight = {},      -- "<projection>\0<topic>\0<event id>" -> the batch that produced it
    recent = {}, nrecent = 0, -- ids delivered after their publisher gave up waiting
    pending = 0,        -- messages produced, not yet reported
    token = 0,
    published = 0, failed = 0,
  }, Publisher)
  local ok, err = self:open()
  if not ok then return nil, err end
  return self
end

-- (Re)creates the producer (after a fatal error).
function Publisher:open()
  local engine = require "tide.engine"
  local p, err = engine.kafka(self.props)
  if not p then
    return nil, config_error(tostring(err))
  end
  self.producer, self.fd, self.fatal = p, p:fd(), nil
  return true
end

local function note(self, level, message, fields, key)
  -- one line per kind of message per 10 s: a broker down repeats itself
  local now = clock.mono()
  key = key or message
  self.said = self.said or {}
  local last = self.said[key]
  if last and now - last < 10 then return end
  self.said[key] = now
  self.log(level, message, fields)
end

-- Ends a batch: wakes its publisher.
local function finish(self, b)
  if b.done then return end
  b.done = true
  self.batches[b.token] = nil
  local keep = b.abandoned and not b.error
  for id in pairs(b.ids) do
    if self.inflight[id] == b then self.inflight[id] = nil end
    -- delivered after its publisher gave up waiting: the retried batch
    -- takes it as published instead of publishing it again
    if keep then
      if self.nrecent >= 100000 then self.recent, self.nrecent = {}, 0 end
      self.recent[id] = true
      self.nrecent = self.nrecent + 1
    end
  end
  if b.thread then require("tide.sched").wakeup(b.thread) end
end

-- Serves the producer's queue: delivery reports, errors, logs.
function Publisher:serve()
  local delivered, failed, events = self.producer:poll()
  for token, n in pairs(delivered) do
    self.pending = self.pending - n
    self.published = self.published + n
    local b = self.batches[token]
    if b then
      b.left = b.left - n
      metrics.sink_published(b.name, n)
      if b.left <= 0 then finish(self, b) end
    end
  end
  for _, f in ipairs(failed) do
    self.pending = self.pending - 1
    self.failed = self.failed + 1
    local b = self.batches[f.token]
    if b then
      metrics.sink_failed(b.name, 1)
      b.left = b.left - 1
      b.error = b.error or (f.code .. ": " .. f.message)
      if b.left <= 0 then finish(self, b) end
    end
  end
  for _, e in ipairs(events) do
    if e.kind == "error" then
      self.last_error = e.code .. ": " .. e.message
      if e.fatal then self.fatal = self.last_error end
      note(self, e.fatal and "error" or "warn", "kafka: " .. self.last_error, { brokers = self.brokers },
        e.code .. (e.message:match("^(%S+)") or ""))
    elseif e.code ~= "FAIL" then -- FAIL lines repeat what the error callback says
      -- CONFWARN: tide's own defaults include an experimental property
      -- (enable.gapless.guarantee), which librdkafka mentions at each start
      note(self, e.code == "CONFWARN" and "debug" or "warn", "kafka: " .. e.code .. ": " .. e.message,
        { brokers = self.brokers }, e.code)
    end
  end
  if self.fatal then
    -- nothing more can be delivered by this producer: fail what waits on it
    for _, b in pairs(self.batches) do
      b.error = b.error or ("the producer failed: " .. self.fatal)
      finish(self, b)
    end
    self.batches, self.inflight, self.pending = {}, {}, 0
    require("tide.sched").unwatch(self.fd) -- before the descriptor is closed
    self.producer:close()
    self.producer = nil
  end
end

-- True while a batch's publisher waits for its reports.
local function awaited(self)
  for _, b in pairs(self.batches) do
    if b.thread then return true end
  end
  return false
end

-- The pump: runs while messages are in flight and someone waits for them,
-- in its own scheduler thread, with the producer's descriptor in the
-- engine's epoll set. Reports that come while no one waits (a batch that
-- gave up waiting, its runner stopping) are served by the next pump: the
-- loop is never kept alive for them, so `tide project` and a stopping
-- `tide run` end even while the brokers are away.
function Publisher:pump()
  local sched = require "tide.sched"
  local fd, producer = self.fd, self.producer
  local watched = sched.watch(fd)
  while self.pending > 0 and self.producer == producer and awaited(self) do
    sched.wait_readable(fd, 1)
    if self.producer ~= producer then break end
    self:serve()
    metrics.sink_in_flight(self.pending)
    local now = clock.mono()
    for _, b in pairs(self.batches) do
      if b.thread and b.deadline and now >= b.deadline then sched.wakeup(b.thread) end
    end
  end
  if watched then sched.unwatch(fd) end
  self.pumping = nil
end

local function ensure_pump(self)
  if not self.pumping and self.pending > 0 then
    local sched = require "tide.sched"
    self.pumping = true
    sched.spawn(self.pump, self)
  end
end

local function kafka_error(etype, message, name, retryable)
  return terror.new{ kind = "store", type = etype, message = message, projection = name,
                     retryable = retryable ~= false }
end

-- p:publish(name, messages) -> true | nil, err
-- messages: {topic=, key=, value=, headers = flat list, id=} in order.
function Publisher:publish(name, msgs)
  local sched = require "tide.sched"
  if not sched.running() then error("tide.sink.kafka: publish runs inside sched.run (the tide process)", 2) end
  if not self.producer then
    local ok, err = self:open()
    if not ok then return nil, err end
  end
  self.token = self.token + 1
  local b = { token = self.token, name = name, left = 0, ids = {}, deps = {}, t0 = clock.mono() }
  self.batches[b.token] = b
  local producer = self.producer
  for i = 1, #msgs do
    local m = msgs[i]
    local id = name .. "\0" .. m.topic .. "\0" .. m.id
    local prev = self.inflight[id]
    if self.recent[id] then
      self.recent[id] = nil -- delivered already, once: counted as this batch's
    elseif prev and not prev.done then
      -- still queued from an attempt that gave up waiting: wait for it
      -- rather than publish it again
      b.deps[prev] = true
    else
      while true do
        local ok, err = producer:produce(m.topic, m.key, m.value, m.headers, b.token)
        if ok then break end
        if err ~= "full" then
          b.error = err
          break
        end
        -- the local queue is full: let deliveries drain it (memory stays bounded)
        self:serve()
        metrics.sink_in_flight(self.pending)
        note(self, "warn", "kafka: the producer's queue is full; waiting for deliveries", { projection = name },
          "full")
        sched.sleep(0.01)
        if self.producer ~= producer then
          b.error = "the producer failed: " .. tostring(self.fatal)
          break
        end
      end
      if b.error then break end
      b.left = b.left + 1
      self.pending = self.pending + 1
      self.inflight[id] = b
      b.ids[id] = true
    end
  end
  metrics.sink_in_flight(self.pending)
  if b.left == 0 then finish(self, b) end
  -- wait for our reports, then for those of the earlier attempts we adopted
  local deadline = clock.mono() + self.wait_s
  local function wait_for(x)
    while not x.done do
      if clock.mono() >= deadline then return false end
      x.thread, x.deadline = sched.current(), deadline
      ensure_pump(self)
      sched.suspend() -- woken by finish, or by the pump at the deadline
      x.thread = nil
    end
    return true
  end
  local all = wait_for(b)
  for dep in pairs(b.deps) do
    if not all then break end
    all = wait_for(dep)
    if all and dep.error then b.error = b.error or dep.error end
  end
  if not all then
    b.abandoned = true
    for dep in pairs(b.deps) do dep.abandoned = true end
    local why = self.last_error and (": last client error: " .. self.last_error) or ""
    local msg = ("waiting for Kafka: %d message(s) of %s not delivered after %g s (they stay queued; the batch "
      .. "is tried again)%s"):format(self.pending, name, self.wait_s, why)
    note(self, "warn", "kafka: " .. msg, { projection = name, brokers = self.brokers }, "wait " .. name)
    return nil, kafka_error("KafkaWait", msg, name)
  end
  metrics.sink_publish_duration(name, clock.mono() - b.t0)
  if b.error then
    return nil, kafka_error("KafkaDelivery", "publishing to Kafka failed: " .. b.error, name)
  end
  return true
end

function Publisher:status()
  local oldest
  for _, b in pairs(self.batches) do
    if not oldest or b.t0 < oldest then oldest = b.t0 end
  end
  return { kind = "kafka", brokers = self.brokers, in_flight = self.pending,
           waiting_s = oldest and (clock.mono() - oldest) or 0, last_error = self.last_error,
           published = self.published, failed = self.failed }
end

function Publisher:close()
  self.closed = true
  if self.producer then
    self.producer:close()
    self.producer = nil
  end
end

return M
