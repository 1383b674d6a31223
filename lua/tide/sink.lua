-- tide.sink: sinks, projections whose effect is publishing
-- (docs/projections.md, "Sinks").
--
-- A sink module is a projection module with `sink` instead of tables and
-- handlers:
--
--   local account_events = {}
--   account_events.subscribe = { aggregates = { "account" } }
--   account_events.sink = { kind = "kafka", topic = "account-events" }
--   -- optional: what to publish for an event; nil or false skips it, a
--   -- list publishes several messages
--   function account_events.publish(event)
--     return { key = event.stream, value = { ... }, headers = { ["x-tenant"] = "..." } }
--   end
--   return account_events
--
-- A message's fields not given take the defaults: topic = sink.topic,
-- key = the stream id, value = the event as JSON {"stream", "version",
-- "type", "data", "meta"} (a table value is encoded as JSON), headers
-- tide-stream, tide-version, tide-type, tide-event-id ("<stream>@<version>"),
-- tide-correlation-id (headers the module gives are added, and win).
--
-- The runners feed a sink as any projection (tide.projector): each batch
-- keeps the per-stream order, fills gaps, skips what the stream's position
-- says was published, and the sink's part is M.publish: render the batch's
-- messages in order, hand them to the publisher of the sink's kind and
-- return only when every delivery report succeeded. The runner's
-- checkpoint after the batch is then the "after delivery" point.
--
-- A publisher (one per kind per process, made on first use from the
-- configuration given to M.configure) has
--   publisher:publish(name, messages) -> true | nil, err   (waits in the loop)
--   publisher:status() -> {in_flight=, waiting_s=, last_error=, ...}
-- so that another kind (SNS/SQS FIFO, Kinesis, EventBridge) is one module
-- with new(cfg, opts) and those two methods, named in M.KINDS.
local core = require "tide.core"
local terror = require "tide.error"
local budget = require "tide.budget"
local suggest = require("tide.suggest").closest_key

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring

local M = {}

-- kind -> the module that publishes it
M.KINDS = { kafka = "tide.sink.kafka" }

------------------------------------------------------------------------
-- The contract

local SINK_FIELDS = { kind = true, topic = true }
local MODULE_FIELDS = { subscribe = true, sink = true, publish = true, description = true }

-- A Kafka topic name: 1..249 of letters, digits, '.', '_', '-'.
local function topic_error(t)
  if type(t) ~= "string" or t == "" or #t > 249 or not t:match("^[%w%._%-]+$") or t == "." or t == ".." then
    return "a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'"
  end
end
M.topic_error = topic_error

