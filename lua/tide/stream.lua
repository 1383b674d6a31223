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
--   stream.encode_data(value, format) -> text | nil, message
--   stream.decode_data(text, format)  -> value | nil, message
--
-- A stored event's data is JSON text in its store's format (store.data_format):
--   "av" (DynamoDB; the default): AttributeValue JSON, {"M":{"amount":{"N":"5"}}}
--     (lossless: 38-digit numbers, binary, sets, lists vs maps);
--   "json" (SQLite): plain JSON, {"amount":5}, readable by SQLite's JSON
--     functions, numbers written and read exactly (tide.numbers kept as
--     their decimal text); a value with binary or sets, which plain JSON
--     cannot hold, is written as ["av",<its AttributeValue JSON>] (a
--     top-level array: data and items are always objects, so it is never
--     mistaken for one).
-- Rows carry their format as row.format (absent: "av"). Meta is plain
-- JSON text in both. agg (an aggregate from the registry, optional)
-- upcasts the data to the aggregate's current schema. The C side (runtime/core/lua_stream_records.c) splits the names
-- of Streams records itself, on the same rule: the first '#' ends the
-- aggregate's name.
local core = require "tide.core"
local cjson = require "cjson.safe"

local type, tostring, error = type, tostring, error
local decode_value, decode_json, encode_value, json_encode =
  core.decode_value, core.decode_json, core.encode_value, core.json_encode

local M = {}

local AV_MARK = '["av",'

function M.encode_data(value, format)
  if format ~= "json" then return encode_value(value) end
  local text = json_encode(value)
  if text then return text end
  local av, err = encode_value(value)
  if not av then return nil, err end
  return AV_MARK .. av .. "]"
end
local encode_data = M.encode_data

function M.decode_data(text, format)
  if format ~= "json" then return decode_value(text) end
  if text:sub(1, 6) == AV_MARK then return decode_value(text:sub(7, -2)) end
  return decode_json(text)
end
local decode_data = M.decode_data

-- An AttributeValue JSON text -> the same value in format (nil, message
-- when it is not one): what migrates a store's rows.
function M.convert(av_text, format)
  local v, err = decode_value(av_text)
  if v == nil then return nil, err end
  return encode_data(v, format)
end

function M.of(aggregate, id)
  return aggregate .. "#" .. id
end

function M.split(name)
  local agg, id = name:match("^([^#]*)#(.*)$")
  if not agg then return name, "" end
  return agg, id
end

-- Stored data and meta text (or meta already decoded) -> data, meta (data
-- upcast by agg when given) | nil, message. format: the data's ("av" when nil).
function M.decode_payload(agg, etype, data_text, meta_text, format)
  local data, err = decode_data(data_text, format)
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
  local data, meta = decode_payload(agg, stored.type, stored.data, stored.meta, stored.format)
  if data == nil then return nil, meta end
  return { version = stored.version, type = stored.type, data = data, meta = meta }
end

-- A stored row -> the projector's event shape.
--   row: {stream=, version=, type=, data=<JSON text | table>, meta=<JSON text | table>,
--        format= (of the data text: "av" when nil)}
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
    local decoded, dmeta = decode_payload(agg, row.type, data or (row.format == "json" and "{}" or '{"M":{}}'), meta,
                                          row.format)
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
