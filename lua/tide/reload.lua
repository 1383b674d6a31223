-- tide.reload: hot reload of aggregate and projection modules in the tide
-- process. Watches folders (inotify) and SIGHUP; a changed file is compiled
-- and checked in isolation by its registry before it replaces the running
-- module; a file that fails leaves the previous version running.
--
-- How to call it (inside sched.run, after the app is opened):
--
--   local reload = require "tide.reload"
--   local w = reload.start{
--     dirs = {
--       { path = app.cfg.aggregates, registry = app.registry },
--       { path = app.cfg.projections, registry = projections },   -- optional
--     },
--     log = function(level, message, fields) ... end,  -- optional, same shape as repository's log
--     debounce = 0.025,   -- optional: seconds of quiet after a file's last write (default 25 ms)
--     sighup = true,      -- optional (default true): SIGHUP rescans every folder
--     status_file = path, -- optional: w:status() as JSON, rewritten (atomically,
--                         -- by rename) after every reload, failure and removal,
--                         -- so another process (`tide status`) can show it
--   }
--   ... serve commands ...
--   w:stop()             -- before the sched.run function returns: the watcher
--                        -- is a thread, and sched.run waits for every thread
--
--   w:status() -> {
--     modules = { [path] = { name=, dir=,
--                            state = "running"   -- the file's content is what runs
--                                  | "failed"    -- the file's last content did not load;
--                                                -- `version`, when set, still runs
--                                  | "removed",  -- the file was deleted, nothing runs
--                            version=,           -- the running module's version
--                            error = { file=, line=, message=, time= } or nil,
--                            reloads=, failures=, loaded_at= } },
--     last_reload = { file=, name=, ok=, version=, error=, time= } or nil,
--     reloads=, failures=, watching = { [path] = true|false }, started_at=,
--   }   -- times: wall clock, seconds since the epoch (tide.clock.wall_s())
--
-- If inotify cannot be set up, start returns nil, message: go on without
-- hot reload. A folder that does not exist (yet) is reported through log
-- and watched after a SIGHUP once it exists.
--
-- The tide process only (it needs tide.engine). Under nginx, reload the way
-- nginx does: `nginx -s reload` (SIGHUP to the master) starts new workers,
-- with fresh Lua VMs that load the modules anew, and lets the old workers
-- finish their requests on the old code.
--
-- In `tide batch`, read stdin with sched.lines(0) rather than
-- io.stdin:lines(): the latter blocks the whole loop (and the reloader
-- with it) until a line arrives.
--
-- A registry is anything with
--   registry:reload_file(path, source) -> module, changed | nil, message
--       compile and check `source` (the file's content) in isolation; swap
--       it in with one assignment if valid (changed = false when its hash is
--       the running one's), else keep the running module and the message;
--   registry:remove(name, reason) -> had_it
--   registry:names() -> the names running (optional: lets a rescan notice
--       files deleted while nobody watched).
-- tide.aggregate's registry has them; a projection registry with the same
-- three methods is driven the same way. A projection runner must take its
-- projection object from the registry once per batch and use that object
-- for the whole batch (as repository:execute does per command), so a
-- projection changes version between batches, never inside one.
--
-- Files: NAME.lua directly in a watched folder ([%w_-]+ names, as the
-- registries scan them); editors' temporary files (.x.swp, x.lua~, 4913,
-- x.lua.tmp) never match. Each file is debounced: its content is read
-- `debounce` seconds after the last event that completed a write (close
-- after writing, rename onto it), or 1 s after the last write while it is
-- still open (a writer that never closes), or 0.1 s after it was deleted
-- (editors that delete then create). The content's hash is compared with
-- the last one handed to the registry: the same content is never reloaded
-- twice. So in-place writes, write-then-rename, delete-then-create and
-- bursts of writes each end in one reload of the final content.
local core = require "tide.core"
local engine = require "tide.engine"
local sched = require "tide.sched"
local metrics = require "tide.metrics"

local M = {}

M.DEBOUNCE = 0.025      -- seconds of quiet after a completed write
M.WRITE_GRACE = 1.0     -- a file still open for writing
M.REMOVE_GRACE = 0.1    -- a deleted file (it may come back at once)

local MODULE = "^([%w_%-]+)%.lua$"

local Watcher = {}
Watcher.__index = Watcher

local clock = require("tide.clock").wall_s -- status times: seconds since the epoch

-- Splits a loader message into file, line and message (traceback dropped).
local function parse_error(path, err)
  err = tostring(err)
  local first = err:gsub("\nstack traceback:.*$", "")
  local line
  -- the innermost "path:LINE:" names where it went wrong
  local escaped = path:gsub("%p", "%%%0")
  for l in first:gmatch(escaped .. ":(%d+):") do line = tonumber(l) end
  return { file = path, line = line, message = first, time = clock() }
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s, rerr = f:read("*a")
  f:close()
  if not s then return nil, rerr end
  return s
end

function Watcher:log(level, message, fields)
  local ok, err = pcall(self.log_fn, level, message, fields)
  if not ok then io.stderr:write("tide.reload: the log function failed: ", tostring(err), "\n") end
end

-- The content of path was settled: reload it, remove it, or skip it.
function Watcher:settle(dir, file)
  local path = dir.path .. "/" .. file
  local name = file:match(MODULE)
  local m = self.modules[path]
  local source, rerr = read_file(path)
  local st = not source and core.stat(path)
  if not source and st then
    -- there but unreadable (permissions, a folder): keep what runs
    m = m or { name = name, dir = dir.path, reloads = 0, failures = 0 }
    self.modules[path] = m
    m.hash = nil
    m.error = { file = path, message = "cannot read " .. path .. ": " .. tostring(rerr), time = clock() }
    m.failures = m.failures + 1
    self.failures = self.failures + 1
    m.state = "failed"
    self:log("error", ("%s '%s' not reloaded: %s"):format(dir.kind, name, m.error.message), { file = path, name = name })
    return
  end
  if not source then
    if m and m.state ~= "removed" then
      dir.registry:remove(name, "its file was deleted")
      m.state, m.hash, m.version, m.error = "removed", nil, nil, nil
      m.removed_at = clock()
      self:log("warn", ("%s '%s' removed: its file %s was deleted"):format(dir.kind, name, path),
               { file = path, name = name })
    end
    return
  end
  local hash = core.sha256_hex(source)
  if m and m.hash == hash then return end -- same content: nothing to do
  if not m then
    m = { name = name, dir = dir.path, reloads = 0, failures = 0 }
    self.modules[path] = m
  end
  m.hash = hash
  local t0 = sched.now()
  local ok, mod, extra = pcall(dir.registry.reload_file, dir.registry, path, source)
  if ok and mod then
    local was_failed = m.state == "failed"
    m.state, m.error = "running", nil
    if type(mod) == "table" and mod.version ~= nil then m.version = mod.version end
    if self.starting then
      m.loaded_at = m.loaded_at or clock()
      return
    end
    if extra ~= false then
      m.loaded_at = clock()
      m.reloads = m.reloads + 1
      self.reloads = self.reloads + 1
      self.last_reload = { file = path, name = name, ok = true, version = m.version, time = m.loaded_at }
      metrics.reload(dir.kind, "ok")
      self:log("info", ("%s '%s' reloaded from %s (version %s, %.1f ms)"):format(dir.kind, name, path,
               tostring(m.version), (sched.now() - t0) * 1000),
               { file = path, name = name, version = m.version })
    elseif was_failed then
      self:log("info", ("%s '%s': %s is valid again, and the same as version %s, which keeps running")
               :format(dir.kind, name, path, tostring(m.version)), { file = path, name = name, version = m.version })
    end
    return
  end
  -- A broken module (or the registry raised): the running version stays.
  m.error = parse_error(path, ok and extra or mod)
  m.failures = m.failures + 1
  self.failures = self.failures + 1
  local running = m.version and m.state ~= "removed"
  m.state = "failed"
  self.last_reload = { file = path, name = name, ok = false, error = m.error, time = m.error.time }
  metrics.reload(dir.kind, "error")
  self:log("error", ("%s '%s' not reloaded (%s): %s"):format(dir.kind, name,
           running and ("version " .. m.version .. " keeps running") or "it is not running", m.error.message),
           { file = path, name = name, line = m.error.line, version = running and m.version or nil })
end

-- Publishes the status for other processes, when asked to.
function Watcher:publish()
  local path = self.status_file
  if not path then return end
  local text, err = core.json_encode(self:status())
  local tmp = path .. ".tmp"
  local f, ferr = text and io.open(tmp, "wb")
  if f then
    f:write(text, "\n")
    f:close()
    local ok, rerr = os.rename(tmp, path)
    if ok then return end
    err = rerr
  else
    err = err or ferr
  end
  if not self.publish_warned then
    self:log("warn", "cannot write the reload status to " .. path .. ": " .. tostring(err), {})
    self.publish_warned = true
  end
end

-- Watches dir (again) when it is not watched.
function Watcher:ensure_watched(dir)
  if dir.wd then return true end
  local wd, err = self.w:add(dir.path)
  if not wd then
    if not dir.warned then
      self:log("warn", "not watching " .. dir.path .. ": " .. tostring(err)
               .. " (the modules loaded keep running; send SIGHUP once it exists)", { dir = dir.path })
      dir.warned = true
    end
    return false
  end
  dir.wd, dir.warned = wd, nil
  self.by_wd[wd] = dir
  return true
end

-- Every file of dir settled now: at start, on SIGHUP, after an overflow.
function Watcher:rescan(dir)
  self:ensure_watched(dir)
  local files = core.list_dir(dir.path) or {}
  local present = {}
  for _, file in ipairs(files) do
    if file:match(MODULE) then
      present[file] = true
      self.pending[dir.path .. "/" .. file] = nil
      self:settle(dir, file)
    end
  end
  -- modules known to run whose file is gone
  local gone = {}
  for path, m in pairs(self.modules) do
    if m.dir == dir.path and m.state ~= "removed" and not present[m.name .. ".lua"] then gone[m.name] = true end
  end
  if type(dir.registry.names) == "function" then
    for _, n in ipairs(dir.registry:names()) do
      if not present[n .. ".lua"] then gone[n] = true end
    end
  end
  for n in pairs(gone) do
    local path = dir.path .. "/" .. n .. ".lua"
    if not self.modules[path] then
      self.modules[path] = { name = n, dir = dir.path, reloads = 0, failures = 0, state = "running" }
    end
    self:settle(dir, n .. ".lua")
  end
end

function Watcher:rescan_all(why)
  if why then self:log("info", "rescanning " .. #self.dirs .. " folder(s): " .. why, {}) end
  for _, dir in ipairs(self.dirs) do self:rescan(dir) end
  self.dirty = true
end

function Watcher:handle(ev)
  local kind = ev.kind
  if kind == "signal" then
    self:rescan_all("SIGHUP")
    return
  end
  if kind == "overflow" then
    self:rescan_all("the inotify queue overflowed")
    return
  end
  local dir = self.by_wd[ev.dir]
  if not dir then return end
  if kind == "dir_gone" then
    self.by_wd[ev.dir] = nil
    dir.wd = nil
    self.dirty = true
    self:log("warn", dir.path .. " was deleted or moved: the modules loaded keep running; "
             .. "recreate it and send SIGHUP to watch it again", { dir = dir.path })
    return
  end
  local file = ev.name
  if not file:match(MODULE) then return end
  local now = sched.now()
  local delay = kind == "writing" and M.WRITE_GRACE
    or kind == "removed" and math.max(self.debounce, M.REMOVE_GRACE)
    or self.debounce
  self.pending[dir.path .. "/" .. file] = { dir = dir, file = file, at = now + delay }
end

-- The reloader thread: waits on the watcher's fd, at most until the next
-- file is due; never spins.
function Watcher:loop()
  local fd = self.w:fd()
  while not self.stopped do
    local next_at
    for _, p in pairs(self.pending) do
      if not next_at or p.at < next_at then next_at = p.at end
    end
    local timeout = next_at and math.max(0, next_at - sched.now()) or nil
    sched.wait_readable(fd, timeout)
    if self.stopped then break end
    -- Read on a timeout too (the fd does not block): a write that began
    -- after the wait ended (a truncation on the busy machine) must postpone
    -- its file, not let the file be read half-written.
    local events, err = self.w:read()
    if not events then
      self:log("error", "reading file-system events failed: " .. tostring(err), {})
      sched.sleep(1) -- not a hot loop if it keeps failing
    else
      for i = 1, #events do self:handle(events[i]) end
    end
    local now = sched.now()
    local due = {}
    for path, p in pairs(self.pending) do
      if p.at <= now then due[#due + 1] = path end
    end
    table.sort(due)
    for _, path in ipairs(due) do
      local p = self.pending[path]
      self.pending[path] = nil
      local ok, err = pcall(self.settle, self, p.dir, p.file)
      if not ok then self:log("error", "reloading " .. path .. " failed: " .. tostring(err), { file = path }) end
    end
    if #due > 0 or self.dirty then
      self.dirty = nil
      self:publish()
    end
  end
  self.w:close()
end

-- reload.start(opts) -> watcher | nil, message. See the top of this file.
function M.start(opts)
  if type(opts) ~= "table" or type(opts.dirs) ~= "table" then
    error("reload.start{dirs = {{path=, registry=}, ...}, log=}: dirs is required", 2)
  end
  if not sched.running() then error("reload.start must be called inside sched.run", 2) end
  local self = setmetatable({
    dirs = {}, by_wd = {}, modules = {}, pending = {},
    reloads = 0, failures = 0,
    debounce = opts.debounce or M.DEBOUNCE,
    log_fn = opts.log or function() end,
    status_file = opts.status_file,
    started_at = clock(),
  }, Watcher)
  for i, d in ipairs(opts.dirs) do
    if type(d) ~= "table" or type(d.path) ~= "string" or type(d.registry) ~= "table"
       or type(d.registry.reload_file) ~= "function" or type(d.registry.remove) ~= "function" then
      error(("reload.start: dirs[%d] must be {path = string, registry = <has reload_file and remove>}"):format(i), 2)
    end
    local kind = d.kind or (d.registry.aggregates and "aggregate") or (d.registry.projections and "projection")
      or "module"
    self.dirs[i] = { path = (d.path:gsub("/+$", "")), registry = d.registry, kind = kind }
  end
  local w, err = engine.watch{ sighup = opts.sighup ~= false }
  if not w then return nil, err end
  self.w = w
  -- Take the registries' state as it is now (a file may have changed since
  -- they scanned): same content is not swapped, a broken file is reported.
  self.starting = true
  self:rescan_all()
  self.starting = nil
  self.dirty = nil
  self:publish()
  self.thread = sched.spawn(Watcher.loop, self)
  return self
end

-- Stops watching; returns once the watcher's thread has ended (when called
-- from another scheduler thread). Idempotent.
function Watcher:stop()
  if self.stopped then return end
  self.stopped = true
  self:publish()
  local th = self.thread
  if th and sched.running() and sched.current() ~= th then
    sched.wakeup(th, "stop")
    sched.wait(th)
  end
end

function Watcher:status()
  local modules = {}
  for path, m in pairs(self.modules) do
    modules[path] = { name = m.name, dir = m.dir, state = m.state, version = m.version, error = m.error,
                      reloads = m.reloads, failures = m.failures, loaded_at = m.loaded_at }
  end
  local watching = {}
  for _, d in ipairs(self.dirs) do watching[d.path] = d.wd ~= nil end
  return { modules = modules, last_reload = self.last_reload, reloads = self.reloads,
           failures = self.failures, watching = watching, started_at = self.started_at,
           stopped = self.stopped or false }
end

return M
