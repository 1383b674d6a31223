-- tide.projection.dynamodb: the DynamoDB backend of projections
-- (docs/projections.md, "Backends").
--
--   <prefix>rm_<table>  one table per read model: partition key = the
--                       module's key attribute (S); items carry their
--                       fields plus _tide (map stream -> version) and _rev (N)
--   <prefix>positions   projection (S, partition), stream (S, sort), version (N)
--
--   local backend = require("tide.projection.dynamodb").new{client=, table_prefix="tide_"}
--   backend:init(projection)                       -> true | nil, err
--   backend:get_items({{table=, key=}...})         -> {["table\0key"] = item} | nil, err
--   backend:get_positions(name, streams)           -> {[stream] = version} | nil, err
--   backend:write(name, plan [, checkpoint])       -> true | nil, err (err.type "Conflict")
--   backend:read_item(table, key)                  -> item | false | nil, err
--   backend:list_items(table, {limit=, after=})    -> items, more | nil, err
--       a Scan: in the table's hash order (not sorted), from the key
--       after `after`; tombstones skipped; no key prefix (a prefix of a
--       partition key cannot be looked up: it would read the whole table)
--   backend:clear(projection)                      -> true | nil, err
--
-- `write`: every item one PutItem/DeleteItem (several in flight),
-- conditioned on `_rev` (attribute_not_exists of the key when the item was
-- absent): fenced, so a worker that lost its lease cannot replace a newer
-- item (docs/projections.md, "Leases and fencing"); with new{fenced =
-- false}, batch-mode items go blind through client:batch_write (25 per
-- request) as before. Then the positions, with batch_write, once every
-- item is durable. The checkpoint argument is ignored: on DynamoDB
-- the runner writes the checkpoint (the shard lease) after `write` returns.
-- A failed condition is `nil, {type="Conflict"}`: the runner resets the
-- projector and applies the batch again; items already written by this
-- write are recognised by their `_tide` guards and not applied twice.

local leases = require "tide.projection.leases"

local M = {}

local Backend = {}
Backend.__index = Backend

function M.new(opts)
  if type(opts) ~= "table" or type(opts.client) ~= "table" then
    error("projection.dynamodb.new: opts.client (a tide.dynamodb client) is required", 2)
  end
  local prefix = opts.table_prefix or "tide_"
  if type(prefix) ~= "string" then error("projection.dynamodb.new: opts.table_prefix must be a string", 2) end
  local self = setmetatable({
    client = opts.client,
    prefix = prefix,
    positions_table = prefix .. "positions",
    specs = {},          -- read-model table name -> {key=, mode=, table=<DynamoDB name>}
    wait_timeout = opts.wait_timeout or 120,
    -- fenced: every item write is conditioned on the revision read, also
    -- in batch mode, so a late write (a worker whose lease passed to
    -- another) can never replace a newer item with an older one
    fenced = opts.fenced ~= false,
  }, Backend)
  if opts.projection then self:register(opts.projection) end
  return self
end

function Backend:table_name(name)
  return self.prefix .. "rm_" .. name
end

local function err(etype, msg, fields)
  return leases.error(etype, msg, fields)
end

-- Learns a projection's tables (key attribute, mode) without creating
-- anything; init does this too.
function Backend:register(projection)
  if type(projection) ~= "table" or type(projection.tables) ~= "table" then
    error("projection.dynamodb: expected a projection object with .tables", 3)
  end
  for name, spec in pairs(projection.tables) do
    local key = type(spec) == "table" and spec.key or "id"
    self.specs[name] = { key = key, mode = type(spec) == "table" and spec.mode or "batch",
                         table = self:table_name(name), projection = projection.name }
  end
  return true
end

function Backend:spec(name)
  local s = self.specs[name]
  if not s then error("projection.dynamodb: unknown read-model table '" .. tostring(name)
                      .. "' (not declared in the projection's tables, or init/register not called)", 3) end
  return s
end

local function ensure_table(self, params, projection)
  local db = self.client
  local _, cerr = db:create_table_if_missing(params)
  if cerr and cerr.type ~= "ResourceInUseException" then
    return nil, leases.wrap(cerr, "creating table", { projection = projection, table = params.TableName })
  end
  local desc, werr = db:wait_for_table(params.TableName, self.wait_timeout)
  if not desc then
    return nil, leases.wrap(werr, "waiting for the table", { projection = projection, table = params.TableName })
  end
  local want = params.KeySchema
  local got = desc.KeySchema or {}
  local ok = #got == #want
  for i = 1, #want do
    if not got[i] or got[i].AttributeName ~= want[i].AttributeName or got[i].KeyType ~= want[i].KeyType then ok = false end
  end
  if not ok then
    return nil, err("TableMismatch", "the table exists with another key schema; the projection needs "
      .. want[1].AttributeName .. (want[2] and (", " .. want[2].AttributeName) or ""),
      { projection = projection, table = params.TableName })
  end
  return true
