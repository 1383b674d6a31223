-- tide run and tide project: run projections.
local host = require "tide.projection.host"
local sched = require "tide.sched"
local terror = require "tide.error"
local C = require "tide.cli.common"

local EXIT, EXIT_OF_KIND = C.EXIT, C.EXIT_OF_KIND
local fail = C.fail
local out, json, open_app, start_reload, start_metrics, open_projection, stop_on_signals = C.out, C.json, C.open_app, C.start_reload, C.start_metrics, C.open_projection, C.stop_on_signals

local commands = {}

function commands.project(opts, pos)
  -- the daemon logs JSON lines; a catch-up is a one-shot command: text
  local app, p = open_projection("project", opts, pos, not opts.until_caught_up and "json" or nil)
  if not app then return p end
  local log = app.log
  local retries = 0
  if opts.until_caught_up then
    -- The failure that ends the catch-up is reported once, by the command;
    -- the runner's lines about each failed attempt (error, then warn for
    -- the same failure again) go to the debug level; other warnings
    -- (an event parked and passed over) stay.
    log = function(level, message, fields)
      if level == "error" or (level == "warn" and tostring(message):find("^still failing")) then
        retries = retries + 1
        level = "debug"
      end
      return app.log(level, message, fields)
    end
  end
  local runner = host.runner(app, p, { log = log })
  local flag = { stop = false }
  local started = false
  local msrv, merr = start_metrics(app, opts, function()
    if flag.stop then return false, "stopping" end
    if not started then return false, "projection '" .. p.name .. "' not started" end
    return true
  end)
  if msrv == false then
    return fail("project", opts, terror.new{ kind = "invalid", message = "--metrics: " .. tostring(merr) }, app, EXIT.usage)
  end
  local function stop_metrics() if msrv then msrv:stop() end end
  local ok, err = runner:start()
  if not ok then stop_metrics(); return fail("project", opts, err, app, EXIT.store) end
  started = true
  if opts.until_caught_up then
    -- SIGINT/SIGTERM: the batch in flight is finished and checkpointed,
    -- the lease given back, exit 130
    local sig = stop_on_signals(flag, log)
    local res
    res, err = runner:run_until_caught_up{ wait_for_lease = true, stop = flag }
    if sig then sig:stop() end
    stop_metrics()
    if res == nil then
      runner:stop() -- the lease goes back: the next run need not wait for it
      if retries > 1 and type(err) == "table" and err.message then
        local first, rest = tostring(err.message):match("^([^\n]*)(.*)$")
        err.message = first .. (" (failed %d times in a row)"):format(retries) .. rest
      end
      return fail("project", opts, err, app, C.exit_of(err))
    end
    runner:stop()
    out(json{ ok = true, projection = p.name, handled = res.handled })
    return EXIT.ok
  end
  local sig = stop_on_signals(flag, app.log)
  ok, err = runner:run(flag)
  if sig then sig:stop() end
  stop_metrics()
  if ok == nil and err then return fail("project", opts, err, app, EXIT.store) end
  return EXIT.ok
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
    return EXIT.usage
  end
  local app, aerr = open_app(opts, "json")
  if not app then
    jlog("error", "tide run: " .. tostring(aerr), { error = aerr })
    return (type(aerr) == "table" and EXIT_OF_KIND[aerr.kind]) or EXIT.usage
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
    return EXIT.usage
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
    log("error", "tide run: --metrics: " .. tostring(merr))
    if sig then sig:stop() end
    return EXIT.usage
  end
  local watcher = start_reload(app, { { path = app.cfg.aggregates, registry = app.registry },
                                      { path = app.cfg.projections, registry = app.projections } })
  local threads, never_started = {}, 0
  local runner_mod = require "tide.projection.runner"
  -- starts a runner, retrying with backoff while the store cannot be
  -- reached; false when stopped before it could start
  local function start_with_retry(r, label, stop)
    local failures = 0
    while true do
      local ok, ierr = r:start()
      if ok then return true end
      failures = failures + 1
      local delay = runner_mod.backoff_delay(failures, 0.5, 30)
      log("error", "projection failed to start; retrying", { projection = label, error = tostring(ierr),
        attempt = failures, retry_in_s = delay })
      local waited = 0
      while waited < delay and not stop() do
        sched.sleep(math.min(0.1, delay - waited))
        waited = waited + 0.1
      end
      if stop() then return false end
    end
  end
  -- name -> {stop = bool}: the projections running; a projection added to
  -- the folder while tide run runs is started, a removed one stopped
  -- (its leases released), by the supervisor below
  local running = {}
  local abandoned = false
  local function launch(name)
    local p = app.projections:get(name)
    if not p then return end
    local mine = { stop = false }
    running[name] = mine
    local stop = function() return flag.stop or mine.stop end
    local r = host.runner(app, p, { log = log, registry = app.projections })
    total = total + 1
    threads[#threads + 1] = sched.spawn(function()
      if not start_with_retry(r, name, stop) then
        if not mine.stop then never_started = never_started + 1 end
        total = total - 1
        return
      end
      started = started + 1
      log("info", "projection started", { projection = name, store = app.cfg.store })
      r:run(stop)
      if mine.stop then started, total = started - 1, total - 1 end
      log("info", "projection stopped", { projection = name })
    end)
  end
  -- DynamoDB: one runner (one reader per shard) for every projection. A
  -- projection added, removed or reloaded restarts it with the new set:
  -- the old one checkpoints and gives its leases back first.
  local group_mode = app.cfg.store == "dynamodb"
  local group_now -- {stop=, projs=, signature=}
  local function signature()
    local parts = {}
    for _, name in ipairs(app.projections:names()) do
      local p = app.projections:get(name)
      if p then parts[#parts + 1] = name .. "@" .. tostring(p.version) .. "@" .. tostring(p) end
    end
    return table.concat(parts, ",")
  end
  local function launch_group()
    local projs = {}
    for _, name in ipairs(app.projections:names()) do projs[#projs + 1] = app.projections:get(name) or nil end
    local mine = { stop = false, signature = signature(), projs = projs }
    group_now = mine
    local group = host.group_runner(app, projs, { log = log })
    if not group then return end
    local stop = function() return flag.stop or mine.stop end
    local label = {}
    for _, p in ipairs(projs) do label[#label + 1] = p.name end
    label = table.concat(label, ",")
    total = total + #projs
    threads[#threads + 1] = sched.spawn(function()
      if not start_with_retry(group, label, stop) then
        if not mine.stop then never_started = never_started + #projs end
        total = total - #projs
        return
      end
      started = started + #projs
      for _, p in ipairs(projs) do log("info", "projection started", { projection = p.name, store = app.cfg.store }) end
      group:run(stop)
      if group.abandoned then abandoned = true end
      if mine.stop then started, total = started - #projs, total - #projs end
      for _, p in ipairs(projs) do log("info", "projection stopped", { projection = p.name }) end
    end)
  end
  if group_mode then
    launch_group()
  else
    for _, name in ipairs(names) do launch(name) end
  end
  local supervisor = sched.spawn(function()
    while not flag.stop do
      sched.sleep(0.2)
      if flag.stop then break end
      if group_mode then
        if signature() ~= group_now.signature then
          log("info", "projections changed: restarting the shard readers with the new set",
              { projections = app.projections:names() })
          group_now.stop = true
          launch_group()
        end
      else
        local now = {}
        for _, name in ipairs(app.projections:names()) do
          now[name] = true
          if not running[name] then
            log("info", "projection added: starting it", { projection = name })
            launch(name)
          end
        end
        for name, mine in pairs(running) do
          if not now[name] then
            log("info", "projection removed: stopping it", { projection = name })
            mine.stop = true
            running[name] = nil
          end
        end
      end
    end
  end)
  sched.wait(supervisor)
  local i = 1
  while threads[i] do
    sched.wait(threads[i])
    i = i + 1
  end
  if watcher then watcher:stop() end
  if msrv then msrv:stop() end
  if sig then sig:stop() end
  app.store:close()
  if never_started > 0 then
    log("error", "tide run: stopped before every projection could start", { never_started = never_started })
    return EXIT.store
  end
  -- shard workers still in a request (a lease-table outage) past the stop
  -- timeout: exit now, their leases expire on their own
  if abandoned then os.exit(EXIT.ok) end
  return EXIT.ok
end

return {
  run = { run = commands.run, summary = "run every projection as a daemon (hot reload, shared leases)",
    options = { { "--metrics", "ADDR", "serve /metrics, /health and /ready on ADDR (e.g. 127.0.0.1:9464)" } },
    usage = [[
usage: tide run [--config FILE] [--metrics ADDR]

Runs every projection of the projections folder as a daemon. On DynamoDB,
any number of tide run processes share the stream's shards through
leases; on SQLite one process runs each projection. A module changed in
the folder is reloaded; a projection added is started, one removed is
stopped (its leases released). SIGTERM or SIGINT: finish the batch, write
its effects, checkpoint, release the leases, exit 0.

Examples:
  tide run
  tide run --metrics 127.0.0.1:9464
  systemctl start tide-projections     # docs/deploy.md

Output: nothing on stdout; its log on stderr, JSON lines (log.format
sets it): {"ts":..,"level":..,"msg":..,"projection":..,...}.

Exit status: 0 stopped by a signal; 2 bad configuration or no projection
can run; 5 stopped before every projection could start (store failure).]] },
  project = { run = commands.project, summary = "run one projection (until caught up, or as a daemon)",
    options = { { "--until-caught-up", nil, "stop, exit 0, once everything written before the start is applied" },
                { "--metrics", "ADDR", "serve /metrics, /health and /ready on ADDR (e.g. 127.0.0.1:9464)" },
                { "--json", nil, "the error line as JSON" } },
    usage = [[
usage: tide project [--config FILE] [--until-caught-up] [--metrics ADDR] NAME

Runs the projection NAME. With --until-caught-up it stops once everything
written before it started has been applied; a handler failing 5 times in
a row on one event ends it (exit 1), its lease given back, so a rerun
after fixing the handler starts at once (a lease left by a crashed worker
is waited for). Without it, it runs as a daemon (as tide run, one
projection).

Examples:
  tide project balances --until-caught-up
  tide project balances --until-caught-up --json    # the error as JSON
  tide project balances
  tide project balances --metrics 127.0.0.1:9465

Output (stdout): {"ok":true,"projection":"balances","handled":N} once
caught up. An error: one line on stderr, the handler's traceback (your
frames; tide's with --debug) under it.

Exit status: 0 ok; 1 a handler failed; 2 unknown projection or bad
configuration; 5 store failure; 130 --until-caught-up stopped by SIGINT
or SIGTERM before caught up (what was applied is checkpointed).]] },
}
