-- tide status: the projections' progress and the modules' load errors, as
-- a table (default) or JSON lines (--json).
local host = require "tide.projection.host"
local C = require "tide.cli.common"

local EXIT = C.EXIT
local out, json, fail_usage, open_projections = C.out, C.json, C.fail_usage, C.open_projections

local commands = {}

-- The first line of an error, and its traceback lines.
local function one_line(text)
  if type(text) ~= "string" then return text, nil end
  local first, frames = C.split_error(text, true)
  return first, frames
end

-- st (a runner's status) -> the row of the table: workers, handled, lag,
-- error (one line) and its traceback.
local function summary(st)
  local workers, seen = {}, {}
  local function worker(id)
    if id and not seen[id] then
      seen[id] = true
      workers[#workers + 1] = id
    end
  end
  local lag, err, frames
  if st.shards then
    -- DynamoDB Streams: a lease per shard; the lag of the shards being read
    for _, sh in ipairs(st.shards) do
      worker(sh.owner)
      if sh.lag_ms then lag = math.max(lag or 0, sh.lag_ms) end
      if sh.error and not err and sh.error ~= "" then err, frames = one_line("shard " .. sh.shard .. ": " .. sh.error) end
    end
    lag = lag and ("%d ms"):format(lag) or "-"
  else
    if st.lease_until and st.now and st.lease_until > st.now then worker(st.holder) end
    lag = st.lag and (st.lag .. " events") or "-"
    if st.error then err, frames = one_line(st.error) end
  end
  return { workers = workers, handled = st.handled_total or st.handled, lag = lag, error = err,
           traceback = frames }
end

local function pad(s, n) return s .. string.rep(" ", math.max(0, n - #s)) end

local function print_table(rows, verbose)
  local head = { "PROJECTION", "FEED", "WORKERS", "HANDLED", "LAG", "STATE" }
  local cells = { head }
  for _, r in ipairs(rows) do
    cells[#cells + 1] = { r.name, r.feed or "-", r.workers or "-", r.handled or "-", r.lag or "-", r.state }
  end
  local width = {}
  for _, row in ipairs(cells) do
    for i = 1, #head - 1 do width[i] = math.max(width[i] or 0, #tostring(row[i])) end
  end
  for k, row in ipairs(cells) do
    local parts = {}
    for i = 1, #head - 1 do parts[i] = pad(tostring(row[i]), width[i]) end
    parts[#head] = tostring(row[#head])
    out((table.concat(parts, "  "):gsub("%s+$", "")))
    local r = rows[k - 1]
    if r then
      if r.failing then out("    at " .. r.failing) end
      if r.parked then out("    parked: " .. r.parked) end
      if verbose and r.traceback then
        for _, f in ipairs(r.traceback) do out("    " .. f) end
      end
    end
  end
end

function commands.status(opts, pos)
  if #pos > 0 then return fail_usage("status", "unexpected argument '" .. pos[1] .. "'") end
  local app, code = open_projections("status", opts)
  if not app then return code end
  local status = EXIT.ok
  local rows = {}
  local parking = require("tide.projection.parking").for_app(app)
  for _, name in ipairs(app.projections:names()) do
    local p = app.projections:get(name)
    -- on DynamoDB: the leases of `tide run` (group "*"), else those of
    -- `tide project NAME`
    local dynamodb = app.cfg.store == "dynamodb"
    local r = host.runner(app, p, { log = function() end, group = dynamodb and "*" or nil })
    local st, err = r:status(name)
    if st and st.shards and #st.shards == 0 and dynamodb then
      st, err = host.runner(app, p, { log = function() end }):status(name)
    end
    if st then
      local parked = parking:list(name)
      if parked and #parked > 0 then st.parked = parked end
      -- the status call's own runner is no worker: leave its id out
      st.owner, st.held, st.last_error = nil, nil, nil
      local s = summary(st)
      st.workers, st.handled, st.now = require("tide.core").list(s.workers), s.handled, nil
      st.handled_total = nil
      if not opts.verbose and s.error then st.error, st.traceback = s.error, nil end
      if opts.verbose and s.traceback and #s.traceback > 0 then st.traceback = s.traceback end
      if opts.json then
        out('{"projection":' .. json(name) .. ',"status":' .. json(st) .. "}")
      else
        local f = st.failing_event
        if not f and s.error then
          -- Streams: the shard's error names the event
          local stream, version, etype = s.error:match("event (%S+#%S+) v(%d+) %(([^)]+)%)")
          if stream then f = { stream = stream, version = version, type = etype } end
        end
        rows[#rows + 1] = { name = name, feed = st.feed, workers = #s.workers > 0 and table.concat(s.workers, ",") or "-",
          handled = tostring(s.handled or "-"), lag = s.lag,
          state = s.error and ("error: " .. s.error) or "ok",
          failing = f and ("%s version %s (%s): tide park %s %s %s"):format(f.stream, f.version, f.type, name,
            f.stream, f.version),
          parked = st.parked and ("%d event(s): tide status --json lists them"):format(#st.parked),
          traceback = s.traceback }
      end
    else
      local line = one_line(tostring(err))
      if opts.json then
        out('{"projection":' .. json(name) .. ',"error":' .. json(line) .. "}")
      else
        rows[#rows + 1] = { name = name, state = "cannot read the status: " .. line }
      end
      status = EXIT.store
    end
  end
  local load_errors = {}
  for name, err in pairs(app.projections.errors or {}) do load_errors[#load_errors + 1] = { "projection", name, err } end
  for name, err in pairs(app.registry.errors or {}) do load_errors[#load_errors + 1] = { "aggregate", name, err } end
  table.sort(load_errors, function(a, b) return a[1] .. a[2] < b[1] .. b[2] end)
  for _, e in ipairs(load_errors) do
    local line, frames = one_line(tostring(e[3]))
    if opts.json then
      out('{"' .. e[1] .. '":' .. json(e[2]) .. ',"load_error":' .. json(opts.verbose and tostring(e[3]) or line) .. "}")
    else
      rows[#rows + 1] = { name = e[1] == "aggregate" and ("aggregate " .. e[2]) or e[2],
        state = "load error: " .. line, traceback = frames }
    end
  end
  if not opts.json then print_table(rows, opts.verbose) end
  app.store:close()
  return status
end

return {
  status = { run = commands.status, summary = "projections: workers, handled, lag, last error; load errors",
    options = { { "--json", nil, "one JSON object a line, for machines" },
                { "--verbose", nil, "the last error's traceback" } },
    usage = [[
usage: tide status [--config FILE] [--json] [--verbose]

Shows every projection of the projections folder: its feed (sqlite: the
embedded store's global position; streams: DynamoDB Streams), the workers
holding its leases (host:pid of each `tide run`/`tide project`), the events
it has handled, its lag (events not applied yet on the embedded store; age
of the newest record read, per shard, on Streams), and its last error in
one line with the event it stopped at and the command that sets it aside.
Modules that failed to load follow, with their error.

Examples:
  tide status
  tide status --verbose          # with the last error's traceback
  tide status --json | jq -c 'select(.status.error)'

Output (stdout), a table:
  PROJECTION  FEED    WORKERS      HANDLED  LAG       STATE
  balances    sqlite  web-1:4242   1200     0 events  ok
  owners      sqlite  -            880      320 events  error: owners.handlers.Opened raised: ...
      at account#a7 version 1 (Opened): tide park owners account#a7 1
With --json, one object a line:
  {"projection":NAME,"status":{"feed":..,"workers":[..],"handled":N,"lag":N,"error":..,
   "failing_event":{..},"parked":[..],"shards":[..] (Streams),..}}
  {"projection":NAME,"load_error":MESSAGE}   {"aggregate":NAME,"load_error":MESSAGE}

Exit status: 0 ok (even when a projection is failing: its error is data);
2 bad usage or configuration; 5 a status could not be read (store failure).]] },
}