end

-- backend:init(projection): creates <prefix>rm_<table> for each table of
-- the projection and <prefix>positions (PAY_PER_REQUEST), when missing.
function Backend:init(projection)
  self:register(projection)
  local ok, e = ensure_table(self, {
    TableName = self.positions_table,
    AttributeDefinitions = { { AttributeName = "projection", AttributeType = "S" },
                             { AttributeName = "stream", AttributeType = "S" } },
    KeySchema = { { AttributeName = "projection", KeyType = "HASH" },
                  { AttributeName = "stream", KeyType = "RANGE" } },
    BillingMode = "PAY_PER_REQUEST",
  }, projection.name)
  if not ok then return nil, e end
  local names = {}
  for name in pairs(projection.tables) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local s = self.specs[name]
    ok, e = ensure_table(self, {
      TableName = s.table,
      AttributeDefinitions = { { AttributeName = s.key, AttributeType = "S" } },
      KeySchema = { { AttributeName = s.key, KeyType = "HASH" } },
      BillingMode = "PAY_PER_REQUEST",
    }, projection.name)
    if not ok then return nil, e end
  end
  return true
end

-- backend:get_items(requests) -> map["table\0key"] = item (absent items: no entry)
-- One consistent BatchGetItem per 100 keys, several in flight.
function Backend:get_items(requests)
  if type(requests) ~= "table" then error("get_items: requests must be a list", 2) end
  local ri, seen, by_table = {}, {}, {}
  for _, r in ipairs(requests) do
    local s = self:spec(r.table)
    local id = r.table .. "\0" .. r.key
    if not seen[id] then
      seen[id] = true
      local t = ri[s.table]
      if not t then
        t = { Keys = {}, ConsistentRead = true }
        ri[s.table] = t
        by_table[s.table] = r.table
      end
      t.Keys[#t.Keys + 1] = { [s.key] = r.key }
    end
  end
  local out = {}
  if next(ri) == nil then return out end
  local res, e = self.client:batch_get(ri)
  if not res then return nil, leases.wrap(e, "reading read-model items") end
  for tname, items in pairs(res.Responses) do
    local name = by_table[tname]
    local key = self.specs[name].key
    for _, item in ipairs(items) do out[name .. "\0" .. tostring(item[key])] = item end
  end
  return out
end

-- backend:get_positions(name, streams) -> {[stream] = version} (streams
-- never applied have no entry).
function Backend:get_positions(name, streams)
  local keys = {}
  for _, s in ipairs(streams) do keys[#keys + 1] = { projection = name, stream = s } end
  local out = {}
  if #keys == 0 then return out end
  local res, e = self.client:batch_get{
    [self.positions_table] = { Keys = keys, ConsistentRead = true },
  }
  if not res then return nil, leases.wrap(e, "reading positions", { projection = name }) end
  for _, item in ipairs(res.Responses[self.positions_table] or {}) do
    out[item.stream] = tonumber(tostring(item.version))
  end
  return out
end

-- What a plan item writes, with its key set: the item, or the tombstone of
-- a deleted one (its last state and guards, see write); nil for a deletion
-- without a tombstone (a plan not made by the projector).
local function stored_item(s, pi)
  local item = pi.item or pi.tomb
  if item then item[s.key] = pi.key end
  return item
end

-- A conditional put of one item (or of its tombstone), conditioned on the
-- revision read.
local function fenced_error(name)
  return err("Fenced", "the lease may have passed to another worker: not writing", { projection = name })
end

-- The client options of a fenced write: the fence is asked before every
-- attempt, the client's retries included (a retry after a backoff is
-- never sent once the lease may have passed to another worker).
local function gated(fence, name)
  if not fence then return nil end
  return { gate = function()
    if fence() then return true end
    return nil, fenced_error(name)
  end }
end

local function conditional(self, name, pi, fence)
  local s = self:spec(pi.table)
  local opts = gated(fence, name)
  local names, values, cond
  if pi.expected_rev == false or pi.expected_rev == nil then
    cond = "attribute_not_exists(#k)"
    names = { ["#k"] = s.key }
  else
    cond = "#r = :r"
    names = { ["#r"] = "_rev" }
    values = { [":r"] = pi.expected_rev }
  end
  local item, res, e = stored_item(s, pi), nil, nil
  if item then
    res, e = self.client:put_item({ TableName = s.table, Item = item,
      ConditionExpression = cond, ExpressionAttributeNames = names, ExpressionAttributeValues = values }, opts)
  else
    res, e = self.client:delete_item({ TableName = s.table, Key = { [s.key] = pi.key },
      ConditionExpression = cond, ExpressionAttributeNames = names, ExpressionAttributeValues = values }, opts)
  end
  if res then return true end
  if e.type == "Fenced" then return nil, e end
  if e.type == "ConditionalCheckFailedException" then
    return nil, err("Conflict", string.format("item '%s' of '%s' changed since it was read (expected revision %s)",
      tostring(pi.key), pi.table, tostring(pi.expected_rev or "none")),
      { projection = name, table = s.table, cause = e, key = pi.key })
  end
  return nil, leases.wrap(e, "writing item '" .. tostring(pi.key) .. "'", { projection = name, table = s.table })
end

-- Removes the tombstones of a written plan once its positions are durable:
-- each only if it is still the one written (a conditional DeleteItem). Best
-- effort: one left behind is an absent item to tide (get_items, read_item)
-- and is overwritten by the item's next put.
local function remove_tombstones(self, removals)
  self.client:run_parallel(removals, function(pi)
    local s = self:spec(pi.table)
    self.client:delete_item{ TableName = s.table, Key = { [s.key] = pi.key },
      ConditionExpression = "#r = :r AND attribute_exists(#d)",
      ExpressionAttributeNames = { ["#r"] = "_rev", ["#d"] = "_deleted" },
      ExpressionAttributeValues = { [":r"] = pi.tomb._rev } }
    return true
  end)
end

-- Positions: fenced (the default), each an UpdateItem that only moves it
-- forward (`version < :v`), so a late write of a worker that lost its lease
-- can never move one back: the projector prunes item guards that positions
-- cover (tide.projector, prune_guards), and a position moved back would
-- let events be applied twice. Unfenced: BatchWriteItem, 25 a request.
function Backend:write_positions(name, positions, fence)
  local db = self.client
  local list = {}
  for stream, version in pairs(positions or {}) do list[#list + 1] = { stream, version } end
  if #list == 0 then return true end
  if fence and not fence() then return nil, fenced_error(name) end
  local opts = gated(fence, name)
  if not self.fenced then
    local pos = {}
    for i, sv in ipairs(list) do
      pos[i] = { PutRequest = { Item = { projection = name, stream = sv[1], version = sv[2] } } }
    end
    local res, e = db:batch_write({ [self.positions_table] = pos }, opts)
    if not res then
      if e.type == "Fenced" then return nil, e end
      return nil, leases.wrap(e, "writing positions", { projection = name })
    end
    return true
  end
  local perr = db:run_parallel(list, function(sv)
    local _, e = db:update_item({ TableName = self.positions_table, Key = { projection = name, stream = sv[1] },
      UpdateExpression = "SET #v = :v", ConditionExpression = "attribute_not_exists(#v) OR #v < :v",
      ExpressionAttributeNames = { ["#v"] = "version" }, ExpressionAttributeValues = { [":v"] = sv[2] } }, opts)
    if e and e.type == "Fenced" then return nil, e end
    if e and e.type ~= "ConditionalCheckFailedException" then
      return nil, leases.wrap(e, "writing the position of " .. sv[1], { projection = name })
    end
    return true
  end)
  if perr then return nil, perr end
  return true
end

-- backend:write(name, plan) -> true | nil, err
-- A deleted item is first written as a tombstone that keeps its guards
-- (_tide, _rev, _deleted = true), and removed only after the positions: the
-- items and the positions are separate writes, and a worker that dies
-- between them leaves events to deliver again, which the guards must still
-- see through (docs/projections.md, "Idempotency and order").
-- opts.fence: a function called before each request is sent, the
-- client's retries included (the client's opts.gate); false stops
-- the write there (nil, {type="Fenced"}): the runner's own-clock lease check.
function Backend:write(name, plan, _, opts)
  if type(plan) ~= "table" then error("write: plan must be a table", 2) end
  local fence = opts and opts.fence
  local db = self.client
  local batch, cond, nbatch, removals = {}, {}, 0, {}
  for _, pi in ipairs(plan.items or {}) do
    local s = self:spec(pi.table)
    local mode = self.fenced and "conditional" or (pi.mode or s.mode)
    if pi.item == nil and pi.tomb then removals[#removals + 1] = pi end
    if mode == "conditional" then
      cond[#cond + 1] = pi
    else
      local list = batch[s.table]
      if not list then list = {}; batch[s.table] = list end
      local item = stored_item(s, pi)
      list[#list + 1] = item and { PutRequest = { Item = item } }
                              or { DeleteRequest = { Key = { [s.key] = pi.key } } }
      nbatch = nbatch + 1
    end
  end
  -- Batch items in a thread of their own while the conditional ones go.
  local th
  if nbatch > 0 then
    th = db:spawn(function() return db:batch_write(batch, gated(fence, name)) end)
  end
  local cerr
  if #cond > 0 then
    cerr = db:run_parallel(cond, function(pi) return conditional(self, name, pi, fence) end)
  end
  if th then
    local ok, res, e = db:wait(th)
    if not ok then
      e = err("LuaError", tostring(res), { projection = name })
    end
    if not (ok and res) and not cerr then
      cerr = (type(e) == "table" and e.type == "Fenced") and e
        or leases.wrap(e, "writing read-model items", { projection = name })
    end
  end
  if cerr then return nil, cerr end
  -- Positions last: they never get ahead of the items they describe.
  local ok, perr = self:write_positions(name, plan.positions, fence)
  if not ok then return nil, perr end
  if #removals > 0 then remove_tombstones(self, removals) end
  return true
end

function Backend:read_item(name, key)
  local s = self:spec(name)
  local res, e = self.client:get_item{ TableName = s.table, Key = { [s.key] = key }, ConsistentRead = true }
  if not res then return nil, leases.wrap(e, "reading item '" .. tostring(key) .. "'", { table = s.table }) end
  if res.Item and res.Item._deleted then return false end -- a tombstone (see write)
  return res.Item or false
end

-- A Scan reads up to 1 MB a page and bills every item it reads (tombstones
-- too): 0.5 RCU per 4 KB, eventually consistent (docs/operations.md).
function Backend:list_items(name, opts)
  opts = opts or {}
  if opts.prefix then
    return nil, err("Unsupported", "a key prefix needs an ordered key: DynamoDB read models are keyed by a"
      .. " partition key alone, so a prefix would be a Scan of the whole table", { table = name })
  end
  local s = self:spec(name)
  local limit = opts.limit or 100
  local params = { TableName = s.table, Limit = limit + 1 }
  if opts.after then params.ExclusiveStartKey = { [s.key] = opts.after } end
  local items = {}
  while true do
    local res, e = self.client:call("Scan", params)
    if not res then return nil, leases.wrap(e, "listing items", { table = s.table }) end
    for _, item in ipairs(res.Items or {}) do
      if not item._deleted then
        if #items == limit then return items, true end
        items[#items + 1] = item
      end
    end
    if not res.LastEvaluatedKey then return items, false end
    params.ExclusiveStartKey = res.LastEvaluatedKey
  end
end

-- Deletes every item of a table, reading only the keys.
local function empty_table(self, tname, keys, filter, projection)
  local db = self.client
  local names, proj = {}, {}
  for i, k in ipairs(keys) do names["#k" .. i] = k; proj[i] = "#k" .. i end
  local params = { TableName = tname, ProjectionExpression = table.concat(proj, ", "),
                   ExpressionAttributeNames = names }
  local res, e
  if filter then
    params.KeyConditionExpression = "#k1 = :p"
    params.ExpressionAttributeValues = { [":p"] = filter }
    params.ConsistentRead = true
    res, e = db:query(params)
  else
    res, e = db:scan(params, { segments = 4 })
  end
  if not res then return nil, leases.wrap(e, "reading keys to clear", { projection = projection, table = tname }) end
  if #res.Items == 0 then return true end
  local dels = {}
  for i, item in ipairs(res.Items) do dels[i] = { DeleteRequest = { Key = item } } end
  local ok, werr = db:batch_write{ [tname] = dels }
  if not ok then return nil, leases.wrap(werr, "clearing", { projection = projection, table = tname }) end
  return true
end

-- backend:clear(projection): empties its read-model tables and positions.
function Backend:clear(projection)
  self:register(projection)
  for name in pairs(projection.tables) do
    local s = self.specs[name]
    local ok, e = empty_table(self, s.table, { s.key }, nil, projection.name)
    if not ok then return nil, e end
  end
  return empty_table(self, self.positions_table, { "projection", "stream" }, projection.name, projection.name)
end

return M
