-- tide.http.site - the nginx side of tide's HTTP API: three entry points
-- that examples/nginx/nginx.conf calls, so the configuration stays thin.
--
--   init_by_lua_block        { require("tide.http.site").init{ config = "/srv/app/tide.yaml",
--                                routes = { ["http://127.0.0.1:8000"] = "/_tide/dynamodb" } } }
--   init_worker_by_lua_block { require("tide.http.site").init_worker() }
--   content_by_lua_block     { require("tide.http.site").handle() }
--
-- init runs in the master, once per configuration load (start and every
-- `nginx -s reload`): it reads tide.yaml and loads the aggregate modules,
-- and raises when either is wrong, so nginx refuses the configuration: at
-- start nginx does not start; on reload the old workers keep serving with
-- the previous code, and the error log says why. init_worker opens the
-- store in each worker (a SQLite connection must not cross a fork; the
-- DynamoDB client gets the subrequest transport). handle serves a request
-- through tide.http.api.
local api = require "tide.http.api"
local core = require "tide.core"
local cjson = require "cjson.safe"
local terror = require "tide.error"
local tlog = require "tide.log"

local ngx = ngx

local M = {}

local conf  -- set by init (master): {cfg=, registry=, routes=, models=}
local app   -- set by init_worker: what tide.http.api.handle needs

-- tide.log into nginx's error log; init_worker sets it from the
-- configuration's log.level and log.format.
local log = tlog.new{ sink = tlog.ngx }

-- Read models: wired when a projection backend for the store exists
-- (lua/tide/projection/<store>.lua, docs/projections.md).
-- How a request waits on its stream's lane in tide.repository (commands
-- waiting on one stream share a write): one ngx.semaphore per waiting
-- command. The wait is bounded; a command still queued when it ends is
-- withdrawn and answered with a store error.
local LANE_WAIT_S = 60
local function ngx_parking()
  local semaphore = require "ngx.semaphore"
  return {
    new = function() return { sema = semaphore.new(0) } end,
    wait = function(w) return w.sema:wait(LANE_WAIT_S) end,
    wake = function(w) w.sema:post(1) end,
  }
end

-- The workers of this host take turns on a stream (tide.repository's
-- host_lanes): a turn is a key in the tide_streams shared dict, added
-- atomically and deleted by its holder; it expires after LANE_TURN_S should
-- a worker die holding it (or sooner: a waiting worker drops the turn of a
-- pid that no longer exists). The dict also keeps the last version written
-- of each stream, so a worker whose cached state is behind catches up
-- before deciding instead of losing a write, and the events of each write
-- (up to SHARED_EVENTS_BYTES, for SHARED_EVENTS_TTL_S), so that catch-up is
-- usually no read at all: the next worker applies what the previous ones
-- wrote. Without the dict (an nginx.conf of an older tide), workers write
-- as separate processes do.
local LANE_TURN_S = 30
local SHARED_EVENTS_BYTES = 64 * 1024
local SHARED_TTL_S = 300 -- a stream's last version, kept while it is written
local SHARED_EVENTS_TTL_S = 5 -- a write's events, kept for the catch-ups that follow it
local WAIT_STEP_S = 0.002 -- the longest pause between a waiting worker's tries
local DEFER_S = 2 * WAIT_STEP_S -- what the worker that just left a turn gives a waiting one
--
-- Forwarding (tide.repository, "Forwarding"): a worker whose commands for a
-- stream arrive while another worker holds its turn pushes them, as one
-- message, on the stream's queue ("q:" .. stream, a list) under a ticket
-- of its own, and polls for the holder's reply ("r:" .. ticket). The
-- holder pops the queue when it gathers its batch; whoever first adds
-- "k:" .. ticket owns the message: the holder (its pid: it will reply),
-- or the sender taking it back when no holder is left to take it (0), or
-- a holder that cannot run it (-1: another module version, after a
-- reload). A holder that died after claiming is seen by its pid: the
-- sender then runs the commands itself, with the same command ids.
-- Every key expires (FORWARD_TTL_S): nothing is left behind by a worker
-- that dies or a sender that stopped waiting. The polling stops when the
-- reply comes: an idle host does not poll.
local FORWARD_TTL_S = 2 * LANE_WAIT_S
-- How often a worker waiting for replies reads its inbox: every
-- FORWARD_STEP_S after a reply came, the pause doubling while none comes,
-- up to FORWARD_STEP_MAX_S. A holder's write takes milliseconds, and every
-- pause is a timer and a context switch: polling each millisecond cost a
-- 4-worker host about a quarter of a core in wake-ups (perf: epoll_wait
-- and the scheduler), taken from the rest of the machine.
local FORWARD_STEP_S = 0.001
local FORWARD_STEP_MAX_S = 0.008
local FORWARD_CHECK_S = 0.005 -- how often it checks on each unanswered ticket
local alive = (function()
  local ok, tffi = pcall(require, "tide.ffi")
  return ok and tffi.alive or function() return true end
end)()

