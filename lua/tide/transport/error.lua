-- tide.transport.error: the error every transport returns for a request
-- that got no usable response: a tide.error whose kind says what happened
-- (no type: the kind says it all), so tostring(err) = "kind: message".
-- Kinds: connect, resolve, reset, timeout, truncated, send (retryable),
-- url, tls (configuration: not retryable), other.
local terror = require "tide.error"

local M = {}

local NOT_RETRYABLE = { url = true, tls = true }

M.Error = terror.Error

function M.new(kind, message)
  return terror.new{ kind = kind, message = message, retryable = not NOT_RETRYABLE[kind] }
end

return M
