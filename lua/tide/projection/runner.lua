-- tide.projection.runner: the one interface of projection runners, and
-- what the runners share. A runner feeds one projection from one source
-- and checkpoints what it applied; there is one per feed:
--
--   tide.projection.runner.sqlite    the embedded store's events table, in position order
--   tide.projection.runner.streams   the DynamoDB stream of the events table, shard by shard
--
-- tide.projection.host.runner(app, projection, opts) makes the one that fits
-- the app's store. Whatever drives runners (the CLI, a metrics exporter, a
-- sink) uses only these methods:
--
--   r:start()                     -> true | nil, err
--       gets the runner ready: creates what it writes to (read-model tables,
--       the lease table) when missing. Idempotent; run and
--       run_until_caught_up start the runner themselves, so calling it first
--       only surfaces a store failure before any work.
--   r:run(stop [, opts])          -> true | nil, err
--       the daemon loop, in the calling thread, until `stop` says so (nil:
--       never; a function returning true; or a table whose field `stop`
--       becomes true) or r:stop() is called. Failures are logged and retried
--       with backoff, never returned; on return, the batch in flight is
--       written and checkpointed and the leases are released. nil, err only
--       when the loop itself broke.
--   r:run_until_caught_up(opts)   -> result | nil, err
--       applies everything written before the call, then returns.
--       result.handled: the feed entries this call checkpointed (events;
--       on DynamoDB, stream records: one per event appended), plus the
--       feed's own figures.
--   r:status()                    -> status | nil, err
--       status.projection, .feed ("sqlite" | "streams"), .version (the
--       module's), .owner (this runner's lease owner id), .handled (feed
--       entries this runner has checkpointed since it was made), .error (the
--       error recorded for the projection, nil when healthy), plus the
--       feed's own fields (sqlite: checkpoint, last_position, lag, holder,
--       lease_until, held, last_error; streams: shards, a list of
--       {shard, parent, owner, checkpoint, error, state, lag_ms, mine, records}).
--   r:stop()                      -> true
--       ends a run going on in another thread (it finishes its batch,
--       checkpoints and releases its leases) and waits for it; without
--       one, releases the leases this runner holds.
--
-- Options every feed takes in new{} (host.runner passes them): projection,
-- owner, lease_ms, log = function(level, message, fields), aggregates
-- (upcasting), registry (the sqlite feed takes the projection from it at
-- each batch: hot reload; the streams feed keeps the one it was made with).
-- The rest is the feed's own.
local math_min, math_random = math.min, math.random

local M = {}

-- runner.should_stop(stop) -> bool, for the `stop` argument of run.
function M.should_stop(stop)
  if stop == nil then return false end
  if type(stop) == "function" then return stop() and true or false end
  return stop.stop and true or false
end

-- runner.backoff_delay(failures, base, cap) -> seconds
-- The pause after `failures` failed attempts in a row: base doubling per
-- failure up to cap, with jitter (half to all of it), so that workers that
-- failed together do not retry together.
function M.backoff_delay(failures, base, cap)
  local d = math_min(cap, base * 2 ^ math_min(failures - 1, 30))
  return d * (0.5 + math_random() * 0.5)
end

return M
