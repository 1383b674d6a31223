-- Helpers of the untrusted-input specs (untrusted_spec, fuzz_spec): strict
-- JSON checks of output, the completeness of a store, the nginx site.
local helpers = require "helpers"
local stores = require "stores"
local sched = require "tide.sched"
local input = require "tide.input"

local M = {}
local q = helpers.shell_quote

function M.lines(text)
  local out = {}
  for l in (text or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- Strict JSON (tide.input: yajl's grammar, UTF-8), or an assertion error.
function M.json(text, what)
  local v, err = input.decode(text, what or "output")
  assert(v ~= nil, tostring(err) .. ": " .. tostring(text):sub(1, 2000))
  return v
end

-- Every stream of the store: versions 1..n with no gap, every command's
-- events all there (meta.index 1..count), stream names valid UTF-8.
-- Returns the number of commands and the events per stream. skip: stream
-- names to leave out.
function M.check_store(kind, desc, skip)
  local streams = {}
  sched.run(function()
    if kind == "sqlite" then
      local store = stores.open_sqlite(desc.path)
      local rows = assert(store:read_all(0, 10000000))
      for _, r in ipairs(rows) do
        streams[r.stream] = streams[r.stream] or {}
        table.insert(streams[r.stream], r)
      end
      store:close()
    else
      local client = assert(require("tide.dynamodb").new{ endpoint = desc.endpoint, region = "us-east-1",
                                                          credentials = stores.CREDS })
      local res = assert(client:scan{ TableName = desc.prefix .. "events" })
      for _, it in ipairs(res.Items) do
        streams[it.stream] = streams[it.stream] or {}
        table.insert(streams[it.stream], { version = tonumber(tostring(it.version)), meta = it.meta })
      end
    end
  end)
  local n = 0
  for stream, evs in pairs(streams) do
    if not (skip and skip[stream]) then
      assert(input.utf8(stream), "a stream name that is not UTF-8")
      table.sort(evs, function(a, b) return a.version < b.version end)
      local i = 1
      while i <= #evs do
        assert(evs[i].version == i, stream .. ": a gap at version " .. i)
        local meta = M.json(evs[i].meta, "meta")
        assert(meta.index == 1, stream .. " version " .. i .. ": a command's events start at index 1")
        for k = 1, meta.count do
          local m = M.json(assert(evs[i + k - 1], stream .. ": a command cut short").meta, "meta")
          assert(m.command_id == meta.command_id and m.index == k, stream .. ": a command cut short")
        end
        i = i + meta.count
        n = n + 1
      end
    end
  end
  return n, streams
end

-- Polls fn every 50 ms for up to seconds; returns its first true value.
function M.wait_for(fn, seconds, what)
  local ffi = require "ffi"
  pcall(ffi.cdef, "int poll(void *fds, unsigned long n, int timeout);")
  for _ = 1, seconds * 20 do
    local v = fn()
    if v then return v end
    ffi.C.poll(nil, 0, 50)
  end
  error("timed out waiting for " .. what, 2)
end

-- The example site (tools/nginx.sh) in dir/site with config; its URL.
local function sh(cmd)
  return helpers.run("cd " .. q(helpers.root) .. " && env -u LD_PRELOAD " .. stores.CLI_ENV .. cmd .. " 2>&1")
end

function M.start_site(dir, config)
  local out, status = sh("TIDE_NGINX_WORKERS=1 tools/nginx.sh start "
    .. q(dir .. "/site") .. " " .. q(config))
  if status ~= 0 then
    sh("tools/nginx.sh stop " .. q(dir .. "/site"))
    error("tools/nginx.sh start failed (" .. tostring(status) .. "): " .. out)
  end
  return (out:match("(http://127%.0%.0%.1:%d+)"))
end

function M.stop_site(dir)
  if dir then sh("tools/nginx.sh stop " .. q(dir .. "/site")) end
end

-- One HTTP exchange (Connection: close): status, raw body, headers | nil, err.
function M.http(method, url, body, headers)
  headers = headers or {}
  headers["Connection"] = "close"
  local resp, err = sched.run(function()
    return sched.request{ method = method, url = url, body = body, headers = headers, timeout_ms = 30000 }
  end)
  if not resp then return nil, err end
  return resp.status, resp.body, resp.headers
end

return M
