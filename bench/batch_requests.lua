-- bench/batch_requests.lua: `tide batch`, counting the DynamoDB requests it
-- sends by operation (retries included), for bench/command_path_dynamodb.sh.
--
--   build/tide script bench/batch_requests.lua --config FILE < commands.ndjson > results.ndjson
--
-- Runs the same code as `build/tide batch` (require("tide.cli").main("batch"))
-- with every DynamoDB client tide opens counting in its `send`; prints one
-- JSON line {"client":"tide","requests":{OP: N, ...}} on stderr at the end.
local dynamodb = require "tide.dynamodb"
local core = require "tide.core"

local counts = {}
local new = dynamodb.new
dynamodb.new = function(...)
  local client, err = new(...)
  if client and type(client.send) == "function" then
    local send = client.send
    client.send = function(self, op, ...)
      counts[op] = (counts[op] or 0) + 1
      return send(self, op, ...)
    end
  end
  return client, err
end

local status = require("tide.cli").main("batch", ...)
io.stderr:write(core.json_encode{ client = "tide", requests = counts }, "\n")
if status ~= 0 then error("tide batch exited with status " .. tostring(status)) end
