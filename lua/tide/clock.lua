-- tide.clock: the one way tide's Lua library reads time.
--
--   clock.wall_ms() -> integer milliseconds since the epoch: what other
--                      machines can compare (event timestamps, lease expiry)
--   clock.wall_s()  -> integer seconds since the epoch (SigV4 dates, log lines)
--   clock.mono()    -> monotonic seconds, a float: durations and deadlines
--                      (the scheduler's timers, timeouts); never jumps
--   clock.mono_ms() -> monotonic milliseconds, an integer
--   clock.live_ms() -> monotonic milliseconds read now, never a cached
--                      time: the user-code budget (tide.budget) checks it
--                      while a handler runs, when nginx's cached time
--                      stands still (CLOCK_MONOTONIC through tide.ffi)
--
-- The source is the host's, chosen once when the module loads:
--   nginx         ngx.now and ngx.time (the worker's cached time, updated
--                 each turn of nginx's loop), and resty.core's
--                 monotonic_msec (falls back to ngx.now without it)
--   tide process  tide.engine's wall_ms and now (CLOCK_REALTIME and
--                 CLOCK_MONOTONIC, read by C on each call)
--   elsewhere     gettimeofday (tide.ffi) for the wall clock when tide's C
--                 library is there, else os.time; os.time (whole seconds)
--                 for the monotonic one
-- Modules that take a clock in their options (clock_ms=) default to these.
--
-- For tests only: TIDE_TEST_CLOCK_SKEW_MS (an integer, may be negative)
-- moves this process's wall clock (wall_ms and wall_s, never the monotonic
-- one), so that a spec can run workers whose clocks disagree.
local floor = math.floor

local M = {}

local ngx = rawget(_G, "ngx")

if type(ngx) == "table" and type(ngx.now) == "function" then
  local now, time = ngx.now, ngx.time
  M.wall_ms = function() return floor(now() * 1000) end
  M.wall_s = time
  local ok, rtime = pcall(require, "resty.core.time")
  if ok and type(rtime) == "table" and rtime.monotonic_msec then
    local msec = rtime.monotonic_msec
    M.mono_ms = msec
    M.mono = function() return msec() / 1000 end
  else
    M.mono_ms = M.wall_ms
    M.mono = now
  end
  -- resty.core's monotonic_msec is nginx's cached ngx_current_msec too
  local fok, tffi = pcall(require, "tide.ffi")
  M.live_ms = fok and tffi.monotonic_ms or function() ngx.update_time(); return floor(now() * 1000) end
else
  local ok, engine = pcall(require, "tide.engine")
  if ok and type(engine) == "table" and engine.wall_ms and engine.now then
    local now = engine.now
    M.wall_ms = engine.wall_ms
    M.mono = now
    M.mono_ms = function() return floor(now() * 1000) end
  else
    -- without the engine: gettimeofday through tide.ffi when tide's C
    -- library is loaded, else whole seconds
    local fok, tffi = pcall(require, "tide.ffi")
    M.wall_ms = fok and tffi.realtime_ms or function() return os.time() * 1000 end
    M.mono = os.time
    M.mono_ms = M.wall_ms
  end
  M.live_ms = M.mono_ms
  M.wall_s = os.time
end

local skew = tonumber(os.getenv("TIDE_TEST_CLOCK_SKEW_MS") or "")
if skew and skew ~= 0 then
  local wall_ms, wall_s = M.wall_ms, M.wall_s
  M.wall_ms = function() return wall_ms() + skew end
  M.wall_s = function() return wall_s() + floor(skew / 1000) end
end

return M
