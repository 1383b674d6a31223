-- tide exec and tide batch: run commands.
local clock = require "tide.clock"
local core = require "tide.core"
local sched = require "tide.sched"
local C = require "tide.cli.common"

local EXIT, EXIT_OF_KIND = C.EXIT, C.EXIT_OF_KIND
local out, flush_out, fail_usage, open_app, error_line, error_result, ok_result, start_reload, start_metrics, input_lines, decode_object = C.out, C.flush_out, C.fail_usage, C.open_app, C.error_line, C.error_result, C.ok_result, C.start_reload, C.start_metrics, C.input_lines, C.decode_object

local byte = string.byte

local commands = {}

function commands.exec(opts, pos)
  if #pos ~= 3 then return fail_usage("exec", "needs AGGREGATE ID 'COMMAND_JSON'") end
  local cmd, derr = decode_object(pos[3], "COMMAND_JSON")
  if not cmd then
    out(error_line("invalid", derr))
    return EXIT.usage
  end
  local app, err = open_app(opts)
  if not app then
    local kind = type(err) == "table" and err.kind or "invalid"
    out(error_line(kind, tostring(err)))
    return EXIT_OF_KIND[kind] or EXIT.usage
  end
  for _, o in ipairs{ "correlation_id", "causation_id" } do
    local ierr = opts[o] and require("tide.input").id_error(opts[o], "--" .. o:gsub("_", "-"))
    if ierr then
      out(error_line("invalid", ierr))
      return EXIT.usage
    end
  end
  local res, xerr = app.repository:execute(pos[1], pos[2], cmd,
    { correlation_id = opts.correlation_id, causation_id = opts.causation_id })
  app.store:close()
  if res then
    out(ok_result(res))
    return EXIT.ok
  end
  out(error_result(xerr))
  return EXIT_OF_KIND[xerr.kind] or EXIT.handler_error
end

