-- tide.projection.parking: events an operator set aside for a projection
-- (docs/projections.md, "An event a projection cannot apply").
--
-- A projection never skips an event silently: a handler that fails on an
-- event stops the projection at that event and retries it. When the event
-- itself is the problem, `tide park NAME STREAM VERSION` records it here;
-- the projector (tide.projector) then passes over it (its stream's
-- position moves past it, nothing of it is applied) and the projection
-- goes on. Parked events stay listed (`tide status`, `tide parked NAME`)
-- until `tide unpark`; `tide replay NAME` after a fix rebuilds the read
-- models with every unparked event applied in order.
--
--   local parking = require("tide.projection.parking").for_app(app)   -- cached per app
--   parking:init()                                        -> true | nil, err
--   parking:park(projection, stream, version, {type=, error=}) -> true | nil, err
--   parking:unpark(projection, stream, version)           -> true | false (was not parked) | nil, err
--   parking:list(projection)    -> { {stream=, version=, type=, error=, parked_at=}... } | nil, err
--   parking:set(projection)     -> { ["stream\0version"] = true } | nil, err
--
-- Storage: the embedded store's file (table parked_events), or the
-- DynamoDB table <prefix>parked (key: projection, event = "<stream>\0<version>").
local clock = require "tide.clock"
local terror = require "tide.error"

local M = {}

local SEP = "\0"
M.key = function(stream, version) return stream .. SEP .. tostring(version) end

local function store_error(err, fields)
  fields = fields or {}
  fields.kind, fields.message, fields.cause = "store", "parked events: " .. tostring(err), err
  return terror.new(fields)
end

------------------------------------------------------------------------
-- The embedded store

local Sqlite = {}
Sqlite.__index = Sqlite

local SQLITE_SCHEMA = [[
CREATE TABLE IF NOT EXISTS parked_events (
  projection TEXT NOT NULL, stream TEXT NOT NULL, version INTEGER NOT NULL,
  type TEXT, error TEXT, parked_at INTEGER NOT NULL,
  PRIMARY KEY (projection, stream, version)) WITHOUT ROWID;
]]

function Sqlite:init()
  if self.ready then return true end
  local ok, err = self.db:exec(SQLITE_SCHEMA)
  if not ok then return nil, store_error(err) end
  self.ready = true
  return true
end

function Sqlite:park(projection, stream, version, fields)
  local ok, err = self:init()
  if not ok then return nil, err end
  local rows, qerr = self.db:query("INSERT INTO parked_events (projection, stream, version, type, error, parked_at)"
    .. " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (projection, stream, version) DO NOTHING",
    projection, stream, version, fields and fields.type, fields and fields.error, clock.wall_ms())
  if not rows then return nil, store_error(qerr, { projection = projection, stream = stream }) end
  return true
end

function Sqlite:unpark(projection, stream, version)
  local ok, err = self:init()
  if not ok then return nil, err end
  local rows, changes = self.db:query("DELETE FROM parked_events WHERE projection = ?1 AND stream = ?2 AND version = ?3",
    projection, stream, version)
  if not rows then return nil, store_error(changes, { projection = projection, stream = stream }) end
  return changes > 0
end

function Sqlite:list(projection)
  local ok, err = self:init()
  if not ok then return nil, err end
  local rows, qerr = self.db:query("SELECT stream, version, type, error, parked_at FROM parked_events"
    .. " WHERE projection = ?1 ORDER BY parked_at, stream, version", projection)
  if not rows then return nil, store_error(qerr, { projection = projection }) end
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { stream = r[1], version = r[2], type = r[3], error = r[4], parked_at = r[5] }
  end
  return out
end

------------------------------------------------------------------------
-- DynamoDB

local Dynamo = {}
Dynamo.__index = Dynamo

function Dynamo:init()
  if self.ready then return true end
  local db = self.client
  local _, cerr = db:create_table_if_missing{
    TableName = self.table, BillingMode = "PAY_PER_REQUEST",
    AttributeDefinitions = { { AttributeName = "projection", AttributeType = "S" },
                             { AttributeName = "event", AttributeType = "S" } },
    KeySchema = { { AttributeName = "projection", KeyType = "HASH" },
                  { AttributeName = "event", KeyType = "RANGE" } },
  }
  if cerr and cerr.type ~= "ResourceInUseException" then return nil, store_error(cerr, { table = self.table }) end
  local desc, werr = db:wait_for_table(self.table)
  if not desc then return nil, store_error(werr, { table = self.table }) end
  self.ready = true
  return true
end

function Dynamo:park(projection, stream, version, fields)
  local ok, err = self:init()
  if not ok then return nil, err end
  local _, perr = self.client:call("PutItem", { TableName = self.table, Item = {
    projection = projection, event = M.key(stream, version), stream = stream, version = version,
    type = fields and fields.type, error = fields and fields.error, parked_at = clock.wall_ms() } })
  if perr then return nil, store_error(perr, { projection = projection, stream = stream, table = self.table }) end
  return true
end

function Dynamo:unpark(projection, stream, version)
  local ok, err = self:init()
  if not ok then return nil, err end
  local res, derr = self.client:call("DeleteItem", { TableName = self.table, ReturnValues = "ALL_OLD",
    Key = { projection = projection, event = M.key(stream, version) } })
  if not res then return nil, store_error(derr, { projection = projection, stream = stream, table = self.table }) end
  return res.Attributes ~= nil
end

function Dynamo:list(projection)
  local ok, err = self:init()
  if not ok then return nil, err end
  -- "projection" is one of DynamoDB's reserved words
  local res, qerr = self.client:query{ TableName = self.table, ConsistentRead = true,
    KeyConditionExpression = "#p = :p", ExpressionAttributeNames = { ["#p"] = "projection" },
    ExpressionAttributeValues = { [":p"] = projection } }
  if not res then return nil, store_error(qerr, { projection = projection, table = self.table }) end
  local out = {}
  for i, it in ipairs(res.Items) do
    out[i] = { stream = it.stream, version = tonumber(tostring(it.version)), type = it.type, error = it.error,
               parked_at = tonumber(tostring(it.parked_at)) }
  end
  table.sort(out, function(a, b) return (a.parked_at or 0) < (b.parked_at or 0) end)
  return out
end

------------------------------------------------------------------------

local function set(self, projection)
  local list, err = self:list(projection)
  if not list then return nil, err end
  local s = {}
  for _, p in ipairs(list) do s[M.key(p.stream, p.version)] = true end
  return s
end
Sqlite.set, Dynamo.set = set, set

-- parking.sqlite(db), parking.dynamodb(client, table_prefix)
function M.sqlite(db) return setmetatable({ db = db }, Sqlite) end
function M.dynamodb(client, prefix)
  return setmetatable({ client = client, table = (prefix or "tide_") .. "parked" }, Dynamo)
end

-- parking.for_app(app) -> the parking of the app's store (cached)
function M.for_app(app)
  if app.parking then return app.parking end
  if app.cfg.store == "dynamodb" then
    app.parking = M.dynamodb(app.store.client, app.cfg.dynamodb.table_prefix)
  else
    app.parking = M.sqlite(app.store.db)
  end
  return app.parking
end

return M
