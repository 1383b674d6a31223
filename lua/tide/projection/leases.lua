-- tide.projection.leases: shard leases and checkpoints of a projection on
-- DynamoDB, the table <prefix>leases (docs/projections.md).
--
--   pk `projection` (S), sk `shard` (S); attributes:
--     owner       the worker holding the lease (absent: free)
--     counter     N, the fencing token: +1 on every take; every write by the
--                 holder (renew, checkpoint, release, error) is conditioned
--                 on it and on the owner, so a worker that lost its lease
--                 can no longer move the checkpoint
--     expires     N, wall-clock milliseconds; a lease past it may be taken
--     checkpoint  S, the last sequence number whose effects are durable, or
--                 "SHARD_END" when the shard is finished
--     parent      S, the parent shard (from DescribeStream)
--     error       S, the last error (a failing handler, "rebuild needed")
--     updated     N, milliseconds of the last checkpoint or error
--
--   local leases = require("tide.projection.leases").new{client=, table_prefix=,
--                  projection=<name>, owner=<id>, lease_ms=10000, clock_ms=<fn>}
--   leases:init()                      -> true | nil, err  (creates the table)
--   leases:ensure(shard, parent)       -> true | nil, err  (creates the lease when missing)
--   leases:list()                      -> {lease...} | nil, err
--   leases:get(shard)                  -> lease | false | nil, err
--   leases:take(lease)                 -> lease | nil, err (LeaseLost when someone else moved it)
--   leases:renew(lease)                -> lease | nil, err
--   leases:checkpoint(lease, seq [, handled]) -> lease | nil, err
--   leases:release(lease)              -> true | nil, err
--   leases:record_error(lease, msg)    -> true | nil, err
--   leases:reset()                     -> true | nil, err  (replay: every lease back to TRIM_HORIZON)
-- A lease is a plain table {projection=, shard=, owner=, counter=, expires=,
-- checkpoint=, parent=, error=}. Errors: `nil, err`, a tide.error with
-- err.type ("LeaseLost", kind "conflict"; or the client's AWS type and
-- kind), err.projection, err.shard, err.table.

local terror = require "tide.error"
local clock = require "tide.clock"

local M = {}

M.SHARD_END = "SHARD_END"
M.REBUILD_NEEDED = "rebuild needed"

------------------------------------------------------------------------
-- Errors (shared by the projection's DynamoDB modules): tide.error with
-- the projection, the shard and the lease table as context.

M.Error = terror.Error

-- The kinds of the types these modules make themselves.
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

-- Wall-clock milliseconds: leases are compared across machines.
M.wall_ms = clock.wall_ms

------------------------------------------------------------------------

local Leases = {}
Leases.__index = Leases

function M.new(opts)
  if type(opts) ~= "table" then error("leases.new: opts must be a table", 2) end
  if type(opts.client) ~= "table" then error("leases.new: opts.client must be a tide.dynamodb client", 2) end
  if type(opts.projection) ~= "string" or opts.projection == "" then
    error("leases.new: opts.projection must be a projection name", 2)
  end
  if type(opts.owner) ~= "string" or opts.owner == "" then error("leases.new: opts.owner must be a string", 2) end
  local prefix = opts.table_prefix or "tide_"
  return setmetatable({
    client = opts.client,
    table = prefix .. "leases",
    projection = opts.projection,
    owner = opts.owner,
    lease_ms = opts.lease_ms or 10000,
    clock_ms = opts.clock_ms or M.wall_ms,
    wait_timeout = opts.wait_timeout or 120,
  }, Leases)
end

function Leases:err(etype, msg, shard, cause)
  return M.error(etype, msg, { projection = self.projection, shard = shard, table = self.table, cause = cause })
end

function Leases:wrap(cause, what, shard)
  return M.wrap(cause, what, { projection = self.projection, shard = shard, table = self.table })
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

local function from_item(item)
  return {
    projection = item.projection, shard = item.shard, owner = item.owner,
    counter = tonumber(tostring(item.counter or 0)), expires = tonumber(tostring(item.expires or 0)),
    checkpoint = item.checkpoint, parent = item.parent, error = item.error,
    updated = item.updated and tonumber(tostring(item.updated)) or nil,
    handled = tonumber(tostring(item.handled or 0)),
  }
end
M.from_item = from_item

function Leases:ensure(shard, parent)
  local _, err = self.client:put_item{
    TableName = self.table,
    Item = { projection = self.projection, shard = shard, counter = 0, expires = 0, parent = parent },
    ConditionExpression = "attribute_not_exists(#s)",
    ExpressionAttributeNames = { ["#s"] = "shard" },
  }
  if err and err.type ~= "ConditionalCheckFailedException" then
    return nil, self:wrap(err, "creating the lease", shard)
  end
  return true
end

function Leases:list()
  local res, err = self.client:query{
    TableName = self.table,
    KeyConditionExpression = "#p = :p",
    ExpressionAttributeNames = { ["#p"] = "projection" },
    ExpressionAttributeValues = { [":p"] = self.projection },
    ConsistentRead = true,
  }
  if not res then return nil, self:wrap(err, "listing the leases") end
  local out = {}
  for i, item in ipairs(res.Items) do out[i] = from_item(item) end
  return out
end

function Leases:get(shard)
  local res, err = self.client:get_item{
    TableName = self.table, Key = { projection = self.projection, shard = shard }, ConsistentRead = true,
  }
  if not res then return nil, self:wrap(err, "reading the lease", shard) end
  return res.Item and from_item(res.Item) or false
end

-- An UpdateItem on the lease conditioned on the holder's counter (and the
-- owner, or the observed state for a take). A failed condition is LeaseLost.
function Leases:update(lease, what, update, cond, names, values)
  names["#c"] = "counter"
  values[":c"] = lease.counter
  local res, err = self.client:update_item{
    TableName = self.table,
    Key = { projection = self.projection, shard = lease.shard },
    UpdateExpression = update,
    ConditionExpression = cond,
    ExpressionAttributeNames = names,
    ExpressionAttributeValues = values,
    ReturnValues = "ALL_NEW",
  }
  if res then return from_item(res.Attributes) end
  if err.type == "ConditionalCheckFailedException" then
    return nil, self:err("LeaseLost",
      string.format("%s: the lease (counter %d) was taken by another worker or changed", what, lease.counter),
      lease.shard, err)
  end
  return nil, self:wrap(err, what, lease.shard)
