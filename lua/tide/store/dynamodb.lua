-- tide.store.dynamodb: the event store on DynamoDB.
--
-- Implements the store interface of docs/data-model.md on two tables
-- (layout, reasons and costs: docs/dynamodb-layout.md):
--
--   <prefix>events     stream (S, partition) + version (N, sort),
--                      type (S), data (S, JSON text), meta (S, JSON text),
--                      last (N, on the last event of each append only: how
--                      many events that append wrote);
--                      DynamoDB Streams view NEW_IMAGE (the projections' feed)
--   <prefix>snapshots  stream (S, partition), version (N), state (S), meta (S)
--
--   local store = require("tide.store.dynamodb").new{client = db, table_prefix = "tide_"}
--   store:init()                                   -> true | nil, err
--   store:describe()                               -> {events=, snapshots=} | nil, err
--   store:append(stream, expected_version, events) -> last_version | nil, err
--   store:load(stream, after_version)              -> events | nil, err
--   store:get_snapshot(stream)                     -> snapshot | false | nil, err
--   store:get_snapshots(streams)                   -> {[stream] = snapshot | false} | nil, err
--   store:put_snapshot(stream, version, state_text, meta_text) -> true | nil, err
--   store:list_streams(aggregate, {limit=, after=}) -> streams, more, cost | nil, err
--   store:close()
--
-- Errors are `nil, err`, a tide.error {kind=, type=, message=, stream=,
-- table=, cause=} whose tostring names the stream, the table and the AWS
-- error type.
-- err.type is the store's own ("Conflict", "TooManyEvents", "EventTooLarge",
-- "AppendTooLarge", "SnapshotTooLarge", "InvalidValue") or, for any other
-- failure, the client's error type ("TransportError",
-- "ResourceNotFoundException", ...); err.cause is the client's error.
-- A Conflict may carry err.found: the events another writer stored from
-- expected_version+1 on, as load returns them (from the refused write's
-- answer: no read), and err.found_all = true when the stream ends there.
-- Each found event has `last` = the number of events of the append it
-- came from when it is that append's last event (else nil): found events
-- ending on one end at a boundary between appends, and the stream may
-- well end there too (the caller may take them as all it missed, and let
-- the next conditional write tell it otherwise).
-- Wrong argument types raise.
--
-- The client belongs to the caller: it is used from whatever coroutine calls
-- the store (in the tide process, a sched thread) and never closed here.

local core = require "tide.core"
local terror = require "tide.error"

local limits = core.limits
local type, tostring, tonumber, setmetatable, ipairs, error =
  type, tostring, tonumber, setmetatable, ipairs, error
local floor, format = math.floor, string.format

local M = {}

