-- bench/profile_batch.lua: `tide batch` under LuaJIT's profiler (jit.p) or
-- its trace log (jit.v), for bench/command_profile.sh.
--
--   build/tide script bench/profile_batch.lua WHAT OUTFILE --config FILE < commands.ndjson > results.ndjson
--     WHAT: p=MODE  jit.p with MODE, its dump features: e.g. "v" (VM states:
--                   interpreted, JIT code, C code, GC, JIT compiler) or "F"
--                   (functions, with their module)
--           v       jit.v: every trace compiled or aborted, and why
--
-- Runs the same code as `build/tide batch` (require("tide.cli").main("batch"));
-- the profile or log goes to OUTFILE.
local what, file = ...
local stop
if what == "v" then
  local log = require "jit.v"
  log.on(file)
  stop = log.off
else
  local profiler = require "jit.p"
  profiler.start(assert(what:match("^p=(.*)$"), "WHAT must be p=MODE or v"), file)
  stop = profiler.stop
end
local status = require("tide.cli").main("batch", select(3, ...))
stop()
if status ~= 0 then error("tide batch exited with status " .. tostring(status)) end
