-- tide init: create what the configured store needs.
local core = require "tide.core"
local C = require "tide.cli.common"

local EXIT, EXIT_OF_KIND = C.EXIT, C.EXIT_OF_KIND
local out, json, fail_usage = C.out, C.json, C.fail_usage

local commands = {}

function commands.init(opts, pos)
  if #pos > 0 then return fail_usage("init", "unexpected argument '" .. pos[1] .. "'") end
  local tide = require "tide"
  local app, err = tide.open{ config = opts.config }
  if not app then
    io.stderr:write("tide init: ", tostring(err), "\n")
    return EXIT.usage
  end
  local ok, ierr = app.store:init()
  if not ok then
    io.stderr:write("tide init: ", tostring(ierr), "\n")
    return EXIT.store
  end
  -- where parked events are kept (tide park), made now rather than by the
  -- first projection that starts
  local pok, perr = require("tide.projection.parking").for_app(app):init()
  if not pok then
    io.stderr:write("tide init: ", tostring(perr), "\n")
    return EXIT.store
  end
  -- the read models of every projection, so that reads (tide read, the
  -- nginx site) work before a projection has run
  local backend = require("tide.projection.host").backend(app)
  local models = {}
  for _, name in ipairs(app.projections:names()) do
    local p = app.projections:get(name)
    local pok, perr = backend:init(p)
    if not pok then
      io.stderr:write("tide init: projection ", name, ": ", tostring(perr), "\n")
      return EXIT.store
    end
    for _, t in ipairs(p:table_names()) do models[#models + 1] = t end
  end
  if app.cfg.store == "dynamodb" then
    out(json{ ok = true, store = "dynamodb", tables = app.store.describe and app.store:describe() or nil,
              read_models = core.list(models) })
  else
    out(json{ ok = true, store = "sqlite", path = app.cfg.sqlite.path, read_models = core.list(models) })
  end
  return EXIT.ok
end

return {
  init = { run = commands.init, summary = "create the store's tables (DynamoDB) or file (SQLite) if missing",
    usage = [[
usage: tide init [--config FILE]

Creates what the configured store needs, if missing: the events and
snapshots tables on DynamoDB (named from dynamodb.table_prefix), or the
SQLite file and its schema; and the read-model tables of every projection
in the projections folder.]] },
}
