-- tide.cli.modules: `tide modules`: the aggregates and projections tide
-- loads from the configured folders, their versions and load errors.
local look = require "tide.cli.look"

local M = {}

M.summary = "list the loaded aggregates and projections, their versions and load errors"

M.usage = [[
usage: tide modules [--config FILE] [--json]

Options: --json (one JSON object per module), --config FILE.

Loads the aggregates and projections folders as `tide run` and `tide exec`
do (sandboxed, checked) and lists every module: its kind, name, version
(the first 16 hex digits of the SHA-256 of its file: what events' meta
"handler" and `tide status` name), file, and what it handles (an
aggregate's commands and events; a projection's tables and
subscriptions), or why it failed to load.
Output: a table, one module per line; --json: one JSON object per line:
  {"kind":"aggregate","name":"account","version":"3f2a...","file":"aggregates/account.lua",
   "commands":["Close",...],"events":["Closed",...]}
  {"kind":"projection","name":"broken","file":"projections/broken.lua","error":"..."}
Examples:
  tide modules
  tide modules --json | jq -r 'select(.error) | .name'
Exit status: 0 every module loaded, 1 a module failed to load (listed with
its error), 2 bad usage or configuration.]]

M.options = { json = "flag" }

local function keys(t)
  local out = {}
  for k in pairs(t or {}) do out[#out + 1] = k end
  table.sort(out)
  return require("tide.core").list(out)
end

-- {kind=, name=, version=, file=, ...} for every module of the app, sorted
function M.list(app)
  local rows = {}
  local function add_errors(kind, reg)
    for name, err in pairs(reg.errors or {}) do
      rows[#rows + 1] = { kind = kind, name = name, file = (reg.dir or ".") .. "/" .. name .. ".lua",
                          error = tostring(err) }
    end
  end
  for _, name in ipairs(app.registry:names()) do
    local a = app.registry:get(name)
    rows[#rows + 1] = { kind = "aggregate", name = name, version = a.version, file = a.path,
                        commands = keys(a.module.commands), events = keys(a.module.events) }
  end
  add_errors("aggregate", app.registry)
  for _, name in ipairs(app.projections:names()) do
    local p = app.projections:get(name)
    rows[#rows + 1] = { kind = "projection", name = name, version = p.version, file = p.path,
                        tables = keys(p.tables), subscribe = p.module.subscribe }
  end
  add_errors("projection", app.projections)
  table.sort(rows, function(a, b)
    if a.kind ~= b.kind then return a.kind < b.kind end
    return a.name < b.name
  end)
  return rows
end

local function what(r)
  if r.error then return "LOAD ERROR: " .. r.error:gsub("\n.*", "") end
  if r.kind == "aggregate" then
    return "commands: " .. table.concat(r.commands, ", ") .. "; events: " .. table.concat(r.events, ", ")
  end
  return "tables: " .. table.concat(r.tables, ", ")
end

function M.main(args)
  local opts, pos = look.parse(args, M.options)
  if not opts then return look.fail("modules", pos, look.EXIT.usage, M.usage) end
  if opts.help then look.out(M.usage); return look.EXIT.ok end
  if #pos > 0 then return look.fail("modules", "unexpected argument '" .. pos[1] .. "'", look.EXIT.usage, M.usage) end
  -- the folders only: no store is opened (nor created)
  local cfg, err = require("tide.config").load{ file = opts.config }
  if not cfg then return look.fail("modules", err, look.EXIT.usage) end
  local tide = require "tide"
  tide.user_code(cfg)
  local app = {
    cfg = cfg,
    registry = require("tide.aggregate").registry(cfg.aggregates, tide.folder_options(cfg, "aggregates")),
    projections = require("tide.projection").registry(cfg.projections, tide.folder_options(cfg, "projections")),
  }
  local rows = M.list(app)
  local failed = false
  if opts.json then
    for _, r in ipairs(rows) do look.out(look.json(r)) end
  else
    local w = { 4, 4, 7 }
    for _, r in ipairs(rows) do
      w[1] = math.max(w[1], #r.kind); w[2] = math.max(w[2], #r.name); w[3] = math.max(w[3], #(r.version or "-"))
    end
    local fmt = ("%%-%ds  %%-%ds  %%-%ds  %%s"):format(w[1], w[2], w[3])
    look.out(fmt:format("KIND", "NAME", "VERSION", "HANDLES"))
    for _, r in ipairs(rows) do look.out(fmt:format(r.kind, r.name, r.version or "-", what(r))) end
    if #rows == 0 then
      io.stderr:write(("tide modules: no module in %s or %s\n"):format(app.cfg.aggregates, app.cfg.projections))
    end
  end
  for _, r in ipairs(rows) do if r.error then failed = true end end
  look.flush()
  return failed and look.EXIT.handler_error or look.EXIT.ok
end

return M
