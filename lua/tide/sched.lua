-- tide.sched - the cooperative scheduler of the tide process.
--
-- Named the way OpenResty users expect (ngx.thread.spawn / ngx.thread.wait,
-- ngx.sleep): code runs in coroutines ("threads") and every blocking call
-- yields to the loop, which keeps many HTTP requests in flight on one
-- tide.engine and resumes each thread when its response arrives.
--
--   local sched = require "tide.sched"
--   sched.configure{max_connections = 512}   -- engine options, next engine
--   local a, b = sched.run(function(...)    -- drives the loop until fn and
--     local th = sched.spawn(f, x)          -- every spawned thread are done
--     local ok, res = sched.wait(th)
--     sched.sleep(0.1)
--     local resp, err = sched.request{method=, url=, headers=, body=, timeout_ms=}
--   end, ...)
--
-- * sched.run(fn, ...) returns fn's results, or raises fn's error (with the
--   thread's traceback). If fn fails, the other threads are abandoned and
--   their requests aborted (as OpenResty aborts a request's user threads).
-- * sched.spawn(fn, ...) -> thread. The new thread runs at once until it
--   first yields; then spawn returns to the caller.
-- * sched.wait(th) -> true, results... | false, err (err carries a traceback
--   when it is a string). Any thread may wait on any thread, even a dead one.
-- * sched.wait_all(list) -> array with, per thread, {n=, ok, results...}.
-- * A thread's error is kept for wait. An error no thread collected by the
--   end of sched.run is reported through the on_error option (default: a
--   line on stderr); it never stops the loop or the other threads.
-- * sched.sleep(s): s >= 0 seconds; sleep(0) just lets the others run.
-- * sched.request(req) -> {id=, status=, headers=, body=} | nil, err where
--   err = {kind=, message=} (see tide.engine).
-- * sched.now() -> monotonic seconds (works anywhere).
-- * sched.current() -> the current thread or nil; sched.suspend() parks it
--   until sched.wakeup(th, ...), whose values suspend returns.
--   sched.idle() -> true when no other thread is ready to run now.
--   sched.alive(th) -> true for a thread of the run in progress that has
--   not ended.
-- * sched.wait_readable(fd [, timeout]) -> true when fd is readable (or
--   hung up), false after timeout seconds; sched.wakeup ends it early with
--   its own values. One thread per fd. The fd joins the engine's poll, so
--   the loop sleeps until it, a timer or a request is ready.
-- * sched.watch(fd) puts fd in the engine's own epoll set for the rest of
--   the run (sched.unwatch(fd) takes it out, before it is closed): then
--   wait_readable(fd) costs the loop nothing more per turn (no poll(2) of
--   its own). For a descriptor epoll takes (a socket, another epoll's fd:
--   the metrics server's); never stdin, which may be a regular file.
-- * sched.read(fd [, max]) -> bytes ("" at end of file) | nil, err: waits
--   for fd, then one read(2). sched.lines(fd [, {max_line = bytes}]) ->
--   iterator over its lines (without "\n"; a last line without one is
--   returned too; a line over max_line gives false, its length); it yields
--   between reads, so other threads run while fd is quiet: use it for
--   stdin instead of io.stdin:lines(), which blocks the whole loop.
-- * Yielding functions (sleep, request, wait, wait_all, spawn) raise
--   "sched.<name> called outside sched.run" outside a scheduler thread, and
--   also from a coroutine the scheduler does not manage.
-- * Timers are a binary heap; when nothing is ready the loop blocks in the
--   engine's poll until the next timer or I/O, never spinning.
local engine_mod = require "tide.engine"

local co_create, co_resume, co_running, co_yield, co_status =
  coroutine.create, coroutine.resume, coroutine.running, coroutine.yield, coroutine.status
local traceback = debug.traceback
local select, type, error, tostring, setmetatable, unpack =
  select, type, error, tostring, setmetatable, unpack or table.unpack
local floor, ceil, huge = math.floor, math.ceil, math.huge
local new_tab = require "table.new"

local M = {}

local now = require("tide.clock").mono
M.now = now

-- Options for the engine of the next sched.run (and on_error).
local config = {}

-- The loop state of the sched.run in progress, or nil.
local loop = nil

-- What a thread yields to tell the loop "I registered my wake-up already".
local PARKED = setmetatable({}, { __tostring = function() return "sched.parked" end })

local function pack(...)
  return { n = select("#", ...), ... }
end

local function default_on_error(err)
  io.stderr:write("tide.sched: error in a thread nobody waited for: ", tostring(err), "\n")
end

M.default_on_error = default_on_error

-- Sets options (only the keys given) for the engine of the next sched.run:
-- max_connections, connect_timeout_ms, timeout_ms, ca_bundle, verify_tls,
-- gather_us (see tide.engine);
-- and on_error(err), called with each thread error nobody collected.
function M.configure(opts)
  if type(opts) ~= "table" then
    error("sched.configure: opts must be a table", 2)
  end
  for k, v in pairs(opts) do
    config[k] = v
  end
end

-- ---- timers: a binary min-heap ordered by (at, seq) -----------------------

local function heap_less(a, b)
  return a.at < b.at or (a.at == b.at and a.seq < b.seq)
end

local function heap_push(h, item)
  local i = #h + 1
  h[i] = item
  while i > 1 do
    local p = floor(i / 2)
    if not heap_less(h[i], h[p]) then break end
    h[i], h[p] = h[p], h[i]
    i = p
  end
end

local function heap_pop(h)
  local n = #h
  local top = h[1]
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and heap_less(h[l], h[m]) then m = l end
    if r <= n and heap_less(h[r], h[m]) then m = r end
    if m == i then break end
    h[i], h[m] = h[m], h[i]
    i = m
  end
  return top
end

-- ---- the threads waiting for a request, by request id ----------------------
--
-- Request ids only grow. In a plain table each is a new key and its nil
-- stays behind, so the table rehashes every few requests when the number
-- in flight sits just under a power of two (64 accounts, 64 in flight:
-- a rehash per request). A ring of WAIT_RING slots indexed by the id
-- keeps them in the array part; an id whose slot is taken by another
-- (more than WAIT_RING in flight) waits in the overflow table.
local WAIT_RING = 1024

local function waiting_put(L, id, th)
  local slot = id % WAIT_RING + 1
  if L.wait_ids[slot] == false then
    L.wait_ids[slot], L.wait_ths[slot] = id, th
  else
    L.waiting[id] = th
  end
end

-- -> the thread waiting for id (removed), or nil
local function waiting_take(L, id)
  local slot = id % WAIT_RING + 1
  if L.wait_ids[slot] == id then
    local th = L.wait_ths[slot]
    L.wait_ids[slot], L.wait_ths[slot] = false, false
    return th
  end
  local th = L.waiting[id]
  if th then L.waiting[id] = nil end
  return th
end

-- ---- threads ---------------------------------------------------------------

-- A thread's fields are in its array part, by these indices: one
-- allocation per thread (the array is inside the table), no key hashed or
-- inserted as it runs (named keys in a hash part cost a command's thread
-- a few hundred instructions more). Every slot holds a value (false for
-- none): a read never reaches __index, which serves th.status to callers.
local STATUS, LOOP, CO, OK, RESULTS, WAITERS, COLLECTED, SUSPENDED, FDWAIT = 1, 2, 3, 4, 5, 6, 7, 8, 9
local THREAD_FIELDS = 9

local Thread = {}
Thread.__index = function(th, k)
  if k == "status" then return th[STATUS] end
  return nil
end
Thread.__tostring = function(th)
  return "sched.thread (" .. th[STATUS] .. ")"
end

local function on_error_handler(err)
  if type(err) == "string" then
    -- drop the xpcall frame at the bottom: it is this file's, not the user's
    return (traceback(err, 2):gsub("\n\t%[builtin#%d+%]: at 0x%x+$", ""))
  end
  return err
end

-- The thread whose coroutine runs now: loop.current (step sets it around
-- each resume), unless the code runs in a coroutine of its own inside it.
-- (A weak table from coroutine to thread, set and cleared per thread and
-- looked up per call, cost more.)
local function running_thread()
  local th = loop and loop.current
  if th and th[CO] == co_running() then return th end
  return nil
end

local function current_thread(name)
  local th = running_thread()
  if not th then
    error("sched." .. name .. " called outside sched.run", 3)
  end
  return th
end

-- Queue th to be resumed with the given values: the thread in
-- ready_th[i], its values in ready_args[i] (false for none, the common
-- case: no table made); q = loop.ready holds only first and last. The
-- arrays have no other keys: with first and last among the threads, every
-- rehash of the queue moved their slots in its hash part, and each move
-- failed the guards of every trace through here (a new side trace each
-- time: a third of the JIT's traces, each one two mprotect(2) calls).
local function make_ready(th, ...)
  local L = loop
  local q = L.ready
  local i = q.last + 1
  q.last = i
  L.ready_th[i] = th
  L.ready_args[i] = select("#", ...) > 0 and pack(...) or false
end

local finish
-- What a thread's body yields when its function returned (see thread_body),
-- and how many idle coroutines a loop keeps.
local FINISHED = setmetatable({}, { __tostring = function() return "sched.finished" end })
local POOL_MAX = 1024
-- The results of every thread that returned nothing (never modified).
local NO_RESULTS = { n = 0 }

-- Resumes th with the values and handles the outcome. Runs from the loop or
-- nested from spawn; either way th's body is inside xpcall, so errors come
-- back as values, never raised here.
-- What a resume returned, taken as arguments: a table is made only when
-- the thread finished (every command resumes a few times; packing each
-- resume's results was a twentieth of a command's CPU).
local function finished(th, ok, ...)
  -- most threads (every command's) return nothing: one shared table for them
  finish(th, ok, select("#", ...) == 0 and NO_RESULTS or pack(...))
  -- the coroutine is back in its body's loop: the next thread may use it
  local L = loop
  local n = L.npool
  if n < POOL_MAX then
    n = n + 1
    L.pool[n], L.npool = th[CO], n
  end
end

local function after_resume(th, prev, resumed, first, ...)
  loop.current = prev
  if not resumed then
    -- only a bug in this file gets here (the body runs in xpcall)
    finish(th, false, pack(first))
  elseif first == FINISHED then
    -- then xpcall's ok and the results
    finished(th, ...)
  elseif first == PARKED then
    -- the common case, first: its coroutine is alive (thread_body never
    -- returns), no co_status call needed
    return
  elseif co_status(th[CO]) == "dead" then
    finish(th, false, pack("sched: a thread's coroutine ended outside its body"))
  else
    -- a bare coroutine.yield() from user code: treat it as sleep(0)
    make_ready(th)
  end
end

local function step(th, ...)
  local prev = loop.current
  loop.current = th
  after_resume(th, prev, co_resume(th[CO], ...))
end

finish = function(th, ok, results)
  local L = loop
  th[STATUS] = ok and "done" or "failed"
  th[OK] = ok
  th[RESULTS] = results
  L.live = L.live - 1
  if th == L.main then
    return
  end
  local waiters = th[WAITERS]
  th[WAITERS] = false
  if waiters and #waiters > 0 then
    th[COLLECTED] = true
    for i = 1, #waiters do
      make_ready(waiters[i], th)
    end
  elseif not ok then
    L.uncollected[#L.uncollected + 1] = th
  end
end

-- Every thread's coroutine runs this body: the function and its arguments
-- come with the first resume (no closure made per thread). When the
-- function returns, the body yields FINISHED and the results, and waits
-- for the next thread's function: a coroutine serves thread after thread
-- (a new one per command, with a stack grown twice on the command path
-- and freed by the collector, cost a command several thousand
-- instructions). A coroutine that ends otherwise is never reused.
local function thread_body(fn, ...)
  return thread_body(co_yield(FINISHED, xpcall(fn, on_error_handler, ...)))
end

-- A thread not started yet: the first resume (step) passes fn and its
-- arguments.
local function new_thread()
  local th = setmetatable(new_tab(THREAD_FIELDS, 0), Thread)
  th[STATUS], th[LOOP] = "running", loop
  th[OK], th[RESULTS], th[WAITERS], th[COLLECTED], th[SUSPENDED], th[FDWAIT] = false, false, false, false, false, false
  local pool, n = loop.pool, loop.npool
  if n > 0 then
    th[CO] = pool[n]
    pool[n], loop.npool = nil, n - 1
  else
    th[CO] = co_create(thread_body)
  end
  loop.live = loop.live + 1
  return th
end

function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("sched.spawn: fn must be a function", 2)
  end
  current_thread("spawn")
  local th = new_thread()
  step(th, fn, ...)
  -- the spawned thread ran first; the parent goes on at once
  return th
end

local function results_of(th)
  th[COLLECTED] = true
  local results = th[RESULTS]
  if th[OK] then
    return true, unpack(results, 1, results.n)
  end
  return false, results[1]
end

function M.wait(th)
  local self = current_thread("wait")
  if getmetatable(th) ~= Thread then
    error("sched.wait: expected a thread from sched.spawn", 2)
  end
  if th[LOOP] ~= loop then
    error("sched.wait: the thread belongs to another sched.run", 2)
  end
  if th == self then
    error("sched.wait: a thread cannot wait for itself", 2)
  end
  if th[STATUS] == "running" then
    local waiters = th[WAITERS] or {}
    th[WAITERS] = waiters
    waiters[#waiters + 1] = self
    co_yield(PARKED)
  end
  return results_of(th)
end

function M.wait_all(list)
  current_thread("wait_all")
  if type(list) ~= "table" then
    error("sched.wait_all: expected an array of threads", 2)
  end
  local out = {}
  for i = 1, #list do
    out[i] = pack(M.wait(list[i]))
  end
  return out
end

function M.sleep(seconds)
  local th = current_thread("sleep")
  if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
    error("sched.sleep: seconds must be a non-negative number", 2)
  end
  if seconds == 0 then
    make_ready(th)
  else
    loop.seq = loop.seq + 1
    heap_push(loop.timers, { at = now() + seconds, seq = loop.seq, th = th })
  end
  co_yield(PARKED)
end

local function get_engine(L)
  if not L.engine then
    local e, err = engine_mod.new({
      max_connections = config.max_connections,
      connect_timeout_ms = config.connect_timeout_ms,
      timeout_ms = config.timeout_ms,
      ca_bundle = config.ca_bundle,
      verify_tls = config.verify_tls,
      gather_us = config.gather_us,
    })
    if not e then
      error("sched: cannot create the HTTP engine: " .. tostring(err), 0)
    end
    L.engine = e
  end
  return L.engine
end

function M.request(req)
  local th = current_thread("request")
  if type(req) ~= "table" then
    error("sched.request: req must be a table", 2)
  end
  local e = get_engine(loop)
  local id, err = e:submit(req)
  if not id then
    return nil, err
  end
  waiting_put(loop, id, th)
  local c = co_yield(PARKED)
  if c.error then
    return nil, c.error
  end
  return c
end

-- Number of HTTP requests in flight in the current run (0 outside).
function M.pending()
  return loop and loop.engine and loop.engine:pending() or 0
end

-- True inside a scheduler thread.
function M.running()
  return running_thread() ~= nil
end

-- True when no other thread is ready to run now: a primitive may then do
-- its work on the spot rather than hand it to another OS thread, as
-- nothing would run meanwhile (the SQLite store's writer thread).
function M.idle()
  local q = loop and loop.ready
  return q == nil or q.first > q.last
end

-- The current scheduler thread, or nil outside one.
function M.current()
  return running_thread()
end

-- true when th is a thread of the sched.run in progress that has not
-- ended (not one of an earlier run, abandoned when that run failed).
function M.alive(th)
  return loop ~= nil and getmetatable(th) == Thread and th[LOOP] == loop and th[STATUS] == "running"
end

-- Parks the current thread until another calls sched.wakeup(th, ...);
-- returns wakeup's values. For primitives built on the scheduler (the
-- SQLite store's group commit): whoever suspends a thread must make sure
-- something wakes it, or sched.run reports a deadlock.
function M.suspend()
  local th = current_thread("suspend")
  th[SUSPENDED] = true
  return co_yield(PARKED)
end

-- Makes a thread parked by sched.suspend ready to run again; it resumes
-- with the given values. Returns false (and does nothing) when th is not
-- suspended.
function M.wakeup(th, ...)
  if getmetatable(th) ~= Thread then
    error("sched.wakeup: expected a thread", 2)
  end
  if not th[SUSPENDED] or th[LOOP] ~= loop then
    return false
  end
  if th[FDWAIT] then
    -- parked in wait_readable: withdraw its fd and timer first
    th[FDWAIT](nil, pack(...))
    return true
  end
  th[SUSPENDED] = false
  make_ready(th, ...)
  return true
end

-- ---- waiting for file descriptors -----------------------------------------

function M.wait_readable(fd, timeout)
  local th = current_thread("wait_readable")
  if type(fd) ~= "number" or fd < 0 or fd ~= floor(fd) then
    error("sched.wait_readable: fd must be a file descriptor (a non-negative integer)", 2)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout) then
    error("sched.wait_readable: timeout must be a non-negative number of seconds or nil", 2)
  end
  local L = loop
  if L.fdwait[fd] then
    error("sched.wait_readable: another thread already waits for fd " .. fd, 2)
  end
  local timer
  -- The one way out, whoever calls it first (fd ready, timer, wakeup):
  -- withdraws both registrations, so the thread is resumed exactly once.
  local function done(ready, values)
    if L.fdwait[fd] ~= th then return end
    L.fdwait[fd] = nil
    L.nfd = L.nfd - 1
    if timer then timer.cancelled = true end
    th[FDWAIT], th[SUSPENDED] = false, false
    if values then
      make_ready(th, unpack(values, 1, values.n))
    else
      make_ready(th, ready)
    end
  end
  L.fdwait[fd] = th
  L.nfd = L.nfd + 1
  th[FDWAIT] = done
  th[SUSPENDED] = true
  if timeout then
    L.seq = L.seq + 1
    timer = { at = now() + timeout, seq = L.seq, th = th, fdwait = done }
    heap_push(L.timers, timer)
  end
  return co_yield(PARKED)
end

function M.watch(fd)
  current_thread("watch")
  local ok, err = get_engine(loop):watch(fd)
  if not ok then return nil, err end
  loop.watched[fd] = true
  return true
end

function M.unwatch(fd)
  if loop and loop.watched[fd] then
    loop.watched[fd] = nil
    loop.engine:unwatch(fd)
  end
end

function M.read(fd, max)
  local ok = M.wait_readable(fd)
  if ok ~= true then return nil, "sched.read: woken before fd " .. tostring(fd) .. " was readable" end
  return engine_mod.read(fd, max)
end

-- Reads 64 KiB at a time; a line is gathered from its pieces once, when
-- its end is found (linear in its length). With max_line, a longer line
-- is not kept: the iterator returns false, its length in bytes (the line
-- is skipped up to its end), and goes on with the next line.
local READ_BYTES = 65536

function M.lines(fd, opts)
  local max = opts and opts.max_line
  local chunk, pos, eof = "", 1, false
  local parts, plen, skipping = {}, 0, false
  local concat = table.concat
  -- the line ends with chunk:sub(from, to) (no closure per line: each was
  -- a trace abort, NYI FNEW)
  local function take(piece_len, from, to)
    local total = plen + piece_len
    if skipping or (max and total > max) then
      parts, plen, skipping = {}, 0, false
      return false, total
    end
    local line
    if plen == 0 then
      line = chunk:sub(from, to)
    else
      parts[#parts + 1] = chunk:sub(from, to)
      line = concat(parts)
      parts, plen = {}, 0
    end
    return line
  end
  return function()
    while true do
      local nl = chunk:find("\n", pos, true)
      if nl then
        local from = pos
        pos = nl + 1
        return take(nl - from, from, nl - 1)
      end
      local rest = #chunk - pos + 1
      if rest > 0 then
        if skipping or (max and plen + rest > max) then
          skipping, parts = true, {}
        else
          parts[#parts + 1] = chunk:sub(pos)
        end
        plen = plen + rest
      end
      chunk, pos = "", 1
      if eof then
        if plen == 0 and not skipping then return nil end
        return take(0, 1, 0)
      end
      local data, err = M.read(fd, READ_BYTES)
      if not data then error("sched.lines: " .. tostring(err), 2) end
      if data == "" then eof = true else chunk = data end
    end
  end
end

-- ---- the loop --------------------------------------------------------------

local function run_ready(L)
  local q, qth, qargs = L.ready, L.ready_th, L.ready_args
  -- only what was ready when this pass began: a thread that yields again
  -- (sleep(0)) waits for the next pass, after I/O got a chance
  local last = q.last
  while q.first <= last do
    local i = q.first
    local th, args = qth[i], qargs[i]
    qth[i], qargs[i] = nil, nil
    q.first = i + 1
    if args then
      step(th, unpack(args, 1, args.n))
    else
      step(th)
    end
    if L.main[STATUS] == "failed" then
      return
    end
  end
  -- Start again at 1, so the queue stays in the array part (ever-growing
  -- indices would all be new keys of the hash part), drained or not: in
  -- tide batch a pass never ended drained (a thread queued during it, a
  -- group commit's leader after sleep(0), waits for the next), so what is
  -- left moves to the front.
  local from, to = q.first, q.last
  if from > 1 then
    for i = from, to do
      local j = i - from + 1
      qth[j], qargs[j] = qth[i], qargs[i]
      qth[i], qargs[i] = nil, nil
    end
    q.first, q.last = 1, to - from + 1
  end
end

local function fire_timers(L)
  local t = L.timers
  if #t == 0 then return end
  local n = now()
  while #t > 0 and t[1].at <= n do
    local item = heap_pop(t)
    if item.fdwait then
      if not item.cancelled then item.fdwait(false) end
    else
      make_ready(item.th)
    end
  end
end

local function drive(L)
  while true do
    run_ready(L)
    if L.main[STATUS] == "failed" then return end
    if L.live == 0 then return end
    fire_timers(L)
    local q = L.ready
    local timeout
    if q.first <= q.last then
      timeout = 0
    elseif #L.timers > 0 then
      timeout = (L.timers[1].at - now()) * 1000
      if timeout < 0 then timeout = 0 end
    else
      timeout = -1
    end
    local pending = L.engine and L.engine:pending() or 0
    if timeout < 0 and pending == 0 and L.nfd == 0 then
      error(string.format("sched.run: deadlock: %d thread(s) waiting for each other with nothing"
        .. " pending (no timer, no request)", L.live), 0)
    end
    if timeout ~= 0 or pending > 0 or L.nfd > 0 then
      local fds
      if L.nfd > 0 then
        -- watched fds come back from the engine's epoll without being asked
        for fd in pairs(L.fdwait) do
          if not L.watched[fd] then
            fds = fds or {}
            fds[#fds + 1] = fd
          end
        end
      end
      local done, ready = get_engine(L):poll(timeout, fds)
      if not done then
        error("sched.run: engine poll failed: " .. tostring(ready), 0)
      end
      if ready then
        for i = 1, #ready do
          local th = L.fdwait[ready[i]]
          if th and th[FDWAIT] then th[FDWAIT](true) end
        end
      end
      for i = 1, #done do
        local c = done[i]
        local th = waiting_take(L, c.id)
        if th then
          make_ready(th, c)
        end
      end
    end
  end
end

function M.run(fn, ...)
  if type(fn) ~= "function" then
    error("sched.run: fn must be a function", 2)
  end
  if loop then
    error("sched.run: already running (use sched.spawn inside a run)", 2)
  end
  local L = {
    ready = { first = 1, last = 0 }, -- the queue's bounds (see make_ready)
    ready_th = new_tab(256, 0), ready_args = new_tab(256, 0),
    main = false, current = false, engine = false, -- (set later: no rehash of L then)
    pool = new_tab(256, 0), -- coroutines waiting for a thread (see thread_body)
    npool = 0, -- how many: #pool searched the array's free half on every call
    timers = {},
    seq = 0,
    waiting = {},  -- request id -> thread, for ids whose ring slot was taken
    wait_ids = {}, wait_ths = {}, -- the ring (see waiting_put)
    fdwait = {},   -- fd -> the thread in wait_readable
    nfd = 0,
    watched = {},  -- fd -> true: in the engine's epoll set (sched.watch)
    live = 0,
    uncollected = {},
    on_error = config.on_error or default_on_error,
  }
  for i = 1, WAIT_RING do L.wait_ids[i], L.wait_ths[i] = false, false end
  loop = L
  local ok, err = pcall(function(...)
    L.main = new_thread()
    make_ready(L.main, fn, ...)
    drive(L)
  end, ...)
  loop = nil
  if L.engine then
    L.engine:close()
  end
  for i = 1, #L.uncollected do
    local th = L.uncollected[i]
    if not th[COLLECTED] then
      local rok, rerr = pcall(L.on_error, th[RESULTS][1])
      if not rok then
        io.stderr:write("tide.sched: on_error failed: ", tostring(rerr), "\n")
      end
    end
  end
  if not ok then
    error(err, 0)
  end
  local m = L.main
  if not m[OK] then
    error(m[RESULTS][1], 0)
  end
  local results = m[RESULTS]
  return unpack(results, 1, results.n)
end

return M
