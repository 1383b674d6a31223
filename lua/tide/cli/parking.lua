-- tide park, tide unpark and tide replay: events a projection cannot apply, and rebuilding.
local host = require "tide.projection.host"
local terror = require "tide.error"
local C = require "tide.cli.common"

local EXIT, EXIT_OF_KIND = C.EXIT, C.EXIT_OF_KIND
local out, json, fail_usage, open_projection = C.out, C.json, C.fail_usage, C.open_projection

local commands = {}

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
    C.report("park", opts, lerr)
    return EXIT.store
  end
  if not rows[1] or rows[1].version ~= version then
    C.report("park", opts, ("stream %s has no version %d"):format(stream_name, version))
    return EXIT.not_found
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
    C.report("park", opts, perr)
    return EXIT.store
  end
  out(json{ ok = true, projection = p.name, stream = stream_name, version = version, type = rows[1].type,
            error = reason })
  return EXIT.ok
end

function commands.unpark(opts, pos)
  local app, p, stream_name, version = parked_args("unpark", opts, pos)
  if not app then return p end
  local parking = require("tide.projection.parking").for_app(app)
  local removed, err = parking:unpark(p.name, stream_name, version)
  app.store:close()
  if removed == nil then
    C.report("unpark", opts, err)
    return EXIT.store
  end
  if not removed then
    C.report("unpark", opts, ("%s version %d is not parked for %s"):format(stream_name, version, p.name))
    return EXIT.not_found
  end
  out(json{ ok = true, projection = p.name, stream = stream_name, version = version, unparked = true })
  return EXIT.ok
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
    C.report("replay", opts, err)
    return terror.is(err, "handler_error") and EXIT.handler_error or EXIT.store
  end
  out(json{ ok = true, projection = p.name, events = res.events, streams = res.streams })
  return EXIT.ok
end

return {
  park = { run = commands.park, summary = "set aside an event a projection cannot apply",
    usage = [[
usage: tide park [--config FILE] NAME STREAM VERSION

Sets aside the event STREAM VERSION (e.g. account#a1 3) for the projection
NAME: the projection passes over it and goes on with the next events.
Use it for an event the projection's handler cannot apply (tide status
shows it under the failing projection). The event stays in the events
table and on the parked list (tide status --json, "parked"); after fixing
the handler, tide unpark it and tide replay NAME to apply it in order.

Examples:
  tide park balances account#a1 3
  tide status --json | jq -c '.status.parked'

Output (stdout): {"ok":true,"projection":...,"stream":...,"version":N,"type":...,"error":...}

Exit status: 0 ok; 2 bad arguments or unknown projection; 5 store
failure; 6 the stream has no such version.]] },
  unpark = { run = commands.unpark, summary = "take an event off a projection's parked list",
    usage = [[
usage: tide unpark [--config FILE] NAME STREAM VERSION

Takes the event off NAME's parked list. Events the projection has passed
already are applied by tide replay NAME.

Examples:
  tide unpark balances account#a1 3 && tide replay balances

Output (stdout): {"ok":true,"projection":...,"stream":...,"version":N,"unparked":true}

Exit status: 0 ok; 2 bad arguments or unknown projection; 5 store
failure; 6 the event is not parked.]] },
  replay = { run = commands.replay, summary = "rebuild a projection from the events table",
    usage = [[
usage: tide replay [--config FILE] NAME

Rebuilds the projection NAME from the events table into emptied read
models, then continues from the stream with no gap and nothing applied
twice. Stop its tide run workers' copy of NAME first if its handlers
changed in a way that needs a rebuild; progress goes to stderr.

Examples:
  tide replay balances
  tide replay owners 2> replay.log

Output (stdout): {"ok":true,"projection":NAME,"events":N,"streams":N}

Exit status: 0 ok; 1 a handler failed; 2 unknown projection; 5 store
failure.]] },
}
