-- tide events and tide state: read one stream.
local result = require "tide.result"
local terror = require "tide.error"
local C = require "tide.cli.common"

local EXIT = C.EXIT
local out, json, fail_usage, open_app, fail = C.out, C.json, C.fail_usage, C.open_app, C.fail

local commands = {}

-- events and state: read one stream through the repository, print it.
-- A stream with no events is not found (exit 6), as GET /aggregates/{type}/{id}
-- answers 404.
local function read_stream(name, opts, pos, read, empty, print_result)
  if #pos ~= 2 then return fail_usage(name, "needs AGGREGATE ID") end
  local app, err = open_app(opts)
  if not app then return fail(name, opts, err) end
  local res, rerr = read(app.repository, pos[1], pos[2])
  app.store:close()
  if not res then return fail(name, opts, rerr) end
  if empty(res) then
    return fail(name, opts, terror.new{ kind = "not_found",
      message = ("stream %s#%s has no events"):format(pos[1], pos[2]) })
  end
  print_result(res)
  return EXIT.ok
end

function commands.events(opts, pos)
  return read_stream("events", opts, pos,
    function(repo, agg, id) return repo:events(agg, id, nil, { stored = opts.stored }) end,
    function(events) return #events == 0 end,
    function(events)
      for _, ev in ipairs(events) do
        out('{"version":' .. json(ev.version) .. ',"type":' .. json(ev.type) .. ',"data":' .. json(ev.data)
            .. ',"meta":' .. json(ev.meta) .. "}")
      end
    end)
end

function commands.state(opts, pos)
  return read_stream("state", opts, pos, function(repo, agg, id) return repo:state(agg, id) end,
    function(st) return st.version == 0 end,
    function(st)
      out(result.state(st, "handler_error"))
    end)
end

return {
  events = { run = commands.events, summary = "print a stream's events as NDJSON",
    options = { { "--stored", nil, "the events as stored: data before upcasting, meta.schema the stored schema" } },
    usage = [[
usage: tide events [--config FILE] [--stored] AGGREGATE ID

Prints the events of the stream AGGREGATE#ID, oldest first, one JSON
object a line. The data is upcast to the aggregate module's current
schema (meta.schema is that schema, meta.stored_schema the one stored
when they differ); with --stored, the data and meta exactly as stored.

Examples:
  tide events account a1
  tide events account a1 | jq -c '{version, type, data}'
  tide events --stored account a1

Output (stdout):
  {"version":1,"type":"Opened","data":{...},"meta":{"command_id":...,"schema":1,...}}

Exit status: 0 ok; 2 bad usage or unknown aggregate; 5 store failure;
6 the stream has no events.]] },
  state = { run = commands.state, summary = "print an aggregate's current state as JSON",
    usage = [[
usage: tide state [--config FILE] AGGREGATE ID

Prints the state of AGGREGATE#ID after every event (the module's apply
functions run over its events, from the latest snapshot), as one JSON
object: the same body as GET /aggregates/{type}/{id}.

Examples:
  tide state account a1
  tide state account a1 | jq .state.balance

Output (stdout):
  {"stream":"account#a1","version":3,"state":{...}}

Exit status: 0 ok; 2 bad usage or unknown aggregate; 5 store failure;
6 the stream has no events (HTTP: 404).]] },
}
