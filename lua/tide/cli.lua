-- tide.cli: the dispatcher of the tide binary's subcommands written in Lua.
-- runtime/cli/cmd_lua.c calls cli.main(name, args...) inside the
-- scheduler; main returns the exit status.
--
-- Each command lives in lua/tide/cli/<module>.lua, which returns
-- { [name] = { run = function(opts, pos) -> status, usage = "...",
--   summary = "one line", options = { {"--flag", "VALUE" or nil, "help"} },
--   data_after = n (optional) } };
-- what they share (exit statuses, output, the parser, opening the app,
-- error lines) is tide.cli.common. Add a command: write its module and add
-- a row below (runtime/cli/main.c hands every name it does not know to
-- this dispatcher).
local C = require "tide.cli.common"

local M = {}

M.EXIT = C.EXIT

-- { name, module under tide.cli }, in the order `tide help` lists them
M.COMMANDS = {
  { "init", "setup" },
  { "exec", "exec" },
  { "batch", "exec" },
  { "state", "stream" },
  { "events", "stream" },
  { "read", "read" },
  { "streams", "streams" },
  { "modules", "modules" },
  { "tail", "tail" },
  { "test", "test" },
  { "run", "run" },
  { "project", "run" },
  { "status", "status" },
  { "replay", "parking" },
  { "park", "parking" },
  { "unpark", "parking" },
  { "skip-parent", "shards" },
  { "doctor", "doctor" },
}

-- The commands written in C (runtime/cli/main.c), for `tide help`.
M.C_COMMANDS = {
  { "script", "run Lua code inside the engine (a file, -e CODE or stdin), like OpenResty's resty" },
  { "version", "print the versions of tide, LuaJIT and libcurl (also tide --version)" },
  { "help", "list the commands, or show one's help: tide help COMMAND" },
}

local function module_of(name)
  for _, row in ipairs(M.COMMANDS) do
    if row[1] == name then return row[2] end
  end
end

-- The help of a command: its text with the Options section made from
-- its declared options and the common ones, before its Examples.
local function help_of(cmd)
  local rows, own = {}, {}
  for _, o in ipairs(cmd.options or {}) do own[o[1]] = true end
  for _, list in ipairs{ cmd.options or {}, C.COMMON_OPTIONS } do
    for _, o in ipairs(list) do
      if list == cmd.options or not own[o[1]] then
        rows[#rows + 1] = { o[1] .. (o[2] and (" " .. o[2]) or ""), o[3] }
      end
    end
  end
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
  local lines = { "Options:" }
  for _, r in ipairs(rows) do lines[#lines + 1] = ("  %-" .. width .. "s  %s"):format(r[1], r[2]) end
  local section = table.concat(lines, "\n") .. "\n\n"
  local at = cmd.usage:find("\nExamples:", 1, true)
  if not at then return cmd.usage .. "\n\n" .. section end
  return cmd.usage:sub(1, at) .. section .. cmd.usage:sub(at + 1)
end

-- name -> { run, usage, summary, options, help } | nil; a module that
-- parses its own arguments (tide.cli.look's commands) returns { main =
-- function(args) -> status, usage =, summary = } instead.
function M.command(name)
  local mod = module_of(name)
  if not mod then return nil end
  local m = require("tide.cli." .. mod)
  if m.main then return { main = m.main, usage = m.usage, summary = m.summary, help = m.usage } end
  local cmd = m[name]
  if not cmd.help then cmd.help = help_of(cmd) end
  C.USAGE[name] = cmd.usage
  return cmd
end

-- `tide help`: one line per command.
local function help_text()
  local lines = { "usage: tide <command> [options] [args...]", "", "commands:" }
  local rows = {}
  for _, row in ipairs(M.COMMANDS) do
    rows[#rows + 1] = { row[1], M.command(row[1]).summary or "" }
  end
  for _, row in ipairs(M.C_COMMANDS) do rows[#rows + 1] = row end
  for _, r in ipairs(rows) do lines[#lines + 1] = ("  %-9s %s"):format(r[1], r[2]) end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "options of every command: --config FILE, --json (errors as JSON), --debug, -h/--help"
  lines[#lines + 1] = "tide --version prints the version; `tide COMMAND --help` a command's synopsis,"
  lines[#lines + 1] = "options, examples, output and exit statuses."
  lines[#lines + 1] = ""
  lines[#lines + 1] = "exit statuses: 0 ok, 1 handler error, 2 bad usage or input, 3 rejected, 4 conflict,"
  lines[#lines + 1] = "5 store or network failure, 6 not found, 7 idempotency mismatch"
  return table.concat(lines, "\n")
end

local function all_names()
  local names = {}
  for _, row in ipairs(M.COMMANDS) do names[#names + 1] = row[1] end
  for _, row in ipairs(M.C_COMMANDS) do names[#names + 1] = row[1] end
  return names
end

local function unknown(name)
  local hint = require("tide.suggest").closest(tostring(name), all_names())
  io.stderr:write("tide: unknown command '", tostring(name), "'",
    hint and (" (did you mean '" .. hint .. "'?)") or "",
    "; usage: tide <command> [options] [args...] (tide help lists the commands)\n")
  return M.EXIT.usage
end

function M.main(name, ...)
  if name == "help" then
    -- tide help [COMMAND]; tide with no command: the list on stderr, exit 2
    local what, extra = ...
    if what == "--missing" then
      io.stderr:write(help_text(), "\n")
      return M.EXIT.usage
    end
    if what == nil or what == "-h" or what == "--help" or what == "help" then
      C.out(help_text())
      return M.EXIT.ok
    end
    if extra ~= nil then return unknown(what .. " " .. extra) end
    local cmd = M.command(what)
    if not cmd then return unknown(what) end
    C.out(cmd.help)
    return M.EXIT.ok
  end
  local cmd = M.command(name)
  if not cmd then return unknown(name) end
  local args = { ... }
  if cmd.main then return cmd.main(args) end
  -- tide read MODEL (no KEY): the model's items
  if name == "read" then
    local list = require "tide.cli.read_list"
    local help = false
    for _, a in ipairs(args) do if a == "-h" or a == "--help" then help = true end end
    if not help and list.wants(args) then return list.main(args) end
  end
  local opts, pos = C.parse(name, args, cmd)
  if not opts then return C.fail_usage(name, pos) end
  if opts.help then
    C.out(cmd.help)
    return M.EXIT.ok
  end
  return cmd.run(opts, pos)
end

return M
