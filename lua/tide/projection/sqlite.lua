-- tide.projection.sqlite: the read-model backend of the embedded store
-- (docs/projections.md, "Backends"), in the store's own SQLite file.
--
--   local backend = require("tide.projection.sqlite").new{ store = store }  -- a tide.store.sqlite
--   backend:init(projection)                        -- tables if missing, the checkpoint row
--   backend:get_items({{table=, key=}, ...}) -> map["table\0key"] = item (with _tide, _rev) | nil, err
--   backend:get_positions(name, streams) -> {[stream] = version} | nil, err
--   backend:write(name, plan [, checkpoint]) -> true | nil, err
--       checkpoint = {position=, owner=, lease_ms=}: written in the same
--       transaction, only while owner holds the lease (else err.type "LeaseLost")
--   backend:read_item(table, key) -> item (with _tide, _rev) | false | nil, err
--   backend:list_items(table, {limit=, after=, prefix=}) -> items (with _tide, _rev), more | nil, err
--       in key order (bytes), keys after `after`, starting with `prefix`;
--       more is true when items remain past the limit
--   backend:clear(projection) -> true | nil, err    -- its tables, positions and checkpoint position
--   -- the checkpoint row and its lease (used by the embedded-feed runner):
--   backend:checkpoint(name) -> {position=, owner=, lease_until=, error=, updated=, now=} | nil, err
--   backend:acquire(name, owner, lease_ms) -> true | false, row | nil, err
--   backend:release(name, owner) -> true | nil, err
--   backend:set_error(name, owner, text) -> true | nil, err
--   backend:set_position(name, position) -> true | nil, err   -- for replay
--
-- Tables (created next to events and snapshots):
--   read_models(model, key, item, rev, PRIMARY KEY (model, key))
--     item: the whole item as plain JSON (tide.stream.encode_data, format
--     "json": numbers exact, readable with SQLite's JSON functions, e.g.
--     json_extract(item, '$.balance')), with _tide and _rev; rev: a copy
--     of _rev, for conditional writes
--   projection_positions(projection, stream, version, PRIMARY KEY (projection, stream))
--   checkpoints(projection PRIMARY KEY, position, owner, lease_until, error, updated)
--     lease_until and updated: milliseconds since the epoch, by SQLite's
--     clock (one clock for every process on the machine)
--
-- Errors: tide.errors {kind=, type=, message=, projection=, table=, key=,
-- retryable=}; type "Conflict" (a conditional item changed: reset the
-- projector and apply the batch again), "LeaseLost" (another owner holds
-- the projection now: stop), both of kind "conflict"; "InvalidItem" (an
-- item that cannot be encoded; kind "invalid"); "Busy", "StoreError"
-- (kind "store").
--
-- write runs BEGIN IMMEDIATE .. COMMIT without yielding, so it never
-- interleaves with the store's group commit on the same connection.
local core = require "tide.core"
local terror = require "tide.error"

local type, ipairs, pairs, tostring, setmetatable, error = type, ipairs, pairs, tostring, setmetatable, error
-- items as plain JSON (numbers exact; binary or sets: ["av",...]), see tide.stream
local stream_mod = require "tide.stream"
local function encode_value(item) return stream_mod.encode_data(item, "json") end
local function decode_value(text) return stream_mod.decode_data(text, "json") end

local M = {}

local SEP = "\0"
local NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS read_models (
  model TEXT NOT NULL, key TEXT NOT NULL, item TEXT NOT NULL, rev INTEGER NOT NULL,
  PRIMARY KEY (model, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_positions (
  projection TEXT NOT NULL, stream TEXT NOT NULL, version INTEGER NOT NULL,
  PRIMARY KEY (projection, stream)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
  projection TEXT PRIMARY KEY, position INTEGER NOT NULL DEFAULT 0, owner TEXT,
  lease_until INTEGER NOT NULL DEFAULT 0, error TEXT, updated INTEGER);
]]

