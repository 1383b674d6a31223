-- tide.metrics.server: the tide process's page for operators, served from
-- the scheduler's loop (tide run and tide batch --metrics ADDR, or
-- metrics.listen in tide.yaml).
--
--   local srv, err = server.start{ listen = "127.0.0.1:9464", log = app.log,
--                                  ready = function() return true end }   -- or false, "why"
--   srv.port          the port it listens on (listen may say 0)
--   srv:stop()        stops listening (waits for the server's thread)
--
-- Routes: GET /metrics (tide.metrics.render, Prometheus text format),
-- GET /health (200 while the process runs its loop), GET /ready (200 when
-- ready() says so, else 503 with the reason). HTTP is libmicrohttpd's
-- (runtime/engine/httpd.c), without threads of its own: MHD's epoll
-- descriptor is in the engine's epoll set (sched.watch), one scheduler
-- thread waits for it beside the requests and commands in flight, then
-- lets MHD answer what is ready, so a page is rendered on the thread that
-- owns the Lua state, between two turns of the loop.
local metrics = require "tide.metrics"
local sched = require "tide.sched"
local terror = require "tide.error"

local M = {}

local TEXT = "text/plain; charset=utf-8"

local Server = {}
Server.__index = Server

local function handler_for(opts)
  local ready = opts.ready or function() return true end
  return function(method, path)
    if method ~= "GET" and method ~= "HEAD" then return 405, TEXT, "only GET\n" end
    if path == "/metrics" then
      return 200, metrics.CONTENT_TYPE, metrics.render()
    elseif path == "/health" then
      return 200, TEXT, "ok\n"
    elseif path == "/ready" then
      local ok, why = ready()
      if ok then return 200, TEXT, "ready\n" end
      return 503, TEXT, "not ready: " .. tostring(why or "starting") .. "\n"
    end
    return 404, TEXT, "not found: try /metrics, /health or /ready\n"
  end
end

-- server.start(opts) -> server | nil, err (a tide.error: the address
-- cannot be used). Must run inside sched.run.
function M.start(opts)
  local engine = require "tide.engine"
  local log = opts.log or function() end
  local httpd, err = engine.httpd(opts.listen)
  if not httpd then
    return nil, terror.new{ kind = "invalid", type = "ConfigError", message = tostring(err), retryable = false }
  end
  metrics.enabled = true
  local handle = handler_for(opts)
  -- never lets an error out into the C server: the scrape gets a 500 and
  -- the log says why
  local function guarded(method, path)
    local ok, status, ctype, body = pcall(handle, method, path)
    if ok then return status, ctype, body end
    log("error", "metrics page failed", { error = tostring(status), path = path })
    return 500, TEXT, "internal error\n"
  end
  local self = setmetatable({ httpd = httpd, port = httpd:port(), stopped = false }, Server)
  local fd = httpd:fd()
  -- MHD's epoll descriptor joins the engine's own epoll set: waiting for
  -- a scrape costs the loop nothing per turn
  local watched, werr = sched.watch(fd)
  if not watched then log("warn", "metrics server: " .. tostring(werr) .. "; waiting with poll(2)") end
  self.thread = sched.spawn(function()
    while not self.stopped do
      sched.wait_readable(fd, httpd:timeout())
      if self.stopped then break end
      local ok, rerr = httpd:run(guarded)
      if not ok then log("warn", "metrics server: " .. tostring(rerr)) end
    end
    sched.unwatch(fd)
    httpd:close()
  end)
  log("info", "metrics listening", { listen = opts.listen, port = self.port })
  return self
end

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  sched.wakeup(self.thread)
  sched.wait(self.thread)
end

return M
