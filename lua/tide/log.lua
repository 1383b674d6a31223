-- tide.log: the one logger, in both hosts.
--
--   local log = require "tide.log"
--   local logger = log.new{ level = "info", format = "text", sink = log.stderr }
--   logger("warn", "snapshot skipped", { stream = "account#a1", version = 200 })
--
-- A logger is a plain function (level, message, fields): the `log` option
-- every module takes (tide.open, the repository, the projection runners,
-- tide.reload). Levels, least severe first: debug, info, warn, error; a
-- line below the logger's level is dropped before it is formatted.
--
-- Formats (the configuration's log.format):
--   text   tide: warn: snapshot skipped (stream=account#a1 version=200)
--   json   {"level":"warn","msg":"snapshot skipped","stream":"account#a1","ts":1700000000,"version":200}
--          one object per line, keys sorted; ts: seconds since the epoch
-- Fields: strings, numbers and booleans as they are, a tide.error as its
-- text; other tables and functions are left out.
--
-- Sinks: sink(level, line). log.stderr (the tide process) writes the line
-- to stderr; log.ngx (nginx) writes it to nginx's error log through
-- ngx.log, info at NOTICE and debug at INFO so that the error_log level
-- tide.http.conf derives from log.level lets them through.
local core = require "tide.core"
local clock = require "tide.clock"
local terror = require "tide.error"

local type, pairs, tostring, concat, sort = type, pairs, tostring, table.concat, table.sort

local M = {}

M.LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }
local LEVELS = M.LEVELS

-- A field's value as written, or nil when it is left out.
local function field_value(v)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if terror.is(v) then return tostring(v) end
end

local function text_line(level, message, fields)
  local line = "tide: " .. level .. ": " .. tostring(message)
  if fields then
    local parts = {}
    for k, v in pairs(fields) do
      v = field_value(v)
      if v ~= nil then parts[#parts + 1] = tostring(k) .. "=" .. tostring(v) end
    end
    if #parts > 0 then
      sort(parts)
      line = line .. " (" .. concat(parts, " ") .. ")"
    end
  end
  return line
end

local function json_line(level, message, fields)
  local rec = { ts = clock.wall_s(), level = level, msg = tostring(message) }
  for k, v in pairs(fields or {}) do
    if rec[k] == nil then rec[k] = field_value(v) end
  end
  local s, err = core.json_encode(rec)
  if not s then
    s = core.json_encode{ ts = rec.ts, level = level, msg = rec.msg .. " (fields not written: " .. tostring(err) .. ")" }
  end
  return s
end

local FORMATS = { text = text_line, json = json_line }
M.format = FORMATS

function M.stderr(_, line)
  io.stderr:write(line, "\n")
end

do
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.log) == "function" then
    local NGX = { debug = ngx.INFO, info = ngx.NOTICE, warn = ngx.WARN, error = ngx.ERR }
    function M.ngx(level, line)
      ngx.log(NGX[level] or ngx.NOTICE, line)
    end
  end
end

-- log.new{level = "info", format = "text", sink = log.stderr} -> logger
function M.new(opts)
  opts = opts or {}
  local min = LEVELS[opts.level or "info"]
  local format = FORMATS[opts.format or "text"]
  local sink = opts.sink or M.stderr
  if not min or not format or type(sink) ~= "function" then
    error("log.new{level=, format=, sink=}: level must be debug, info, warn or error, format text or json, "
          .. "sink a function", 2)
  end
  return function(level, message, fields)
    local n = LEVELS[level]
    if n and n < min then return end
    sink(level, format(level, message, fields))
  end
end

-- log.from_config(cfg [, defaults]) -> logger for cfg.log.level and
-- cfg.log.format; defaults.format is used when the configuration does not
-- set log.format itself (tide run's json); defaults.sink as in log.new.
function M.from_config(cfg, defaults)
  defaults = defaults or {}
  local c = cfg and cfg.log or {}
  local format = c.format
  if defaults.format and not require("tide.config").is_set(cfg, "log.format") then format = defaults.format end
  return M.new{ level = c.level, format = format, sink = defaults.sink }
end

-- log.with(logger, fields) -> a logger that adds fields to each line
-- (a line's own fields win): the projection runners name their projection
-- so, as the metrics label it.
function M.with(logger, fields)
  if type(logger) ~= "function" or type(fields) ~= "table" then
    error("log.with(logger, fields): logger must be a function, fields a table", 2)
  end
  return function(level, message, own)
    local merged = {}
    for k, v in pairs(fields) do merged[k] = v end
    if type(own) == "table" then
      for k, v in pairs(own) do merged[k] = v end
    end
    return logger(level, message, merged)
  end
end

-- What a module logs with when it is given no logger: warnings and errors
-- as text on stderr.
M.default = M.new{ level = "warn" }

return M