local SQL = {
  get_item = "SELECT item FROM read_models WHERE model = ?1 AND key = ?2",
  put_item = "INSERT INTO read_models (model, key, item, rev) VALUES (?1, ?2, ?3, ?4)"
    .. " ON CONFLICT (model, key) DO UPDATE SET item = excluded.item, rev = excluded.rev",
  insert_item = "INSERT INTO read_models (model, key, item, rev) VALUES (?1, ?2, ?3, ?4)"
    .. " ON CONFLICT (model, key) DO NOTHING",
  update_item = "UPDATE read_models SET item = ?3, rev = ?4 WHERE model = ?1 AND key = ?2 AND rev = ?5",
  list_items = "SELECT key, item FROM read_models WHERE model = ?1 AND key > ?2 AND key >= ?3 AND key < ?4"
    .. " ORDER BY key LIMIT ?5",
  delete_item = "DELETE FROM read_models WHERE model = ?1 AND key = ?2",
  delete_item_if = "DELETE FROM read_models WHERE model = ?1 AND key = ?2 AND rev = ?3",
  clear_model = "DELETE FROM read_models WHERE model = ?1",
  get_position = "SELECT version FROM projection_positions WHERE projection = ?1 AND stream = ?2",
  put_position = "INSERT INTO projection_positions (projection, stream, version) VALUES (?1, ?2, ?3)"
    .. " ON CONFLICT (projection, stream) DO UPDATE SET version = excluded.version"
    .. " WHERE excluded.version > projection_positions.version",
  clear_positions = "DELETE FROM projection_positions WHERE projection = ?1",
  ensure_checkpoint = "INSERT INTO checkpoints (projection, position, lease_until, updated) VALUES (?1, 0, 0, "
    .. NOW .. ") ON CONFLICT (projection) DO NOTHING",
  get_checkpoint = "SELECT position, owner, lease_until, error, updated, " .. NOW
    .. " FROM checkpoints WHERE projection = ?1",
  acquire = "UPDATE checkpoints SET owner = ?2, lease_until = " .. NOW .. " + ?3"
    .. " WHERE projection = ?1 AND (owner IS NULL OR owner = ?2 OR lease_until < " .. NOW .. ")",
  release = "UPDATE checkpoints SET owner = NULL, lease_until = 0 WHERE projection = ?1 AND owner = ?2",
  commit_checkpoint = "UPDATE checkpoints SET position = ?2, error = NULL, updated = " .. NOW
    .. ", lease_until = " .. NOW .. " + ?4 WHERE projection = ?1 AND owner = ?3",
  set_error = "UPDATE checkpoints SET error = ?3, updated = " .. NOW
    .. " WHERE projection = ?1 AND (owner = ?2 OR ?2 IS NULL)",
  set_position = "UPDATE checkpoints SET position = ?2, error = NULL, updated = " .. NOW .. " WHERE projection = ?1",
}
M.SQL = SQL

-- ---- errors ----------------------------------------------------------------

M.Error = terror.Error

local KIND_OF_TYPE = { Conflict = "conflict", LeaseLost = "conflict", InvalidItem = "invalid" }

local function new_error(etype, message, fields)
  local e = fields or {}
  e.type, e.message = etype, message
  e.kind = KIND_OF_TYPE[etype] or "store"
  e.retryable = etype == "Busy" or etype == "Conflict"
  return terror.new(e)
end
M.new_error = new_error

local function wrap(err, fields)
  if type(err) == "table" then
    fields = fields or {}
    fields.cause = err
    return new_error(err.type or "StoreError", tostring(err.message or err), fields)
  end
  return new_error("StoreError", tostring(err), fields)
end

-- ---- the backend -------------------------------------------------------------

local Backend = {}
Backend.__index = Backend

-- new{store = <tide.store.sqlite>} or new{db = <tide.sqlite db>}
function M.new(opts)
  if type(opts) ~= "table" or (type(opts.store) ~= "table" and opts.db == nil) then
    error("tide.projection.sqlite.new{store=}: store (a tide.store.sqlite) is required", 2)
  end
  local db = opts.db or opts.store.db
  return setmetatable({ db = db, store = opts.store, ready = false }, Backend)
