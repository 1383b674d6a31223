-- tide.cli.common: what every command of lua/tide/cli/ shares: the exit
-- statuses, standard output, the argument parser, opening the app, the
-- result lines, and the long-running commands' helpers (reload, metrics,
-- signals).
local core = require "tide.core"
local result = require "tide.result"
local sched = require "tide.sched"

local M = {}

-- Exit statuses (also in runtime/cli/cli.h and the README).
M.EXIT = { ok = 0, handler_error = 1, usage = 2, rejected = 3, conflict = 4, store = 5, not_found = 6,
           idempotency_mismatch = 7, interrupted = 130 }

M.EXIT_OF_KIND = {
  invalid = M.EXIT.usage, rejected = M.EXIT.rejected, conflict = M.EXIT.conflict,
  store = M.EXIT.store, handler_error = M.EXIT.handler_error,
  too_many_events = M.EXIT.handler_error, event_too_large = M.EXIT.handler_error,
  not_found = M.EXIT.not_found, idempotency_mismatch = M.EXIT.idempotency_mismatch,
  interrupted = M.EXIT.interrupted,
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

-- A usage error: one line on stderr, the message and the synopsis.
local function fail_usage(name, message)
  local synopsis = USAGE[name] and USAGE[name]:match("^(usage: [^\n]*)")
  io.stderr:write("tide ", name, ": ", message, synopsis and ("; " .. synopsis) or "",
                  " (tide ", name, " --help)\n")
  return M.EXIT.usage
end

-- The exit status of an error (a tide.error or a message).
function M.exit_of(err, default)
  if type(err) ~= "table" then return default or M.EXIT.usage end
  if err.type == "invalid_event" or err.kind == "invalid_event" then return M.EXIT.handler_error end
  return EXIT_OF_KIND[err.kind] or default or M.EXIT.store
end

-- Whether tide's own frames are Lua files of tide (lua/tide/...), the
-- engine's or LuaJIT's built-ins: what a user's traceback leaves out.
local function own_frame(line)
  return line:find("/tide/", 1, true) and not line:find("/tide/projections/", 1, true)
      or line:find("%[C%]") or line:find("%(tail call%)") or line:find("^%s*%.%.%.")
      or line:find("^%s*%[string ")
end

-- split_error(text, debug) -> the first line, the traceback's lines kept
-- (the user's frames; every frame with debug)
function M.split_error(text, debug)
  local first, rest = text:match("^([^\n]*)\n?(.*)$")
  local frames = {}
  for line in rest:gmatch("[^\n]+") do
    if line:find("stack traceback:", 1, true) then
      -- the header of a traceback: the frames follow
    elseif debug or not own_frame(line) then
      frames[#frames + 1] = (line:gsub("^%s+", ""))
    end
  end
  return first, frames
end

-- Whether errors are printed as JSON: --json, or log.format: json.
function M.json_errors(opts, app)
  if opts and opts.json then return true end
  local cfg = app and app.cfg
  if cfg and cfg.log and cfg.log.format == "json" and require("tide.config").is_set(cfg, "log.format") then
    return true
  end
  return false
end

-- report(name, opts, err [, app]): fail's line, the status left to the caller.
function M.report(name, opts, err, app) M.fail(name, opts, err, app) end

-- fail(name, opts, err [, app [, status]]) -> exit status. The one way a
-- command reports its failure: once, on stderr. As text: "tide NAME:
-- message" on one line, then the user's traceback indented (tide's own
-- frames with --debug); as JSON (--json or log.format: json): one line
-- {"error":{"kind":..,"type":..,"message":..,"traceback":[..]}}.
function M.fail(name, opts, err, app, status)
  local text = tostring(err)
  local first, frames = M.split_error(text, opts and opts.debug)
  if M.json_errors(opts, app) then
    -- kind, type and context are fields of their own: the message alone
    if type(err) == "table" and err.message ~= nil then
      first, frames = M.split_error(tostring(err.message), opts and opts.debug)
    end
    local e = { message = first, traceback = #frames > 0 and core.list(frames) or nil, command = name }
    if type(err) == "table" then
      e.kind, e.type = err.kind, err.type
      e.stream, e.projection = err.stream, err.projection
    end
    io.stderr:write(core.json_encode{ error = e }, "\n")
  else
    local lines = { "tide " .. name .. ": " .. first }
    for _, f in ipairs(frames) do lines[#lines + 1] = "    " .. f end
    io.stderr:write(table.concat(lines, "\n"), "\n")
  end
  return status or M.exit_of(err)
end

-- The options every Lua command takes (besides its own: cmd.options).
M.COMMON_OPTIONS = {
  { "--config", "FILE", "the configuration file (default: TIDE_CONFIG, else ./tide.yaml)" },
  { "--debug", nil, "with an error, show tide's own stack frames too" },
  { "--json", nil, "an error as one JSON line on stderr (and JSON output where the output is text)" },
  { "-h, --help", nil, "show this help" },
}

-- parse(name, args, cmd) -> opts, positional | nil, message
-- cmd.options: { {"--name", "VALUE" or nil (a flag), "help"}, ... }; an
-- option's value is opts[name without the dashes, '-' -> '_']; both
-- "--opt VALUE" and "--opt=VALUE". cmd.data_after = n: after the n-th
-- positional argument, everything but --config is data (exec's id and
-- command text may start with '-'). "--" ends the options.
local function parse(name, args, cmd)
  local known = {}
  for _, list in ipairs{ M.COMMON_OPTIONS, cmd and cmd.options or {} } do
    for _, o in ipairs(list) do
      for flag in o[1]:gmatch("%-[%w%-]+") do known[flag] = o end
    end
  end
  local data_after = cmd and cmd.data_after
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    flag = flag or a
    if data_after and #pos >= data_after and flag ~= "--config" then
      pos[#pos + 1] = a
    elseif a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif known[flag] then
      local o = known[flag]
      local key = o[1]:match("%-%-([%w%-]+)$"):gsub("%-", "_")
      if o[2] then
        local v = inline
        if v == nil then
          v = args[i + 1]
          if v == nil then return nil, flag .. " needs a value (" .. o[2] .. ")" end
          i = i + 1
        end
        opts[key] = v
      elseif inline ~= nil then
        return nil, flag .. " takes no value"
      else
        opts[key] = true
      end
    elseif a:sub(1, 1) == "-" and #a > 1 then
      local names = {}
      for f in pairs(known) do if f:sub(1, 2) == "--" then names[#names + 1] = f end end
      table.sort(names)
      local hint = require("tide.suggest").closest(flag, names)
      return nil, "unknown option '" .. a .. "'" .. (hint and (" (did you mean " .. hint .. "?)") or "")
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
    M.report(name, opts, err)
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
    M.report(name, opts, err)
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
