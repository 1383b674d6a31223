-- bench/cpu.lua: the CPU time of this process, for the benchmarks that
-- report client CPU per request (loaded with dofile from the project root).
--
--   local cpu = dofile("bench/cpu.lua")
--   local user, sys = cpu()      -- seconds so far (getrusage(RUSAGE_SELF))
local ffi = require "ffi"

if not pcall(ffi.typeof, "tide_bench_rusage") then
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_usec; } tide_bench_timeval;
    typedef struct {
      tide_bench_timeval ru_utime, ru_stime;
      long ru_maxrss, ru_ixrss, ru_idrss, ru_isrss, ru_minflt, ru_majflt, ru_nswap,
           ru_inblock, ru_oublock, ru_msgsnd, ru_msgrcv, ru_nsignals, ru_nvcsw, ru_nivcsw;
    } tide_bench_rusage;
    int getrusage(int who, tide_bench_rusage *usage);
  ]]
end

local RUSAGE_SELF = 0
local ru = ffi.new("tide_bench_rusage")

return function()
  if ffi.C.getrusage(RUSAGE_SELF, ru) ~= 0 then error("getrusage failed") end
  return tonumber(ru.ru_utime.tv_sec) + tonumber(ru.ru_utime.tv_usec) / 1e6,
         tonumber(ru.ru_stime.tv_sec) + tonumber(ru.ru_stime.tv_usec) / 1e6
end
