-- tide status: the projections' progress and the modules' load errors.
local host = require "tide.projection.host"
local C = require "tide.cli.common"

local EXIT, EXIT_OF_KIND = C.EXIT, C.EXIT_OF_KIND
local out, json, fail_usage, open_projections = C.out, C.json, C.fail_usage, C.open_projections

local commands = {}

function commands.status(opts, pos)
  if #pos > 0 then return fail_usage("status", "unexpected argument '" .. pos[1] .. "'") end
  local app, code = open_projections("status", opts)
  if not app then return code end
  local status = EXIT.ok
  for _, name in ipairs(app.projections:names()) do
    local p = app.projections:get(name)
    local r = host.runner(app, p, { log = function() end })
    local st, err = r:status()
    if st then
      local parked = require("tide.projection.parking").for_app(app):list(name)
      if parked and #parked > 0 then st.parked = parked end
      out('{"projection":' .. json(name) .. ',"status":' .. json(st) .. "}")
    else
      out('{"projection":' .. json(name) .. ',"error":' .. json(tostring(err)) .. "}")
      status = EXIT.store
    end
  end
  for name, err in pairs(app.projections.errors or {}) do
    out('{"projection":' .. json(name) .. ',"load_error":' .. json(tostring(err)) .. "}")
  end
  for name, err in pairs(app.registry.errors or {}) do
    out('{"aggregate":' .. json(name) .. ',"load_error":' .. json(tostring(err)) .. "}")
  end
  app.store:close()
  return status
end

return {
  status = { run = commands.status, summary = "projections: workers, handled, lag, last error; load errors",
    options = { { "--json", nil, "one JSON object a line, for machines" },
                { "--verbose", nil, "the last error's traceback, and every shard" } },
    usage = [[
usage: tide status [--config FILE]

Prints one JSON line per projection: its checkpoints (per shard on
DynamoDB), owners, lag and last error; and one per module that failed to load.]] },
}
