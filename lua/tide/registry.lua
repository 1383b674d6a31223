-- tide.registry: the modules of one folder (aggregates or projections),
-- by name, with hot reload.
--
--   local reg = registry.new{ dir = "./aggregates", kind = "aggregate", sandbox = true (default; false: off),
--                             load_file = fn(path, name), from_source = fn(name, source, path) }
--   reg:get(name) -> module | nil, message      reg:names()     reg.errors[name]
--   reg:reload_file(path [, source]) -> module, changed | nil, message
--   reg:remove(name [, reason])
--
-- A user of a module takes it from the registry once (a command when it
-- starts, a projection runner at the start of a batch) and keeps that
-- object until it is done, so replacing the entry is the whole swap: one
-- table assignment, atomic for coroutines. Modules that fail to load are
-- kept in reg.errors (name -> message) and reported when asked for; a
-- failed reload leaves the running version in place.
local core = require "tide.core"
local budget = require "tide.budget"
local sandbox = require "tide.sandbox"
local suggest = require("tide.suggest").closest_key

local M = {}

-- Runs a module's source in an environment of its own (tide.sandbox: the
-- allow-list of globals, or, with the sandbox off for its folder, a fresh
-- table over the globals), under the user-code budget (tide.budget), and
-- checks that it returns a table. Returns the table, or nil and a message
-- naming the file. opts: {sandbox = false} for the opt-out.
function M.run_source(name, source, path, opts)
  local chunkname = "@" .. path
  local chunk, err = loadstring(source, chunkname)
  if not chunk then return nil, err end
  setfenv(chunk, sandbox.env(path, opts))
  budget.user_code(chunk, chunkname)
  local ok, mod = budget.call(("%s's top level (%s)"):format(name, path), sandbox.traceback, chunk)
  if not ok then return nil, path .. ": the module raised while loading: " .. tostring(mod) end
  if type(mod) ~= "table" then
    return nil, ("%s: the module must return a table (end the file with `return %s`), got %s")
      :format(path, name, type(mod))
  end
  return mod
end

-- A load_file(path [, name]) for a kind of module: reads the file, then
-- from_source(name, source, path).
function M.file_loader(kind, from_source)
  return function(path, name, opts)
    local f, err = io.open(path, "rb")
    if not f then return nil, ("cannot read %s module %s: %s"):format(kind, path, tostring(err)) end
    local source = f:read("*a")
    f:close()
    return from_source(name or path:match("([^/]+)%.lua$"), source, path, opts)
  end
end

local Registry = {}
Registry.__index = Registry
M.Registry = Registry

function M.new(opts)
  if type(opts) ~= "table" or type(opts.kind) ~= "string" or type(opts.load_file) ~= "function"
      or type(opts.from_source) ~= "function" then
    error("registry.new{kind=, load_file=, from_source=}: missing or wrong options", 2)
  end
  local self = setmetatable({ dir = opts.dir, kind = opts.kind, entries = {}, errors = {}, removed = {},
                              options = { sandbox = opts.sandbox },
                              load_file = opts.load_file, from_source = opts.from_source,
                              conflict = opts.conflict }, Registry)
  if self.dir then self:scan() end
  return self
end

function Registry:scan()
  local names, err = core.list_dir(self.dir)
  if not names then
    self.dir_error = err
    return
  end
  self.dir_error = nil
  for _, file in ipairs(names) do
    local name = file:match("^([%w_%-]+)%.lua$")
    if name then
      local mod, lerr = self.load_file(self.dir .. "/" .. file, name, self.options)
      if mod and self.conflict then
        local cerr = self.conflict(self, name, mod)
        if cerr then mod, lerr = nil, cerr end
      end
      if mod then
        self.entries[name] = mod
        self.errors[name] = nil
      else
        self.errors[name] = lerr
      end
    end
  end
end

function Registry:add(mod)
  self.entries[mod.name] = mod
end

local function name_of(path)
  return path:match("([^/]+)%.lua$")
end

-- Compiles and checks the module (source, or the file's content) in
-- isolation. Valid: it replaces the running version (changed is false when
-- the content hash is the running one's; nothing is swapped then). Invalid:
-- the running version stays, and the message is kept in reg.errors.
function Registry:reload_file(path, source)
  if type(path) ~= "string" then error("registry:reload_file(path [, source]): path must be a string", 2) end
  local name = name_of(path)
  if not name then return nil, path .. ": not a Lua module (a file named NAME.lua)" end
  local mod, err
  if source then
    mod, err = self.from_source(name, source, path, self.options)
  else
    mod, err = self.load_file(path, name, self.options)
  end
  if mod and self.conflict then
    local cerr = self.conflict(self, name, mod)
    if cerr then mod, err = nil, cerr end
  end
  if not mod then
    self.errors[name] = err
    return nil, err
  end
  self.errors[name] = nil
  self.removed[name] = nil
  local running = self.entries[name]
  if running and running.version == mod.version then return running, false end
  self.entries[name] = mod
  return mod, true
end

-- reg:remove(name [, reason]) -> true | false when name was unknown.
-- Users then get "<kind> 'NAME' was removed: REASON".
function Registry:remove(name, reason)
  local had = self.entries[name] ~= nil or self.errors[name] ~= nil
  self.entries[name] = nil
  self.errors[name] = nil
  self.removed[name] = reason or "its file was deleted"
  return had
end

-- reg:names() -> sorted names of the modules that are running.
function Registry:names()
  local names = {}
  for n in pairs(self.entries) do names[#names + 1] = n end
  table.sort(names)
  return names
end

-- reg:get(name) -> module | nil, message
function Registry:get(name)
  local mod = self.entries[name]
  if mod then return mod end
  local kind = self.kind
  if self.removed[name] then
    return nil, ("%s '%s' was removed: %s"):format(kind, name, self.removed[name])
  end
  if self.errors[name] then return nil, ("%s '%s' failed to load: %s"):format(kind, name, self.errors[name]) end
  if self.dir_error then
    return nil, ("unknown %s '%s': %s"):format(kind, name, self.dir_error)
  end
  local names = self:names()
  local hint = suggest(name, self.entries)
  return nil, ("unknown %s '%s'%s; %s has: %s"):format(kind, name,
    hint and (" (did you mean '" .. hint .. "'?)") or "", self.dir or "the registry",
    #names > 0 and table.concat(names, ", ") or ("no " .. kind .. "s"))
end

return M