end

function Backend:ensure_schema()
  if self.ready then return true end
  local db = self.db
  local ok, err = db:begin()
  if ok then
    ok, err = db:exec(SCHEMA)
    if ok then ok, err = db:commit() end
  end
  if not ok then
    db:rollback()
    return nil, wrap(err)
  end
  self.ready = true
  return true
end

function Backend:init(projection)
  local name = type(projection) == "table" and projection.name or projection
  if type(name) ~= "string" then error("backend:init(projection): projection or its name", 2) end
  local ok, err = self:ensure_schema()
  if not ok then err.projection = name; return nil, err end
  local rows, qerr = self.db:query(SQL.ensure_checkpoint, name)
  if not rows then return nil, wrap(qerr, { projection = name }) end
  return true
end

local function decode_item(text, tname, key)
  local item, err = decode_value(text)
  if type(item) ~= "table" then
    return nil, new_error("StoreError", "stored item is not readable: " .. tostring(err), { table = tname, key = key })
  end
  return item
end

function Backend:get_items(requests)
  local db, out = self.db, {}
  for _, r in ipairs(requests) do
    local rows, err = db:query(SQL.get_item, r.table, r.key)
    if not rows then return nil, wrap(err, { table = r.table, key = r.key }) end
    if rows[1] then
      local item, derr = decode_item(rows[1][1], r.table, r.key)
      if not item then return nil, derr end
      out[r.table .. SEP .. r.key] = item
    end
  end
  return out
end

function Backend:get_positions(name, streams)
  local db, out = self.db, {}
  for _, s in ipairs(streams) do
    local rows, err = db:query(SQL.get_position, name, s)
    if not rows then return nil, wrap(err, { projection = name, stream = s }) end
    if rows[1] then out[s] = rows[1][1] end
  end
  return out
end

-- Applies plan (and the checkpoint) inside the open transaction; returns
-- true | nil, err.
local function apply_plan(db, name, plan, checkpoint)
  for _, it in ipairs(plan.items) do
    local tname, key, item = it.table, it.key, it.item
    local fields = { projection = name, table = tname, key = key }
    local rows, changes, err
    if item then
      local text, eerr = encode_value(item)
      if not text then
        return nil, new_error("InvalidItem", "the item cannot be stored: " .. tostring(eerr), fields)
      end
      local rev = item._rev
      if it.mode == "conditional" then
        if it.expected_rev then
          rows, changes = db:query(SQL.update_item, tname, key, text, rev, it.expected_rev)
        else
          rows, changes = db:query(SQL.insert_item, tname, key, text, rev)
        end
        if rows and changes ~= 1 then
          return nil, new_error("Conflict", ("the item changed since it was read (expected revision %s)")
            :format(tostring(it.expected_rev or "none: absent")), fields)
        end
      else
        rows, changes = db:query(SQL.put_item, tname, key, text, rev)
      end
    elseif it.mode == "conditional" and it.expected_rev then
      rows, changes = db:query(SQL.delete_item_if, tname, key, it.expected_rev)
      if rows and changes ~= 1 then
        return nil, new_error("Conflict", "the item changed since it was read (delete)", fields)
      end
    else
      rows, changes = db:query(SQL.delete_item, tname, key)
    end
    if not rows then
      err = changes
      return nil, wrap(err, fields)
    end
  end
  for stream, v in pairs(plan.positions) do
    local rows, err = db:query(SQL.put_position, name, stream, v)
    if not rows then return nil, wrap(err, { projection = name, stream = stream }) end
  end
  if checkpoint then
    local rows, changes = db:query(SQL.commit_checkpoint, name, checkpoint.position, checkpoint.owner,
                                   checkpoint.lease_ms or 30000)
    if not rows then return nil, wrap(changes, { projection = name }) end
    if changes ~= 1 then
      return nil, new_error("LeaseLost", ("owner %s no longer holds the lease"):format(tostring(checkpoint.owner)),
        { projection = name })
    end
  end
  return true
end

