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
    io.stderr:write("tide read: ", tostring(err.message), "\n")
    return err.kind == "invalid" and EXIT.usage or EXIT.store
  end
  if item == false then
    io.stderr:write("tide read: no item '", pos[2], "' in read model '", pos[1], "'\n")
    return EXIT.not_found
  end
  out(json(item))
  return EXIT.ok
end

return {
  read = { run = commands.read, summary = "print a read-model item as JSON",
    usage = [[
usage: tide read [--config FILE] MODEL KEY

Prints the read-model item as JSON; exit status 6 when it is absent.]] },
}