-- tide batch --stats: one JSON line on stderr. What the repository did
-- (writes, conflicts, catch-ups) and, on DynamoDB, what the service
-- billed (client.usage: capacity units of the answers).
local function write_batch_stats(lines, outcomes, seconds, rstats, store, window)
  local commands = rstats.commands
  local st = {
    lines = lines, commands = commands, outcomes = outcomes, seconds = seconds, window = window,
    commands_per_second = seconds > 0 and commands / seconds or 0,
    writes = rstats.writes, conflicts = rstats.conflicts, catch_ups = rstats.catch_ups,
    catch_up_reads = rstats.catch_up_reads, guessed_catch_ups = rstats.guessed_catch_ups,
    loads = rstats.loads, snapshots = rstats.snapshots, snapshot_reads_shared = rstats.snapshot_reads_shared,
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

local ID_FIELDS = { "correlation_id", "causation_id" }

-- Lines in flight by default. 1024 on the embedded store made the group
-- commit's transactions larger (11% less wall time over 100 streams) but a
-- hot stream's batched run 27% slower, with 1024 commands parked on one
-- stream (bench/README.md, "A wider window"): 256 on both stores.
local DEFAULT_WINDOW = 256

-- Severity order for batch's exit status: the worst failure wins.
local SEVERITY = { [0] = 0, [3] = 1, [7] = 2, [4] = 3, [2] = 4, [1] = 5, [5] = 6 }

function commands.batch(opts, pos)
  if #pos > 0 then return fail_usage("batch", "unexpected argument '" .. pos[1] .. "'") end
  local window = tonumber(opts.concurrency or DEFAULT_WINDOW)
  if not window or window < 1 or window ~= math.floor(window) then
    return fail_usage("batch", "--concurrency must be a positive integer")
  end
  local app, err = open_app(opts)
  if not app then
    C.report("batch", opts, err)
    return (type(err) == "table" and EXIT_OF_KIND[err.kind]) or EXIT.usage
  end
  local repo = app.repository
  local ready = { ok = app.cfg.store ~= "dynamodb", why = "the events table has not answered yet" }
  local msrv, merr = start_metrics(app, opts, function() return ready.ok, ready.why end)
  if msrv == false then
    C.report("batch", opts, "--metrics: " .. tostring(merr))
    return EXIT.usage
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
  local status = EXIT.ok
  local function note(code)
    if SEVERITY[code] > SEVERITY[status] then status = code end
  end
  -- At most `window` lines are unprinted at a time (next_out..n): they
  -- live in rings of RING slots (a power of two above the window), in the
  -- tables' array part. Keyed by line number, every line was a new key of
  -- their hash part, and they rehashed every few lines once the lines in
  -- flight sat just under a power of two.
  local RING = 64
  while RING <= window do RING = RING * 2 end
  if RING > 65536 then RING = nil end -- a huge window: keyed by line number
  local function slot(i) return RING and (i - 1) % RING + 1 or i end
  local new_tab = require "table.new"
  local pending = new_tab(RING or 0, 0) -- slot -> thread, until its result is printed
  local results, codes = new_tab(RING or 0, 0), new_tab(RING or 0, 0) -- slot -> result line, exit code: done, not yet printed
  local next_out, n = 1, 0

  -- stdout is flushed once per turn of the scheduler, after the threads
  -- that were ready (a group commit wakes a hundred at once) have printed
  -- (not once per line): by a thread that yields once, then flushes.
  local flusher
  local function flush_soon()
    sched.sleep(0)
    flush_out()
    flusher = nil
  end

  -- Prints every result that is ready in input order, as soon as it is:
  -- a live producer sees each answer without waiting for the window.
  local function emit(i, line, code)
    local s = slot(i)
    assert(results[s] == nil, "tide batch: result slot in use")
    results[s], codes[s] = line, code
    if i ~= next_out then return end
    s = slot(next_out)
    while results[s] do
      out(results[s])
      note(codes[s])
      results[s], codes[s], pending[s] = nil, nil, nil
      next_out = next_out + 1
      s = slot(next_out)
    end
    if not flusher then flusher = sched.spawn(flush_soon) end
  end

  local outcomes = {} -- "ok" or an error kind -> count
  local function tally(kind) outcomes[kind] = (outcomes[kind] or 0) + 1 end

  local function run_line(req, derr, lineno)
    if not req then
      return error_line("invalid", derr), EXIT.usage
    end
    if type(req.aggregate) ~= "string" or type(req.id) ~= "string" or type(req.command) ~= "table" then
      return error_line("invalid",
        ("line %d: needs \"aggregate\" (string), \"id\" (string) and \"command\" (object)"):format(lineno)),
        EXIT.usage
    end
    local corr, caus = req.correlation_id, req.causation_id
    if corr ~= nil or caus ~= nil then
      for _, f in ipairs(ID_FIELDS) do
        local v = req[f]
        local ierr = v ~= nil and (type(v) ~= "string" and ("\"" .. f .. "\" must be a string")
                                   or require("tide.input").id_error(v, f))
        if ierr then return error_line("invalid", ("line %d: %s"):format(lineno, ierr)), EXIT.usage end
      end
    end
    local res, xerr = repo:execute(req.aggregate, req.id, req.command,
      (corr ~= nil or caus ~= nil) and { correlation_id = corr, causation_id = caus } or nil)
    if res then
      tally(res.duplicate and "duplicate" or "ok")
      return ok_result(res), EXIT.ok
    end
    tally(xerr.kind or "handler_error")
    return error_result(xerr), EXIT_OF_KIND[xerr.kind] or EXIT.handler_error
  end

  local function command_thread(req, derr, lineno)
    local ok, line, code = pcall(run_line, req, derr, lineno)
    if not ok then line, code = error_line("handler_error", tostring(line)), EXIT.handler_error end
    emit(lineno, line, code)
  end
  local started = clock.mono()

  local max_line = app.cfg.commands and app.cfg.commands.max_line_bytes or 1024 * 1024
  if max_line == 0 then max_line = nil end -- 0: no limit
  for text, long in input_lines(max_line) do
    n = n + 1
    if text == false then
      emit(n, error_line("invalid", ("line %d is %d bytes, over the %d-byte limit (commands.max_line_bytes): "
        .. "skipped"):format(n, long, max_line)), EXIT.usage)
    elseif byte(text) ~= 123 and text:match("^%s*$") then -- ('{': not blank, no pattern run)
      emit(n, error_line("invalid", "line " .. n .. " is empty"), EXIT.usage)
    else
      -- Commands of one stream are decided in the order they reach the
      -- repository, which is the order of the lines: each thread calls it
      -- before its first yield, and threads start in the order spawned.
      local req, derr = decode_object(text, n) -- named "line n" in its error
      local th = sched.spawn(command_thread, req, derr, n)
      if next_out <= n then pending[slot(n)] = th end
    end
    while n - next_out + 1 >= window and pending[slot(next_out)] do sched.wait(pending[slot(next_out)]) end
  end
  while next_out <= n do
    local th = next_out <= n and pending[slot(next_out)]
    if th then sched.wait(th) else sched.sleep(0) end
  end
  if watcher then watcher:stop() end
  if opts.stats then write_batch_stats(n, outcomes, clock.mono() - started, repo.stats, app.store, window) end
  if msrv then msrv:stop() end
  app.store:close()
  return status
end

return {
  exec = { run = commands.exec, summary = "run one command, print its result as JSON", data_after = 1,
    options = { { "--correlation-id", "ID", "meta.correlation_id of the events (default: the command id)" },
                { "--causation-id", "ID", "meta.causation_id of the events (what caused this command)" } },
    usage = [[
usage: tide exec [--config FILE] [--correlation-id ID] [--causation-id ID] AGGREGATE ID 'COMMAND_JSON'

Runs one command on the stream AGGREGATE#ID. COMMAND_JSON is an object
with "type", the command's fields, and an optional "id": a command id.
The same id sent again appends nothing and returns the original result
with "duplicate":true; the same id with a different command is refused
(idempotency_mismatch, exit 7; HTTP 422). The result, success or not, is
the command's data: one JSON line on stdout, the HTTP API's body.

Examples:
  tide exec account a1 '{"type":"Open","owner":"Ada"}'
  tide exec account a1 '{"type":"Deposit","amount":30,"id":"dep-2026-0001"}'
  tide exec --correlation-id order-77 --causation-id pay-12 account a1 '{"type":"Withdraw","amount":5}'

Output (stdout), one line:
  {"ok":true,"stream":"account#a1","version":2,"events":[{"version":2,"type":...,"data":...,"meta":...}]}
  {"ok":false,"error":{"kind":"rejected","message":...,"stream":...,"command":...}}

Exit status: 0 ok; 1 handler error; 2 bad input (JSON, unknown aggregate
or command, schema); 3 rejected by the domain; 4 conflict after the
retries; 5 store or network failure; 7 idempotency mismatch.]] },
  batch = { run = commands.batch, summary = "run NDJSON commands from stdin concurrently, one result line each",
    options = { { "--concurrency", "N", "at most N commands in flight (default 256)" },
                { "--stats", nil, "at the end, one JSON line of figures on stderr" },
                { "--metrics", "ADDR", "serve /metrics, /health and /ready on ADDR while it runs" } },
    usage = [[
usage: tide batch [--config FILE] [--concurrency N] [--stats] [--metrics ADDR] < commands.ndjson

Reads one command a line from stdin,
  {"aggregate":...,"id":...,"command":{...}[,"correlation_id":...][,"causation_id":...]}
and runs them concurrently: the commands of one stream in input order
(those waiting on one stream share a write), at most N in flight. Prints
one result line per input line, in input order, shaped as tide exec's
output, each as soon as it and those before it are done. A line longer
than commands.max_line_bytes (1 MiB) gets an error result and is skipped.
Modules are hot-reloaded while it runs.

Examples:
  tide batch < commands.ndjson > results.ndjson
  producer | tide batch --concurrency 64 | consumer
  tide batch --stats < load.ndjson > /dev/null

Output (stdout): one result line per input line. --stats: at the end, one
JSON line on stderr with the counts by outcome, the writes, conflicts and
catch-ups, the window (--concurrency), and on DynamoDB the requests and
capacity units, per command too.

Exit status: 0 every command succeeded; else the worst failure's status
(5 store > 1 handler > 2 input > 4 conflict > 7 idempotency > 3 rejected).]] },
}