end

local HELD = "#c = :c AND #o = :me"

-- Takes a free or expired lease (or, with lease.steal, a live one): the
-- condition is the state we observed, so a concurrent renew or take wins.
function Leases:take(lease)
  local now = self.clock_ms()
  local names = { ["#o"] = "owner", ["#e"] = "expires" }
  local values = { [":me"] = self.owner, [":c1"] = lease.counter + 1, [":e"] = now + self.lease_ms }
  local cond
  if lease.owner then
    cond = "#c = :c AND #o = :old AND #e = :olde"
    values[":old"], values[":olde"] = lease.owner, lease.expires
  else
    cond = "#c = :c AND attribute_not_exists(#o)"
  end
  return self:update(lease, "taking the lease", "SET #o = :me, #c = :c1, #e = :e", cond, names, values)
end

function Leases:renew(lease)
  return self:update(lease, "renewing the lease", "SET #e = :e", HELD,
    { ["#o"] = "owner", ["#e"] = "expires" },
    { [":me"] = self.owner, [":e"] = self.clock_ms() + self.lease_ms })
end

-- The checkpoint also renews the lease and clears a recorded error.
-- handled (optional): the events the batch applied, added to the lease's
-- running count (`tide status` shows their sum over the shards)
function Leases:checkpoint(lease, seq, handled)
  if type(seq) ~= "string" then error("leases:checkpoint: seq must be a sequence number (string)", 2) end
  local now = self.clock_ms()
  return self:update(lease, "checkpointing " .. seq, "SET #k = :k, #e = :e, #u = :u REMOVE #err ADD #h :h", HELD,
    { ["#o"] = "owner", ["#e"] = "expires", ["#k"] = "checkpoint", ["#u"] = "updated", ["#err"] = "error",
      ["#h"] = "handled" },
    { [":me"] = self.owner, [":e"] = now + self.lease_ms, [":k"] = seq, [":u"] = now, [":h"] = handled or 0 })
end

function Leases:release(lease)
  local ok, err = self:update(lease, "releasing the lease", "SET #e = :z REMOVE #o", HELD,
    { ["#o"] = "owner", ["#e"] = "expires" }, { [":me"] = self.owner, [":z"] = 0 })
  if not ok then return nil, err end
  return true
end

function Leases:record_error(lease, message)
  local ok, err = self:update(lease, "recording an error", "SET #err = :m, #u = :u", HELD,
    { ["#o"] = "owner", ["#err"] = "error", ["#u"] = "updated" },
    { [":me"] = self.owner, [":m"] = tostring(message):sub(1, 4000), [":u"] = self.clock_ms() })
  if not ok then return nil, err end
  return true
end

-- For `tide replay`: every lease of the projection back to the start of
-- its shard, free, its counter bumped so that a worker still running on
-- it can no longer checkpoint.
function Leases:reset()
  local list, err = self:list()
  if not list then return nil, err end
  for _, l in ipairs(list) do
    local _, uerr = self.client:update_item{
      TableName = self.table,
      Key = { projection = self.projection, shard = l.shard },
      UpdateExpression = "SET #c = #c + :one, #e = :z REMOVE #o, #k, #err",
      ExpressionAttributeNames = { ["#c"] = "counter", ["#e"] = "expires", ["#o"] = "owner",
                                   ["#k"] = "checkpoint", ["#err"] = "error" },
      ExpressionAttributeValues = { [":one"] = 1, [":z"] = 0 },
    }
    if uerr then return nil, self:wrap(uerr, "resetting the lease", l.shard) end
  end
  return true
end

return M
