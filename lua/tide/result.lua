-- tide.result: the JSON a command's outcome is written as, the same bytes
-- from `tide exec`/`tide batch` and from the HTTP API.
--
--   result.json(v [, fallback_kind])  -> JSON text of v (json_encode: exact
--       integers, sorted keys); a value JSON cannot hold gives an error
--       line of kind fallback_kind ("internal" by default) instead
--   result.ok(res [, fallback_kind])  -> {"ok":true,"stream":..,"version":..[,"duplicate":true],"events":[..]}
--   result.error(kind, message, extra [, fallback_kind]) -> {"ok":false,"error":{kind, message, extra...}}
--   result.state(st [, fallback_kind]) -> {"stream":..,"version":..,"state":..}
--
-- "ok" comes first, as people read it: json_encode sorts keys, so the top
-- level is assembled here. An event's meta is the text the repository
-- stored (meta_text, written by the same json_encode) when it has one,
-- rather than encoded again; its data likewise (data_text), when the
-- store keeps plain JSON.
local core = require "tide.core"

local json_encode, concat, ipairs, pairs, tostring = core.json_encode, table.concat, ipairs, pairs, tostring
local find, format, type, floor = string.find, string.format, type, math.floor

local M = {}

local function json(v, fallback_kind)
  local s, err = json_encode(v)
  if not s then
    return json_encode{ ok = false, error = { kind = fallback_kind or "internal",
      message = "the result cannot be written as JSON: " .. tostring(err) } }
  end
  return s
end
M.json = json

-- The stream, type and version of every result, without a call into C:
-- a string with nothing json_encode would escape or replace (control
-- characters, '"', '\\', bytes past ASCII) is itself in quotes; an
-- integer is its digits (json_encode writes integers below 1e17 so).
-- Streams and event types repeat: their JSON is remembered (up to
-- QUOTED_MAX strings, then forgotten all at once).
local QUOTED_MAX = 4096
local quoted, nquoted = {}, 0
local function json_string(s, fk)
  local q = quoted[s]
  if q then return q end
  if type(s) == "string" and not find(s, '[%z\1-\31"\\\128-\255]') then
    q = '"' .. s .. '"'
    if nquoted >= QUOTED_MAX then quoted, nquoted = {}, 0 end
    quoted[s], nquoted = q, nquoted + 1
    return q
  end
  return json(s, fk)
end
local function json_integer(n, fk)
  if type(n) == "number" and n == floor(n) and n >= 0 and n < 1e15 then return format("%d", n) end
  return json(n, fk)
end

function M.error(kind, message, extra, fallback_kind)
  local e = { kind = kind, message = tostring(message) }
  for k, v in pairs(extra or {}) do
    if v ~= nil then e[k] = v end
  end
  return '{"ok":false,"error":' .. json(e, fallback_kind) .. "}"
end

-- An event's JSON between before and after, in one concatenation (a
-- command's one event is written straight into its result line: no
-- string of its own, nor of the list around it); version: its version's
-- text when the caller has it already.
local function event_json(ev, fk, before, after, version)
  return before .. '{"data":' .. (ev.data_text or json(ev.data, fk)) .. ',"meta":' .. (ev.meta_text or json(ev.meta, fk))
    .. ',"type":' .. json_string(ev.type, fk) .. ',"version":' .. (version or json_integer(ev.version, fk)) .. "}"
    .. after
end

function M.ok(res, fallback_kind)
  local fk = fallback_kind
  local version = json_integer(res.version, fk)
  local head = '{"ok":true,"stream":' .. json_string(res.stream, fk) .. ',"version":' .. version
    .. (res.duplicate and ',"duplicate":true' or "") .. ',"events":['
  local events = res.events
  if events and #events == 1 then
    -- (a single event's version is the result's: the same digits)
    local ev = events[1]
    return event_json(ev, fk, head, "]}", ev.version == res.version and version or nil)
  end
  local parts = {}
  for i, ev in ipairs(events or {}) do
    parts[i] = event_json(ev, fk, "", "")
  end
  return head .. concat(parts, ",") .. "]}"
end

function M.state(st, fallback_kind)
  local fk = fallback_kind
  return '{"stream":' .. json(st.stream, fk) .. ',"version":' .. json(st.version, fk)
    .. ',"state":' .. json(st.state, fk) .. "}"
end

return M
