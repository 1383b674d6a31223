-- tide.cli.look: what the commands that look around (read MODEL, streams,
-- modules, tail) and `tide test` share: their argument parser, output
-- lines and the app they open.
--
--   look.parse(args, options) -> opts, positionals | nil, message
--     options: {name = "value" | "flag"}; --name VALUE, --name=VALUE, --flag,
--     -h/--help (opts.help), --config always; "--" ends the options
--   look.out(line)            one line on stdout (a closed pipe ends quietly)
--   look.json(v)              JSON text (tide.result's: the bytes of every command)
--   look.fail(cmd, message, status [, usage]) -> status (one line on stderr)
--   look.open(opts) -> app | nil, err   the configuration's app, store ready
--   look.count(text, what) -> positive integer | nil, message
local C = require "tide.cli.common"

local M = {}

-- the exit statuses of every command (README.md's table)
M.EXIT = C.EXIT

function M.exit_of(err) return C.exit_of(err, C.EXIT.store) end

function M.parse(args, options)
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a == "-h" or a == "--help" then
      opts.help = true
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([%w%-]+)=(.*)$")
      name = name or a:sub(3)
      local kind = name == "config" and "value" or options[name]
      if not kind then return nil, "unknown option '" .. a .. "'" end
      local key = name:gsub("%-", "_")
      if kind == "flag" then
        if value then return nil, "--" .. name .. " takes no value" end
        opts[key] = true
      else
        if not value then
          value = args[i + 1]
          if value == nil then return nil, "--" .. name .. " needs a value" end
          i = i + 1
        end
        opts[key] = value
      end
    elseif a:sub(1, 1) == "-" and #a > 1 then
      return nil, "unknown option '" .. a .. "'"
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- output lines and their JSON, as every command writes them
M.out, M.flush, M.json = C.out, C.flush_out, C.json

function M.fail(cmd, message, status, usage)
  io.stderr:write("tide ", cmd, ": ", tostring(message), "\n")
  if usage then io.stderr:write(usage, "\n") end
  return status
end

function M.count(text, what)
  local n = tonumber(text)
  if not n or n < 1 or n ~= math.floor(n) then
    return nil, ("%s must be a positive integer, got '%s'"):format(what, tostring(text))
  end
  return n
end

function M.open(opts) return C.open_app(opts) end

return M
