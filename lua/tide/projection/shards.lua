-- tide.projection.shards: the shard lineage of a DynamoDB stream, pure.
--
-- No I/O, no clock: functions of a DescribeStream shard list and of the
-- lease items, so the rules are tested with synthetic input
-- (spec/unit/shards_spec.lua).
--
--   local shards = require "tide.projection.shards"
--   local tree = shards.tree(desc.Shards)
--     tree.order      shard ids, every parent (when listed) before its children
--     tree.by_id      id -> {id=, parent=, closed=, start_seq=, end_seq=, children={ids}}
--   shards.startable(tree, id, done) -> bool
--     done(id) -> true when that shard's lease says SHARD_END. A shard may
--     start when it has no parent, when its parent is no longer listed
--     (trimmed away after 24 hours: nothing left to read there), or when
--     the parent is done.
--   shards.compare_seq(a, b) -> -1 | 0 | 1   (sequence numbers: decimal text)
--   shards.fair_share(n_shards, n_owners) -> the most shards one owner should hold
--   shards.plan_takes{...}: which leases an owner should take (see below)

local M = {}

M.SHARD_END = "SHARD_END"

local type, ipairs, tostring = type, ipairs, tostring
local ceil = math.ceil

-- Sequence numbers are decimal strings of up to 40 digits: compare them
-- as numbers without converting (a double loses digits past 2^53).
function M.compare_seq(a, b)
  a, b = tostring(a):gsub("^0+", ""), tostring(b):gsub("^0+", "")
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

-- shards.tree(list) -> tree. `list` as DescribeStream gives it:
-- {ShardId=, ParentShardId=, SequenceNumberRange={StartingSequenceNumber=,
-- EndingSequenceNumber=}}. Raises on a malformed list (a programmer error:
-- the client already checked the response's shape).
function M.tree(list)
  if type(list) ~= "table" then error("shards.tree: expected the Shards list of DescribeStream", 2) end
  local by_id, ids = {}, {}
  for i, s in ipairs(list) do
    if type(s) ~= "table" or type(s.ShardId) ~= "string" then
      error("shards.tree: Shards[" .. i .. "] has no ShardId", 2)
    end
    local range = s.SequenceNumberRange or {}
    if not by_id[s.ShardId] then ids[#ids + 1] = s.ShardId end
    by_id[s.ShardId] = {
      id = s.ShardId,
      parent = s.ParentShardId,
      start_seq = range.StartingSequenceNumber,
      end_seq = range.EndingSequenceNumber,
      closed = range.EndingSequenceNumber ~= nil,
      children = {},
    }
  end
  for _, id in ipairs(ids) do
    local p = by_id[id].parent
    if p and by_id[p] then table.insert(by_id[p].children, id) end
  end
  -- Depth-first from the roots (no parent, or a parent no longer listed),
  -- children in ShardId order (ids embed their creation time), so parents
  -- come first and siblings are stable.
  table.sort(ids)
  local order, seen = {}, {}
  local function visit(id)
    if seen[id] then return end
    seen[id] = true
    order[#order + 1] = id
    local kids = by_id[id].children
    table.sort(kids)
    for _, k in ipairs(kids) do visit(k) end
  end
  for _, id in ipairs(ids) do
    local p = by_id[id].parent
    if not (p and by_id[p]) then visit(id) end
  end
  -- A cycle cannot come from DynamoDB, but never drop a shard silently.
  for _, id in ipairs(ids) do visit(id) end
  return { order = order, by_id = by_id }
end

-- May shard `id` be read now? done(id) says whether a shard's lease is at
-- SHARD_END.
function M.startable(tree, id, done)
  local s = tree.by_id[id]
  if not s then return false end
  if not s.parent or not tree.by_id[s.parent] then return true end
  return done(s.parent) and true or false
end

function M.fair_share(n_shards, n_owners)
  if n_owners < 1 then n_owners = 1 end
  return ceil(n_shards / n_owners)
end

-- shards.plan_takes{owner=, now=, leases=, eligible=, running=} -> takes, share
--   leases:   list of lease items {shard=, owner=, expires=, counter=, checkpoint=, error=}
--   eligible: set shard -> true of shards that may be read now (startable,
--             not SHARD_END, no error)
--   running:  set shard -> true of the shards this owner runs now; a lease
--             held under this owner's id that it does not run (left by an
--             earlier life of the same id) counts as free
-- Returns the leases this owner should try to take (free or expired ones
-- first, then at most one stolen from the most loaded live owner when no
-- free lease is left and this owner is below its share), and its share.
-- Live owners are the owners of unexpired leases, this one included.
function M.plan_takes(o)
  local me, now = o.owner, o.now
  local running = o.running
  local function is_alive(l)
    if not l.owner or (l.expires or 0) <= now then return false end
    if l.owner == me and running and not running[l.shard] then return false end
    return true
  end
  local live, load, mine = { [me] = true }, {}, 0
  local n_eligible = 0
  for _, l in ipairs(o.leases) do
    if o.eligible[l.shard] then
      n_eligible = n_eligible + 1
      if is_alive(l) then
        live[l.owner] = true
        load[l.owner] = (load[l.owner] or 0) + 1
        if l.owner == me then mine = mine + 1 end
      end
    end
  end
  local n_live = 0
  for _ in pairs(live) do n_live = n_live + 1 end
  local share = M.fair_share(n_eligible, n_live)
  local takes = {}
  for _, l in ipairs(o.leases) do
    if mine + #takes >= share then break end
    if o.eligible[l.shard] and not is_alive(l) then takes[#takes + 1] = l end
  end
  if #takes == 0 and mine < share then
    -- Steal one from the most loaded owner holding more than the share
    -- (one per round: shards move gradually, as in the KCL).
    local victim, most = nil, share
    for owner, n in pairs(load) do
      if owner ~= me and (n > most or (n == most and victim and owner < victim)) then
        victim, most = owner, n
      end
    end
    if victim then
      for _, l in ipairs(o.leases) do
        if o.eligible[l.shard] and l.owner == victim and is_alive(l) then
          l.steal = true
          takes[1] = l
          break
        end
      end
    end
  end
  return takes, share
end

return M
