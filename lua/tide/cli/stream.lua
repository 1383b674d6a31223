-- tide events and tide state: read one stream.
local result = require "tide.result"
local C = require "tide.cli.common"

local EXIT, EXIT_OF_KIND = C.EXIT, C.EXIT_OF_KIND
local out, json, fail_usage, open_app = C.out, C.json, C.fail_usage, C.open_app

local commands = {}

-- events and state: read one stream through the repository, print it.
local function read_stream(name, opts, pos, read, print_result)
  if #pos ~= 2 then return fail_usage(name, "needs AGGREGATE ID") end
  local app, err = open_app(opts)
  if not app then
    io.stderr:write("tide ", name, ": ", tostring(err), "\n")
    return (type(err) == "table" and EXIT_OF_KIND[err.kind]) or EXIT.usage
  end
  local res, rerr = read(app.repository, pos[1], pos[2])
  app.store:close()
  if not res then
    io.stderr:write("tide ", name, ": ", tostring(rerr), "\n")
    return EXIT_OF_KIND[rerr.kind] or EXIT.store
  end
  print_result(res)
  return EXIT.ok
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

return {
  events = { run = commands.events, usage = [[
usage: tide events [--config FILE] AGGREGATE ID

Prints the stream's events as NDJSON: {"version":...,"type":...,"data":...,"meta":...}]] },
  state = { run = commands.state, usage = [[
usage: tide state [--config FILE] AGGREGATE ID

Prints {"stream":...,"version":N,"state":{...}}: the state after every event.]] },
}
