-- tide.projection.replay: `tide replay NAME` — rebuild one projection from
-- the events table into emptied read models, then let it continue from its
-- source with no gap and nothing applied twice (docs/projections.md,
-- "Rebuild").
--
--   replay.run(app, projection, {progress = function(done, total) end, batch = 1000})
--     -> {events=, streams=} | nil, err
--
-- Embedded store: the feed is the events table itself: clear, then run the
-- projection from position 0 until caught up.
-- DynamoDB: clear; Scan the events table in parallel segments (events of
-- any age, also those the 24-hour stream has trimmed); group by stream and
-- sort each by version; apply in batches; reset the shard leases to the
-- start of their shards. Records the scan already covered are then skipped
-- by the positions it wrote, and records written during the scan are in
-- the stream.
local host = require "tide.projection.host"
local projector_mod = require "tide.projector"

local M = {}

local function replay_sqlite(app, proj, opts)
  local backend = host.backend(app)
  local ok, err = backend:clear(proj)
  if not ok then return nil, err end
  local runner = host.runner(app, proj, { log = opts.log, batch_size = opts.batch })
  local total_known = app.store.last_position and app.store:last_position() or nil
  local done = 0
  while true do
    local n, serr = runner:step()
    if n == nil then
      runner:release()
      return nil, serr
    end
    if n == 0 then break end
    done = done + n
    if opts.progress then opts.progress(done, total_known) end
  end
  runner:release()
  return { events = done }
end

local function replay_dynamodb(app, proj, opts)
  local client, store = app.store.client, app.store
  local backend = host.backend(app)
  local ok, err = backend:init(proj)
  if not ok then return nil, err end
  -- Leases first: a worker still running this projection loses its
  -- fencing token now and cannot checkpoint over the rebuild.
  -- Both lease groups: `tide project NAME`'s and `tide run`'s ("*").
  for _, group in ipairs({ proj.name, "*" }) do
    local leases = require("tide.projection.leases").new{
      client = client, group = group, projection = proj.name, owner = "replay",
      table_prefix = app.cfg.dynamodb.table_prefix,
    }
    ok, err = leases:init()
    if not ok then return nil, err end
    ok, err = leases:reset(proj.name)
    if not ok then return nil, err end
  end
  ok, err = backend:clear(proj)
  if not ok then return nil, err end

  local scan, serr = client:scan({ TableName = store.events_table }, { segments = opts.segments or 4 })
  if not scan then return nil, serr end
  local by_stream, streams = {}, {}
  for _, item in ipairs(scan.Items) do
    local agg = item.stream:match("^([^#]+)#")
    if agg and proj:tracks(agg) then
      local list = by_stream[item.stream]
      if not list then
        list = {}
        by_stream[item.stream] = list
        streams[#streams + 1] = item.stream
      end
      list[#list + 1] = item
    end
  end
  table.sort(streams)
  local total = 0
  for _, s in ipairs(streams) do
    table.sort(by_stream[s], function(a, b) return a.version < b.version end)
    total = total + #by_stream[s]
  end
  -- events still parked stay passed over (tide unpark brings one back)
  local projector = projector_mod.new{ projection = proj, backend = backend, aggregates = app.registry,
                                       reader = projector_mod.store_reader(store),
                                       parking = require("tide.projection.parking").for_app(app) }
  local batch, done = {}, 0
  local function flush()
    if #batch == 0 then return true end
    local plan, aerr = projector:apply(batch)
    if not plan then return nil, aerr end
    local wok, werr = backend:write(proj.name, plan)
    if not wok then
      projector:reset()
      return nil, werr
    end
    projector:committed(plan)
    done = done + #batch
    batch = {}
    if opts.progress then opts.progress(done, total) end
    return true
  end
  for _, s in ipairs(streams) do
    for _, item in ipairs(by_stream[s]) do
      batch[#batch + 1] = { stream = item.stream, version = item.version, type = item.type,
                            data = item.data, meta = item.meta }
      if #batch >= (opts.batch or 1000) then
        local fok, ferr = flush()
        if not fok then return nil, ferr end
      end
    end
  end
  local fok, ferr = flush()
  if not fok then return nil, ferr end
  return { events = done, streams = #streams }
end

function M.run(app, proj, opts)
  opts = opts or {}
  if app.cfg.store == "dynamodb" then return replay_dynamodb(app, proj, opts) end
  return replay_sqlite(app, proj, opts)
end

return M
