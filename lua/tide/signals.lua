-- tide.signals: SIGTERM and SIGINT as events of the tide process's loop.
--
--   local h = signals.on_stop(function(name) stopping = true end [, log])
--   ...
--   h:stop()    -- before the sched.run that started it can end
--
-- The signals are blocked and read through a signalfd (tide.engine), so a
-- daemon finishes its batch, checkpoints and releases its leases instead of
-- dying mid-batch. A second signal while stopping exits at once (status
-- 130 / 143), for an operator who really means it; it says so through
-- log (the daemon's logger: JSON lines) when given, else on stderr.
local engine = require "tide.engine"
local sched = require "tide.sched"

local M = {}

function M.on_stop(fn, log)
  local s, err = engine.signals{ "TERM", "INT" }
  if not s then return nil, err end
  local handle = { stopped = false, signalled = false }
  local fd = s:fd()
  handle.thread = sched.spawn(function()
    while not handle.stopped do
      local ready = sched.wait_readable(fd)
      if handle.stopped or ready ~= true then break end
      for _, name in ipairs(s:read() or {}) do
        if handle.signalled then
          if log then
            log("warn", "second SIG" .. name .. ": exiting now")
          else
            io.stderr:write("tide: second SIG", name, ": exiting now\n")
          end
          os.exit(name == "INT" and 130 or 143)
        end
        handle.signalled = true
        fn(name)
      end
    end
    s:close()
  end)
  function handle.stop()
    if handle.stopped then return end
    handle.stopped = true
    if sched.current() ~= handle.thread then sched.wakeup(handle.thread, "stop") end
  end
  return handle
end

return M
