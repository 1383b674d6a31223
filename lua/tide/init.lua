-- tide: `require "tide"` in either host.
--
--   local tide = require "tide"
--   local app = assert(tide.open{ config = "tide.yaml" })   -- or tide.open(cfg_table)
--   local result, err = app.repository:execute("account", "acc-1", { type = "Deposit", amount = 5 })
--
-- tide.open builds, from a configuration (see docs/configuration.md), the
-- store (embedded SQLite or DynamoDB), the aggregate registry and the
-- repository. The transport is the host's: the tide process's engine by
-- default; nginx passes its own (opts.transport).
local M = {}

M.version = require("tide.core").version

-- tide.open(opts) -> app | nil, err (a tide.error)
--   opts.config: a path to a YAML file (or nil for the lookup order), or
--   opts.cfg: an already loaded configuration table;
--   opts.transport: the DynamoDB transport (default: the tide process's engine);
--   opts.registry: an aggregate registry already loaded (nginx loads and
--   checks it once in init_by_lua; default: loaded from cfg.aggregates);
--   opts.sleep: the host's sleep (nginx: ngx.sleep); opts.parking: the
--   host's way to park a coroutine until another wakes it (see
--   tide.repository; default: tide.sched's); opts.host_lanes: turns on a
--   stream shared by the processes of a host (tide.repository; nginx:
--   a lua_shared_dict); opts.clock_ms: a wall
--   clock in ms (default tide.clock.wall_ms, the host's own);
--   opts.log: a logger, function(level, message, fields) (default: a
--   tide.log on stderr for cfg.log.level and cfg.log.format, with
--   opts.log_format as the format when the configuration sets none).
-- app.log is the logger, for the host's own lines.
-- In the tide process (no opts.transport), it also sets the Lua
-- collector's pause to cfg.lua.gc_pause and the JIT's thresholds to
-- cfg.lua.jit_hotloop and jit_hotexit; nginx's VM is left as it is.
-- The user-code budget and the sandbox's print for cfg (tide.budget and
-- tide.sandbox are per Lua VM: the last configuration opened wins).
function M.user_code(cfg, log)
  local l = cfg.lua or {}
  require("tide.budget").configure{ ms = l.handler_budget_ms }
  if log then require("tide.sandbox").log = log end
end

-- The registry options of a folder ("aggregates" or "projections"): its sandbox switch.
function M.folder_options(cfg, folder)
  local l = cfg.lua or {}
  return { sandbox = l["sandbox_" .. folder] ~= false }
end

function M.open(opts)
  opts = opts or {}
  local config = require "tide.config"
  local cfg, err = opts.cfg, nil
  if not cfg then
    cfg, err = config.load{ file = opts.config }
    if not cfg then return nil, err end
  end
  local l = cfg.lua
  if not opts.transport and l then
    if l.gc_pause then collectgarbage("setpause", l.gc_pause) end
    if jit and l.jit_hotloop and l.jit_hotexit then
      jit.opt.start("hotloop=" .. l.jit_hotloop, "hotexit=" .. l.jit_hotexit)
    end
  end
  local store
  if cfg.store == "dynamodb" then
    local d = cfg.dynamodb
    local client, cerr = require("tide.dynamodb").new{
      region = d.region, endpoint = d.endpoint, profile = d.profile,
      max_attempts = d.max_attempts, timeout_ms = d.timeout_ms,
      max_connections = d.max_connections, ca_bundle = d.ca_bundle, verify_tls = d.verify_tls,
      gather_us = d.gather_us, transport = opts.transport, credentials_shared = opts.credentials_shared,
    }
    if not client then return nil, require("tide.error").wrap(cerr, "dynamodb") end
    store = require("tide.store.dynamodb").new{ client = client, table_prefix = d.table_prefix }
  else
    local s = cfg.sqlite
    local serr
    store, serr = require("tide.store.sqlite").new{ path = s.path, busy_timeout_ms = s.busy_timeout_ms,
                                                    synchronous = s.synchronous, writer_thread = s.writer_thread }
    if not store then return nil, serr end
  end
  local log = opts.log or require("tide.log").from_config(cfg, { format = opts.log_format })
  -- credentials refreshes are logged by the app's logger
  if store.client and store.client.credential_source then store.client.credential_source.log = log end
  M.user_code(cfg, log)
  local registry = opts.registry or require("tide.aggregate").registry(cfg.aggregates, M.folder_options(cfg, "aggregates"))
  local projections = opts.projections
    or require("tide.projection").registry(cfg.projections, M.folder_options(cfg, "projections"))
  local repository = require("tide.repository").new{
    store = store, registry = registry,
    cache_bytes = cfg.cache and cfg.cache.max_bytes,
    max_attempts = cfg.commands and cfg.commands.max_attempts,
    batching = cfg.commands and cfg.commands.batching,
    snapshot_every = cfg.snapshots and cfg.snapshots.every,
    sleep = opts.sleep, parking = opts.parking, host_lanes = opts.host_lanes, clock_ms = opts.clock_ms, log = log,
  }
  -- commands are counted around the repository (tide.metrics), whose
  -- labels are bounded by the modules these registries hold
  local metrics = require "tide.metrics"
  metrics.instrument_repository(repository, cfg.log and cfg.log.level == "debug" and log or nil)
  metrics.know("aggregate", registry)
  metrics.know("projection", projections)
  -- sinks make their publishers from this configuration when first used
  require("tide.sink").configure(cfg, log)
  if store.client then metrics.usage(store.client) end
  return { cfg = cfg, store = store, registry = registry, projections = projections, repository = repository,
           log = log }
end

return M
