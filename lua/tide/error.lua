-- tide.error: the one error type of tide's Lua library.
--
-- A failure that happens in normal operation (a rejected command, a lost
-- race, a throttled request, a bad configuration) is returned as `nil, err`
-- with err made here; a caller's bug (a wrong argument type) raises instead.
--
--   local terror = require "tide.error"
--   return nil, terror.new{ kind = "conflict", type = "Conflict", message = "...", stream = s }
--   return nil, terror.wrap(cause, "loading events", { stream = s })
--   if terror.is(err, "conflict") then ... end
--
-- Fields (each name has one meaning in every module):
--   kind        tide's category, always set; the CLI maps it to an exit
--               status and prints it as error.kind, the HTTP API to a status:
--                 invalid         bad input or configuration: change something first
--                 rejected        the domain refused the command
--                 conflict        someone else wrote first (a stream's version,
--                                 a read-model item, a lease)
--                 handler_error   user Lua code (a handler, a hook) raised or broke its contract
--                 store           the store or the service failed (after the client's retries)
--                 internal        tide's own Lua code raised (a bug)
--                 connect, resolve, reset, timeout, truncated, send, url, tls, other:
--                                 a request that got no usable response (the transports)
--               and a few of one module's own: too_many_events, event_too_large
--               (tide.repository), invalid_event, gap (tide.projector)
--   type        the specific type, where there is one: an AWS error type
--               ("ConditionalCheckFailedException"), a store's ("Conflict",
--               "Busy", "StoreError", "LeaseLost"), "ConfigError", ...;
--               an error that wraps another takes its cause's type unless
--               it names its own
--   message     what went wrong, for people
--   retryable   true when the same call may simply be made again
--   cause       the lower-level error this one wraps (a tide.error or a string)
-- Context, where known:
--   stream, aggregate, command, command_id   the stream and the command
--   projection, shard, table, key            a projection, its shard, a table and item key
--   version, event_type, event               an event (event: the whole event)
--   op, status, attempts                     a DynamoDB operation, its HTTP status, attempts made
--   source, line                             a file and line (the configuration)
--
-- tostring(err) (and `..`) is one line:
--   [<component>[, <subjects>]: ]<type or kind>: <message>[ (<details>)][ [<cause's type>]]
-- The component is the DynamoDB operation ("DynamoDB PutItem on table
-- 'tide_events'") or the projection ("projection balances"); the subjects
-- are the stream (with version and event type), the command, the shard,
-- the table and key. With a component, the subjects follow it; without
-- one, they go into the parenthesised details, with "HTTP <status>" and
-- "<n> attempts". An error located in a file (source) is its message alone,
-- which begins with "file:line:" as a compiler's does.
local type, tostring, setmetatable, getmetatable, concat =
  type, tostring, setmetatable, getmetatable, table.concat

local M = {}

local Error = {}
Error.__index = Error
M.Error = Error

local function component(e)
  if e.op then
    return "DynamoDB " .. e.op .. (e.table and (" on table '" .. tostring(e.table) .. "'") or "")
  end
  if e.projection then return "projection " .. tostring(e.projection) end
end

local function subjects(e)
  local parts = {}
  if e.stream then
    parts[#parts + 1] = "stream " .. tostring(e.stream)
      .. (e.version and (" version " .. tostring(e.version)) or "")
      .. (e.event_type and (" (" .. tostring(e.event_type) .. ")") or "")
  end
  if e.command then parts[#parts + 1] = "command " .. tostring(e.command) end
  if e.shard then parts[#parts + 1] = "shard " .. tostring(e.shard) end
  if e.table and not e.op then
    parts[#parts + 1] = "table " .. tostring(e.table) .. (e.key and (" key " .. tostring(e.key)) or "")
  end
  return parts
end

function Error:__tostring()
  if self.source then return tostring(self.message) end
  local s = tostring(self.type or self.kind) .. ": " .. tostring(self.message)
  local head, subs, details = component(self), subjects(self), {}
  if head then
    if #subs > 0 then head = head .. ", " .. concat(subs, ", ") end
    s = head .. ": " .. s
  elseif #subs > 0 then
    details[1] = concat(subs, ", ")
  end
  if type(self.status) == "number" and self.status > 0 then details[#details + 1] = "HTTP " .. self.status end
  if type(self.attempts) == "number" and self.attempts > 1 then details[#details + 1] = self.attempts .. " attempts" end
  if #details > 0 then s = s .. " (" .. concat(details, ", ") .. ")" end
  local c = self.cause
  if type(c) == "table" and c.type and c.type ~= self.type then s = s .. " [" .. tostring(c.type) .. "]" end
  return s
end

function Error.__concat(a, b)
  return tostring(a) .. tostring(b)
end

-- terror.new(fields) -> err. Takes fields (it becomes the error); kind is
-- required. Without a type of its own, it takes its cause's.
function M.new(fields)
  if type(fields) ~= "table" or type(fields.kind) ~= "string" then
    error("tide.error.new{kind=, message=, ...}: kind must be a string", 2)
  end
  local c = fields.cause
  if fields.type == nil and type(c) == "table" then fields.type = c.type end
  return setmetatable(fields, Error)
end

-- terror.wrap(cause, what, fields) -> err: a lower-level error passed up
-- with the caller's context. The message is `what: <cause's message>`; kind,
-- type and retryable are the cause's unless fields names them (kind
-- defaults to "store"). fields is taken.
function M.wrap(cause, what, fields)
  local e = fields or {}
  local ct = type(cause) == "table"
  local msg = ct and (cause.message or tostring(cause)) or tostring(cause)
  if what then msg = what .. ": " .. tostring(msg) end
  e.message = msg
  e.cause = cause
  if ct then
    if e.kind == nil then e.kind = cause.kind end
    if e.retryable == nil then e.retryable = cause.retryable end
  end
  if e.kind == nil then e.kind = "store" end
  return M.new(e)
end

-- terror.is(v [, kind]) -> true when v is a tide error (of that kind).
function M.is(v, kind)
  return getmetatable(v) == Error and (kind == nil or v.kind == kind)
end

return M
