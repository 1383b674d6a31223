-- tide.credentials.process: runs a credential_process command and returns
-- what it printed.
--
--   process.run(line, {timeout = seconds}) -> stdout | nil, message
--
-- The line runs without a shell when tide.credentials.parse.split_command
-- can split it (quotes and backslashes only), else through /bin/sh -c, as
-- botocore runs it. Its stderr is tide's (passed through); stdin is
-- /dev/null. In the tide process, inside the scheduler, the output is read
-- through the loop (sched.wait_readable), so other commands keep running,
-- and a command still running after the timeout is killed. Elsewhere
-- (nginx's init phase, a plain script) io.popen reads it, blocking, with
-- coreutils' timeout(1) as the limit.
local parse = require "tide.credentials.parse"

local M = {}

local function argv_of(line)
  return parse.split_command(line) or { "/bin/sh", "-c", line }
end

local function exit_message(status)
  local code = math.floor(status / 256) % 256
  local sig = status % 128
  if sig ~= 0 then return "was killed by signal " .. sig end
  if code ~= 0 then return "exited with status " .. code end
end

local function run_sched(sched, argv, timeout)
  local tffi = require "tide.ffi"
  local pid, fd = tffi.spawn(argv)
  if not pid then return nil, fd end
  local chunks, total = {}, 0
  local deadline = sched.now() + timeout
  local timed_out, rerr = false, nil
  while true do
    local left = deadline - sched.now()
    if left <= 0 or not sched.wait_readable(fd, left) then timed_out = true; break end
    local data, err = sched.read(fd, 65536)
    if not data then rerr = err; break end
    if data == "" then break end
    chunks[#chunks + 1] = data
    total = total + #data
    if total > 1024 * 1024 then rerr = "printed more than 1 MiB"; break end
  end
  tffi.close(fd)
  if timed_out or rerr then tffi.kill(pid, 9) end
  -- the child has closed its stdout: it is exiting; reap it without
  -- blocking the loop for long
  local status
  for _ = 1, 200 do
    local r, st = tffi.waitpid(pid, true)
    if r == nil then break end
    if r == pid then status = st; break end
    sched.sleep(0.01)
  end
  if status == nil then tffi.kill(pid, 9); local _, st = tffi.waitpid(pid, false); status = st or 0 end
  if timed_out then return nil, "did not finish within " .. timeout .. " s (killed)" end
  if rerr then return nil, rerr end
  local why = exit_message(status)
  if why then return nil, why end
  return table.concat(chunks)
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function run_popen(argv, timeout)
  local q = {}
  for i, a in ipairs(argv) do q[i] = shell_quote(a) end
  local cmd = "timeout -s KILL " .. math.max(1, math.ceil(timeout)) .. " " .. table.concat(q, " ")
    .. " </dev/null; echo \"__tide_exit=$?\""
  local p = io.popen(cmd, "r")
  if not p then return nil, "cannot start the command" end
  local out = p:read("*a") or ""
  p:close()
  local code = tonumber(out:match("__tide_exit=(%d+)%s*$"))
  out = out:gsub("__tide_exit=%d+%s*$", "")
  if code == 137 then return nil, "did not finish within " .. timeout .. " s (killed)" end
  if code ~= 0 then return nil, "exited with status " .. tostring(code) end
  return out
end

function M.run(line, opts)
  local timeout = opts and opts.timeout or 60
  local argv = argv_of(line)
  local ok, sched = pcall(require, "tide.sched")
  if ok and ngx == nil and sched.current() then return run_sched(sched, argv, timeout) end
  return run_popen(argv, timeout)
end

M.argv_of = argv_of

return M