function Backend:write(name, plan, checkpoint)
  if type(name) ~= "string" or type(plan) ~= "table" then
    error("backend:write(name, plan [, checkpoint])", 2)
  end
  if checkpoint ~= nil and (type(checkpoint) ~= "table" or type(checkpoint.position) ~= "number"
                            or type(checkpoint.owner) ~= "string") then
    error("backend:write: checkpoint must be {position=, owner=, lease_ms=}", 2)
  end
  local db = self.db
  local ok, err = db:begin()
  if not ok then return nil, wrap(err, { projection = name }) end
  ok, err = apply_plan(db, name, plan, checkpoint)
  if ok then
    ok, err = db:commit()
    if ok then return true end
    err = wrap(err, { projection = name })
  end
  db:rollback()
  return nil, err
end

function Backend:read_item(tname, key)
  if type(tname) ~= "string" or type(key) ~= "string" then error("backend:read_item(table, key): strings", 2) end
  local ok, serr = self:ensure_schema()
  if not ok then return nil, serr end
  local rows, err = self.db:query(SQL.get_item, tname, key)
  if not rows then return nil, wrap(err, { table = tname, key = key }) end
  if not rows[1] then return false end
  return decode_item(rows[1][1], tname, key)
end

-- Keys are valid UTF-8 (tide.input), which never holds the byte 0xFF:
-- every key starting with prefix sorts below prefix .. "\255".
function Backend:list_items(tname, opts)
  opts = opts or {}
  if type(tname) ~= "string" then error("backend:list_items(table, opts): table must be a string", 2) end
  local limit = opts.limit or 100
  local ok, serr = self:ensure_schema()
  if not ok then return nil, serr end
  local prefix = opts.prefix or ""
  local rows, err = self.db:query(SQL.list_items, tname, opts.after or "", prefix, prefix .. "\255", limit + 1)
  if not rows then return nil, wrap(err, { table = tname }) end
  local items = {}
  for i = 1, math.min(#rows, limit) do
    local item, derr = decode_item(rows[i][2], tname, rows[i][1])
    if not item then return nil, derr end
    items[i] = item
  end
  return items, #rows > limit
end

function Backend:clear(projection)
  local name = projection.name
  local db = self.db
  local ok, err = self:ensure_schema()
  if not ok then return nil, err end
  ok, err = db:begin()
  if not ok then return nil, wrap(err, { projection = name }) end
  local rows = true
  for _, tname in ipairs(projection:table_names()) do
    rows, err = db:query(SQL.clear_model, tname)
    if not rows then break end
  end
  if rows then rows, err = db:query(SQL.clear_positions, name) end
  if rows then rows, err = db:query(SQL.set_position, name, 0) end
  if rows then
    ok, err = db:commit()
    if ok then return true end
  end
  db:rollback()
  return nil, wrap(err, { projection = name })
end

function Backend:checkpoint(name)
  local rows, err = self.db:query(SQL.get_checkpoint, name)
  if not rows then return nil, wrap(err, { projection = name }) end
  local r = rows[1]
  if not r then return false end
  return { projection = name, position = r[1], owner = r[2], lease_until = r[3], error = r[4], updated = r[5],
           now = r[6] }
end

function Backend:acquire(name, owner, lease_ms)
  local rows, changes = self.db:query(SQL.acquire, name, owner, lease_ms)
  if not rows then return nil, wrap(changes, { projection = name }) end
  if changes == 1 then return true end
  local cp, err = self:checkpoint(name)
  if cp == nil then return nil, err end
  return false, cp
end

function Backend:release(name, owner)
  local rows, err = self.db:query(SQL.release, name, owner)
  if not rows then return nil, wrap(err, { projection = name }) end
  return true
end

function Backend:set_error(name, owner, text)
  local rows, err = self.db:query(SQL.set_error, name, owner, text)
  if not rows then return nil, wrap(err, { projection = name }) end
  return true
end

function Backend:set_position(name, position)
  local rows, err = self.db:query(SQL.set_position, name, position)
  if not rows then return nil, wrap(err, { projection = name }) end
  return true
end

return M