local function holder_pid(token)
  return tonumber(type(token) == "string" and token:match("^(%d+):") or nil)
end

local function ngx_host_lanes()
  local dict = ngx.shared.tide_streams
  if not dict then return nil end
  local semaphore = require "ngx.semaphore"
  local poll
  local pid, turns = ngx.worker.pid(), 0
  local tickets = 0
  local nonce = core.random_hex(4) -- tickets stay unique when a pid is used again
  -- A turn held by a worker that no longer exists is dropped (else the
  -- stream would wait for its expiry). Not atomic with the check: a new
  -- holder's turn dropped by mistake costs the two a conflict, not
  -- correctness (the writes are conditional).
  local function dead_holder(key)
    local token = dict:get(key)
    local p = holder_pid(token)
    if p and p ~= pid and not alive(p) then
      if dict:get(key) == token then dict:delete(key) end
      return true
    end
    return false
  end
  local held = {} -- stream -> our token
  local left, nleft = {}, 0 -- stream -> when we last left its turn (until we enter it again)

  -- The tickets this worker forwarded and waits for, and their poller: one
  -- timer that runs while any is waiting. It reads the worker's inbox (the
  -- tickets answered: the holder pushes each after its reply) every
  -- FORWARD_STEP_S, and checks each unanswered ticket every
  -- FORWARD_CHECK_S: taken back (withdrawn) when no worker holds its turn
  -- any more, given up ("lost") when the worker that claimed it is gone,
  -- "timeout" past its deadline.
  local inbox_id = pid .. ":" .. nonce
  local inbox = "i:" .. inbox_id
  local waiting, nwaiting, polling = {}, 0, false
  local function settle(ticket, w, outcome, reply)
    w.outcome, w.reply = outcome, reply
    waiting[ticket] = nil
    nwaiting = nwaiting - 1
    w.sema:post(1)
  end
  -- alive(pid) once per pid in a pass of the poller, not once per ticket
  -- (a kill(2) each: dozens of tickets wait on the same holder)
  local seen_alive = {}
  local function is_alive(p)
    local a = seen_alive[p]
    if a == nil then
      a = alive(p)
      seen_alive[p] = a
    end
    return a
  end
  local function check(ticket, w, now)
    local rkey, kkey = "r:" .. ticket, "k:" .. ticket
    local reply = dict:get(rkey)
    if reply then
      dict:delete(rkey)
      dict:delete(kkey)
      return settle(ticket, w, "reply", reply)
    end
    local owner = dict:get(kkey)
    if owner == nil then
      -- not taken yet: take it back when nobody holds the turn to take it
      local token = dict:get("t:" .. w.stream)
      local late = now > w.deadline
      if late or not token or not is_alive(holder_pid(token) or pid) then
        -- (else a holder claimed it meanwhile: its answer comes)
        if dict:add(kkey, 0, FORWARD_TTL_S) then return settle(ticket, w, late and "timeout" or "withdrawn") end
      end
    elseif owner == -1 then
      dict:delete(kkey)
      return settle(ticket, w, "refused")
    elseif owner > 0 and not is_alive(owner) then
      dict:delete(kkey)
      return settle(ticket, w, "lost")
    elseif now > w.deadline then
      return settle(ticket, w, "timeout")
    end
  end
  -- (a reload's old worker keeps polling until its last waiter is
  -- answered: its requests are still in flight)
  local function poll_loop()
    local step = FORWARD_STEP_S / 2 -- (doubled before the first pause)
    while nwaiting > 0 do
      step = math.min(step * 2, FORWARD_STEP_MAX_S)
      while true do
        local ticket = dict:lpop(inbox)
        if not ticket then break end
        step = FORWARD_STEP_S
        local w = waiting[ticket]
        if w then check(ticket, w, ngx.now()) end
      end
      local now = ngx.now()
      seen_alive = {}
      for ticket, w in pairs(waiting) do
        if now >= w.next_check then
          w.next_check = now + FORWARD_CHECK_S
          check(ticket, w, now)
        end
      end
      if nwaiting > 0 then ngx.sleep(step) end
    end
  end
  poll = function()
    local ok, err = pcall(poll_loop)
    polling = false
    if not ok then
      -- the waiters still waiting get their answers from the next poller
      -- (started by the next forward) or time out
      log("error", "tide_streams: the forwarding poller failed: " .. tostring(err))
    end
  end
  return {
    enter = function(stream, forward)
      turns = turns + 1
      local token, key, wkey = pid .. ":" .. turns, "t:" .. stream, "w:" .. stream
      local deadline, step = ngx.now() + LANE_WAIT_S, 0.001
      -- Turns alternate: a worker that just had this stream's turn lets a
      -- waiting worker take it first (else it would win every time: the
      -- waiter is asleep between its tries, and its clients starve).
      local last = left[stream]
      if last then
        left[stream], nleft = nil, nleft - 1
        if ngx.now() - last < 1 and (dict:get(wkey) or 0) > 0 then ngx.sleep(DEFER_S) end
      end
      local waiting = false
      while true do
        local ok, err = dict:add(key, token, LANE_TURN_S)
        if ok then
          held[stream] = token
          if waiting then dict:incr(wkey, -1) end
          return true
        end
        if err ~= "exists" then
          if waiting then dict:incr(wkey, -1) end
          return nil, "the tide_streams shared dict: " .. tostring(err)
        end
        if forward then
          if not dead_holder(key) then
            if waiting then dict:incr(wkey, -1) end
            return "held"
          end
        elseif step >= WAIT_STEP_S and dead_holder(key) then
          step = 0.001
        end
        if ngx.now() > deadline then
          if waiting then dict:incr(wkey, -1) end
          return nil, "another worker held the stream's turn for " .. LANE_WAIT_S .. " s"
        end
        if not waiting then
          waiting = true
          dict:incr(wkey, 1, 0, LANE_TURN_S)
        end
        ngx.sleep(step)
        step = math.min(step * 2, WAIT_STEP_S)
      end
    end,
    leave = function(stream, version, written)
      if version then
        local known = dict:get("v:" .. stream)
        if not known or known < version then
          dict:set("v:" .. stream, version, SHARED_TTL_S)
          -- the events of this write, for the next worker's catch-up (never
          -- evicting another key for them: safe_set)
          local text = written and cjson.encode(written.events)
          if text and #text <= SHARED_EVENTS_BYTES then
            dict:safe_set("e:" .. stream .. ":" .. written.first, text, SHARED_EVENTS_TTL_S)
          end
        end
      end
      local key = "t:" .. stream
      if held[stream] and dict:get(key) == held[stream] then dict:delete(key) end
      held[stream] = nil
      if not left[stream] then
        if nleft >= 10000 then left, nleft = {}, 0 end
        nleft = nleft + 1
      end
      left[stream] = ngx.now()
    end,
    version = function(stream) return dict:get("v:" .. stream) end,
    -- Forwarding (see above): the sender's side.
    forward = function(stream, text)
      tickets = tickets + 1
      local ticket = inbox_id .. ":" .. tickets
      local len, err = dict:rpush("q:" .. stream, ticket .. " " .. text)
      if not len then return nil, "error", err end
      dict:expire("q:" .. stream, FORWARD_TTL_S)
      local w = { sema = semaphore.new(0), stream = stream, deadline = ngx.now() + LANE_WAIT_S, next_check = 0 }
      waiting[ticket] = w
      nwaiting = nwaiting + 1
      if not polling then
        polling = true
        local ok, terr = ngx.timer.at(0, poll)
        if not ok then
          polling = false
          log("error", "tide_streams: the forwarding poller did not start: " .. tostring(terr))
        end
      end
      while not w.outcome do
        -- the poller posts when the reply came or the ticket needs us
        if not w.sema:wait(LANE_WAIT_S + 1) and not w.outcome then w.outcome = "timeout" end
      end
      if waiting[ticket] then
        waiting[ticket] = nil
        nwaiting = nwaiting - 1
      end
      if w.outcome == "reply" then return w.reply end
      return nil, w.outcome
    end,
    -- The holder's side: the next message of stream's queue.
    take = function(stream)
      local item = dict:lpop("q:" .. stream)
      if not item then return nil end
      local sp = item:find(" ", 1, true)
      return item:sub(1, sp - 1), item:sub(sp + 1)
    end,
    pending = function(stream) return (dict:llen("q:" .. stream) or 0) > 0 end,
    claim = function(ticket) return (dict:add("k:" .. ticket, pid, FORWARD_TTL_S)) == true end,
    refuse = function(ticket) dict:add("k:" .. ticket, -1, FORWARD_TTL_S) end,
    reply = function(ticket, text)
      local ok, err = dict:set("r:" .. ticket, text, FORWARD_TTL_S)
      if not ok then
        log("error", "tide_streams: a forwarded command's outcome was not stored: " .. tostring(err))
        return
      end
      -- tell the sender's poller (its inbox: the ticket up to the last ':')
      local inbox = "i:" .. ticket:match("^(.*):%d+$")
      dict:rpush(inbox, ticket)
      dict:expire(inbox, FORWARD_TTL_S)
    end,
    -- -> the stored events after..upto when the writes the workers left
    -- hold all of them
    events = function(stream, after, upto)
      local out, v = {}, after
      while v < upto do
        local text = dict:get("e:" .. stream .. ":" .. (v + 1))
        local w = text and cjson.decode(text)
        if type(w) ~= "table" or #w == 0 then return nil end
        for _, e in ipairs(w) do
          v = v + 1
          out[#out + 1] = { version = v, type = e.type, data = e.data, meta = e.meta, format = e.format }
        end
      end
      if v ~= upto then return nil end
      return out
    end,
  }
