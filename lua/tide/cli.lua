-- tide.cli: the subcommands of the tide binary written in Lua: init,
-- exec, batch, events, state, run, project, read, status, replay.
-- runtime/cli/cmd_lua.c calls
-- cli.main(name, args...) inside the scheduler; main returns the exit status.
local clock = require "tide.clock"
local core = require "tide.core"
local result = require "tide.result"
local sched = require "tide.sched"
local terror = require "tide.error"

local M = {}

-- Exit statuses (also in runtime/cli/cli.h and the README).
M.EXIT = { ok = 0, handler_error = 1, usage = 2, rejected = 3, conflict = 4, store = 5, not_found = 6 }

local EXIT_OF_KIND = {
  invalid = M.EXIT.usage, rejected = M.EXIT.rejected, conflict = M.EXIT.conflict,
  store = M.EXIT.store, handler_error = M.EXIT.handler_error,
  too_many_events = M.EXIT.handler_error, event_too_large = M.EXIT.handler_error,
}

local USAGE = {
  init = [[
usage: tide init [--config FILE]

Creates what the configured store needs, if missing: the events and
snapshots tables on DynamoDB (named from dynamodb.table_prefix), or the
SQLite file and its schema; and the read-model tables of every projection
in the projections folder.]],
  exec = [[
usage: tide exec [--config FILE] AGGREGATE ID 'COMMAND_JSON'

Runs one command. COMMAND_JSON is an object with "type", the command's
fields, and an optional "id" (a command id: the same id sent again appends
nothing and returns the original result). Prints one JSON object:
  {"ok":true,"stream":...,"version":N,"events":[...]}
  {"ok":false,"error":{"kind":...,"message":...}}
Exit status: 0 ok, 1 handler error, 2 bad input, 3 rejected, 4 conflict,
5 store or network failure.]],
  batch = [[
usage: tide batch [--config FILE] [--concurrency N] [--stats] [--metrics ADDR] < commands.ndjson

Reads one {"aggregate":...,"id":...,"command":{...}} per line from stdin
and runs the commands concurrently (commands of one stream in input order,
at most N in flight, default 256; commands waiting on one stream share a
write). Prints one result line per input line, in input order, shaped as
tide exec's output. --stats: at the end, one JSON line on stderr with the
counts by outcome, the writes, conflicts and catch-ups, and on DynamoDB
the requests and the read and write capacity units, per command too.
A line longer than commands.max_line_bytes (1 MiB) gets an error result
and is skipped; the next lines run. Exit status: 0 when every command succeeded, else the status of the first
failure by severity. --metrics ADDR (or metrics.listen): serve GET
/metrics (Prometheus), /health and /ready on ADDR, e.g. 127.0.0.1:9464,
while it runs.]],
  events = [[
usage: tide events [--config FILE] AGGREGATE ID

Prints the stream's events as NDJSON: {"version":...,"type":...,"data":...,"meta":...}]],
  state = [[
usage: tide state [--config FILE] AGGREGATE ID

Prints {"stream":...,"version":N,"state":{...}}: the state after every event.]],
  run = [[
usage: tide run [--config FILE] [--metrics ADDR]

Runs every projection of the projections folder as a daemon, with
structured logs (JSON lines on stderr). On DynamoDB, any number of tide run
processes share the stream's shards through leases. SIGTERM or SIGINT:
finish the batch, write its effects, checkpoint, release the leases, exit 0.
--metrics ADDR (or metrics.listen in tide.yaml): serve GET /metrics
(Prometheus text format), /health and /ready on ADDR, e.g. 127.0.0.1:9464.]],
  project = [[
usage: tide project [--config FILE] NAME [--until-caught-up]

Runs one projection. With --until-caught-up it stops, exit status 0, once
everything written before it started has been applied.]],
  read = [[
usage: tide read [--config FILE] MODEL KEY

Prints the read-model item as JSON; exit status 6 when it is absent.]],
  status = [[
usage: tide status [--config FILE]

Prints one JSON line per projection: its checkpoints (per shard on
DynamoDB), owners, lag and last error; and one per module that failed to load.]],
  park = [[
usage: tide park [--config FILE] NAME STREAM VERSION

Sets aside the event STREAM VERSION (e.g. account#a1 3) for the projection
NAME: the projection passes over it and goes on with the next events.
Use it for an event the projection's handler cannot apply (tide status
names it under "failing_event"). The event stays in the events table and
on the parked list (tide status, "parked"); after fixing the handler,
`tide unpark` it and `tide replay NAME` to apply it in order.
Prints {"ok":true,"projection":...,"stream":...,"version":N,"type":...}.]],
  unpark = [[
usage: tide unpark [--config FILE] NAME STREAM VERSION

Takes the event off NAME's parked list. Events the projection has passed
already are applied by `tide replay NAME`.]],
  replay = [[
usage: tide replay [--config FILE] NAME

Rebuilds a projection from the events table into emptied read models, then
continues from the stream with no gap and nothing applied twice. Progress
goes to stderr.]],
}

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
local decode_object = require("tide.input").decode_object

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

local commands = {}

function commands.init(opts, pos)
  if #pos > 0 then return fail_usage("init", "unexpected argument '" .. pos[1] .. "'") end
  local tide = require "tide"
  local app, err = tide.open{ config = opts.config }
  if not app then
    io.stderr:write("tide init: ", tostring(err), "\n")
    return M.EXIT.usage
  end
  local ok, ierr = app.store:init()
  if not ok then
    io.stderr:write("tide init: ", tostring(ierr), "\n")
    return M.EXIT.store
  end
  -- where parked events are kept (tide park), made now rather than by the
  -- first projection that starts
  local pok, perr = require("tide.projection.parking").for_app(app):init()
  if not pok then
    io.stderr:write("tide init: ", tostring(perr), "\n")
    return M.EXIT.store
  end
  -- the read models of every projection, so that reads (tide read, the
  -- nginx site) work before a projection has run
  local backend = require("tide.projection.host").backend(app)
  local models = {}
  for _, name in ipairs(app.projections:names()) do
    local p = app.projections:get(name)
    local pok, perr = backend:init(p)
    if not pok then
      io.stderr:write("tide init: projection ", name, ": ", tostring(perr), "\n")
      return M.EXIT.store
    end
    for _, t in ipairs(p:table_names()) do models[#models + 1] = t end
  end
  if app.cfg.store == "dynamodb" then
    out(json{ ok = true, store = "dynamodb", tables = app.store.describe and app.store:describe() or nil,
              read_models = core.list(models) })
  else
    out(json{ ok = true, store = "sqlite", path = app.cfg.sqlite.path, read_models = core.list(models) })
  end
  return M.EXIT.ok
end

function commands.exec(opts, pos)
  if #pos ~= 3 then return fail_usage("exec", "needs AGGREGATE ID 'COMMAND_JSON'") end
  local cmd, derr = decode_object(pos[3], "COMMAND_JSON")
  if not cmd then
    out(error_line("invalid", derr))
    return M.EXIT.usage
  end
  local app, err = open_app(opts)
  if not app then
    local kind = type(err) == "table" and err.kind or "invalid"
    out(error_line(kind, tostring(err)))
    return EXIT_OF_KIND[kind] or M.EXIT.usage
  end
  local res, xerr = app.repository:execute(pos[1], pos[2], cmd)
  app.store:close()
  if res then
    out(ok_result(res))
    return M.EXIT.ok
  end
  out(error_result(xerr))
  return EXIT_OF_KIND[xerr.kind] or M.EXIT.handler_error
end

-- tide batch --stats: one JSON line on stderr. What the repository did
-- (writes, conflicts, catch-ups) and, on DynamoDB, what the service
-- billed (client.usage: capacity units of the answers).
local function write_batch_stats(lines, outcomes, seconds, rstats, store)
  local commands = rstats.commands
  local st = {
    lines = lines, commands = commands, outcomes = outcomes, seconds = seconds,
    commands_per_second = seconds > 0 and commands / seconds or 0,
    writes = rstats.writes, conflicts = rstats.conflicts, catch_ups = rstats.catch_ups,
    loads = rstats.loads, snapshots = rstats.snapshots,
  }
  local client = store.client
  if client and client.usage_totals then
    local t = client:usage_totals()
    local per = math.max(commands, 1)
    st.dynamodb = { requests = client.usage.requests, requests_total = t.requests,
                    failed_conditional_writes = client.usage.failed_writes,
                    read_units = t.read, write_units = t.write,
                    requests_per_command = t.requests / per,
                    read_units_per_command = t.read / per, write_units_per_command = t.write / per }
  end
  io.stderr:write(core.json_encode{ stats = st }, "\n")
end

-- Severity order for batch's exit status: the worst failure wins.
local SEVERITY = { [0] = 0, [3] = 1, [4] = 2, [2] = 3, [1] = 4, [5] = 5 }

function commands.batch(opts, pos)
  if #pos > 0 then return fail_usage("batch", "unexpected argument '" .. pos[1] .. "'") end
  local window = tonumber(opts.concurrency or 256)
  if not window or window < 1 or window ~= math.floor(window) then
    return fail_usage("batch", "--concurrency must be a positive integer")
  end
  local app, err = open_app(opts)
  if not app then
    io.stderr:write("tide batch: ", tostring(err), "\n")
    return (type(err) == "table" and EXIT_OF_KIND[err.kind]) or M.EXIT.usage
  end
  local repo = app.repository
  local ready = { ok = app.cfg.store ~= "dynamodb", why = "the events table has not answered yet" }
  local msrv, merr = start_metrics(app, opts, function() return ready.ok, ready.why end)
  if msrv == false then
    io.stderr:write("tide batch: --metrics: ", tostring(merr), "\n")
    return M.EXIT.usage
  end
  if msrv and not ready.ok then
    -- ready once DynamoDB answers for the events table
    sched.spawn(function()
      local st = app.store
      local ok, derr = st.client:describe_table{ TableName = st.events_table }
      ready.ok, ready.why = ok and true or false, not ok and tostring(derr) or nil
    end)
  end
  local watcher = start_reload(app, { { path = app.cfg.aggregates, registry = app.registry } })
  local status = M.EXIT.ok
  local function note(code)
    if SEVERITY[code] > SEVERITY[status] then status = code end
  end
  local pending = {}   -- line number -> thread, until its result is printed
  local results = {}   -- line number -> {line, code}, done but not yet printed
  local next_out, n = 1, 0

  -- Prints every result that is ready in input order, as soon as it is:
  -- a live producer sees each answer without waiting for the window.
  local function emit(i, line, code)
    results[i] = { line, code }
    if i ~= next_out then return end
    while results[next_out] do
      local r = results[next_out]
      results[next_out], pending[next_out] = nil, nil
      out(r[1])
      note(r[2])
      next_out = next_out + 1
    end
    flush_out()
  end

  local outcomes = {} -- "ok" or an error kind -> count
  local function tally(kind) outcomes[kind] = (outcomes[kind] or 0) + 1 end

  local function run_line(req, derr, lineno)
    if not req then
      return error_line("invalid", derr), M.EXIT.usage
    end
    if type(req.aggregate) ~= "string" or type(req.id) ~= "string" or type(req.command) ~= "table" then
      return error_line("invalid",
        ("line %d: needs \"aggregate\" (string), \"id\" (string) and \"command\" (object)"):format(lineno)),
        M.EXIT.usage
    end
    local res, xerr = repo:execute(req.aggregate, req.id, req.command)
    if res then
      tally(res.duplicate and "duplicate" or "ok")
      return ok_result(res), M.EXIT.ok
    end
    tally(xerr.kind or "handler_error")
    return error_result(xerr), EXIT_OF_KIND[xerr.kind] or M.EXIT.handler_error
  end

  local function command_thread(req, derr, lineno)
    local ok, line, code = pcall(run_line, req, derr, lineno)
    if not ok then line, code = error_line("handler_error", tostring(line)), M.EXIT.handler_error end
    emit(lineno, line, code)
  end
  local started = clock.mono()

  local max_line = app.cfg.commands and app.cfg.commands.max_line_bytes or 1024 * 1024
  if max_line == 0 then max_line = nil end -- 0: no limit
  for text, long in input_lines(max_line) do
    n = n + 1
    if text == false then
      emit(n, error_line("invalid", ("line %d is %d bytes, over the %d-byte limit (commands.max_line_bytes): "
        .. "skipped"):format(n, long, max_line)), M.EXIT.usage)
    elseif text:match("^%s*$") then
      emit(n, error_line("invalid", "line " .. n .. " is empty"), M.EXIT.usage)
    else
      -- Commands of one stream are decided in the order they reach the
      -- repository, which is the order of the lines: each thread calls it
      -- before its first yield, and threads start in the order spawned.
      local req, derr = decode_object(text, "line " .. n)
      local th = sched.spawn(command_thread, req, derr, n)
      if next_out <= n then pending[n] = th end
    end
    while n - next_out + 1 >= window and pending[next_out] do sched.wait(pending[next_out]) end
  end
  while next_out <= n do
    if pending[next_out] then sched.wait(pending[next_out]) else sched.sleep(0) end
  end
  if watcher then watcher:stop() end
  if opts.stats then write_batch_stats(n, outcomes, clock.mono() - started, repo.stats, app.store) end
  if msrv then msrv:stop() end
  app.store:close()
  return status
end

-- events and state: read one stream through the repository, print it.
local function read_stream(name, opts, pos, read, print_result)
  if #pos ~= 2 then return fail_usage(name, "needs AGGREGATE ID") end
  local app, err = open_app(opts)
  if not app then
    io.stderr:write("tide ", name, ": ", tostring(err), "\n")
    return (type(err) == "table" and EXIT_OF_KIND[err.kind]) or M.EXIT.usage
  end
  local res, rerr = read(app.repository, pos[1], pos[2])
  app.store:close()
  if not res then
    io.stderr:write("tide ", name, ": ", tostring(rerr), "\n")
    return EXIT_OF_KIND[rerr.kind] or M.EXIT.store
  end
  print_result(res)
  return M.EXIT.ok
end

function commands.events(opts, pos)
  return read_stream("events", opts, pos, function(repo, agg, id) return repo:events(agg, id) end,
    function(events)
      for _, ev in ipairs(events) do
        out('{"version":' .. json(ev.version) .. ',"type":' .. json(ev.type) .. ',"data":' .. json(ev.data)
            .. ',"meta":' .. json(ev.meta) .. "}")
      end
    end)
end

function commands.state(opts, pos)
  return read_stream("state", opts, pos, function(repo, agg, id) return repo:state(agg, id) end,
    function(st)
      out(result.state(st, "handler_error"))
    end)
end

------------------------------------------------------------------------
-- Projections

local host = require "tide.projection.host"

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

function commands.project(opts, pos)
  local app, p = open_projection("project", opts, pos, "json")
  if not app then return p end
  local runner = host.runner(app, p, { log = app.log })
  local ok, err = runner:start()
  if not ok then
    io.stderr:write("tide project: ", tostring(err), "\n")
    return M.EXIT.store
  end
  if opts.until_caught_up then
    local res
    res, err = runner:run_until_caught_up{ wait_for_lease = true }
    if res == nil then
      runner:stop() -- the lease goes back: the next run need not wait for it
      io.stderr:write("tide project: ", tostring(err), "\n")
      return EXIT_OF_KIND[err.kind] or (terror.is(err, "invalid_event") and M.EXIT.handler_error) or M.EXIT.store
    end
    runner:stop()
    out(json{ ok = true, projection = p.name, handled = res.handled })
    return M.EXIT.ok
  end
  local flag = { stop = false }
  local sig = stop_on_signals(flag, app.log)
  ok, err = runner:run(flag)
  if sig then sig:stop() end
  if ok == nil and err then
    io.stderr:write("tide project: ", tostring(err), "\n")
    return M.EXIT.store
  end
  return M.EXIT.ok
end

-- `tide run`: every line it writes on stderr is JSON (the log's), whatever
-- goes wrong. A projection whose start fails (the store unreachable) is
-- retried with backoff, and each failure is logged; with no projection
-- that can run at all it exits 2; stopped (SIGTERM) before one of its
-- projections could start, it exits 5.
function commands.run(opts, pos)
  local jlog = require("tide.log").new{ format = "json" }
  if #pos > 0 then
    jlog("error", "tide run: unexpected argument '" .. pos[1] .. "'", { usage = "tide run [--config FILE]" })
    return M.EXIT.usage
  end
  local app, aerr = open_app(opts, "json")
  if not app then
    jlog("error", "tide run: " .. tostring(aerr), { error = aerr })
    return (type(aerr) == "table" and EXIT_OF_KIND[aerr.kind]) or M.EXIT.usage
  end
  local log = app.log
  for name, err in pairs(app.projections.errors or {}) do
    log("error", "projection module failed to load", { projection = name, error = tostring(err) })
  end
  local names = app.projections:names()
  if #names == 0 then
    log("error", "tide run: no projection can run", { projections = app.cfg.projections,
      error = app.projections.dir_error and tostring(app.projections.dir_error)
        or (next(app.projections.errors or {}) and "every projection module failed to load")
        or "the projections folder has no modules" })
    app.store:close()
    return M.EXIT.usage
  end
  local flag = { stop = false }
  local sig = stop_on_signals(flag, log)
  -- ready while every projection has started (the store answered, the
  -- leases table is there: its leases are taken or waited for)
  local started, failed, total = 0, nil, 0
  local msrv, merr = start_metrics(app, opts, function()
    if flag.stop then return false, "stopping" end
    if failed then return false, "projection '" .. failed .. "' failed to start" end
    if started < total then return false, ("%d of %d projections started"):format(started, total) end
    return true
  end)
  if msrv == false then
    io.stderr:write("tide run: --metrics: ", tostring(merr), "\n")
    if sig then sig:stop() end
    return M.EXIT.usage
  end
  local watcher = start_reload(app, { { path = app.cfg.aggregates, registry = app.registry },
                                      { path = app.cfg.projections, registry = app.projections } })
  local threads, never_started = {}, 0
  local runner_mod = require "tide.projection.runner"
  -- starts a runner, retrying with backoff while the store cannot be
  -- reached; false when stopped before it could start
  local function start_with_retry(r, label)
    local failures = 0
    while true do
      local ok, ierr = r:start()
      if ok then return true end
      failures = failures + 1
      local delay = runner_mod.backoff_delay(failures, 0.5, 30)
      log("error", "projection failed to start; retrying", { projection = label, error = tostring(ierr),
        attempt = failures, retry_in_s = delay })
      local waited = 0
      while waited < delay and not flag.stop do
        sched.sleep(math.min(0.1, delay - waited))
        waited = waited + 0.1
      end
      if flag.stop then return false end
    end
  end
  local projs = {}
  for _, name in ipairs(names) do
    projs[#projs + 1] = app.projections:get(name) or nil
  end
  -- DynamoDB: one runner (one reader per shard) for every projection
  local group = host.group_runner(app, projs, { log = log })
  local abandoned = false
  if group then
    total = #projs
    threads[1] = sched.spawn(function()
      local pnames = {}
      for _, p in ipairs(projs) do pnames[#pnames + 1] = p.name end
      if not start_with_retry(group, table.concat(pnames, ",")) then
        never_started = never_started + #projs
        return
      end
      started = started + #projs
      for _, p in ipairs(projs) do log("info", "projection started", { projection = p.name, store = app.cfg.store }) end
      group:run(flag)
      abandoned = group.abandoned
      for _, p in ipairs(projs) do log("info", "projection stopped", { projection = p.name }) end
    end)
  end
  for _, p in ipairs(group and {} or projs) do
    local name = p.name
    local r = host.runner(app, p, { log = log, registry = app.projections })
    total = total + 1
    threads[#threads + 1] = sched.spawn(function()
      if not start_with_retry(r, name) then
        never_started = never_started + 1
        return
      end
      started = started + 1
      log("info", "projection started", { projection = name, store = app.cfg.store })
      r:run(flag)
      log("info", "projection stopped", { projection = name })
    end)
  end
  for _, th in ipairs(threads) do sched.wait(th) end
  if watcher then watcher:stop() end
  if msrv then msrv:stop() end
  if sig then sig:stop() end
  app.store:close()
  if never_started > 0 then
    log("error", "tide run: stopped before every projection could start", { never_started = never_started })
    return M.EXIT.store
  end
  -- shard workers still in a request (a lease-table outage) past the stop
  -- timeout: exit now, their leases expire on their own
  if abandoned then os.exit(M.EXIT.ok) end
  return M.EXIT.ok
end

function commands.read(opts, pos)
  if #pos ~= 2 then return fail_usage("read", "needs MODEL KEY") end
  local app, code = open_projections("read", opts)
  if not app then return code end
  local item, err = host.read(app, pos[1], pos[2])
  app.store:close()
  if item == nil then
    io.stderr:write("tide read: ", tostring(err.message), "\n")
    return err.kind == "invalid" and M.EXIT.usage or M.EXIT.store
  end
  if item == false then
    io.stderr:write("tide read: no item '", pos[2], "' in read model '", pos[1], "'\n")
    return M.EXIT.not_found
  end
  out(json(item))
  return M.EXIT.ok
end

function commands.status(opts, pos)
  if #pos > 0 then return fail_usage("status", "unexpected argument '" .. pos[1] .. "'") end
  local app, code = open_projections("status", opts)
  if not app then return code end
  local status = M.EXIT.ok
  for _, name in ipairs(app.projections:names()) do
    local p = app.projections:get(name)
    -- on DynamoDB: the leases of `tide run` (group "*"), else those of
    -- `tide project NAME`
    local r = host.runner(app, p, { log = function() end, group = app.cfg.store == "dynamodb" and "*" or nil })
    local st, err = r:status(name)
    if st and st.shards and #st.shards == 0 and app.cfg.store == "dynamodb" then
      st, err = host.runner(app, p, { log = function() end }):status(name)
    end
    if st then
      local parked = require("tide.projection.parking").for_app(app):list(name)
      if parked and #parked > 0 then st.parked = parked end
      out('{"projection":' .. json(name) .. ',"status":' .. json(st) .. "}")
    else
      out('{"projection":' .. json(name) .. ',"error":' .. json(tostring(err)) .. "}")
      status = M.EXIT.store
    end
  end
  for name, err in pairs(app.projections.errors or {}) do
    out('{"projection":' .. json(name) .. ',"load_error":' .. json(tostring(err)) .. "}")
  end
  for name, err in pairs(app.registry.errors or {}) do
    out('{"aggregate":' .. json(name) .. ',"load_error":' .. json(tostring(err)) .. "}")
  end
  app.store:close()
  return status
end

-- park and unpark: NAME STREAM VERSION -> app, projection, stream, version | nil, exit status
local function parked_args(name, opts, pos)
  if #pos ~= 3 then return nil, fail_usage(name, "needs NAME STREAM VERSION") end
  local version = tonumber(pos[3])
  if not version or version < 1 or version ~= math.floor(version) then
    return nil, fail_usage(name, "VERSION must be a positive integer, got '" .. pos[3] .. "'")
  end
  local serr = require("tide.input").id_error(pos[2], "STREAM")
  if serr or not pos[2]:find("#", 1, true) then
    return nil, fail_usage(name, serr or "STREAM must be a stream name, AGGREGATE#ID (e.g. account#a1)")
  end
  local app, p = open_projection(name, opts, { pos[1] })
  if not app then return nil, p end
  return app, p, pos[2], version
end

function commands.park(opts, pos)
  local app, p, stream_name, version = parked_args("park", opts, pos)
  if not app then return p end
  -- the event must exist: its type is recorded with it
  local rows, lerr = app.store:load(stream_name, version - 1)
  if not rows then
    io.stderr:write("tide park: ", tostring(lerr), "\n")
    return M.EXIT.store
  end
  if not rows[1] or rows[1].version ~= version then
    io.stderr:write(("tide park: stream %s has no version %d\n"):format(stream_name, version))
    return M.EXIT.not_found
  end
  -- the projection's last error, when it stopped at this event
  local reason = "parked by the operator"
  local st = host.runner(app, p, { log = function() end }):status()
  if st then
    local f = st.failing_event
    if f and f.stream == stream_name and f.version == version and st.error then reason = st.error
    elseif st.shards then
      for _, sh in ipairs(st.shards) do
        if type(sh.error) == "string" and sh.error:find(stream_name, 1, true) then reason = sh.error end
      end
    end
  end
  local parking = require("tide.projection.parking").for_app(app)
  local ok, perr = parking:park(p.name, stream_name, version, { type = rows[1].type, error = reason })
  app.store:close()
  if not ok then
    io.stderr:write("tide park: ", tostring(perr), "\n")
    return M.EXIT.store
  end
  out(json{ ok = true, projection = p.name, stream = stream_name, version = version, type = rows[1].type,
            error = reason })
  return M.EXIT.ok
end

function commands.unpark(opts, pos)
  local app, p, stream_name, version = parked_args("unpark", opts, pos)
  if not app then return p end
  local parking = require("tide.projection.parking").for_app(app)
  local removed, err = parking:unpark(p.name, stream_name, version)
  app.store:close()
  if removed == nil then
    io.stderr:write("tide unpark: ", tostring(err), "\n")
    return M.EXIT.store
  end
  if not removed then
    io.stderr:write(("tide unpark: %s version %d is not parked for %s\n"):format(stream_name, version, p.name))
    return M.EXIT.not_found
  end
  out(json{ ok = true, projection = p.name, stream = stream_name, version = version, unparked = true })
  return M.EXIT.ok
end

function commands.replay(opts, pos)
  local app, p = open_projection("replay", opts, pos)
  if not app then return p end
  local replay = require "tide.projection.replay"
  local res, err = replay.run(app, p, { log = app.log, progress = function(done, total)
    io.stderr:write(("tide replay %s: %d events applied%s\n"):format(p.name, done,
      total and (" of " .. total) or ""))
  end })
  if not res then
    io.stderr:write("tide replay: ", tostring(err), "\n")
    return terror.is(err, "handler_error") and M.EXIT.handler_error or M.EXIT.store
  end
  out(json{ ok = true, projection = p.name, events = res.events, streams = res.streams })
  return M.EXIT.ok
end

USAGE["skip-parent"] = [[
usage: tide skip-parent [--config FILE] SHARD_ID

DynamoDB only. Records the operator's decision in the lease of SHARD_ID
(lease group "*", the shards of `tide run`): start this shard although its
parent never reached SHARD_END (tide status shows such a parent as
"rebuild needed", or a child as "waiting for parent"). Without it a child
is never read before its parent's end. Records the parent left unread are
not applied: run `tide replay NAME` when they matter.
Prints {"ok":true,"shard":...,"decision":"skip-parent"}. Exit status: 0,
6 when SHARD_ID has no lease, 5 on a store failure.]]

commands["skip-parent"] = function(opts, pos)
  if #pos ~= 1 then return fail_usage("skip-parent", "needs SHARD_ID") end
  local app, err = open_app(opts)
  if not app then
    io.stderr:write("tide skip-parent: ", tostring(err), "\n")
    return (type(err) == "table" and EXIT_OF_KIND[err.kind]) or M.EXIT.usage
  end
  if app.cfg.store ~= "dynamodb" then
    app.store:close()
    return fail_usage("skip-parent", "the embedded store has no shards (store: " .. tostring(app.cfg.store) .. ")")
  end
  local leases = require("tide.projection.leases").new{ client = app.store.client, table_prefix = app.store.prefix,
                                                         group = "*", owner = "operator" }
  local ok, derr = leases:decide(pos[1], "skip-parent")
  app.store:close()
  if not ok then
    io.stderr:write("tide skip-parent: ", tostring(derr), "\n")
    return derr.type == "NotFound" and M.EXIT.not_found or M.EXIT.store
  end
  out(json{ ok = true, shard = pos[1], decision = "skip-parent" })
  return M.EXIT.ok
end

USAGE.doctor = [[
usage: tide doctor [--config FILE] [--json]

Tells why tide can or cannot reach its data: the config file, the store,
the region and where it came from, the credentials provider that answered
(access key id and expiry, never the secret), the caller identity (STS
GetCallerIdentity; skipped for a local endpoint), and each DynamoDB table
tide needs (present, key schema, stream). --json prints one JSON object.
Exit status: 0 when every check passed, else 5.]]

function commands.doctor(opts, pos)
  if #pos > 0 then return fail_usage("doctor", "unexpected argument '" .. pos[1] .. "'") end
  local doctor = require "tide.doctor"
  local report = doctor.run{ config = opts.config }
  out(opts.json and json(report) or doctor.text(report))
  return report.ok and M.EXIT.ok or M.EXIT.store
end

-- Commands in files of their own: tide.cli.NAME with main(args), usage, summary.
M.EXTERNAL = { test = "tide.cli.test", streams = "tide.cli.streams", modules = "tide.cli.modules",
               tail = "tide.cli.tail" }

function M.main(name, ...)
  if M.EXTERNAL[name] then return require(M.EXTERNAL[name]).main({ ... }) end
  if name == "read" and require("tide.cli.read_list").wants({ ... }) then
    return require("tide.cli.read_list").main({ ... })
  end
  local fn = commands[name]
  if not fn then
    io.stderr:write("tide: unknown command '", tostring(name), "'\n")
    return M.EXIT.usage
  end
  local opts, pos = parse(name, { ... })
  if not opts then return fail_usage(name, pos) end
  if opts.help then
    out(USAGE[name])
    return M.EXIT.ok
  end
  return fn(opts, pos)
end

return M
