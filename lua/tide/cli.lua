-- tide.cli: the dispatcher of the tide binary's subcommands written in Lua.
-- runtime/cli/cmd_lua.c calls cli.main(name, args...) inside the
-- scheduler; main returns the exit status.
--
-- Each command lives in lua/tide/cli/<module>.lua, which returns
-- { [name] = { run = function(opts, pos) -> status, usage = "..." } };
-- what they share (exit statuses, output, the parser, opening the app) is
-- tide.cli.common. Add a command: write its module and add a row below.
local C = require "tide.cli.common"

local M = {}

M.EXIT = C.EXIT

-- name -> module under tide.cli
M.COMMANDS = {
  init = "setup",
  exec = "exec", batch = "exec",
  events = "stream", state = "stream",
  run = "run", project = "run",
  read = "read",
  status = "status",
  park = "parking", unpark = "parking", replay = "parking",
  doctor = "doctor",
}

-- name -> { run, usage } | nil
function M.command(name)
  local mod = M.COMMANDS[name]
  if not mod then return nil end
  local cmd = require("tide.cli." .. mod)[name]
  C.USAGE[name] = cmd.usage
  return cmd
end

function M.main(name, ...)
  local cmd = M.command(name)
  if not cmd then
    io.stderr:write("tide: unknown command '", tostring(name), "'\n")
    return M.EXIT.usage
  end
  local opts, pos = C.parse(name, { ... }, cmd)
  if not opts then return C.fail_usage(name, pos) end
  if opts.help then
    C.out(cmd.usage)
    return M.EXIT.ok
  end
  return cmd.run(opts, pos)
end

return M
