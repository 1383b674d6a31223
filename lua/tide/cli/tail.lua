-- tide.cli.tail: `tide tail [AGGREGATE]`: follows the events as they are
-- appended, one JSON line each, from the embedded store's feed (the events
-- table in position order) or the events table's DynamoDB stream.
local look = require "tide.cli.look"
local sched = require "tide.sched"
local stream_mod = require "tide.stream"

local M = {}

M.summary = "follow events as they are appended: tide tail [AGGREGATE]"

M.usage = [[
usage: tide tail [--config FILE] [AGGREGATE] [--from-start] [--after POSITION] [--limit N]

Output: events as they are appended, one JSON object per line, until
SIGINT/SIGTERM (exit 0) or N events (--limit):
  {"stream":"account#alice","version":2,"type":"Deposited","data":{...},"meta":{...},"position":17}
Data is shown upcast to the aggregate's current schema, as projections see it.
Options:
  AGGREGATE     only that aggregate's events
  --from-start  from the oldest event the feed holds (SQLite: all of them;
                DynamoDB Streams: the last 24 hours), not only new ones
  --after POSITION   SQLite: after that feed position ("position" above)
  --limit N     stop after N events
SQLite: the feed is polled every 100 ms (a cheap indexed read); events come
in position (commit) order. DynamoDB: the events table's stream (NEW_IMAGE),
every shard polled (GetRecords is free of read capacity but limited to 5
calls per second per shard, shared with the projections); events keep each
stream's order, not a global one; no "position". Where tide tail starts
goes to stderr:  tide tail: following from position N
Examples:
  tide tail
  tide tail account --from-start --limit 10
  tide tail --after 1200 | jq -c '{stream, type}'
Exit status: 0 stopped or N events printed, 2 bad usage or unknown
aggregate, 5 store failure.]]

M.options = { ["from-start"] = "flag", after = "value", limit = "value" }

local function print_event(ev)
  look.out('{"stream":' .. look.json(ev.stream) .. ',"version":' .. look.json(ev.version) .. ',"type":'
    .. look.json(ev.type) .. ',"data":' .. look.json(ev.data) .. ',"meta":' .. look.json(ev.meta)
    .. (ev.position and (',"position":' .. look.json(ev.position)) or "") .. "}")
  look.flush()
end

-- SQLite: the feed, polled.
local function follow_sqlite(app, opts, show, flag)
  local store = app.store
  local pos
  if opts.after then
    pos = tonumber(opts.after)
    if not pos or pos < 0 or pos ~= math.floor(pos) then
      return nil, { kind = "invalid", message = "--after must be a feed position (an integer >= 0)" }
    end
  elseif opts.from_start then
    pos = 0
  else
    local last, err = store:last_position()
    if not last then return nil, err end
    pos = last
  end
  io.stderr:write("tide tail: following from position ", tostring(pos), "\n")
  while not flag.stop do
    local rows, err = store:read_all(pos, 500)
    if not rows then return nil, err end
    for _, row in ipairs(rows) do
      pos = row.position
      if show(row) == false then return true end
    end
    if #rows == 0 then sched.sleep(0.1) end
  end
  return true
end

-- DynamoDB: every shard of the events table's stream, parents first.
local function follow_streams(app, opts, show, flag)
  if opts.after then
    return nil, { kind = "invalid", message = "--after is a position of the embedded store's feed; "
      .. "on DynamoDB use --from-start (the stream's last 24 hours) or no option (new events)" }
  end
  local shards = require "tide.projection.shards"
  local streams = require "tide.projection.runner.streams"
  local client = app.store.client
  local d, derr = app.store:describe()
  if not d then return nil, derr end
  local arn = d.events.stream_arn
  if not arn then
    return nil, { kind = "store", message = "the events table '" .. tostring(d.events.table) .. "' has no stream" }
  end
  local started, done, failure = {}, {}, nil
  local first = true
  local function run_shard(id, from_start)
    local res, err = client:get_shard_iterator{ StreamArn = arn, ShardId = id,
                                                ShardIteratorType = from_start and "TRIM_HORIZON" or "LATEST" }
    if not res then failure = err; flag.stop = true; return end
    local iter = res.ShardIterator
    while iter and not flag.stop do
      local page, gerr = streams.get_events(client, { ShardIterator = iter, Limit = 1000 })
      if not page then failure = gerr; flag.stop = true; return end
      for _, ev in ipairs(page.events or {}) do
        if show(ev) == false then flag.stop = true; return end
      end
      iter = page.NextShardIterator
      if (page.records or 0) == 0 then sched.sleep(0.25) end
    end
    done[id] = true
  end
  local threads = {}
  while not flag.stop do
    local res, err = client:describe_stream{ StreamArn = arn }
    if not res then return nil, err end
    local tree = shards.tree(res.StreamDescription.Shards or {})
    for _, id in ipairs(tree.order) do
      local sh = tree.by_id[id]
      if not started[id] then
        -- at the start: every shard with --from-start, else the open ones
        -- (closed ones hold nothing new); later: new shards from their start
        local want = not first or opts.from_start or not sh.closed
        if not want then
          started[id], done[id] = true, true
        elseif shards.startable(tree, id, function(p) return done[p] end) then
          started[id] = true
          threads[#threads + 1] = sched.spawn(run_shard, id, opts.from_start or not first)
        end
      end
    end
    if first then io.stderr:write("tide tail: following the stream ", arn, opts.from_start and " from its start" or "", "\n") end
    first = false
    for _ = 1, 20 do
      if flag.stop then break end
      sched.sleep(0.25)
    end
  end
  for _, th in ipairs(threads) do sched.wait(th) end
  if failure then return nil, failure end
  return true
end

function M.main(args)
  local opts, pos = look.parse(args, M.options)
  if not opts then return look.fail("tail", pos, look.EXIT.usage, M.usage) end
  if opts.help then look.out(M.usage); return look.EXIT.ok end
  if #pos > 1 then return look.fail("tail", "unexpected argument '" .. pos[2] .. "'", look.EXIT.usage, M.usage) end
  local limit
  if opts.limit then
    local lerr
    limit, lerr = look.count(opts.limit, "--limit")
    if not limit then return look.fail("tail", lerr, look.EXIT.usage) end
  end
  local app, err = look.open(opts)
  if not app then return look.fail("tail", err, look.exit_of(err)) end
  local agg = pos[1]
  if agg and not app.registry:get(agg) and not app.registry.errors[agg] then
    local _, gerr = app.registry:get(agg)
    app.store:close()
    return look.fail("tail", gerr, look.EXIT.usage)
  end
  local prefix = agg and (agg .. "#")
  local shown = 0
  local function show(row)
    if prefix and row.stream:sub(1, #prefix) ~= prefix then return true end
    local ev, derr = stream_mod.decode(row, app.registry)
    if not ev then
      ev = { stream = row.stream, version = row.version, type = row.type, data = { error = derr },
             meta = {}, position = row.position }
    end
    print_event(ev)
    shown = shown + 1
    if limit and shown >= limit then return false end
    return true
  end
  local flag = { stop = false }
  local sig = require("tide.signals").on_stop(function() flag.stop = true end)
  local ok, ferr
  if app.cfg.store == "dynamodb" then
    ok, ferr = follow_streams(app, opts, show, flag)
  else
    ok, ferr = follow_sqlite(app, opts, show, flag)
  end
  if sig then sig:stop() end
  app.store:close()
  if not ok then return look.fail("tail", ferr.message or ferr, look.exit_of(ferr)) end
  return look.EXIT.ok
end

return M
