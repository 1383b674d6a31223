-- tide.input: the one check of what tide takes in from outside (the CLI's
-- arguments and stdin, the HTTP API's requests) before anything is written.
--
--   input.id_error(id [, what])           -> nil | message   (an aggregate id)
--   input.command_id_error(id)            -> nil | message   (a command's "id")
--   input.name_error(name [, what])       -> nil | message   (an aggregate name)
--   input.utf8(s)                         -> true | nil, offset (0-based byte)
--   input.decode(text [, what])           -> value | nil, message
--   input.decode_object(text [, what])    -> table | nil, message
--     (what: the text's name in messages, "the input" by default; a
--     number n names it "line n")
--
-- Ids and names become keys (the stream "<aggregate>#<id>", DynamoDB's
-- partition key, the read models' keys) and are printed in JSON: they are
-- valid UTF-8 with no control characters (U+0000..U+001F, U+007F), within
-- the documented limits (README, "Limits"). JSON is strict (RFC 8259):
-- yajl reads the text (no 0x10, 007, +5, 5., NaN, Infinity, trailing
-- garbage or NUL bytes; strings valid UTF-8) and builds the values as it
-- goes (core.decode_input), the values lua-cjson gives; a message names the
-- line and column (1-based, bytes). The few texts that yajl takes and
-- lua-cjson reads otherwise (a lone surrogate escape, \f between tokens,
-- nesting over 1000 levels, a string left open after the value:
-- runtime/core/lua_input.c) go to lua-cjson, as all did before.
local ffi = require "ffi"
local tffi = require "tide.ffi"
local core = require "tide.core"
local cjson = require("cjson.safe").new()

cjson.decode_invalid_numbers(false)

local lib, type, tostring = tffi.lib, type, tostring
local decode_input = core.decode_input

local M = {}

M.MAX_ID_BYTES = 1024          -- an aggregate id
M.MAX_COMMAND_ID_BYTES = 256   -- a command id (kept in every event's metadata and in snapshots)
M.MAX_NAME_BYTES = 128         -- an aggregate's name

local at = ffi.new("double[1]")

-- true | nil, offset of the first byte that is not valid UTF-8
function M.utf8(s)
  if lib.tide_ffi_utf8_check(s, #s, at) == 0 then return true end
  return nil, at[0]
end

local function text_error(s, what, max, extra_rule)
  if type(s) ~= "string" then return what .. " must be a string, got " .. type(s) end
  if s == "" then return what .. " must not be empty" end
  if #s > max then return ("%s is %d bytes, over the %d-byte limit"):format(what, #s, max) end
  -- UTF-8 first, then control characters: one pass in C
  local rc = lib.tide_ffi_text_check(s, #s, at)
  if rc == 1 then return ("%s is not valid UTF-8 (byte %d)"):format(what, at[0] + 1) end
  if rc == 2 then return ("%s holds a control character (byte %d)"):format(what, at[0] + 1) end
  if extra_rule then return extra_rule(s) end
end

function M.id_error(id, what)
  return text_error(id, what or "the aggregate id", M.MAX_ID_BYTES)
end

function M.command_id_error(id)
  return text_error(id, "the command id", M.MAX_COMMAND_ID_BYTES)
end

function M.name_error(name, what)
  what = what or "the aggregate name"
  local e = text_error(name, what, M.MAX_NAME_BYTES)
  if e then return e end
  if name:find("#", 1, true) then return what .. " must not hold '#'" end
end

-- line and column (1-based) of a 0-based byte offset in text
local function position(text, offset)
  local line, last_nl = 1, 0
  local i = 1
  while true do
    local nl = text:find("\n", i, true)
    if not nl or nl > offset then break end
    line, last_nl, i = line + 1, nl, nl + 1
  end
  return line, offset - last_nl + 1
end
M.position = position

-- what: the text's name in messages, or a line number n ("line n")
local function named(what)
  if what == nil then return "the input" end
  if type(what) == "number" then return "line " .. what end
  return what
end

function M.decode(text, what)
  if type(text) ~= "string" then return nil, named(what) .. " must be JSON text" end
  local v, derr, offset = decode_input(text)
  if v ~= nil then return v end
  if derr then
    local line, col = position(text, offset)
    local where = text:find("\n", 1, true) and ("line %d, column %d"):format(line, col) or ("column " .. col)
    return nil, ("%s is not valid JSON: %s: %s"):format(named(what), where, derr)
  end
  v, derr = cjson.decode(text)
  if v == nil and derr then return nil, named(what) .. " is not valid JSON: " .. tostring(derr) end
  return v
end

function M.decode_object(text, what)
  local v, derr = M.decode(text, what)
  if v == nil then return nil, derr or (named(what) .. " must be a JSON object") end
  -- an empty table is {} or []: only then does the text tell them apart
  if type(v) ~= "table" or #v > 0 or (next(v) == nil and text:match("^%s*%[")) then
    return nil, named(what) .. " must be a JSON object"
  end
  return v
end

return M
