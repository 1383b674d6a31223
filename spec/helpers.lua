-- Shared helpers for tide's specs. Loaded by busted before every spec file
-- (see .busted); specs may also `require "helpers"`.
local helpers = {}

helpers.root = os.getenv("PWD") or "."
helpers.build = os.getenv("TIDE_BUILD") or "build"
helpers.tide_bin = helpers.root .. "/" .. helpers.build .. "/tide"

-- Endpoint of the DynamoDB Local started by tools/test.sh, or nil when the
-- suite runs without it (then integration specs are reported as errors,
-- never silently skipped).
function helpers.dynamodb_endpoint()
  return helpers.private_endpoint or os.getenv("TIDE_TEST_DYNAMODB_ENDPOINT")
end

-- A DynamoDB Local of this spec file's own, for files that write many
-- events to tables with streams: DynamoDB Local slows down with every
-- stream record it holds, so they must not share the suite's server.
-- Call at the top of a spec file: every helpers.dynamodb_endpoint() of the
-- file then answers this server; it stops when the file's specs end.
function helpers.private_dynamodb()
  -- busted's setup/teardown live in the calling spec file's environment
  local env = getfenv(2)
  local dir
  env.setup(function()
    dir = helpers.tmpdir()
    local out, status = helpers.run("cd " .. helpers.shell_quote(helpers.root)
      .. " && env -u LD_PRELOAD tools/servers.sh start " .. helpers.shell_quote(dir) .. " --dynamodb-only 2>&1")
    assert(status == 0, "cannot start a private DynamoDB Local: " .. out)
    helpers.private_endpoint = (helpers.read_file(dir .. "/env") or ""):match("TIDE_TEST_DYNAMODB_ENDPOINT=(%S+)")
  end)
  env.teardown(function()
    helpers.private_endpoint = nil
    helpers.run("cd " .. helpers.shell_quote(helpers.root) .. " && tools/servers.sh stop "
      .. helpers.shell_quote(dir) .. " >/dev/null 2>&1; rm -rf " .. helpers.shell_quote(dir))
  end)
end

-- Endpoint of the dynalite server started by tools/test.sh (second,
-- independent DynamoDB implementation).
function helpers.dynalite_endpoint()
  return os.getenv("TIDE_TEST_DYNALITE_ENDPOINT")
end

-- A TCP port free on 127.0.0.1 now (the kernel's choice), for a server a
-- spec starts.
function helpers.free_port()
  local out = helpers.run([[node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})']])
  return assert(tonumber(out:match("%d+")), "no free port")
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

-- The non-empty lines of text.
function helpers.lines(text)
  local out = {}
  for l in (text or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
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

-- Every folder tmpdir makes is removed when the spec process ends (its Lua
-- state closes: busted exits with os.exit(code, true)), so that a run
-- leaves nothing in /tmp; a spec may remove its own sooner.
local made = {}
local sweeper = newproxy(true)
getmetatable(sweeper).__gc = function()
  if #made > 0 then os.execute("rm -rf '" .. table.concat(made, "' '") .. "'") end
end
helpers._tmpdir_sweeper = sweeper -- (anchored for the life of the process)

function helpers.tmpdir()
  local out = helpers.run("mktemp -d /tmp/tide-spec.XXXXXX")
  local dir = out:gsub("%s+$", "")
  made[#made + 1] = dir
  return dir
end

-- Runs Lua code in a child luajit started through `env`, for what depends
-- on the environment (LuaJIT cannot setenv): the variables of opts.unset
-- removed, HOME = opts.home, opts.env added, in opts.dir when given. The
-- child inherits the rest (LD_PRELOAD, ASAN_OPTIONS under the sanitizer
-- run). opts.code is the body of a function of `arg` (opts.arg, a table
-- passed as JSON) that returns two JSON-able values; returns them (nil for
-- null).
function helpers.child_lua(opts)
  local cjson = require "cjson"
  local q = helpers.shell_quote
  local parts = { (opts.dir and ("cd " .. q(opts.dir) .. " && ") or "") .. "env" }
  for _, v in ipairs(opts.unset or {}) do parts[#parts + 1] = "-u " .. v end
  parts[#parts + 1] = "HOME=" .. q(opts.home)
  parts[#parts + 1] = "LUA_PATH=" .. q(helpers.root .. "/lua/?.lua;" .. helpers.root .. "/lua/?/init.lua;;")
  parts[#parts + 1] = "LUA_CPATH=" .. q(helpers.root .. "/" .. helpers.build .. "/lua/?.so;;")
  for k, v in pairs(opts.env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  local code = ([[
    local cjson = require "cjson"
    local a, b = (function(arg) %s end)(cjson.decode(%q))
    io.write(cjson.encode({ a == nil and cjson.null or a, b == nil and cjson.null or b }))
  ]]):format(opts.code, cjson.encode(opts.arg or {}))
  parts[#parts + 1] = "luajit -e " .. q(code) .. " 2>&1"
  local out, status = helpers.run(table.concat(parts, " "))
  assert(status == 0, "child failed: " .. out)
  local decoded = cjson.decode(out)
  local a, b = decoded[1], decoded[2]
  if a == cjson.null then a = nil end
  if b == cjson.null then b = nil end
  return a, b
end

-- Runs call() `rounds` times while a __gc metamethod that raises is armed,
-- so that an allocation inside call() unwinds it with "boom from __gc";
-- after each such error, recover() runs at once (disarmed) and must work.
-- Interpreted only: an error thrown by a finalizer that runs inside a
-- compiled trace is beyond what LuaJIT handles. Returns the number of
-- errors raised, of recoveries done, and the last error.
function helpers.interrupt_with_gc_error(rounds, call, recover)
  local armed, raised, after = true, 0, 0
  local last_err
  jit.off()
  jit.flush()
  -- A collector that never rests (the pause is set before the collection,
  -- which computes the next threshold from it): the finalizer then runs
  -- inside the calls whatever the heap the earlier specs left.
  local pause = collectgarbage("setpause", 50)
  local stepmul = collectgarbage("setstepmul", 1000)
  collectgarbage()
  pcall(function()
    for _ = 1, rounds do
      local ok, err = pcall(function()
        local p = newproxy(true)
        getmetatable(p).__gc = function() if armed then error("boom from __gc") end end
        p = nil
        call()
      end)
      if not ok then
        raised = raised + 1
        last_err = err
        -- other proxies still waiting for their __gc must not raise in it
        armed = false
        recover()
        armed = true
        after = after + 1
      end
    end
  end)
  armed = false
  collectgarbage("setpause", pause)
  collectgarbage("setstepmul", stepmul)
  collectgarbage()
  jit.on()
  return raised, after, last_err
end

math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)

package.loaded["helpers"] = helpers
return helpers
