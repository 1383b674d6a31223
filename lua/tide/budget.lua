-- tide.budget: a time limit on user code (lua.handler_budget_ms).
--
--   budget.configure{ ms = 1000, log = logger }  -- once per process (tide.open); 0 turns it off
--   budget.user_code(fn, chunkname)  -- marks a module's chunk as user code (before it runs)
--   budget.call(what, handler, fn, ...) -> true, results... | false, err
--       xpcall(fn, handler, ...) under the budget; err is handler's result,
--       or, when fn ran past the budget, a message naming `what` and the
--       limit ("account.commands.Deposit ran past its budget of 1000 ms
--       (lua.handler_budget_ms) at account.lua:12")
--   budget.io(fn, ...) -> fn's results, the time spent in fn not counted
--       (a projection handler's ctx:get that waits for the store)
--   budget.is_timeout(err) -> true for the message of a stopped call
--
-- How, and why so: LuaJIT's hooks do not fire inside compiled traces, so a
-- count hook alone cannot stop `while true do end` once the JIT has
-- compiled the loop. User code is therefore never compiled: every module
-- of the aggregates and projections folders (and every chunk its sandbox
-- `load`s) gets jit.off(chunk, true), which marks all the functions it
-- defines, so the recorder aborts any trace that would enter them. User
-- code runs in LuaJIT's interpreter, where hooks always fire; tide's own
-- code stays compiled. While a budgeted call runs, a count hook reads
-- clock.live_ms every COUNT interpreted instructions. Past the deadline
-- it raises in the user's function, and from then on on every user
-- instruction (count 1), so a pcall in user code cannot catch it and go
-- on: the call unwinds to budget.call. tide's own functions are never
-- interrupted (the hook looks at the function it stopped in). The cost
-- per command is the interpreter for the handler and two sethook calls
-- (`make bench`, section "user-code budget"); C functions that user code
-- calls (string.rep of a huge count, a pathological pattern) are not
-- interrupted inside C.
local clock = require "tide.clock"

local M = {}

local sethook, gethook, getinfo = debug.sethook, debug.gethook, debug.getinfo
local running, live_ms = coroutine.running, clock.live_ms
local jit_off = jit and jit.off or function() end

M.COUNT = 1000   -- interpreted instructions between two looks at the clock
M.ms = 1000

local MAIN = {}           -- the key of the main thread (coroutine.running() is nil there)
local active = {}         -- thread -> {deadline, what, limit, expired, paused_at, handler}
local nactive = 0
-- The first call running sits in a slot of its own, the others in active:
-- nearly always one runs at a time, and a table keyed by a new coroutine
-- per command keeps adding keys (and rehashing) for nothing.
local slot_key, slot_b = nil, nil

local function get_active(key)
  if key == slot_key then return slot_b end
  return active[key]
end

local function set_active(key, b)
  if slot_key == nil then
    slot_key, slot_b = key, b
  else
    active[key] = b
  end
end

local function clear_active(key)
  if key == slot_key then
    slot_key, slot_b = nil, nil
  else
    active[key] = nil
  end
end
local user_sources = {}   -- chunkname -> true: code the budget may stop

local Timeout = {}
Timeout.__index = Timeout
Timeout.__tostring = function(t) return t.message end

function M.configure(opts)
  if opts.ms ~= nil then
    if type(opts.ms) ~= "number" or opts.ms < 0 then error("budget.configure{ms=}: a number >= 0", 2) end
    M.ms = opts.ms
  end
end

-- With the budget off (lua.handler_budget_ms: 0) user code is left to the
-- JIT: nothing could stop it anyway.
function M.user_code(fn, chunkname)
  if M.ms > 0 then jit_off(fn, true) end
  if chunkname then user_sources[chunkname] = true end
  return fn
end

function M.is_user_source(chunkname) return user_sources[chunkname] == true end

local hook
hook = function()
  local b = get_active(running() or MAIN)
  if not b or b.paused_at then return end
  if not b.expired then
    if live_ms() < b.deadline then return end
    b.expired = true
    sethook(hook, "", 1)
  end
  local info = getinfo(2, "Sl")
  if info and user_sources[info.source] then
    local where = info.short_src and info.currentline and info.currentline > 0
      and (" at " .. info.short_src .. ":" .. info.currentline) or ""
    error(setmetatable({ message = ("%s ran past its budget of %d ms (lua.handler_budget_ms)%s")
      :format(b.what, b.limit, where) }, Timeout), 0)
  end
end

local function arm()
  nactive = nactive + 1
  if nactive == 1 then sethook(hook, "", M.COUNT) end
end

local function disarm(b)
  nactive = nactive - 1
  if nactive == 0 then
    sethook()
  elseif b.expired then
    -- another thread's budget still runs: back to the plain count
    local any_expired = slot_b ~= nil and slot_b.expired or false
    for _, x in pairs(active) do if x.expired then any_expired = true end end
    if not any_expired then sethook(hook, "", M.COUNT) end
  end
end

-- A finished call's record, for the next call (nothing holds a record
-- past its call: a table less per handler and per applier).
local spare = nil

local function finish(b, key, ok, ...)
  clear_active(key)
  disarm(b)
  spare = b
  if ok then return true, ... end
  local e = ...
  if getmetatable(e) == Timeout then return false, e.message end
  return false, e
end

-- The error handler of a budgeted call (one function for all: a closure
-- per call was a trace abort per command): the call's record is the
-- running thread's.
local function on_error(e)
  if getmetatable(e) == Timeout then return e end
  local b = get_active(running() or MAIN)
  -- tide's own error handler runs with the budget paused
  b.paused_at = b.paused_at or live_ms()
  return b.handler(e)
end

function M.call(what, handler, fn, ...)
  local key = running() or MAIN
  if M.ms <= 0 or get_active(key) then
    -- off, or nested in a budgeted call (which keeps counting)
    return xpcall(fn, function(e)
      if getmetatable(e) == Timeout then return e end
      return handler(e)
    end, ...)
  end
  local b = spare
  if b then
    spare = nil
    b.deadline, b.what, b.limit, b.handler = live_ms() + M.ms, what, M.ms, handler
    b.expired, b.paused_at = nil, nil
  else
    b = { deadline = live_ms() + M.ms, what = what, limit = M.ms, handler = handler, expired = nil, paused_at = nil }
  end
  set_active(key, b)
  arm()
  return finish(b, key, xpcall(fn, on_error, ...))
end

local function resume(b, ...)
  if b.paused_at then
    b.deadline = b.deadline + (live_ms() - b.paused_at)
    b.paused_at = nil
  end
  return ...
end

function M.io(fn, ...)
  local b = get_active(running() or MAIN)
  if not b or b.paused_at then return fn(...) end
  b.paused_at = live_ms()
  return resume(b, fn(...))
end

function M.is_timeout(msg)
  return type(msg) == "string" and msg:find("(lua.handler_budget_ms)", 1, true) ~= nil
end

-- for specs: whether a budget is running now
function M.active() return nactive end
M.gethook = gethook

return M
