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
  read = { run = commands.read, summary = "print a read-model item as JSON",
    usage = [[
usage: tide read [--config FILE] MODEL KEY

Prints the item KEY of the read model (table) MODEL, as the projection
wrote it, without tide's own attributes (_tide, _rev).

Examples:
  tide read balances a1
  tide read balances a1 | jq .balance

Output (stdout): the item, one JSON object.

Exit status: 0 ok; 2 unknown read model (the known ones are named);
5 store failure; 6 no such item.]] },
}
