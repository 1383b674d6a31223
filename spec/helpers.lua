-- Shared helpers for tide's specs. Loaded by busted before every spec file
-- (see .busted); specs may also `require "helpers"`.
local helpers = {}

helpers.root = os.getenv("PWD") or "."
helpers.build = os.getenv("TIDE_BUILD") or "build"
helpers.tide_bin = helpers.root .. "/" .. helpers.build .. "/tide"
helpers.shared = helpers.root .. "/../shared"

-- Endpoint of the DynamoDB Local started by tools/test.sh, or nil when the
-- suite runs without it (then integration specs are reported as errors,
-- never silently skipped).
function helpers.dynamodb_endpoint()
  return os.getenv("TIDE_TEST_DYNAMODB_ENDPOINT")
end

-- Endpoint of the dynalite server started by tools/test.sh (second,
-- independent DynamoDB implementation).
function helpers.dynalite_endpoint()
  return os.getenv("TIDE_TEST_DYNALITE_ENDPOINT")
end

function helpers.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

function helpers.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- Runs a shell command; returns its stdout, and its exit status (number).
function helpers.run(cmd)
  local p = assert(io.popen(cmd .. "; echo \"__exit=$?\"", "r"))
  local out = p:read("*a")
  p:close()
  local status = tonumber(out:match("__exit=(%d+)%s*$"))
  out = out:gsub("__exit=%d+%s*$", "")
  return out, status
end

function helpers.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- A unique name for tables and temp files, so specs never collide.
local counter = 0
function helpers.unique(prefix)
  counter = counter + 1
  return string.format("%s_%d_%d_%d", prefix or "t", os.time(), counter, math.random(1, 1e6))
end

function helpers.tmpdir()
  local out = helpers.run("mktemp -d /tmp/tide-spec.XXXXXX")
  return (out:gsub("%s+$", ""))
end

math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)

package.loaded["helpers"] = helpers
return helpers
