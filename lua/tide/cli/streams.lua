-- tide.cli.streams: `tide streams AGGREGATE`: the aggregate's streams with
-- their last version, one JSON line each.
local look = require "tide.cli.look"

local M = {}

M.summary = "list an aggregate's streams and their versions: tide streams AGGREGATE"

M.usage = [[
usage: tide streams [--config FILE] AGGREGATE [--limit N] [--after ID]

Output: the streams of AGGREGATE, one JSON object per line:
  {"stream":"account#alice","id":"alice","version":3}
at most --limit (default 100); when more remain, a last line on stderr
says how to go on:  tide streams: more streams: --after 'ID'
Options:
  --limit N    at most N streams (default 100)
  --after ID   streams after this one (an id or AGGREGATE#ID)
SQLite: in name order, read from the events table's (stream, version)
index: cheap.
DynamoDB: the events table's partition keys cannot be listed, so this is a
Scan of the events table (keys only, filtered on "AGGREGATE#"): it reads
every event of every aggregate until N streams are found, and DynamoDB
bills all of it (0.5 RCU per 4 KB read, the filter does not lower it; a
table of 10 million 200-byte events is about 250,000 read units for a
full listing). Streams come in the table's hash order. What was read and billed
goes to stderr:  tide streams: Scan read N events in P pages, R RCU.
To list streams often in production, keep them in a read model (a
projection subscribed to the aggregate).
Examples:
  tide streams account
  tide streams account --limit 20 --after alice
Exit status: 0 ok, 2 bad usage or unknown aggregate, 5 store failure.]]

M.options = { limit = "value", after = "value" }

function M.main(args)
  local opts, pos = look.parse(args, M.options)
  if not opts then return look.fail("streams", pos, look.EXIT.usage, M.usage) end
  if opts.help then look.out(M.usage); return look.EXIT.ok end
  if #pos ~= 1 then return look.fail("streams", "needs AGGREGATE", look.EXIT.usage, M.usage) end
  local limit, lerr = look.count(opts.limit or "100", "--limit")
  if not limit then return look.fail("streams", lerr, look.EXIT.usage) end
  local app, err = look.open(opts)
  if not app then return look.fail("streams", err, look.exit_of(err)) end
  local name = pos[1]
  if not app.registry:get(name) and not app.registry.errors[name] then
    local _, gerr = app.registry:get(name)
    app.store:close()
    return look.fail("streams", gerr, look.EXIT.usage)
  end
  local streams, more, cost = app.store:list_streams(name, { limit = limit, after = opts.after })
  app.store:close()
  if not streams then return look.fail("streams", more, look.exit_of(more)) end
  for _, s in ipairs(streams) do
    look.out('{"stream":' .. look.json(s.stream) .. ',"id":' .. look.json(s.id) .. ',"version":'
             .. look.json(s.version) .. "}")
  end
  look.flush()
  if cost then
    io.stderr:write(("tide streams: Scan read %d events in %d pages, %s RCU\n"):format(
      cost.scanned, cost.pages, tostring(cost.read_units)))
  end
  if more and streams[#streams] then
    io.stderr:write("tide streams: more streams: --after '", streams[#streams].id, "'\n")
  end
  return look.EXIT.ok
end

return M