-- sink.check(mod, name, path) -> spec {kind=, topic=} | nil, message
-- (called by tide.projection for a module with `sink`).
function M.check(mod, name, path)
  local function fail(fmt, ...) return nil, path .. ": " .. string.format(fmt, ...) end
  local s = mod.sink
  if type(s) ~= "table" then
    return fail("`sink` must be a table { kind = \"kafka\", topic = \"...\" }, got %s", type(s))
  end
  for k in pairs(s) do
    if not SINK_FIELDS[k] then
      local hint = type(k) == "string" and suggest(k, SINK_FIELDS)
      return fail("sink.%s is not a sink field%s; use `kind` and `topic`", tostring(k),
        hint and (" (did you mean `" .. hint .. "`?)") or "")
    end
  end
  if not M.KINDS[s.kind] then
    local kinds = {}
    for k in pairs(M.KINDS) do kinds[#kinds + 1] = "\"" .. k .. "\"" end
    table.sort(kinds)
    return fail("sink.kind must be one of %s, got %s", table.concat(kinds, ", "), tostring(s.kind))
  end
  local terr = topic_error(s.topic)
  if terr then return fail("sink.topic must be %s, got %s", terr, tostring(s.topic)) end
  if mod.publish ~= nil and type(mod.publish) ~= "function" then
    return fail("`publish` must be a function(event) returning a message, a list of them, or nil to skip; got %s",
      type(mod.publish))
  end
  for _, k in ipairs{ "tables", "handlers", "handle", "prefetch", "before_batch", "after_batch" } do
    if mod[k] ~= nil then
      return fail("`%s` is a read-model projection's field: a sink publishes (define `publish(event)` to shape "
        .. "its messages), it writes no tables", k)
    end
  end
  for k in pairs(mod) do
    if type(k) == "string" and not MODULE_FIELDS[k] and not k:match("^_") then
      local hint = suggest(k, MODULE_FIELDS)
      if hint then return fail("`%s` is not a sink field (did you mean `%s`?)", k, hint) end
    end
  end
  return { kind = s.kind, topic = s.topic }
end

------------------------------------------------------------------------
-- Messages

local json_encode = core.json_encode

-- The event's id for deduplication: "<stream>@<version>".
local function event_id(ev)
  return ev.stream .. "@" .. tostring(ev.version)
end
M.event_id = event_id

-- The default value: the event as JSON.
local function default_value(ev)
  local text, err = json_encode{ stream = ev.stream, version = ev.version, type = ev.type, data = ev.data,
                                 meta = ev.meta }
  if not text then return nil, err end
  return text
end

-- The default headers, as a flat list {name, value, ...}.
local function default_headers(ev)
  local meta = ev.meta
  local h = { "tide-stream", ev.stream, "tide-version", tostring(ev.version), "tide-type", ev.type,
              "tide-event-id", event_id(ev) }
  local corr = type(meta) == "table" and meta.correlation_id
  if corr ~= nil then
    h[#h + 1] = "tide-correlation-id"
    h[#h + 1] = tostring(corr)
  end
  return h
end

-- A message from what publish returned (m: nil for the defaults) ->
-- {topic=, key=, value=, headers = flat list, id = event id} | nil, message
local function message(spec, ev, m)
  local topic, key, value, extra = spec.topic, ev.stream, nil, nil
  if m ~= nil then
    if m.topic ~= nil then
      local terr = topic_error(m.topic)
      if terr then return nil, "message.topic must be " .. terr .. ", got " .. tostring(m.topic) end
      topic = m.topic
    end
    if m.key ~= nil then
      if type(m.key) ~= "string" then return nil, "message.key must be a string, got " .. type(m.key) end
      key = m.key
    end
    if m.value ~= nil then
      if type(m.value) == "table" then
        local text, err = json_encode(m.value)
        if not text then return nil, "message.value cannot be encoded as JSON: " .. tostring(err) end
        value = text
      elseif type(m.value) == "string" then
        value = m.value
      else
        return nil, "message.value must be a string or a table (sent as JSON), got " .. type(m.value)
      end
    end
    if m.headers ~= nil then
      if type(m.headers) ~= "table" then return nil, "message.headers must be a table of name = string" end
      extra = m.headers
    end
    for k in pairs(m) do
      if k ~= "topic" and k ~= "key" and k ~= "value" and k ~= "headers" then
        return nil, "message." .. tostring(k) .. " is not a message field (topic, key, value, headers)"
      end
    end
  end
  if value == nil then
    local err
    value, err = default_value(ev)
    if not value then return nil, "the event cannot be encoded as JSON: " .. tostring(err) end
  end
  local headers = default_headers(ev)
  if extra then
    local names = {}
    for k, v in pairs(extra) do
      if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
        return nil, "message.headers must map names to strings, found " .. tostring(k) .. " = " .. type(v)
      end
      names[#names + 1] = k
    end
    table.sort(names)
    for _, k in ipairs(names) do
      local replaced = false
      for i = 1, #headers, 2 do
        if headers[i] == k then headers[i + 1], replaced = tostring(extra[k]), true end
      end
      if not replaced then
        headers[#headers + 1] = k
        headers[#headers + 1] = tostring(extra[k])
      end
    end
  end
  return { topic = topic, key = key, value = value, headers = headers, id = event_id(ev) }
end
M.message = message

------------------------------------------------------------------------
-- Publishers

local settings = { cfg = nil, log = nil }
local publishers = {}

-- sink.configure(cfg, log): the configuration publishers are made from
-- (tide.open calls it); a publisher already made keeps its own.
function M.configure(cfg, log)
  settings.cfg, settings.log = cfg, log
end

-- sink.publisher(kind) -> publisher | nil, err
function M.publisher(kind)
  local p = publishers[kind]
  if p and not p.closed then return p end
  local modname = M.KINDS[kind]
  if not modname then
    return nil, terror.new{ kind = "invalid", type = "ConfigError", message = "unknown sink kind " .. tostring(kind) }
  end
  local cfg = settings.cfg or require("tide.config").from_table({}, "defaults")
  local err
  p, err = require(modname).new(cfg, { log = settings.log })
  if not p then return nil, err end
  publishers[kind] = p
  return p
end

-- sink.status() -> {[kind] = publisher:status()} for the publishers made
function M.status()
  local out = {}
  for kind, p in pairs(publishers) do
    if not p.closed then out[kind] = p:status() end
  end
  return out
end

-- sink.close(): closes every publisher (what was not delivered is dropped:
-- the checkpoints did not move past it)
function M.close()
  for kind, p in pairs(publishers) do
    p:close()
    publishers[kind] = nil
  end
end

------------------------------------------------------------------------
-- A batch (tide.projector calls this for a sink)

local function user_traceback(e) return require("tide.sandbox").traceback(e) end

-- sink.publish(proj, events, new_error) -> published count | nil, err
-- events: the batch's decoded events that the sink subscribes to, in the
-- order to publish. new_error: the projector's error constructor.
function M.publish(proj, events, new_error)
  local spec, mod, name = proj.sink, proj.module, proj.name
  local msgs = {}
  local fn = mod.publish
  local what = name .. ".publish"
  for i = 1, #events do
    local ev = events[i]
    local out
    if fn then
      local ok, r = budget.call(what, user_traceback, fn, ev)
      if not ok then
        return nil, new_error("handler_error", what .. " raised: " .. tostring(r), { projection = name, event = ev })
      end
      out = r
    else
      out = true
    end
    if out == true then
      local m, merr = message(spec, ev, nil)
      if not m then return nil, new_error("invalid_event", merr, { projection = name, event = ev }) end
      msgs[#msgs + 1] = m
    elseif out then
      if type(out) ~= "table" then
        return nil, new_error("handler_error", what .. " must return a message table, a list of them, or nil; got "
          .. type(out), { projection = name, event = ev })
      end
      local list = out[1] ~= nil and out or { out }
      for _, x in ipairs(list) do
        if type(x) ~= "table" then
          return nil, new_error("handler_error", what .. " returned a list holding a " .. type(x)
            .. " (messages are tables)", { projection = name, event = ev })
        end
        local m, merr = message(spec, ev, x)
        if not m then
          return nil, new_error("handler_error", what .. ": " .. merr, { projection = name, event = ev })
        end
        msgs[#msgs + 1] = m
      end
    end
  end
  if #msgs == 0 then return 0 end
  local p, perr = M.publisher(spec.kind)
  if not p then return nil, perr end
  local ok, err = p:publish(name, msgs)
  if not ok then return nil, err end
  return #msgs
end

return M
