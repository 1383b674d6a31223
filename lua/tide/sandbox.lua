-- tide.sandbox: the environment aggregate and projection modules run in
-- (docs/sandbox.md), in Redis's manner: an allow-list of globals and a
-- guard on new ones.
--
--   local env = sandbox.env(path, { sandbox = true })   -- a fresh environment for one module
--   sandbox.load(chunk_or_text, chunkname, env)          -- what `load` gives user code
--
-- In the sandbox a module sees: assert, error, ipairs, next, pairs, pcall,
-- xpcall, select, tonumber, tostring, type, unpack, rawequal, rawget,
-- rawset, setmetatable, getmetatable, _VERSION; copies of string (without
-- string.dump), table, math and bit; os.time, os.clock, os.date,
-- os.difftime; load and loadstring of text only (in the same sandbox);
-- print, which writes a log line; require of "string", "table", "math",
-- "bit" and "tide.core" (its value constructors only: number, is_number,
-- list, is_list, set, is_set, binary, is_binary, null). Everything else
-- (io, os.exit, os.execute, os.getenv, ffi, debug, jit, package, require
-- of any other module, dofile, loadfile, collectgarbage, coroutine,
-- setfenv, getfenv) is absent: reading it raises "... is not available in
-- tide's sandbox". Assigning a global raises too (declare it local).
-- Handlers get time and ids through their context (ctx.now, ctx.id, ...).
--
-- With lua.sandbox_aggregates: false (or lua.sandbox_projections: false)
-- the modules of that folder see the whole global table (the environment
-- falls back to _G; new globals stay the module's own), as before.
local core = require "tide.core"
local budget = require "tide.budget"

local M = {}

local BASE = { "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select", "tonumber",
               "tostring", "type", "unpack", "rawequal", "rawget", "rawset", "setmetatable",
               "getmetatable", "_VERSION" }
local CORE = { "number", "is_number", "list", "is_list", "set", "is_set", "binary", "is_binary", "null" }

M.log = function() end -- set by tide.open: print's destination

local function copy(t, without)
  local c = {}
  for k, v in pairs(t) do
    if not (without and without[k]) then c[k] = v end
  end
  return c
end

local function guarded(name, t)
  return setmetatable(t, {
    __index = function(_, k)
      error(("%s.%s is not available in tide's sandbox (docs/sandbox.md)"):format(name, tostring(k)), 2)
    end,
  })
end

-- Compiles text (never bytecode) as user code in env.
function M.load(text, chunkname, env)
  if type(text) == "function" then
    -- a reader function: gather its pieces (Lua 5.1's load)
    local parts = {}
    while true do
      local piece = text()
      if piece == nil or piece == "" then break end
      if type(piece) ~= "string" then return nil, "load: the reader function must return strings" end
      parts[#parts + 1] = piece
    end
    text = table.concat(parts)
  end
  if type(text) ~= "string" then return nil, "load: the chunk must be text" end
  if text:byte(1) == 27 then return nil, "load: binary chunks are not allowed in tide's sandbox" end
  chunkname = type(chunkname) == "string" and chunkname or "=(load)"
  local fn, err = loadstring(text, chunkname)
  if not fn then return nil, err end
  setfenv(fn, env)
  budget.user_code(fn, chunkname)
  return fn
end

-- An xpcall message handler for user code: the message, then the frames
-- of user code only (tide's own frames are not the user's business). A
-- stack overflow is reported as one, with no walk of the overflowed stack.
function M.traceback(e)
  if type(e) == "table" and getmetatable(e) and getmetatable(e).__tostring then return e end
  local msg = tostring(e)
  if msg:find("stack overflow", 1, true) then
    return msg .. " (a function that calls itself without end?)"
  end
  local lines = { msg }
  for level = 2, 60 do
    local info = debug.getinfo(level, "Snl")
    if not info then break end
    if budget.is_user_source(info.source) then
      lines[#lines + 1] = ("\t%s:%d: in %s"):format(info.short_src, info.currentline or 0,
        info.what == "main" and "the module's top level"
          or info.name and ("function '" .. info.name .. "'")
          or ("the function at line " .. tostring(info.linedefined)))
      if #lines > 12 then break end
    end
  end
  if #lines == 1 then return msg end
  return table.concat(lines, "\n")
end

-- sandbox.env(path [, opts]) -> environment table for the module at path
function M.env(path, opts)
  if opts and opts.sandbox == false then
    return setmetatable({}, { __index = _G })
  end
  local env = {}
  for _, k in ipairs(BASE) do env[k] = _G[k] end
  env.string = guarded("string", copy(string, { dump = true }))
  env.table = guarded("table", copy(table))
  env.math = guarded("math", copy(math))
  env.bit = bit and guarded("bit", copy(bit)) or nil
  env.os = guarded("os", { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime })
  local tcore = {}
  for _, k in ipairs(CORE) do tcore[k] = core[k] end
  tcore = guarded("tide.core", tcore)
  local loadable = { string = env.string, table = env.table, math = env.math, bit = env.bit,
                     ["tide.core"] = tcore }
  env.require = function(name)
    local m = loadable[name]
    if m == nil then
      error(("require %q: tide's sandbox loads only string, table, math, bit and tide.core "
        .. "(set lua.sandbox_aggregates or lua.sandbox_projections to false to load other modules; docs/sandbox.md)")
        :format(tostring(name)), 2)
    end
    return m
  end
  env.load = function(chunk, chunkname) return M.load(chunk, chunkname, env) end
  env.loadstring = env.load
  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    M.log("info", table.concat(parts, "\t"), { module = path })
  end
  env._G = env
  return setmetatable(env, {
    __index = function(_, k)
      error(("global '%s' is not available in tide's sandbox (docs/sandbox.md)"):format(tostring(k)), 2)
    end,
    __newindex = function(_, k)
      error(("assigning the global '%s': tide's sandbox allows no new globals; declare it `local %s`")
        :format(tostring(k), tostring(k)), 2)
    end,
  })
end

return M
