-- tide.stream: stream names, and the decoding of stored events, for the
-- command side (tide.repository) and the read side (tide.projector, the
-- runners) alike.
--
--   stream.of("account", "a1")          -> "account#a1"
--   stream.split("account#a1")          -> "account", "a1"  (no '#': name, "")
--   stream.decode_payload(agg, type, data, meta) -> data, meta | nil, message
--   stream.decode_event(agg, stored)    -> {version=, type=, data=, meta=} | nil, message
--   stream.decode(row [, aggregates])   -> {stream=, aggregate=, id=, version=, type=,
--                                           data=, meta=, position=} | nil, message
--   stream.upcast(aggregates, aggregate, type, data, meta) -> data | nil, message
--
-- A stored event's data is AttributeValue JSON text (lossless: 38-digit
-- numbers, binary, sets), its meta plain JSON text; agg (an aggregate from
-- the registry, optional) upcasts the data to the aggregate's current
-- schema. The C side (runtime/core/lua_stream_records.c) splits the names
-- of Streams records itself, on the same rule: the first '#' ends the
-- aggregate's name.
local core = require "tide.core"
local cjson = require "cjson.safe"

local type, tostring, error = type, tostring, error
local decode_value = core.decode_value

local M = {}

function M.of(aggregate, id)
  return aggregate .. "#" .. id
end

function M.split(name)
  local agg, id = name:match("^([^#]*)#(.*)$")
  if not agg then return name, "" end
  return agg, id
end

-- Stored data and meta text (or meta already decoded) -> data, meta (data
-- upcast by agg when given) | nil, message.
function M.decode_payload(agg, etype, data_text, meta_text)
  local data, err = decode_value(data_text)
  if data == nil then return nil, "event data is not valid: " .. tostring(err) end
  local meta = meta_text or {}
  if type(meta) == "string" then meta = cjson.decode(meta) end
  if type(meta) ~= "table" then return nil, "event meta is not a JSON object" end
  if agg then
    local stored_schema = meta.schema or 1
    local up, uerr = agg:upcast(etype, data, stored_schema)
    if not up then return nil, uerr end
    data = up
    local now = agg.schema_version and agg:schema_version(etype)
    if now and now ~= stored_schema then
      -- the meta describes the data shown: the upcast schema, and the
      -- one stored (`tide events --stored` shows the stored form)
      local m = {}
      for k, v in pairs(meta) do m[k] = v end
      m.schema, m.stored_schema = now, stored_schema
      meta = m
    end
  end
  return data, meta
end
local decode_payload = M.decode_payload

-- Data decoded as stored, upcast by its aggregate's module when the
-- registry aggregates (optional) has one -> data | nil, message.
function M.upcast(aggregates, agg_name, etype, data, meta)
  local agg = aggregates and agg_name and aggregates:get(agg_name)
  if not agg then return data end
  return agg:upcast(etype, data, meta and meta.schema or 1)
end

-- A stored event of the store interface {version=, type=, data=, meta=}
-- -> the event with data and meta decoded (and upcast by agg) | nil, message.
function M.decode_event(agg, stored)
  local data, meta = decode_payload(agg, stored.type, stored.data, stored.meta)
  if data == nil then return nil, meta end
  return { version = stored.version, type = stored.type, data = data, meta = meta }
end

-- A stored row -> the projector's event shape.
--   row: {stream=, version=, type=, data=<AV JSON text | table>, meta=<JSON text | table>}
--        (aggregate= and id= are derived from the stream when absent;
--        position= is kept; as_stored = true: data is a decoded table not
--        upcast yet)
--   aggregates: an aggregate registry (optional): data is upcast by the
--   aggregate's module when it loads
function M.decode(row, aggregates)
  if type(row) ~= "table" or type(row.stream) ~= "string" or type(row.version) ~= "number"
      or type(row.type) ~= "string" then
    error("stream.decode: row must be a table with stream, version and type", 2)
  end
  local agg_name, id = row.aggregate, row.id
  if agg_name == nil or id == nil then
    local a, i = M.split(row.stream)
    agg_name, id = agg_name or a, id or i
  end
  local data, meta = row.data, row.meta
  if type(data) == "string" or data == nil then
    local agg
    if aggregates then agg = aggregates:get(agg_name) or nil end
    local decoded, dmeta = decode_payload(agg, row.type, data or '{"M":{}}', meta)
    if decoded == nil then return nil, dmeta end
    data, meta = decoded, dmeta
  else
    if type(meta) == "string" then
      meta = cjson.decode(meta)
      if type(meta) ~= "table" then return nil, "event meta is not a JSON object" end
    end
    if row.as_stored then
      local up, uerr = M.upcast(aggregates, agg_name, row.type, data, meta)
      if not up then return nil, uerr end
      data = up
    end
  end
  return { stream = row.stream, aggregate = agg_name, id = id,
           version = row.version, type = row.type, data = data, meta = meta or {},
           position = row.position }
end

return M
