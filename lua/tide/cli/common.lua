-- tide.cli.common: what every command of lua/tide/cli/ shares: the exit
-- statuses, standard output, the argument parser, opening the app, the
-- result lines, and the long-running commands' helpers (reload, metrics,
-- signals).
local core = require "tide.core"
local result = require "tide.result"
local sched = require "tide.sched"

local M = {}

-- Exit statuses (also in runtime/cli/cli.h and the README).
M.EXIT = { ok = 0, handler_error = 1, usage = 2, rejected = 3, conflict = 4, store = 5, not_found = 6 }

M.EXIT_OF_KIND = {
  invalid = M.EXIT.usage, rejected = M.EXIT.rejected, conflict = M.EXIT.conflict,
  store = M.EXIT.store, handler_error = M.EXIT.handler_error,
  too_many_events = M.EXIT.handler_error, event_too_large = M.EXIT.handler_error,
}
local EXIT_OF_KIND = M.EXIT_OF_KIND

-- Each command's usage text, by name (set by the dispatcher, tide.cli).
M.USAGE = {}
local USAGE = M.USAGE

-- Standard output that can no longer be written (a reader such as `head`
-- went away: SIGPIPE is ignored in the tide process, so writes fail with
-- EPIPE instead) ends the command: what it would print has nowhere to go.
-- A broken pipe ends it quietly, any other failure says why.
local function stdout_failed(err)
  if not tostring(err):find("Broken pipe", 1, true) then
    io.stderr:write("tide: cannot write the output: ", tostring(err), "\n")
  end
  os.exit(M.EXIT.handler_error)
end

local function out(line)
  local ok, err = io.stdout:write(line, "\n")
  if not ok then stdout_failed(err) end
end

local function flush_out()
  local ok, err = io.stdout:flush()
  if not ok then stdout_failed(err) end
end

-- Output lines are tide.result's (the HTTP API writes the same bytes); a
-- value JSON cannot hold is reported as a handler's error.
local function json(v) return result.json(v, "handler_error") end

local function fail_usage(name, message)
  io.stderr:write("tide ", name, ": ", message, "\n", USAGE[name], "\n")
  return M.EXIT.usage
end

-- Splits --config FILE / --config=FILE, --concurrency N, --help from the
-- positional arguments.
local function parse(name, args)
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if name == "exec" and #pos >= 1 and not a:match("^%-%-config") then
      -- exec's id and command text are data, even when they start with '-'
      pos[#pos + 1] = a
    elseif a == "-h" or a == "--help" then
      opts.help = true
    elseif a == "--until-caught-up" then
      opts.until_caught_up = true
    elseif a == "--stats" and name == "batch" then
      opts.stats = true
    elseif a == "--json" and name == "doctor" then
      opts.json = true
    elseif a == "--config" or a == "--concurrency" or ((name == "run" or name == "batch") and a == "--metrics") then
      local v = args[i + 1]
      if not v then return nil, a .. " needs a value" end
      opts[a:sub(3)] = v
      i = i + 1
    elseif a:match("^%-%-config=") then
      opts.config = a:sub(10)
    elseif a:match("^%-%-concurrency=") then
      opts.concurrency = a:sub(15)
    elseif (name == "run" or name == "batch") and a:match("^%-%-metrics=") then
      opts.metrics = a:sub(11)
    elseif a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a:sub(1, 1) == "-" and #a > 1 then
      return nil, "unknown option '" .. a .. "'"
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- The app of the configuration, its logger (app.log) writing log.level
-- and log.format to stderr; log_format: the format when the configuration
-- sets none (the daemons' "json").
local function open_app(opts, log_format)
  local tide = require "tide"
  local app, err = tide.open{ config = opts.config, log_format = log_format }
  if not app then return nil, err end
  app.log("debug", "configuration loaded", { source = app.cfg.source, store = app.cfg.store })
  if app.cfg.store ~= "dynamodb" then
    -- the embedded store is ready as soon as it is opened
    local ok, ierr = app.store:init()
    if not ok then return nil, ierr end
  end
  return app
end

local function error_line(kind, message, extra)
  return result.error(kind, message, extra, "handler_error")
end

local function error_result(err)
  return error_line(err.kind, tostring(err.message or err), { stream = err.stream, command = err.command, type = err.type })
end

local function ok_result(res) return result.ok(res, "handler_error") end

-- Decodes a command object from JSON text (strict: tide.input); nil,
-- message on bad input.
M.decode_object = require("tide.input").decode_object
local decode_object = M.decode_object

------------------------------------------------------------------------

-- Hot reload of the modules while a long command runs (tide.reload);
-- without inotify it says so and goes on.
local function start_reload(app, dirs)
  local ok, reload = pcall(require, "tide.reload")
  if not ok then return nil end
  local w, err = reload.start{ dirs = dirs, status_file = os.getenv("TIDE_RELOAD_STATUS"), log = app.log }
  if not w then app.log("warn", "hot reload is off: " .. tostring(err)) end
  return w
end

-- The operators' page (--metrics ADDR, else metrics.listen) -> server or
-- nil (none asked for) | false, err (the address cannot be used).
local function start_metrics(app, opts, ready)
  local listen = opts.metrics or (app.cfg.metrics and app.cfg.metrics.listen)
  if not listen then return nil end
  local srv, err = require("tide.metrics.server").start{ listen = listen, log = app.log, ready = ready }
  if not srv then return false, err end
  return srv
end

-- stdin line by line without blocking the loop (the reloader and the
-- commands in flight go on while the producer is quiet).
local function input_lines(max_line)
  local ok, it = pcall(sched.lines, 0, { max_line = max_line })
  if ok then return it end
  return io.stdin:lines()
end


-- The daemons (run, project) log JSON lines unless the configuration
-- sets log.format.
local function open_projections(name, opts, log_format)
  local app, err = open_app(opts, log_format)
  if not app then
    io.stderr:write("tide ", name, ": ", tostring(err), "\n")
    return nil, (type(err) == "table" and EXIT_OF_KIND[err.kind]) or M.EXIT.usage
  end
  return app
end

-- `tide name NAME`: the app and the projection NAME -> app, projection |
-- nil, exit status (the problem said on stderr).
local function open_projection(name, opts, pos, log_format)
  if #pos ~= 1 then return nil, fail_usage(name, "needs NAME") end
  local app, code = open_projections(name, opts, log_format)
  if not app then return nil, code end
  local p, err = app.projections:get(pos[1])
  if not p then
    io.stderr:write("tide ", name, ": ", tostring(err), "\n")
    return nil, M.EXIT.usage
  end
  return app, p
end

-- SIGTERM/SIGINT set flag.stop; returns the handle to stop (or nil when
-- signals cannot be taken over, which is reported).
local function stop_on_signals(flag, log)
  local h, err = require("tide.signals").on_stop(function(name)
    log("info", "SIG" .. name .. ": finishing the batch, then stopping")
    flag.stop = true
  end, log)
  if not h then log("warn", "signals are not handled: " .. tostring(err)) end
  return h
end

M.stdout_failed = stdout_failed
M.out = out
M.flush_out = flush_out
M.json = json
M.fail_usage = fail_usage
M.parse = parse
M.open_app = open_app
M.error_line = error_line
M.error_result = error_result
M.ok_result = ok_result
M.start_reload = start_reload
M.start_metrics = start_metrics
M.input_lines = input_lines
M.open_projections = open_projections
M.open_projection = open_projection
M.stop_on_signals = stop_on_signals

return M
