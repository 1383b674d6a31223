-- tide.cli.test: `tide test [PATH...]`: runs a project's busted specs
-- inside the tide process, where `require "tide.testing"` (docs/testing.md)
-- and the rest of tide's library load from tide's own installation.
local look = require "tide.cli.look"

local M = {}

M.summary = "run a project's specs (busted, with tide.testing): tide test [PATH...]"

M.usage = [[
usage: tide test [--config FILE] [PATH...] [-- BUSTED_OPTIONS...]

Runs the busted specs (files named *_spec.lua) under each PATH (a folder
or a file; default: ./spec, else the current folder) inside tide, so that
specs can `require "tide.testing"`: given/when/then for the aggregates and
projections of the project, each scenario on a fresh in-memory store
(docs/testing.md). The project's folders are those of its configuration
(tide.yaml, TIDE_CONFIG or --config), else ./aggregates and ./projections.
Options: --config FILE (the project's configuration); options after "--" go to busted as they are (e.g. -- -o TAP, -- --filter cart,
-- --list). A .busted file in the current folder is read as busted reads it.
Needs busted (Debian: apt-get install lua-busted).
Output: busted's report (utfTerminal on a terminal, plainTerminal else).
Examples:
  tide test
  tide test spec/cart_spec.lua
  tide test -- -o TAP
Exit status: 0 every spec passed, 1 a spec failed or raised, 2 bad usage or
busted missing.]]

M.options = {}

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

function M.main(args)
  -- everything after "--" is busted's
  local own, extra = {}, {}
  for i = 1, #args do
    if args[i] == "--" then
      for j = i + 1, #args do extra[#extra + 1] = args[j] end
      break
    end
    own[#own + 1] = args[i]
  end
  local opts, pos = look.parse(own, M.options)
  if not opts then return look.fail("test", pos, look.EXIT.usage, M.usage) end
  if opts.help then look.out(M.usage); return look.EXIT.ok end
  if opts.config then
    if not exists(opts.config) then
      return look.fail("test", "cannot read the config file '" .. opts.config .. "'", look.EXIT.usage)
    end
    require("tide.testing").default_config = opts.config
  end
  if #pos == 0 then pos[1] = exists("spec") and "spec" or "." end
  for _, p in ipairs(pos) do
    if not exists(p) then return look.fail("test", "no such file or folder: " .. p, look.EXIT.usage) end
  end
  local ok, runner = pcall(require, "busted.runner")
  if not ok then
    return look.fail("test", "busted is not installed (Debian: apt-get install lua-busted): "
      .. tostring(runner):gsub("\n.*", ""), look.EXIT.usage)
  end
  -- busted reads the global arg, as its own command does
  local argv = { [0] = "tide test" }
  for _, a in ipairs(extra) do argv[#argv + 1] = a end
  for _, p in ipairs(pos) do argv[#argv + 1] = p end
  _G.arg = argv
  -- standalone = false: busted returns when every spec passed, and raises
  -- (error() with no message) when one failed; --help/--version exit.
  local rok, rerr = pcall(function() return runner{ standalone = false } end)
  io.stdout:flush()
  if rok then return look.EXIT.ok end
  if rerr ~= nil then
    io.stderr:write("tide test: busted raised: ", tostring(rerr), "\n")
  end
  return look.EXIT.handler_error
end

return M
