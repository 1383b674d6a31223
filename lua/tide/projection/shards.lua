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
--   shards.plan{...}: which leases an owner should take or steal (see below)

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

-- shards.plan{owner=, leases=, eligible=, running=, max_takes=, may_steal=}
--   -> {takes = {lease...}, steal = lease | nil, share = n, counts = {owner = n}}
-- The balancing rule (docs/projections.md, "Balancing"):
--   leases:   lease items with .owner and .expired (judged by the caller on
--             its own monotonic clock: heartbeat unchanged for lease_ms),
--             .reserved (released to another worker that asked for it)
--   eligible: set of shards that may be read now; running: set of the
--             shards this owner runs
-- Live owners are those holding unexpired eligible leases, this one
-- included; share = ceil(eligible / live owners). An owner below its
-- share takes free or expired leases (at most max_takes a round, so
-- workers that start together do not race for everything); with none
-- left, it steals ONE lease from the most loaded owner when that one holds
-- at least 2 more than it (may_steal: the caller's rate limit). Every
-- steal lowers the sum of squared counts, so from any start the counts
-- end within 1 of each other (spec/unit/shards_spec.lua checks it under
-- random joins and leaves).
function M.plan(o)
  local me = o.owner
  local running = o.running or {}
  local function alive(l) return l.owner ~= nil and not l.expired end
  local counts, n = { [me] = 0 }, 0
  for _, l in ipairs(o.leases) do
    if o.eligible[l.shard] then
      n = n + 1
      if alive(l) then counts[l.owner] = (counts[l.owner] or 0) + 1 end
    end
  end
  local w = 0
  for _ in pairs(counts) do w = w + 1 end
  local share = M.fair_share(n, w)
  local mine = counts[me]
  local takes, max_takes = {}, o.max_takes or math.huge
  for _, l in ipairs(o.leases) do
    if mine + #takes >= share or #takes >= max_takes then break end
    if o.eligible[l.shard] and not alive(l) and not running[l.shard] and not l.reserved then
      takes[#takes + 1] = l
    end
  end
  local steal
  if #takes == 0 and o.may_steal ~= false then
    local victim, most = nil, mine + 1
    for owner, c in pairs(counts) do
      if owner ~= me and (c > most or (c == most and victim and owner < victim)) then
        victim, most = owner, c
      end
    end
    if victim then
      -- one of its eligible leases at random, preferring those nobody
      -- asked for yet: thieves that plan at once pick different leases
      local free, asked = {}, {}
      for _, l in ipairs(o.leases) do
        if o.eligible[l.shard] and l.owner == victim and alive(l) then
          local list = (l.handoff == nil or l.handoff == me) and free or asked
          list[#list + 1] = l
        end
      end
      local pool = #free > 0 and free or asked
      steal = pool[(o.random or math.random)(#pool)]
    end
  end
  return { takes = takes, steal = steal, share = share, counts = counts }
end

return M
