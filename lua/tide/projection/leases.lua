-- tide.projection.leases: shard leases and per-projection checkpoints on
-- DynamoDB, the table <prefix>leases (docs/projections.md, "Leases").
--
--   pk `projection` (S): the lease group, "*" for the projections of `tide
--   run` (one reader per shard for all of them), or one projection's name
--   (`tide project NAME`, run_until_caught_up); sk `shard` (S). Attributes:
--     owner       the worker holding the lease (absent: free)
--     counter     N, the fencing token: +1 on every take; every write by the
--                 holder is conditioned on it and on the owner
--     beat        N, +1 on every renewal and checkpoint: the heartbeat other
--                 workers watch. A lease whose (owner, counter, beat) has not
--                 changed for lease_ms on the watcher's own monotonic clock
--                 has expired (as in the KCL: no wall clocks compared)
--     cp:<name>   S, projection <name>'s checkpoint: the sequence number
--                 zero-padded to 40 digits (so text order is number order and
--                 a checkpoint can be conditioned to move only forward),
--                 "SHARD_END", or 40 zeros ("from TRIM_HORIZON; the records
--                 the stream trimmed are covered", written by `tide replay`)
--     err:<name>  S, projection <name>'s last error on this shard ("rebuild
--                 needed" stops it there until `tide replay`)
--     checkpoint  S, "SHARD_END" once every projection read the shard to its end
--     ended       N, wall-clock ms when it got there
--     parent      S, the parent shard (from DescribeStream)
--     parent_done BOOL, set on the children before a finished parent's lease
--                 is deleted
--     decision    S, an operator's decision recorded in the lease
--                 ("skip-parent": start this child although its parent never
--                 reached SHARD_END)
--     handoff     S, the worker the holder is asked to hand the shard to
--     updated     N, wall-clock ms of the last checkpoint or error (display)
--
--   One more item per group, shard = "~describer" (M.DESCRIBER; "~" sorts
--   after every shard id): the lease of the worker that calls
--   DescribeStream for the whole fleet (same owner/counter/beat rules),
--   and what it found:
--     listed      S, the shard ids DescribeStream listed, space-separated
--                 ("~": none; their parents are in their leases). At ~40
--                 bytes an id, the item holds about 9,000 shards
--     created     N, the stream's CreationRequestDateTime, wall-clock ms
--     described   N, the describer's wall-clock ms of that DescribeStream
--                 (display only)
--
--   local leases = require("tide.projection.leases").new{client=, table_prefix=,
--                  group=<"*" or a name> (or projection=<name>), owner=, lease_ms=}
--   leases:init() / :ensure(shard, parent) / :get(shard)
--   leases:list()                      -> {lease...}, describer | nil, err
--   leases:record_listing(describer, ids, created_ms) -> lease | nil, err
--   leases:take(observed [, force])    -> lease | nil, err (LeaseLost when it moved)
--   leases:renew(lease)                -> lease | nil, err
--   leases:checkpoint(lease, cps [, handled [, finish]]) -> lease | nil, err   cps: {name = seq} or one seq;
--                                        handled: {name = events applied since the last one};
--                                        finish: the lease-level SHARD_END in the same write
--   leases:finish(lease)               -> lease | nil, err   (lease-level SHARD_END)
--   leases:release(lease [, handoff])  -> true | nil, err
--   leases:request_handoff(observed)   -> lease | nil, err
--   leases:record_error(lease, msg [, name]) -> true | nil, err
--   leases:mark_parent_done(shard) / :delete(lease) / :decide(shard, decision)
--   leases:reset(name)                 -> true | nil, err  (`tide replay`)
-- A lease is a table {group=, shard=, owner=, counter=, beat=, cps={name=seq},
-- errors={name=msg}, handled={name=count}, checkpoint=, parent=, parent_done=, decision=, handoff=,
-- ended=, updated=}; cps hold sequence numbers as DynamoDB gives them.

local terror = require "tide.error"
local clock = require "tide.clock"

local M = {}

M.SHARD_END = "SHARD_END"
M.REBUILD_NEEDED = "rebuild needed"
M.ALL = "*"
M.FROM_START = string.rep("0", 40)
M.DESCRIBER = "~describer"

------------------------------------------------------------------------
-- Errors (shared by the projection's DynamoDB modules): tide.error with
-- the projection, the shard and the lease table as context.

M.Error = terror.Error

local KIND_OF_TYPE = { LeaseLost = "conflict", Conflict = "conflict", LuaError = "internal" }

-- M.error(type, message, fields) -> err (fields: projection, shard, table, cause, ...)
function M.error(etype, message, fields)
  local e = {}
  for k, v in pairs(fields or {}) do e[k] = v end
  e.type, e.message = etype, message
  if type(e.cause) == "table" and e.retryable == nil then e.retryable = e.cause.retryable end
  if e.kind == nil then
    e.kind = KIND_OF_TYPE[etype] or (type(e.cause) == "table" and e.cause.kind) or "store"
  end
  return terror.new(e)
end

-- A client error, passed through with its type and our context.
function M.wrap(cause, what, fields)
  local f = {}
  for k, v in pairs(fields or {}) do f[k] = v end
  f.table = f.table or (type(cause) == "table" and cause.table) or nil
  f.type = type(cause) == "table" and cause.type or "Error"
  return terror.wrap(cause, what, f)
end

M.wall_ms = clock.wall_ms

-- Sequence numbers as stored: 40 digits, zero-padded; SHARD_END as is.
function M.pad(seq)
  if seq == M.SHARD_END or #seq >= 40 then return seq end
  return string.rep("0", 40 - #seq) .. seq
end

-- Back to the text DynamoDB gave: its sequence numbers have 21 to 40
-- digits (DynamoDB Local's keep leading zeros to 21), so the padding is
-- stripped down to 21 digits; 40 zeros (FROM_START) reads "0".
function M.unpad(cp)
  if cp == nil or cp == M.SHARD_END then return cp end
  if not cp:find("[1-9]") then return "0" end
  local zeros = #cp:match("^0*")
  return cp:sub(math.min(zeros, #cp - 21) + 1)
end

-- compare(a, b) on stored checkpoints (padded, SHARD_END last; nil first)
function M.before(a, b)
  if a == nil then return b ~= nil end
  if b == nil then return false end
  return a < b
end

------------------------------------------------------------------------

local Leases = {}
Leases.__index = Leases

function M.new(opts)
  if type(opts) ~= "table" then error("leases.new: opts must be a table", 2) end
  if type(opts.client) ~= "table" then error("leases.new: opts.client must be a tide.dynamodb client", 2) end
  local group = opts.group or opts.projection
  if type(group) ~= "string" or group == "" then
    error("leases.new: opts.group (or opts.projection) must be a name", 2)
  end
  if type(opts.owner) ~= "string" or opts.owner == "" then error("leases.new: opts.owner must be a string", 2) end
  local prefix = opts.table_prefix or "tide_"
  return setmetatable({
    client = opts.client,
    table = prefix .. "leases",
    group = group,
    projection = opts.projection or group,
    owner = opts.owner,
    lease_ms = opts.lease_ms or 10000,
    clock_ms = opts.clock_ms or M.wall_ms,
    wait_timeout = opts.wait_timeout or 120,
    requests = 0,      -- lease-table requests made (the budget in docs/projections.md)
  }, Leases)
end

function Leases:err(etype, msg, shard, cause)
  return M.error(etype, msg, { projection = self.group, shard = shard, table = self.table, cause = cause })
end

function Leases:wrap(cause, what, shard)
  return M.wrap(cause, what, { projection = self.group, shard = shard, table = self.table })
end

function Leases:init()
  local db = self.client
  local _, err = db:create_table_if_missing{
    TableName = self.table,
    AttributeDefinitions = { { AttributeName = "projection", AttributeType = "S" },
                             { AttributeName = "shard", AttributeType = "S" } },
    KeySchema = { { AttributeName = "projection", KeyType = "HASH" },
                  { AttributeName = "shard", KeyType = "RANGE" } },
    BillingMode = "PAY_PER_REQUEST",
  }
  if err and err.type ~= "ResourceInUseException" then return nil, self:wrap(err, "creating the lease table") end
  local _, werr = db:wait_for_table(self.table, self.wait_timeout)
  if werr then return nil, self:wrap(werr, "waiting for the lease table") end
  return true
end

local tonum = function(v) return v ~= nil and tonumber(tostring(v)) or nil end

local function from_item(item)
  local l = {
    group = item.projection, projection = item.projection, shard = item.shard, owner = item.owner,
    counter = tonum(item.counter) or 0, beat = tonum(item.beat) or 0,
    parent = item.parent, parent_done = item.parent_done == true, decision = item.decision,
    handoff = item.handoff, ended = tonum(item.ended), updated = tonum(item.updated),
    cps = {}, errors = {}, handled = {},
  }
  for k, v in pairs(item) do
    if type(k) == "string" then
      local name = k:match("^cp:(.*)$")
      if name then l.cps[name] = M.unpad(v) end
      local counted = k:match("^h:(.*)$")
      if counted then l.handled[counted] = tonum(v) end
      name = k:match("^err:(.*)$")
      if name then l.errors[name] = v end
    end
  end
  if item.checkpoint == M.SHARD_END then
    l.checkpoint = M.SHARD_END
  elseif l.cps[l.group] then
    l.checkpoint = l.cps[l.group]           -- a one-projection group: its checkpoint
  end
  if item.listed ~= nil then
    l.listed = item.listed
    l.created = tonum(item.created)
    l.described = tonum(item.described)
  end
  l.error = l.errors[l.group]
  if not l.error then for _, e in pairs(l.errors) do l.error = e; break end end
  return l
end
M.from_item = from_item

function Leases:ensure(shard, parent)
  self.requests = self.requests + 1
  local _, err = self.client:put_item{
    TableName = self.table,
    Item = { projection = self.group, shard = shard, counter = 0, beat = 0, parent = parent },
    ConditionExpression = "attribute_not_exists(#s)",
    ExpressionAttributeNames = { ["#s"] = "shard" },
  }
  if err and err.type ~= "ConditionalCheckFailedException" then
    return nil, self:wrap(err, "creating the lease", shard)
  end
  return true
end

-- Every shard lease of the group (a consistent Query, every page), and
-- the describer's item apart (nil when none was made yet).
function Leases:list()
  local out, describer = {}, nil
  for page, err in self.client:query_pages{
    TableName = self.table,
    KeyConditionExpression = "#p = :p",
    ExpressionAttributeNames = { ["#p"] = "projection" },
    ExpressionAttributeValues = { [":p"] = self.group },
    ConsistentRead = true,
  } do
    self.requests = self.requests + 1
    if not page then return nil, self:wrap(err, "listing the leases") end
    for _, item in ipairs(page.Items or {}) do
      if item.shard == M.DESCRIBER then describer = from_item(item)
      else out[#out + 1] = from_item(item) end
    end
  end
  return out, describer
end

function Leases:get(shard)
  self.requests = self.requests + 1
  local res, err = self.client:get_item{
    TableName = self.table, Key = { projection = self.group, shard = shard }, ConsistentRead = true,
  }
  if not res then return nil, self:wrap(err, "reading the lease", shard) end
  return res.Item and from_item(res.Item) or false
end

-- An UpdateItem on the lease conditioned on the holder's counter (and the
-- owner, or the observed state for a take). A failed condition is LeaseLost,
-- with err.current: the lease as the refusal found it (ALL_OLD; nil when
-- the item is gone). landed(current) (optional) says whether that state is
-- this very update's own, applied by an attempt whose answer was lost (a
-- timeout, a 5xx after the write) before the client's retry was refused:
-- then the update succeeded and current is returned.
function Leases:update(lease, what, update, cond, names, values, landed)
  names["#c"] = "counter"
  values[":c"] = lease.counter
  self.requests = self.requests + 1
  local res, err = self.client:update_item{
    TableName = self.table,
    Key = { projection = self.group, shard = lease.shard },
    UpdateExpression = update,
    ConditionExpression = cond,
    ExpressionAttributeNames = names,
    ExpressionAttributeValues = values,
    ReturnValues = "ALL_NEW",
    ReturnValuesOnConditionCheckFailure = "ALL_OLD",
  }
  if res then return from_item(res.Attributes) end
  if err.type == "ConditionalCheckFailedException" then
    local current = err.item and from_item(err.item) or nil
    if current and landed and landed(self, lease, current) then return current end
    local lost = self:err("LeaseLost",
      string.format("%s: the lease (counter %d) was taken by another worker or changed", what, lease.counter),
      lease.shard, err)
    lost.current = current
    return nil, lost
  end
  return nil, self:wrap(err, what, lease.shard)
end

local HELD = "#c = :c AND #o = :me"

-- The state the taker observed: a concurrent renewal (beat), take
-- (counter) or release (owner) makes the condition fail.
local function observed(lease, names, values)
  names["#b"] = "beat"
  values[":b"] = lease.beat or 0
  if lease.owner then
    values[":old"] = lease.owner
    return "#c = :c AND #b = :b AND #o = :old"
  end
  return "#c = :c AND #b = :b AND attribute_not_exists(#o)"
end

-- A refused take whose lease is ours at the next counter: only our own take
-- from the counter we observed makes that state (owner ids are unique per
-- worker), so its first attempt landed and the retry was refused.
local function took(self, observed_lease, current)
  return current.owner == self.owner and current.counter == observed_lease.counter + 1
end

-- Takes a free lease, or one whose heartbeat stopped (the caller judged
-- it by its own clock): conditioned on the state observed. force: a live
-- lease whose holder did not hand it over (conditioned on its counter and
-- owner only; the holder is fenced by the new counter).
function Leases:take(lease, force)
  local names = { ["#o"] = "owner", ["#h"] = "handoff" }
  local values = { [":me"] = self.owner, [":one"] = 1 }
  local cond
  if force and lease.owner then
    names["#b"] = "beat"
    values[":old"] = lease.owner
    cond = "#c = :c AND #o = :old"
  else
    cond = observed(lease, names, values)
  end
  return self:update(lease, "taking the lease", "SET #o = :me, #c = #c + :one, #b = #b + :one REMOVE #h",
                     cond, names, values, took)
end

-- Asks the holder to hand the shard over (graceful: it checkpoints, then
-- releases it to us). Conditioned on the holder we observed (its owner
-- and counter), not on its heartbeat: a busy shard's holder checkpoints
-- several times a second, and a request conditioned on the beat the thief
-- saw in its lease list a moment before nearly always failed on a loaded
-- host, so balancing stalled.
function Leases:request_handoff(lease)
  if not lease.owner then
    return nil, self:err("LeaseLost", "asking for a handoff: the lease has no holder", lease.shard)
  end
  local names = { ["#o"] = "owner", ["#h"] = "handoff" }
  local values = { [":me"] = self.owner, [":old"] = lease.owner }
  return self:update(lease, "asking for a handoff", "SET #h = :me", "#c = :c AND #o = :old", names, values)
end

function Leases:renew(lease)
  return self:update(lease, "renewing the lease", "SET #b = #b + :one", HELD,
    { ["#o"] = "owner", ["#b"] = "beat" }, { [":me"] = self.owner, [":one"] = 1 })
end

-- leases:checkpoint(lease, cps): cps = {name = sequence number | "SHARD_END"}
-- (a string: the group's own projection). Each moves only forward: a
-- checkpoint at or behind the stored one is left as it is (not an error).
-- Also a heartbeat, and it clears those projections' errors.
-- handled (optional): {name = events applied since the last checkpoint},
-- added to the lease's running counts (`tide status` sums them).
-- finish (optional): the last projections reach SHARD_END with this
-- checkpoint: the lease-level SHARD_END (see finish) goes in the same
-- write, so no worker can stop between the two and leave the shard's
-- children waiting.
function Leases:checkpoint(lease, cps, handled, finish)
  if type(cps) == "string" then cps = { [self.projection] = cps } end
  if type(cps) ~= "table" then error("leases:checkpoint: cps must be {name = sequence number}", 2) end
  local now = self.clock_ms()
  local names = { ["#o"] = "owner", ["#b"] = "beat", ["#u"] = "updated" }
  local values = { [":me"] = self.owner, [":one"] = 1, [":u"] = now }
  local sets, removes, conds, adds = { "#b = #b + :one", "#u = :u" }, {}, { HELD }, {}
  local i = 0
  local names_sorted = {}
  for name in pairs(cps) do names_sorted[#names_sorted + 1] = name end
  table.sort(names_sorted)
  for _, name in ipairs(names_sorted) do
    local seq = cps[name]
    if type(seq) ~= "string" then error("leases:checkpoint: a sequence number must be a string", 2) end
    i = i + 1
    local n, e, v = "#k" .. i, "#e" .. i, ":k" .. i
    names[n], names[e], values[v] = "cp:" .. name, "err:" .. name, M.pad(seq)
    sets[#sets + 1] = n .. " = " .. v
    removes[#removes + 1] = e
    conds[#conds + 1] = "(attribute_not_exists(" .. n .. ") OR " .. n .. " < " .. v .. ")"
    local count = handled and handled[name]
    if count and count > 0 then
      local h, hv = "#h" .. i, ":h" .. i
      names[h], values[hv] = "h:" .. name, count
      adds[#adds + 1] = h .. " " .. hv
    end
  end
  if finish then
    names["#fin"], names["#end"], values[":fin"] = "checkpoint", "ended", M.SHARD_END
    sets[#sets + 1] = "#fin = :fin"
    sets[#sets + 1] = "#end = :u"
  end
  local update = "SET " .. table.concat(sets, ", ") .. (#removes > 0 and (" REMOVE " .. table.concat(removes, ", ")) or "")
    .. (#adds > 0 and (" ADD " .. table.concat(adds, ", ")) or "")
  local l, err = self:update(lease, "checkpointing", update, table.concat(conds, " AND "), names, values)
  if l or err.type ~= "LeaseLost" then return l, err end
  -- Failed: lost, or a checkpoint that would not move forward (also a
  -- retry refused after its first attempt landed). Look at the refusal's
  -- copy of the lease, or read it when the answer had none.
  local cur = err.current
  if not cur then
    local gerr
    cur, gerr = self:get(lease.shard)
    if cur == nil then return nil, gerr end
  end
  if cur and cur.owner == self.owner and cur.counter == lease.counter then
    -- still ours: at least one stored checkpoint is at or past ours; write
    -- those that are behind, one by one
    local moved = {}
    for _, name in ipairs(names_sorted) do
      local have = cur.cps[name]
      if have == nil or M.before(M.pad(have), M.pad(cps[name])) then moved[name] = cps[name] end
    end
    if next(moved) then return self:checkpoint(lease, moved, handled, finish) end
    if finish then return self:finish(lease) end
    return self:renew(lease)
  end
  return nil, err
end

-- The describer records what DescribeStream listed (a heartbeat too):
-- conditioned on its lease, so a describer that lost it writes nothing.
function Leases:record_listing(describer, ids, created_ms)
  local names = { ["#o"] = "owner", ["#b"] = "beat", ["#l"] = "listed", ["#d"] = "described" }
  local values = { [":me"] = self.owner, [":one"] = 1, [":l"] = #ids > 0 and table.concat(ids, " ") or "~", [":d"] = self.clock_ms() }
  local update = "SET #b = #b + :one, #l = :l, #d = :d"
  if created_ms then
    names["#cr"], values[":cr"] = "created", created_ms
    update = update .. ", #cr = :cr"
  end
  return self:update(describer, "recording the shard list", update, HELD, names, values)
end

-- The shard is read to its end by every projection of the group.
function Leases:finish(lease)
  local now = self.clock_ms()
  return self:update(lease, "finishing the shard", "SET #k = :k, #n = :n, #u = :n, #b = #b + :one", HELD,
    { ["#o"] = "owner", ["#k"] = "checkpoint", ["#n"] = "ended", ["#u"] = "updated", ["#b"] = "beat" },
    { [":me"] = self.owner, [":k"] = M.SHARD_END, [":n"] = now, [":one"] = 1 })
end

-- Gives the lease back; with `handoff` (a worker id) kept as the one
-- expected to take it next.
function Leases:release(lease)
  local ok, err = self:update(lease, "releasing the lease", "SET #b = #b + :one REMOVE #o", HELD,
    { ["#o"] = "owner", ["#b"] = "beat" }, { [":me"] = self.owner, [":one"] = 1 })
  if not ok then return nil, err end
  return true
end

function Leases:record_error(lease, message, name)
  name = name or self.projection
  local ok, err = self:update(lease, "recording an error", "SET #err = :m, #u = :u", HELD,
    { ["#o"] = "owner", ["#err"] = "err:" .. name, ["#u"] = "updated" },
    { [":me"] = self.owner, [":m"] = tostring(message):sub(1, 4000), [":u"] = self.clock_ms() })
  if not ok then return nil, err end
  return true
end

-- Before a finished parent's lease is deleted, its children learn that
-- it was finished.
function Leases:mark_parent_done(shard)
  self.requests = self.requests + 1
  local _, err = self.client:update_item{
    TableName = self.table, Key = { projection = self.group, shard = shard },
    UpdateExpression = "SET #d = :t", ConditionExpression = "attribute_exists(#s)",
    ExpressionAttributeNames = { ["#d"] = "parent_done", ["#s"] = "shard" },
    ExpressionAttributeValues = { [":t"] = true },
  }
  if err and err.type ~= "ConditionalCheckFailedException" then return nil, self:wrap(err, "marking", shard) end
  return true
end

-- Deletes a finished lease (only while it still says SHARD_END).
function Leases:delete(lease)
  self.requests = self.requests + 1
  local _, err = self.client:delete_item{
    TableName = self.table, Key = { projection = self.group, shard = lease.shard },
    ConditionExpression = "#k = :k",
    ExpressionAttributeNames = { ["#k"] = "checkpoint" }, ExpressionAttributeValues = { [":k"] = M.SHARD_END },
  }
  if err and err.type ~= "ConditionalCheckFailedException" then return nil, self:wrap(err, "deleting", lease.shard) end
  return true
end

-- An operator's decision, recorded in the lease (e.g. "skip-parent");
-- a shard with no lease is NotFound (nothing is created).
function Leases:decide(shard, decision)
  self.requests = self.requests + 1
  local _, err = self.client:update_item{
    TableName = self.table, Key = { projection = self.group, shard = shard },
    UpdateExpression = "SET #d = :d", ConditionExpression = "attribute_exists(#s)",
    ExpressionAttributeNames = { ["#d"] = "decision", ["#s"] = "shard" },
    ExpressionAttributeValues = { [":d"] = decision },
  }
  if err and err.type == "ConditionalCheckFailedException" then
    return nil, self:err("NotFound", "no lease for shard " .. tostring(shard) .. " in group " .. self.group, shard, err)
  end
  if err then return nil, self:wrap(err, "recording a decision", shard) end
  return true
end

-- For `tide replay NAME`: in every lease of the group, projection NAME
-- starts again from TRIM_HORIZON with the trimmed records known to be
-- covered (40 zeros), its error cleared; every lease is freed and its
-- counter bumped, so a worker still running on it can no longer
-- checkpoint (it takes the lease again, from the checkpoints).
function Leases:reset(name)
  name = name or self.projection
  local list, err = self:list()
  if not list then return nil, err end
  for _, l in ipairs(list) do
    self.requests = self.requests + 1
    local _, uerr = self.client:update_item{
      TableName = self.table,
      Key = { projection = self.group, shard = l.shard },
      UpdateExpression = "SET #c = #c + :one, #b = #b + :one, #k = :z REMOVE #o, #err, #h, #d",
      ExpressionAttributeNames = { ["#c"] = "counter", ["#b"] = "beat", ["#o"] = "owner",
                                   ["#k"] = "cp:" .. name, ["#err"] = "err:" .. name, ["#h"] = "handoff",
                                   ["#d"] = "checkpoint" },
      ExpressionAttributeValues = { [":one"] = 1, [":z"] = M.FROM_START },
    }
    if uerr then return nil, self:wrap(uerr, "resetting the lease", l.shard) end
  end
  return true
end

return M
