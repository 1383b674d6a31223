-- tide.projection.host: the store-specific pieces of projections, chosen
-- from an app (tide.open): the read-model backend and the runner. Used by
-- the CLI (run, project, read, status, replay) and the nginx host (reads).
local terror = require "tide.error"

local M = {}

local function is_dynamodb(app)
  return app.cfg.store == "dynamodb"
end

-- The streams runner's options from the configuration's `streams` section.
local function streams_opts(app, o)
  local s = app.cfg.streams or {}
  o.lease_ms = o.lease_ms or s.lease_ms
  o.poll_ms, o.max_poll_ms, o.describe_ms, o.batch_limit = s.poll_ms, s.max_poll_ms, s.describe_ms, s.batch_limit
  o.steal_ms = s.steal_ms
  return o
end

-- The streams runner's projector maker: each projection's projector
-- passes over the events parked for it (tide.projection.parking).
local function streams_projector(parking)
  return function(r, p)
    return require("tide.projector").new{ projection = p or r.projection, backend = r.backend, reader = r.reader,
                                          aggregates = r.aggregates, parking = parking }
  end
end

-- host.backend(app) -> the read-model backend of the app's store (cached)
function M.backend(app)
  if app.projection_backend then return app.projection_backend end
  local b
  if is_dynamodb(app) then
    b = require("tide.projection.dynamodb").new{ client = app.store.client,
                                                  table_prefix = app.cfg.dynamodb.table_prefix }
  else
    b = require("tide.projection.sqlite").new{ store = app.store }
  end
  app.projection_backend = b
  return b
end

-- host.runner(app, projection, opts) -> runner
-- The runner of the app's store, with the interface of tide.projection.runner
-- (start, run, run_until_caught_up, status, stop).
--   opts: owner, log, batch_size / lease_ms (passed through); registry: take
--   the projection from it per batch (hot reload)
--   Both runners' projectors pass over the events parked for the projection
--   (tide.projection.parking).
function M.runner(app, proj, opts)
  opts = opts or {}
  -- TIDE_TEST_LEASE_MS: the specs' short leases, so that a SIGKILLed
  -- worker's are taken over in a second, not in 10 or 30
  opts.lease_ms = opts.lease_ms or tonumber(os.getenv("TIDE_TEST_LEASE_MS") or "")
  local parking = require("tide.projection.parking").for_app(app)
  -- every line of the runner names its projection as a field, as the
  -- metrics label it (docs/operations.md)
  local log = opts.log and require("tide.log").with(opts.log, { projection = proj.name })
  if is_dynamodb(app) then
    return require("tide.projection.runner.streams").new(streams_opts(app, {
      client = app.store.client, store = app.store, backend = M.backend(app), projection = proj,
      aggregates = app.registry, owner = opts.owner, lease_ms = opts.lease_ms, log = log,
      registry = opts.registry, group = opts.group, new_projector = streams_projector(parking),
    }))
  end
  return require("tide.projection.runner.sqlite").new{
    store = app.store, projection = proj, aggregates = app.registry, owner = opts.owner,
    batch_size = opts.batch_size, lease_ms = opts.lease_ms, log = log,
    registry = opts.registry, parking = parking,
  }
end

-- host.group_runner(app, projections, opts) -> runner | nil
-- On DynamoDB: ONE streams runner for all the projections (lease group
-- "*": one reader per shard per worker, each projection with its own
-- checkpoint); nil on the embedded store (a runner per projection there).
function M.group_runner(app, projs, opts)
  opts = opts or {}
  if not is_dynamodb(app) or #projs == 0 then return nil end
  return require("tide.projection.runner.streams").new(streams_opts(app, {
    client = app.store.client, store = app.store, backend = M.backend(app), projections = projs,
    group = "*", aggregates = app.registry, owner = opts.owner, log = opts.log,
    lease_ms = opts.lease_ms or tonumber(os.getenv("TIDE_TEST_LEASE_MS") or ""),
    new_projector = streams_projector(require("tide.projection.parking").for_app(app)),
  }))
end

-- host.find_model(app, model) -> projection | nil, message
-- The projection that writes the read-model table `model`.
function M.find_model(app, model)
  local names = {}
  for _, name in ipairs(app.projections:names()) do
    local p = app.projections:get(name)
    if p then
      for _, t in ipairs(p:table_names()) do
        if t == model then return p end
        names[#names + 1] = t
      end
    end
  end
  table.sort(names)
  local hint = require("tide.suggest").closest(model, names)
  return nil, ("unknown read model '%s'%s; the projections write: %s"):format(model,
    hint and (" (did you mean '" .. hint .. "'?)") or "", #names > 0 and table.concat(names, ", ") or "nothing")
end

-- host.read(app, model, key) -> item | false | nil, err
function M.read(app, model, key)
  local p, err = M.find_model(app, model)
  if not p then return nil, terror.new{ kind = "invalid", message = err } end
  local backend = M.backend(app)
  -- the DynamoDB backend learns a projection's tables (names, keys) here
  if backend.register then backend:register(p) end
  local item, rerr = backend:read_item(model, key)
  if item == nil then return nil, terror.new{ kind = "store", message = tostring(rerr), cause = rerr } end
  if item then
    item._tide, item._rev = nil, nil
  end
  return item
end

-- host.list(app, model, {limit=, after=, prefix=}) -> items, more | nil, err
-- The items of a read model without tide's bookkeeping (_tide, _rev); on
-- SQLite in key order, on DynamoDB in the table's order (a Scan).
function M.list(app, model, opts)
  local p, err = M.find_model(app, model)
  if not p then return nil, terror.new{ kind = "invalid", message = err } end
  local backend = M.backend(app)
  if backend.register then backend:register(p) end
  local items, more = backend:list_items(model, opts)
  if not items then
    local e = more
    return nil, terror.new{ kind = e and e.type == "Unsupported" and "invalid" or "store",
                            message = tostring(e and e.message or e), cause = e }
  end
  for _, item in ipairs(items) do item._tide, item._rev = nil, nil end
  return items, more
end

return M
