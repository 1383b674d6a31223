-- tide read: read-model items.
local host = require "tide.projection.host"
local C = require "tide.cli.common"

local EXIT, EXIT_OF_KIND = C.EXIT, C.EXIT_OF_KIND
local out, json, fail_usage, open_projections = C.out, C.json, C.fail_usage, C.open_projections

local commands = {}

function commands.read(opts, pos)
  if #pos ~= 2 then return fail_usage("read", "needs MODEL KEY") end
  local app, code = open_projections("read", opts)
  if not app then return code end
  local item, err = host.read(app, pos[1], pos[2])
  app.store:close()
  if item == nil then
    C.report("read", opts, err.message)
    return err.kind == "invalid" and EXIT.usage or EXIT.store
  end
  if item == false then
    C.report("read", opts, "no item '" .. pos[2] .. "' in read model '" .. pos[1] .. "'")
    return EXIT.not_found
  end
  out(json(item))
  return EXIT.ok
end

return {
  read = { run = commands.read, summary = "a read-model item, or its items: tide read MODEL [KEY]",
    options = { { "--limit", "N", "without KEY: at most N items (default 100)" },
                { "--after", "KEY", "without KEY: the items after KEY (the last key printed: pages through)" },
                { "--prefix", "PREFIX", "without KEY: only the keys starting with PREFIX (SQLite only)" } },
    usage = [[
usage: tide read [--config FILE] MODEL KEY
       tide read [--config FILE] MODEL [--limit N] [--after KEY] [--prefix PREFIX]

With KEY: prints the item KEY of the read model (table) MODEL, as the
projection wrote it, without tide's own attributes (_tide, _rev).
Without KEY: the model's items, one JSON object per line; when more
remain, a last line on stderr says how to go on (--after 'KEY'). On
SQLite the items come in key order; on DynamoDB a listing is a Scan of the
table in its hash order, billed for every item read (0.5 RCU per 4 KB),
and a prefix is refused rather than scanned (the key is a partition key).

Examples:
  tide read balances a1
  tide read balances --limit 10
  tide read balances --after acc-0042 --limit 10

Output (stdout): the item, one JSON object; without KEY, one per line.

Exit status: 0 ok; 2 bad usage or unknown read model (the known ones are
named); 5 store failure; 6 no such item.]] },
}