-- An event item's size without encoding it (an upper bound: the names and
-- the strings' bytes exactly, the version, a number, at most 21 bytes), or
-- nil when a string is not UTF-8 (then core.item_size says why). An item
-- whose bound is under the limit is under it; only the others are
-- measured exactly (core.item_size encodes the whole item: a tenth of a
-- command's client CPU when it was done for every event).
local utf8_check, utf8_at = nil, nil
local function event_size_bound(stream, etype, data, meta)
  if not utf8_check then
    local tffi = require "tide.ffi"
    utf8_check, utf8_at = tffi.lib.tide_ffi_utf8_check, require("ffi").new("double[1]")
  end
  if utf8_check(stream, #stream, utf8_at) ~= 0 or utf8_check(etype, #etype, utf8_at) ~= 0
    or (data ~= nil and utf8_check(data, #data, utf8_at) ~= 0)
    or (meta ~= nil and utf8_check(meta, #meta, utf8_at) ~= 0) then
    return nil
  end
  -- "stream" + "version" + "type" [+ "data"] [+ "meta"] + "last" (a number
  -- below 101, on an append's last event)
  return 6 + #stream + 7 + 21 + 4 + #etype + (data and 4 + #data or 0) + (meta and 4 + #meta or 0) + 4 + 21
end

-- At most this many events per append: one TransactWriteItems.
M.MAX_EVENTS = limits.transact_items

------------------------------------------------------------------------
-- Errors

M.Error = terror.Error
M.is_error = terror.is

-- The kinds of the store's own types.
local KIND_OF_TYPE = {
  Conflict = "conflict", TooManyEvents = "invalid", EventTooLarge = "invalid", AppendTooLarge = "invalid",
  SnapshotTooLarge = "invalid", InvalidValue = "invalid",
}

local function new_error(etype, message, stream, tname, cause)
  return terror.new{ kind = KIND_OF_TYPE[etype] or (type(cause) == "table" and cause.kind) or "store",
                     type = etype, message = message, stream = stream, table = tname, cause = cause,
                     retryable = type(cause) == "table" and cause.retryable or nil }
end

-- A client error passed through: its type, its message, our stream.
local function wrap(cause, stream, tname, what)
  return terror.wrap(cause, what, { type = type(cause) == "table" and cause.type or "StoreError", stream = stream,
                                    table = tname or (type(cause) == "table" and cause.table) or nil })
end

------------------------------------------------------------------------
-- Construction

local Store = {}
Store.__index = Store

-- M.new{client=, table_prefix="tide_", check_expected=false, wait_timeout=120} -> store
--   check_expected: also verify that version expected_version exists (a
--   ConditionCheck in a TransactWriteItems), so an expected version above
--   the stream's head is a Conflict instead of a gap. Off by default: it
--   turns every append after the first into a transaction (see
--   docs/dynamodb-layout.md for the cost) and at most 99 events fit.
function M.new(opts)
  if type(opts) ~= "table" then error("tide.store.dynamodb.new: opts must be a table", 2) end
  local client = opts.client
  if type(client) ~= "table" or type(client.put_item) ~= "function" then
    error("tide.store.dynamodb.new: opts.client must be a tide.dynamodb client", 2)
  end
  local prefix = opts.table_prefix
  if prefix == nil then prefix = "tide_" end
  if type(prefix) ~= "string" then error("tide.store.dynamodb.new: opts.table_prefix must be a string", 2) end
  return setmetatable({
    client = client,
    prefix = prefix,
    events_table = prefix .. "events",
    snapshots_table = prefix .. "snapshots",
    wait_timeout = opts.wait_timeout or 120,
    check_expected = opts.check_expected and true or false,
  }, Store)
end

------------------------------------------------------------------------
-- Tables

local EVENTS_KEYS = {
  { AttributeName = "stream", KeyType = "HASH" },
  { AttributeName = "version", KeyType = "RANGE" },
}
local SNAPSHOTS_KEYS = {
  { AttributeName = "stream", KeyType = "HASH" },
}

local function events_table_params(name)
  return {
    TableName = name,
    AttributeDefinitions = { { AttributeName = "stream", AttributeType = "S" },
                             { AttributeName = "version", AttributeType = "N" } },
    KeySchema = EVENTS_KEYS,
    BillingMode = "PAY_PER_REQUEST",
    StreamSpecification = { StreamEnabled = true, StreamViewType = "NEW_IMAGE" },
  }
end

local function snapshots_table_params(name)
  return {
    TableName = name,
    AttributeDefinitions = { { AttributeName = "stream", AttributeType = "S" } },
    KeySchema = SNAPSHOTS_KEYS,
    BillingMode = "PAY_PER_REQUEST",
  }
end

local function same_keys(got, want)
  if type(got) ~= "table" or #got ~= #want then return false end
  for _, k in ipairs(want) do
    local found = false
    for _, g in ipairs(got) do
      if g.AttributeName == k.AttributeName and g.KeyType == k.KeyType then found = true end
    end
    if not found then return false end
  end
  return true
end

local function describe_keys(keys)
  local parts = {}
  for _, k in ipairs(keys or {}) do parts[#parts + 1] = tostring(k.AttributeName) .. " " .. tostring(k.KeyType) end
  return "(" .. table.concat(parts, ", ") .. ")"
end

-- Creates one table unless it exists, waits until it is ACTIVE and checks
-- that an existing table has the key schema the store needs.
function Store:ensure_table(params)
  local db, name = self.client, params.TableName
  local _, err = db:create_table_if_missing(params)
  if err and err.type ~= "ResourceInUseException" then
    return nil, wrap(err, nil, name, "creating table")
  end
  local desc, werr = db:wait_for_table(name, self.wait_timeout)
  if not desc then return nil, wrap(werr, nil, name, "waiting for the table to become ACTIVE") end
  if not same_keys(desc.KeySchema, params.KeySchema) then
    return nil, new_error("TableMismatch",
      format("table exists with key schema %s; the store needs %s",
             describe_keys(desc.KeySchema), describe_keys(params.KeySchema)), nil, name)
  end
  return desc
end

-- store:init() -> true | nil, err
-- Creates <prefix>events and <prefix>snapshots when missing (a table that
-- already exists is kept: ResourceInUseException), waits until both are
-- ACTIVE. An existing events table without a stream gets one (NEW_IMAGE):
-- projections read it. Idempotent, and safe to run from several processes.
function Store:init()
  local desc, err = self:ensure_table(events_table_params(self.events_table))
  if not desc then return nil, err end
  local spec = desc.StreamSpecification
  if not (spec and spec.StreamEnabled) then
    local _, uerr = self.client:update_table{
      TableName = self.events_table,
      StreamSpecification = { StreamEnabled = true, StreamViewType = "NEW_IMAGE" },
    }
    if uerr then return nil, wrap(uerr, nil, self.events_table, "enabling the table's stream") end
    local _, werr = self.client:wait_for_table(self.events_table, self.wait_timeout)
    if werr then return nil, wrap(werr, nil, self.events_table) end
  elseif spec.StreamViewType ~= "NEW_IMAGE" and spec.StreamViewType ~= "NEW_AND_OLD_IMAGES" then
    return nil, new_error("TableMismatch",
      "the table's stream has view type " .. tostring(spec.StreamViewType)
        .. "; projections need NEW_IMAGE (or NEW_AND_OLD_IMAGES)", nil, self.events_table)
  end
  local sdesc, serr = self:ensure_table(snapshots_table_params(self.snapshots_table))
  if not sdesc then return nil, serr end
  return true
end

-- store:describe() -> {events = {table=, arn=, stream_arn=, status=},
--                      snapshots = {table=, arn=, status=}} | nil, err
-- stream_arn is the events table's latest stream (the projections' feed).
function Store:describe()
  local res, err = self.client:describe_table{ TableName = self.events_table }
  if not res then return nil, wrap(err, nil, self.events_table) end
  local t = res.Table
  local sres, serr = self.client:describe_table{ TableName = self.snapshots_table }
  if not sres then return nil, wrap(serr, nil, self.snapshots_table) end
  local s = sres.Table
  return {
    events = { table = self.events_table, arn = t.TableArn, stream_arn = t.LatestStreamArn,
               status = t.TableStatus },
    snapshots = { table = self.snapshots_table, arn = s.TableArn, status = s.TableStatus },
  }
end

------------------------------------------------------------------------
-- Arguments

local function check_stream(fname, stream)
  if type(stream) ~= "string" or stream == "" then
    error(fname .. ": stream must be a non-empty string", 3)
  end
end

local function check_version(fname, what, v)
  if type(v) ~= "number" or v < 0 or v ~= floor(v) or v >= 2 ^ 53 then
    error(fname .. ": " .. what .. " must be a non-negative integer", 3)
  end
end

------------------------------------------------------------------------
-- Appends

local COND_NEW = "attribute_not_exists(#v)"
local NAMES_V = { ["#v"] = "version" }

-- Did the events table's item (stream, version) come from our write?
-- M._is_own_write(store, stream, version, meta_text) -> true | false | nil, err
--   true:  the stored event's meta text is exactly ours (the meta holds the
--          command id and a timestamp, so no other writer produces it);
--   false: another writer's event is there, or no event at all, or
--          meta_text is nil (nothing to recognise our write by);
--   nil, err: the read failed.
-- A consistent GetItem: it sees every write DynamoDB acknowledged, ours
-- included when an earlier attempt was applied and its answer lost.
-- Used by append when the client marks a failure `ambiguous`; exposed
-- (underscore: internal) so the specs exercise it against a real table.
function M._is_own_write(store, stream, version, meta_text)
  if meta_text == nil then return false end
  local res, err = store.client:get_item{
    TableName = store.events_table,
    Key = { stream = stream, version = version },
    ConsistentRead = true, ReturnConsumedCapacity = "TOTAL",
    ProjectionExpression = "#m",
    ExpressionAttributeNames = { ["#m"] = "meta" },
  }
  if not res then return nil, err end
  local item = res.Item
  if not item then return false end
  return item.meta == meta_text
end

-- A conditional write failed on its condition, or the outcome is unknown:
-- decide between "it was ours after all" (success) and Conflict.
local function conflict_or_own(self, stream, expected, events, cause, msg)
  local first = expected + 1
  if cause.ambiguous then
    local own, rerr = M._is_own_write(self, stream, first, events[1].meta)
    if own then return expected + #events end
    if own == nil then
      return nil, wrap(rerr, stream, self.events_table,
        "the write's outcome is unknown (an attempt was lost in transit) and reading it back failed")
    end
  end
  return nil, new_error("Conflict", msg, stream, self.events_table, cause)
end

local function has_reason(reasons, code)
  for _, r in ipairs(reasons or {}) do
    if r.Code == code then return true end
  end
  return false
end

-- Only TransactionConflict (and None) among the reasons: another
-- transaction was writing the same items when ours ran.
local function only_transaction_conflict(reasons)
  if type(reasons) ~= "table" or #reasons == 0 then return false end
  local any = false
  for _, r in ipairs(reasons) do
    local c = r.Code or "None"
    if c == "TransactionConflict" then any = true
    elseif c ~= "None" then return false end
  end
  return any
end

-- An error whose outcome is unknown: the request may have been applied
-- (transport failure or a 5xx after the last attempt).
local function outcome_unknown(cause)
  return cause.type == "TransportError" or cause.type == "MalformedResponse"
    or (cause.status or 0) >= 500
end

-- A stored event item as load returns it (last: on an append's last
-- event, when the item was read whole: a refused write's answer).
local function event_of(item)
  return { version = tonumber(tostring(item.version)), type = item.type, data = item.data, meta = item.meta,
           last = item.last ~= nil and tonumber(tostring(item.last)) or nil }
end

-- A snapshot item as get_snapshot returns it.
local function snapshot_of(item)
  return { version = tonumber(tostring(item.version)), state = item.state, meta = item.meta }
end

-- What a refused append learnt of the stream: the events another writer
-- stored at the versions it tried (each Put asks for the item its
-- condition found), from expected+1 on, and whether the stream is known to
-- end there (a later Put of the same transaction found nothing). Lets the
-- repository catch up without reading the stream again.
local function found_events(expected, cause, checked)
  local out = {}
  if cause.item then
    out[1] = event_of(cause.item)
    return out, false
  end
  local reasons = cause.reasons
  if type(reasons) ~= "table" then return out, false end
  for i = (checked and 2 or 1), #reasons do
    local r = reasons[i]
    if r.Code == "ConditionalCheckFailed" and type(r.Item) == "table" then
      out[#out + 1] = event_of(r.Item)
    else
      return out, #out > 0 and (r.Code or "None") == "None"
    end
  end
  return out, false
end

local function fail_append(self, stream, expected, events, cause, checked)
  local n, first = #events, expected + 1
  local what = n == 1 and ("version " .. first)
    or format("versions %d..%d", first, expected + n)
  local t = cause.type
  if checked and t == "TransactionCanceledException" and type(cause.reasons) == "table"
    and cause.reasons[1] and cause.reasons[1].Code == "ConditionalCheckFailed" then
    -- The expected version itself is missing: the stream is behind the
    -- caller's view (never ours: our own write would have had it).
    return nil, new_error("Conflict",
      format("expected version %d, but the stream has no event %d (the expected version is too high)",
             expected, expected), stream, self.events_table, cause)
  end
  if t == "ConditionalCheckFailedException"
    or (t == "TransactionCanceledException" and has_reason(cause.reasons, "ConditionalCheckFailed")) then
    local res, err = conflict_or_own(self, stream, expected, events, cause,
      format("expected version %d, but %s already exists", expected,
             n == 1 and ("version " .. first) or ("one of " .. what)))
    if err and err.type == "Conflict" then
      local found, complete = found_events(expected, cause, checked)
      if found[1] and found[1].version == first then err.found, err.found_all = found, complete end
    end
    return res, err
  end
  -- Another writer's transaction on the same versions was in progress
  -- (PutItem: TransactionConflictException; a transaction: cancelled with
  -- TransactionConflict reasons once the client's retries ran out). One of
  -- the two wins: ours lost or must be retried after a reload, which is
  -- what Conflict tells the repository.
  if t == "TransactionConflictException"
    or (t == "TransactionCanceledException" and only_transaction_conflict(cause.reasons)) then
    return conflict_or_own(self, stream, expected, events, cause,
      format("another writer was writing %s at the same time", what))
  end
  if t == "ItemTooLarge" then
    return nil, new_error("EventTooLarge",
      format("event at version %d: %s", first, tostring(cause.message)), stream, self.events_table, cause)
  end
  if outcome_unknown(cause) then
    -- The write may have been applied: look before reporting a failure.
    local own = M._is_own_write(self, stream, first, events[1].meta)
    if own then return expected + n end
  end
  return nil, wrap(cause, stream, self.events_table, "appending " .. what)
end

-- store:append(stream, expected_version, events) -> last_version | nil, err
-- events: list of {type=, data=<json text>, meta=<json text>}; they get
-- versions expected_version+1 .. expected_version+#events, all or none.
-- One event: PutItem; 2..100: one TransactWriteItems; each Put carries
-- attribute_not_exists(version): the optimistic-concurrency check. The
-- last event's item also gets last = #events (a refused writer that finds
-- it learns where this append ended: see err.found above).
-- An empty list writes nothing and returns expected_version. A nil data
-- or meta is stored as a missing attribute (and loads as nil), as the
-- SQLite store keeps NULL; the repository always gives both.
function Store:append(stream, expected_version, events)
  check_stream("append", stream)
  check_version("append", "expected_version", expected_version)
  if type(events) ~= "table" then error("append: events must be a list", 2) end
  local n = #events
  for i = 1, n do
    local e = events[i]
    if type(e) ~= "table" then error("append: events[" .. i .. "] must be a table", 2) end
    if type(e.type) ~= "string" or e.type == "" then
      error("append: events[" .. i .. "].type must be a non-empty string", 2)
    end
    if e.data ~= nil and type(e.data) ~= "string" then
      error("append: events[" .. i .. "].data must be a string (JSON text) or nil", 2)
    end
    if e.meta ~= nil and type(e.meta) ~= "string" then
      error("append: events[" .. i .. "].meta must be a string (JSON text) or nil", 2)
    end
  end
  if n == 0 then return expected_version end
  local tname = self.events_table
  local check = self.check_expected and expected_version > 0
  local max = check and M.MAX_EVENTS - 1 or M.MAX_EVENTS
  if n > max then
    return nil, new_error("TooManyEvents",
      format("%d events in one append; DynamoDB writes at most %d atomically (TransactWriteItems)%s",
             n, max, check and ", with the check of the expected version" or ""), stream, tname)
  end

  -- Build and size-check every item before anything is sent.
  local items, total, bounded = {}, 0, false
  for i = 1, n do
    local e = events[i]
    local version = expected_version + i
    local item = { stream = stream, version = version, type = e.type, data = e.data, meta = e.meta,
                   last = i == n and n or nil }
    local size, serr = event_size_bound(stream, e.type, e.data, e.meta), nil
    if size and size <= limits.item_bytes then
      bounded = true
    else
      size, serr = core.item_size(item)
    end
    if not size then
      return nil, new_error("InvalidValue", format("event at version %d: %s", version, tostring(serr)),
                            stream, tname)
    end
    if size > limits.item_bytes then
      return nil, new_error("EventTooLarge",
        format("event at version %d (%s) is %d bytes, over DynamoDB's %d-byte item limit",
               version, e.type, size, limits.item_bytes), stream, tname)
    end
    total = total + size
    items[i] = item
  end
  if n > 1 and total > limits.transact_bytes and bounded then
    -- over by the bounds: measure exactly
    total = 0
    for i = 1, n do total = total + assert(core.item_size(items[i])) end
  end
  if n > 1 and total > limits.transact_bytes then
    return nil, new_error("AppendTooLarge",
      format("%d events of %d bytes in all, over TransactWriteItems' %d-byte limit",
             n, total, limits.transact_bytes), stream, tname)
  end

  local res, err
  if n == 1 and not check then
    res, err = self.client:put_item{
      TableName = tname, Item = items[1],
      ConditionExpression = COND_NEW, ExpressionAttributeNames = NAMES_V, ReturnConsumedCapacity = "TOTAL",
      ReturnValuesOnConditionCheckFailure = "ALL_OLD",
    }
  else
    local actions = {}
    if check then
      actions[1] = { ConditionCheck = { TableName = tname,
                                        Key = { stream = stream, version = expected_version },
                                        ConditionExpression = "attribute_exists(#v)",
                                        ExpressionAttributeNames = NAMES_V } }
    end
    for i = 1, n do
      actions[#actions + 1] = { Put = { TableName = tname, Item = items[i],
                                        ConditionExpression = COND_NEW, ExpressionAttributeNames = NAMES_V,
                                        ReturnValuesOnConditionCheckFailure = "ALL_OLD" } }
    end
    res, err = self.client:transact_write{ TransactItems = actions, ReturnConsumedCapacity = "TOTAL" }
  end
  if not res then return fail_append(self, stream, expected_version, events, err, check) end
  return expected_version + n
end

------------------------------------------------------------------------
-- Loads

-- store:load(stream, after_version) -> events | nil, err
-- Every event with version > after_version (default 0), ascending:
-- {version=, type=, data=, meta=}. A consistent Query, every page.
function Store:load(stream, after_version)
  check_stream("load", stream)
  after_version = after_version or 0
  check_version("load", "after_version", after_version)
  local out = {}
  for page, err in self.client:query_pages{
    TableName = self.events_table,
    KeyConditionExpression = "#s = :s AND #v > :v",
    ExpressionAttributeNames = { ["#s"] = "stream", ["#v"] = "version",
                                 ["#t"] = "type", ["#d"] = "data", ["#m"] = "meta" },
    ExpressionAttributeValues = { [":s"] = stream, [":v"] = after_version },
    ProjectionExpression = "#v, #t, #d, #m",
    ConsistentRead = true, ReturnConsumedCapacity = "TOTAL",
  } do
    if not page then return nil, wrap(err, stream, self.events_table, "loading events") end
    for _, item in ipairs(page.Items or {}) do
      out[#out + 1] = event_of(item)
    end
  end
  return out
end

------------------------------------------------------------------------
-- Snapshots

-- store:get_snapshot(stream) -> {version=, state=, meta=} | false | nil, err
function Store:get_snapshot(stream)
  check_stream("get_snapshot", stream)
  local res, err = self.client:get_item{
    TableName = self.snapshots_table, Key = { stream = stream }, ConsistentRead = true, ReturnConsumedCapacity = "TOTAL",
  }
  if not res then return nil, wrap(err, stream, self.snapshots_table, "reading the snapshot") end
  local item = res.Item
  if not item then return false end
  return snapshot_of(item)
end

-- store:get_snapshots(streams) -> {[stream] = snapshot | false} | nil, err
-- The snapshots of several streams (as get_snapshot's), in one consistent
-- BatchGetItem per 100 streams (the repository's loads that start
-- together share it). Where the credentials may not BatchGetItem (an IAM
-- policy written for an older tide: AccessDeniedException), one GetItem
-- each, from then on.
function Store:get_snapshots(streams)
  if type(streams) ~= "table" then error("get_snapshots: streams must be a list", 2) end
  local keys, out = {}, {}
  for _, stream in ipairs(streams) do
    check_stream("get_snapshots", stream)
    if out[stream] == nil then
      out[stream] = false
      keys[#keys + 1] = { stream = stream }
    end
  end
  if #keys == 0 then return out end
  local tname = self.snapshots_table
  local res, err
  if not self.batch_get_denied then
    res, err = self.client:batch_get({ [tname] = { Keys = keys, ConsistentRead = true } }, { consumed = true })
    if not res and type(err) == "table" and err.type == "AccessDeniedException" then
      self.batch_get_denied = true
    end
  end
  if self.batch_get_denied then
    for _, k in ipairs(keys) do
      local snap, serr = self:get_snapshot(k.stream)
      if snap == nil then return nil, serr end
      out[k.stream] = snap
    end
    return out
  end
  if not res then return nil, wrap(err, nil, tname, "reading snapshots") end
  for _, item in ipairs(res.Responses[tname] or {}) do
    if out[item.stream] == false then
      out[item.stream] = snapshot_of(item)
    end
  end
  return out
end

-- store:put_snapshot(stream, version, state_text, meta_text) -> true | nil, err
-- Keeps the newer snapshot: the write is conditioned on no snapshot or an
-- older one, and a failed condition (a newer one is there) is success.
-- Over 400 KB: SnapshotTooLarge (the repository skips it with a warning).
function Store:put_snapshot(stream, version, state_text, meta_text)
  check_stream("put_snapshot", stream)
  check_version("put_snapshot", "version", version)
  if type(state_text) ~= "string" then error("put_snapshot: state must be a string (JSON text)", 2) end
  if meta_text == nil then meta_text = "{}" end
  if type(meta_text) ~= "string" then error("put_snapshot: meta must be a string (JSON text)", 2) end
  local tname = self.snapshots_table
  local item = { stream = stream, version = version, state = state_text, meta = meta_text }
  local size, serr = core.item_size(item)
  if not size then
    return nil, new_error("InvalidValue", "snapshot: " .. tostring(serr), stream, tname)
  end
  if size > limits.item_bytes then
    return nil, new_error("SnapshotTooLarge",
      format("snapshot at version %d is %d bytes, over DynamoDB's %d-byte item limit",
             version, size, limits.item_bytes), stream, tname)
  end
  local res, err = self.client:put_item{
    TableName = tname, Item = item,
    ConditionExpression = "attribute_not_exists(#s) OR #v < :v",
    ExpressionAttributeNames = { ["#s"] = "stream", ["#v"] = "version" },
    ExpressionAttributeValues = { [":v"] = version }, ReturnConsumedCapacity = "TOTAL",
  }
  if res then return true end
  if err.type == "ConditionalCheckFailedException" then return true end -- a newer (or same) one is kept
  if err.type == "ItemTooLarge" then
    return nil, new_error("SnapshotTooLarge", "snapshot at version " .. version .. ": " .. tostring(err.message),
                          stream, tname, err)
  end
  return nil, wrap(err, stream, tname, "writing the snapshot")
end

-- store:close(): the client belongs to the caller; nothing to release.
-- The streams of an aggregate, {{stream=, id=, version=}...}: a Scan of
-- the events table (keys only, filtered on the stream's prefix). DynamoDB
-- cannot list the partition keys of a table, so this reads every event
-- of every aggregate up to the limit-th stream found, and bills them all:
-- 0.5 RCU per 4 KB read (eventually consistent), the filter does not
-- lower it. cost = {scanned=, read_units=, pages=}. Streams come in the
-- table's hash order (not sorted); `after` (a stream or an id) continues
-- after that stream. For a list used in production, keep a read model of
-- the streams with a projection instead (docs/operations.md).
function Store:list_streams(aggregate, opts)
  opts = opts or {}
  if type(aggregate) ~= "string" or aggregate == "" then
    error("store:list_streams: aggregate must be a non-empty string", 2)
  end
  local limit = opts.limit or 100
  local from = aggregate .. "#"
  local params = {
    TableName = self.events_table, ProjectionExpression = "#s, #v",
    FilterExpression = "begins_with(#s, :p)",
    ExpressionAttributeNames = { ["#s"] = "stream", ["#v"] = "version" },
    ExpressionAttributeValues = { [":p"] = from },
    ReturnConsumedCapacity = "TOTAL",
  }
  local after = opts.after
  if after then
    if after:sub(1, #from) ~= from then after = from .. after end
    -- past every version of that stream
    params.ExclusiveStartKey = { stream = after, version = 2 ^ 53 }
  end
  local out, index, cost = {}, {}, { scanned = 0, read_units = 0, pages = 0 }
  while true do
    local res, err = self.client:call("Scan", params)
    if not res then return nil, wrap(err, nil, self.events_table, "listing streams") end
    cost.pages = cost.pages + 1
    cost.scanned = cost.scanned + (tonumber(res.ScannedCount) or 0)
    local cc = res.ConsumedCapacity
    cost.read_units = cost.read_units + (cc and tonumber(cc.CapacityUnits) or 0)
    for _, item in ipairs(res.Items or {}) do
      local name, v = item.stream, tonumber(tostring(item.version))
      local at = index[name]
      if at then
        if v > out[at].version then out[at].version = v end
      else
        if #out == limit then return out, true, cost end
        out[#out + 1] = { stream = name, id = name:sub(#from + 1), version = v }
        index[name] = #out
      end
    end
    if not res.LastEvaluatedKey then return out, false, cost end
    params.ExclusiveStartKey = res.LastEvaluatedKey
  end
end

function Store:close()
  return true
end

return M
