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
    C.report("init", opts, err)
    return EXIT.usage
  end
  local ok, ierr = app.store:init()
  if not ok then
    C.report("init", opts, ierr)
    return EXIT.store
  end
  if app.cfg.store == "dynamodb" then
    -- the projections' leases, so that their workers start without
    -- dynamodb:CreateTable (docs/deploy.md)
    local leases = require("tide.projection.leases").new{ client = app.store.client, projection = "-",
      owner = "tide-init", table_prefix = app.cfg.dynamodb.table_prefix }
    local lok, lerr = leases:init()
    if not lok then
      C.report("init", opts, lerr)
      return EXIT.store
    end
  end
  -- where parked events are kept (tide park), made now rather than by the
  -- first projection that starts
  local pok, perr = require("tide.projection.parking").for_app(app):init()
  if not pok then
    C.report("init", opts, perr)
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
      C.report("init", opts, "projection " .. name .. ": " .. tostring(perr))
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

Creates what the configured store needs, if missing, and changes nothing
that exists: on DynamoDB the events and snapshots tables (named from
dynamodb.table_prefix, the events table with its stream), the parked
events table, and the read-model tables of every projection in the
projections folder; on SQLite the file and its schema. Safe to run again.

Examples:
  tide init
  tide init --config /etc/tide/tide.yaml

Output (stdout), one JSON object:
  {"ok":true,"store":"sqlite","path":"tide.db","read_models":["balances","owners"]}
  {"ok":true,"store":"dynamodb","tables":{...},"read_models":[...]}

Exit status: 0 ok; 2 bad configuration; 5 the store failed (DynamoDB:
unreachable, credentials, permissions: see tide doctor).]] },
}