end

local function projection_setup(cfg)
  local ok, projection = pcall(require, "tide.projection")
  local okb, backend_mod = pcall(require, "tide.projection." .. cfg.store)
  if not (ok and okb) then
    return nil, "read models are not available: no projection backend for the " .. cfg.store
      .. " store: " .. tostring(ok and backend_mod or projection):match("^[^\n]*")
  end
  local registry = projection.registry(cfg.projections, require("tide").folder_options(cfg, "projections"))
  local names = {}
  for name in pairs(registry.errors) do names[#names + 1] = name end
  table.sort(names)
  if #names > 0 then
    error("tide: projection '" .. names[1] .. "' failed to load: " .. tostring(registry.errors[names[1]]), 0)
  end
  local models = {}
  for _, name in ipairs(registry:names()) do
    local p = registry:get(name)
    for tname in pairs(p and p.tables or {}) do models[tname] = name end
  end
  return { backend_mod = backend_mod, registry = registry, models = models }
end

-- init{config = path | nil (TIDE_CONFIG, ./tide.yaml), routes = {[endpoint] = location}}
function M.init(opts)
  opts = opts or {}
  local config = require "tide.config"
  local cfg, err = config.load{ file = opts.config }
  if not cfg then error("tide: " .. tostring(err), 0) end
  local aggregate = require "tide.aggregate"
  require("tide").user_code(cfg, log)
  local registry = aggregate.registry(cfg.aggregates, require("tide").folder_options(cfg, "aggregates"))
  if registry.dir_error then
    error("tide: aggregates folder " .. tostring(cfg.aggregates) .. ": " .. tostring(registry.dir_error), 0)
  end
  local names = {}
  for name in pairs(registry.errors) do names[#names + 1] = name end
  table.sort(names)
  if #names > 0 then
    error("tide: aggregate '" .. names[1] .. "' failed to load: " .. tostring(registry.errors[names[1]]), 0)
  end
  -- loaded in the master, shared by the workers after fork
  require "tide"
  require "tide.repository"
  if cfg.store == "dynamodb" then
    require "tide.dynamodb"
    require "tide.store.dynamodb"
    require "tide.transport.ngx"
  else
    require "tide.store.sqlite"
  end
  local proj, perr = projection_setup(cfg)
  conf = { cfg = cfg, registry = registry, routes = opts.routes or {}, proj = proj, proj_error = perr }
end

function M.init_worker()
  if not conf then
    app = { unavailable = "tide.http.site.init was not called (init_by_lua_block)" }
    return
  end
  local cfg = conf.cfg
  log = tlog.from_config(cfg, { sink = tlog.ngx })
  -- every worker counts into the one dict (nginx.conf: lua_shared_dict)
  if ngx.shared.tide_metrics then require("tide.metrics").use_shared_dict(ngx.shared.tide_metrics) end
  -- workers fork from one master: give each its own jitter
  math.randomseed(tonumber(core.random_hex(4), 16))
  local aggregates = {}
  for name, agg in pairs(conf.registry.aggregates) do aggregates[name] = agg.version end
  local models = {}
  for m in pairs(conf.proj and conf.proj.models or {}) do models[#models + 1] = m end
  table.sort(models)
  app = {
    store_kind = cfg.store,
    worker = ngx.worker.pid(),
    versions = { tide = require("tide").version, nginx = ngx.config.nginx_version,
                 ngx_lua = ngx.config.ngx_lua_version, luajit = jit and jit.version },
    aggregates = aggregates,
    models = core.list(models),
    read_error = conf.proj_error,
  }
  local transport
  if cfg.store == "dynamodb" then
    transport = require("tide.transport.ngx").new{ routes = conf.routes }
  end
  local opened, err = require("tide").open{
    cfg = cfg, registry = conf.registry, projections = conf.proj and conf.proj.registry,
    transport = transport, log = log,
    sleep = ngx.sleep, parking = ngx_parking(), host_lanes = ngx_host_lanes(),
    credentials_shared = ngx.shared.tide_credentials,
  }
  if not opened then
    app.unavailable = "the " .. cfg.store .. " store cannot be opened: " .. tostring(err)
    log("error", app.unavailable)
    return
  end
  if cfg.store == "sqlite" then
    -- creates the schema if missing (idempotent; tools/nginx.sh runs `tide init` first)
    local ok, ierr = opened.store:init()
    if not ok then
      app.unavailable = "the sqlite store " .. tostring(cfg.sqlite.path) .. " cannot be used: " .. tostring(ierr)
      log("error", app.unavailable)
      return
    end
  else
    -- resolve the credentials now when files or the environment hold them;
    -- the network providers answer within the first request (no
    -- subrequest here), one worker for all (tide.credentials)
    local creds, cerr = opened.store.client.credential_source:get_local()
    if creds == nil then log("error", "no AWS credentials: " .. tostring(cerr)) end
  end
  app.repository = opened.repository
  app.store = opened.store
  if conf.proj then
    local okb, backend = pcall(M.read_backend, cfg, opened.store, conf.proj)
    if okb and backend then
      local models = conf.proj.models
      app.read = function(model, key)
        if not models[model] then
          local names = {}
          for m in pairs(models) do names[#names + 1] = m end
          table.sort(names)
          return nil, terror.new{ kind = "invalid", message = ("unknown read model '%s'; the projections write: %s")
            :format(model, #names > 0 and table.concat(names, ", ") or "no read models") }
        end
        local item, rerr = backend:read_item(model, key)
        if item == nil then
          return nil, terror.new{ kind = "store", message = "reading " .. model .. " failed: " .. tostring(rerr),
                                  cause = rerr }
        end
        if type(item) == "table" then
          -- the projector's guards are not part of the read model
          item._tide, item._rev = nil, nil
        end
        return item, rerr
      end
    else
      app.read_error = "read models are not available: the projection backend failed to open: " .. tostring(backend)
      log("error", app.read_error)
    end
  end
end

-- The projection backend of the store, knowing every read-model table.
function M.read_backend(cfg, store, proj)
  local backend
  if cfg.store == "dynamodb" then
    backend = proj.backend_mod.new{ client = store.client, table_prefix = cfg.dynamodb.table_prefix }
  else
    backend = proj.backend_mod.new{ store = store }
  end
  if backend.register then
    for _, name in ipairs(proj.registry:names()) do backend:register(proj.registry:get(name)) end
  end
  return backend
end

function M.handle()
  local req = { method = ngx.req.get_method(), path = ngx.var.request_uri, headers = ngx.req.get_headers() }
  if req.method == "POST" then
    ngx.req.read_body()
    req.body = ngx.req.get_body_data()
    if not req.body and ngx.req.get_body_file() then
      -- client_body_buffer_size below client_max_body_size: refuse rather than read a file in the worker
      return M.respond(413, api.error_body("too_large", "the request body did not fit in client_body_buffer_size"))
    end
  end
  local status, body, headers = api.handle(app or { unavailable = "tide.http.site.init_worker did not run" }, req)
  return M.respond(status, body, headers)
end

function M.respond(status, body, headers)
  ngx.status = status
  for k, v in pairs(headers or { ["content-type"] = "application/json" }) do ngx.header[k] = v end
  if ngx.req.get_method() ~= "HEAD" then ngx.print(body, "\n") end
  return ngx.exit(ngx.HTTP_OK)
end

-- GET /metrics: the Prometheus page of all workers (tide.metrics).
function M.metrics()
  local metrics = require "tide.metrics"
  if not ngx.shared.tide_metrics then
    return M.respond(404, api.error_body("not_found", "metrics are off: nginx.conf declares no lua_shared_dict tide_metrics"))
  end
  ngx.status = 200
  ngx.header["content-type"] = metrics.CONTENT_TYPE
  if ngx.req.get_method() ~= "HEAD" then ngx.print(metrics.render()) end
  return ngx.exit(ngx.HTTP_OK)
end

-- The worker's app, for tests and hooks.
function M.app() return app end

return M
