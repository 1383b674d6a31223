-- tide.transport.error: the error every transport returns for a request
-- that got no usable response: {kind=, message=, retryable=} with a
-- __tostring. Kinds: connect, resolve, reset, timeout, truncated, send
-- (retryable), url, tls (configuration: not retryable), other.
local M = {}

local NOT_RETRYABLE = { url = true, tls = true }

local Error = {}
Error.__index = Error
Error.__tostring = function(e)
  return tostring(e.kind) .. ": " .. tostring(e.message)
end
M.Error = Error

function M.new(kind, message)
  return setmetatable({ kind = kind, message = message, retryable = not NOT_RETRYABLE[kind] }, Error)
end

return M
