-- Specs for tide.engine (the libcurl multi HTTP client), tide.sched (the
-- cooperative scheduler) and tide.transport.engine, against
-- spec/fixtures/fault_server.js on loopback.
--
-- Concurrency is asserted with counts from the server (/__stats), never
-- with timings.
local engine = require "tide.engine"
local sched = require "tide.sched"
local transport_mod = require "tide.transport.engine"
local fault = require "fixtures.fault_server"

-- Runs fn inside sched.run and returns its results.
local function run(fn, ...)
  return sched.run(fn, ...)
end

describe("tide.engine", function()
  local srv

  fault.around(function(s) srv = s end)

  -- Polls e until the completion of id arrives. Completions of other
  -- requests that arrive in the same poll are kept for their own await.
  local early = setmetatable({}, { __mode = "k" })
  local function await(e, id)
    early[e] = early[e] or {}
    local kept = early[e]
    for _ = 1, 1000 do
      if kept[id] then
        local c = kept[id]
        kept[id] = nil
        return c
      end
      local done = assert(e:poll(50))
      for _, c in ipairs(done) do kept[c.id] = c end
    end
    error("no completion for " .. id)
  end

  it("now() is a monotonic number of seconds", function()
    local a = engine.now()
    local b = engine.now()
    assert.is_number(a)
    assert.is_true(b >= a)
  end)

  it("submits a request and returns its completion from poll", function()
    local e = assert(engine.new())
    local id = assert(e:submit{ url = srv.url .. "/x" })
    assert.is_number(id)
    assert.equal(1, e:pending())
    local c = await(e, id)
    assert.equal(200, c.status)
    assert.equal("{}", c.body)
    assert.equal("application/x-amz-json-1.0", c.headers["content-type"])
    assert.equal(0, e:pending())
    e:close()
  end)

  it("keeps idle connections watched without spinning, and drops one the server closed", function()
    local cpu_seconds = function()
      local f = assert(io.open("/proc/self/stat"))
      local stat = f:read("*l")
      f:close()
      -- utime and stime, in clock ticks, after the parenthesised command name
      local rest = stat:match("%) (.*)$")
      local fields = {}
      for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
      return (tonumber(fields[12]) + tonumber(fields[13])) / 100
    end
    local e = assert(engine.new{ max_connections = 1 })
    srv:script{ { body = "{}", hangup_ms = 20 } }
    assert.equal(200, await(e, assert(e:submit{ url = srv.url .. "/a", method = "POST", body = "1" })).status)
    -- The server hangs up on the idle connection. Polling on must neither
    -- hand curl a socket it no longer watches nor spin on its EOF.
    local c0, t0 = cpu_seconds(), engine.now()
    while engine.now() - t0 < 0.5 do assert.same({}, assert(e:poll(100))) end
    assert.is_true(cpu_seconds() - c0 < 0.25, "polling an idle engine used the CPU")
    -- The next request gets a new connection and succeeds.
    assert.equal(200, await(e, assert(e:submit{ url = srv.url .. "/b", method = "POST", body = "2" })).status)
    assert.equal(2, srv:stats().connections)
    -- And a kept-alive one is reused as before.
    assert.equal(200, await(e, assert(e:submit{ url = srv.url .. "/c", method = "POST", body = "3" })).status)
    assert.equal(2, srv:stats().connections)
    e:close()
  end)

  it("hands out distinct ids and empty polls return an empty array", function()
    local e = assert(engine.new{ max_connections = 4, timeout_ms = 5000 })
    local a = assert(e:submit{ url = srv.url .. "/a" })
    local b = assert(e:submit{ url = srv.url .. "/b" })
    assert.are_not.equal(a, b)
    await(e, a)
    await(e, b)
    assert.same({}, e:poll(0))
    e:close()
  end)

  it("cancels a request in flight", function()
    local e = assert(engine.new())
    local id = assert(e:submit{ url = srv.url .. "/slow?delay_ms=2000" })
    assert.is_true(e:cancel(id))
    assert.is_false(e:cancel(id))
    assert.equal(0, e:pending())
    assert.same({}, e:poll(0))
    e:close()
  end)

  it("returns nil, {kind='url'} for a URL it cannot use", function()
    local e = assert(engine.new())
    for _, url in ipairs{ "not a url", "ftp://127.0.0.1/x", "http://", "" } do
      local id, err = e:submit{ url = url }
      assert.is_nil(id)
      assert.equal("url", err.kind)
      assert.matches("^url: ", tostring(err))
    end
    e:close()
  end)

  it("raises on wrong argument types", function()
    local e = assert(engine.new())
    assert.has_error(function() e:submit() end)
    assert.has_error(function() e:submit{ url = 42 } end)
    assert.has_error(function() e:submit{ url = srv.url, method = 1 } end)
    assert.has_error(function() e:submit{ url = srv.url, body = {} } end)
    assert.has_error(function() e:submit{ url = srv.url, headers = "x" } end)
    assert.has_error(function() e:submit{ url = srv.url, headers = { [1] = "x" } } end)
    assert.has_error(function() e:submit{ url = srv.url, headers = { a = {} } } end)
    assert.has_error(function() e:submit{ url = srv.url, timeout_ms = "soon" } end)
    assert.has_error(function() e:submit{ url = srv.url, headers = { ["bad name"] = "x" } } end)
    assert.has_error(function() e:submit{ url = srv.url, headers = { a = "x\r\nInjected: 1" } } end)
    assert.has_error(function() e:submit{ url = srv.url, method = "GET /" } end)
    assert.has_error(function() engine.new{ max_connections = "many" } end)
    assert.has_error(function() engine.new{ verify_tls = "yes" } end)
    assert.has_error(function() engine.new{ ca_bundle = 1 } end)
    e:close()
  end)

  it("close is idempotent and a closed engine raises", function()
    local e = assert(engine.new())
    assert(e:submit{ url = srv.url .. "/slow?delay_ms=2000" })
    e:close()
    e:close()
    assert.has_error(function() e:poll(0) end, "tide.engine: engine is closed")
    assert.matches("closed", tostring(e))
  end)

  it("sends numeric header values as strings", function()
    local e = assert(engine.new())
    local id = assert(e:submit{ url = srv.url .. "/h", headers = { ["X-Count"] = 42, ["X-Empty"] = "" } })
    assert.equal(200, await(e, id).status)
    local reqs = srv:requests()
    assert.equal("42", reqs[1].headers["x-count"])
    assert.equal("", reqs[1].headers["x-empty"])
    e:close()
  end)

  it("sends a core.encode_request_buffer buffer as the exact body bytes", function()
    local core = require "tide.core"
    local params = { TableName = "t", Item = { pk = "a\0b", n = 12, s = string.rep("é", 300) } }
    local buf, len = core.encode_request_buffer(params)
    assert.is_true(core.is_buffer(buf))
    local e = assert(engine.new())
    local c = await(e, assert(e:submit{ method = "POST", url = srv.url .. "/echo", body = buf }))
    assert.equal(200, c.status)
    assert.equal(core.encode_request(params), c.body)
    assert.equal(len, #c.body)
    assert.equal(core.encode_request(params), srv:requests()[1].body)
    e:close()
  end)

  it("raises for a userdata body that is not a core buffer", function()
    local e = assert(engine.new())
    assert.has_error(function() e:submit{ url = srv.url, method = "POST", body = io.stdout } end,
                     "tide.engine: submit: body must be a string, a core buffer or nil")
    assert.equal(0, e:pending())
    e:close()
  end)

  it("keeps only the response headers asked for", function()
    local e = assert(engine.new())
    srv:script{ { body = "ok", headers = { ["X-Amzn-RequestId"] = "RID", ["X-Other"] = "1",
                                           ["Set-Cookie"] = "a" } } }
    local c = await(e, assert(e:submit{ url = srv.url .. "/x",
                                        response_headers = { "X-Amzn-RequestId", "x-missing" } }))
    assert.equal("ok", c.body)
    assert.same({ ["x-amzn-requestid"] = "RID" }, c.headers)
    -- an empty list keeps none; without the field, every header comes back
    c = await(e, assert(e:submit{ url = srv.url .. "/x", response_headers = {} }))
    assert.same({}, c.headers)
    c = await(e, assert(e:submit{ url = srv.url .. "/x" }))
    assert.equal("2", c.headers["content-length"])
    assert.is_string(c.headers["x-amzn-requestid"])
    assert.has_error(function() e:submit{ url = srv.url, response_headers = "x-a" } end)
    assert.has_error(function() e:submit{ url = srv.url, response_headers = { 1 } } end)
    e:close()
  end)

  it("sends more headers than fit on its stack, numeric ones included", function()
    local e = assert(engine.new())
    local headers = {}
    for i = 1, 100 do headers["x-h" .. i] = i % 2 == 0 and i or ("v" .. i) end
    assert.equal(200, await(e, assert(e:submit{ url = srv.url .. "/h", headers = headers })).status)
    local got = srv:requests()[1].headers
    for i = 1, 100 do assert.equal(i % 2 == 0 and tostring(i) or ("v" .. i), got["x-h" .. i]) end
    e:close()
  end)

  it("reads the request fields through a metatable as well", function()
    local e = assert(engine.new())
    local req = setmetatable({}, { __index = { url = srv.url .. "/echo", method = "PUT", body = "m" } })
    local c = await(e, assert(e:submit(req)))
    assert.equal("PUT", c.headers["x-echo-method"])
    assert.equal("m", c.body)
    e:close()
  end)

  it("lets responses gather under load, and not below 16 requests in flight", function()
    assert.has_error(function() engine.new{ gather_us = "soon" } end)
    assert.has_error(function() engine.new{ gather_us = -1 } end)
    -- 20 in flight on open connections: the first poll sleeps gather_us,
    -- then takes them all
    local e = assert(engine.new{ gather_us = 2000000 })
    local ids = {}
    for i = 1, 20 do ids[i] = assert(e:submit{ url = srv.url .. "/x?i=" .. i }) end
    for i = 1, 20 do assert.equal(200, await(e, ids[i]).status) end
    for i = 1, 20 do assert(e:submit{ url = srv.url .. "/slow?delay_ms=20&i=" .. i }) end
    local t0 = engine.now()
    local done = assert(e:poll(-1))
    local took = engine.now() - t0
    assert.equal(20, #done)
    assert.is_true(took >= 1.9, "took " .. took)
    -- 15 in flight: no gathering, the poll returns with the first responses
    for i = 1, 15 do assert(e:submit{ url = srv.url .. "/slow?delay_ms=20&i=" .. i }) end
    t0 = engine.now()
    local n = #assert(e:poll(-1))
    assert.is_true(engine.now() - t0 < 1.5)
    while n < 15 do n = n + #assert(e:poll(-1)) end
    e:close()
    -- and a timeout shorter than gather_us still ends the poll on time
    e = assert(engine.new{ gather_us = 2000000 })
    for i = 1, 20 do assert(e:submit{ url = srv.url .. "/slow?delay_ms=5000&i=" .. i }) end
    t0 = engine.now()
    assert.same({}, assert(e:poll(100)))
    assert.is_true(engine.now() - t0 < 1.5)
    e:close()
  end)

  it("switches URLs on recycled handles", function()
    local e = assert(engine.new{ max_connections = 1 })
    for i = 1, 6 do
      local path = (i % 3 == 0) and "/echo/a?x=" .. i or "/echo/b"
      local c = await(e, assert(e:submit{ method = "POST", url = srv.url .. path, body = "b" .. i }))
      assert.equal("b" .. i, c.body)
    end
    local paths = {}
    for _, r in ipairs(srv:requests()) do paths[#paths + 1] = r.path end
    assert.same({ "/echo/b", "/echo/b", "/echo/a?x=3", "/echo/b", "/echo/b", "/echo/a?x=6" }, paths)
    e:close()
  end)
end)

describe("tide.sched", function()
  after_each(function()
    sched.configure{ on_error = sched.default_on_error }
  end)

  it("run returns fn's results and passes its arguments", function()
    local a, b, c = run(function(x, y) return x + y, "two", nil end, 1, 2)
    assert.equal(3, a)
    assert.equal("two", b)
    assert.is_nil(c)
    assert.equal(3, select("#", run(function() return 1, nil, nil end)))
  end)

  it("run raises fn's error with a traceback", function()
    local ok, err = pcall(run, function()
      sched.sleep(0.001)
      error("kaput")
    end)
    assert.is_false(ok)
    assert.matches("kaput", err)
    assert.matches("stack traceback", err)
  end)

  it("run can be called again after a failure", function()
    pcall(run, function() error("first") end)
    assert.equal("fine", run(function() return "fine" end))
  end)

  it("yielding functions raise outside sched.run", function()
    assert.has_error(function() sched.sleep(0.01) end, "sched.sleep called outside sched.run")
    assert.has_error(function() sched.request{ url = "http://127.0.0.1/" } end,
      "sched.request called outside sched.run")
    assert.has_error(function() sched.spawn(function() end) end, "sched.spawn called outside sched.run")
    assert.has_error(function() sched.wait({}) end, "sched.wait called outside sched.run")
    assert.has_error(function() sched.wait_all({}) end, "sched.wait_all called outside sched.run")
    assert.is_false(sched.running())
  end)

  it("yielding functions raise in a coroutine the scheduler does not manage", function()
    run(function()
      assert.is_true(sched.running())
      local co = coroutine.create(function() sched.sleep(0.01) end)
      local ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.matches("sched.sleep called outside sched.run", err)
    end)
  end)

  it("refuses a nested run", function()
    run(function()
      assert.has_error(function() sched.run(function() end) end)
    end)
  end)

  it("raises on wrong argument types", function()
    assert.has_error(function() sched.run("x") end)
    run(function()
      assert.has_error(function() sched.sleep(-1) end)
      assert.has_error(function() sched.sleep("1") end)
      assert.has_error(function() sched.spawn(42) end)
      assert.has_error(function() sched.wait({}) end)
      assert.has_error(function() sched.request("http://x") end)
    end)
  end)

  it("spawn runs the new thread first, until it yields", function()
    local log = {}
    run(function()
      local th = sched.spawn(function()
        log[#log + 1] = "child start"
        sched.sleep(0)
        log[#log + 1] = "child end"
        return "r"
      end)
      log[#log + 1] = "parent"
      local ok, r = sched.wait(th)
      assert.is_true(ok)
      assert.equal("r", r)
    end)
    assert.same({ "child start", "parent", "child end" }, log)
  end)

  it("wait returns every result, also for a thread already finished", function()
    run(function()
      local th = sched.spawn(function(a, b) return a, nil, b end, 1, 3)
      sched.sleep(0.001)
      assert.equal("done", th.status)
      local res = { n = select("#", sched.wait(th)), sched.wait(th) }
      assert.same({ n = 4, true, 1, nil, 3 }, res)
    end)
  end)

  it("an error in a thread goes to wait, with a traceback, and the loop goes on", function()
    local after = false
    run(function()
      local th = sched.spawn(function()
        sched.sleep(0.001)
        error("thread failed")
      end)
      local other = sched.spawn(function()
        sched.sleep(0.002)
        after = true
      end)
      local ok, err = sched.wait(th)
      assert.is_false(ok)
      assert.matches("thread failed", err)
      assert.matches("stack traceback", err)
      assert.equal("failed", th.status)
      assert.is_true((sched.wait(other)))
    end)
    assert.is_true(after)
  end)

  it("a coroutine that served a thread serves the next, after a result or an error", function()
    run(function()
      local seen = {}
      for i = 1, 3 do
        local th = sched.spawn(function(k)
          seen[#seen + 1] = coroutine.running()
          assert.equal(seen[#seen], coroutine.running())
          sched.sleep(0)
          if k == 2 then error("thread " .. k .. " failed") end
          return k, nil
        end, i)
        local res = { n = select("#", sched.wait(th)), sched.wait(th) }
        if i == 2 then
          assert.is_false(res[1])
          assert.matches("thread 2 failed", res[2])
        else
          assert.same({ n = 3, true, i, nil }, res)
        end
      end
      -- one coroutine, reused: each thread saw it as its own while it ran
      assert.equal(seen[1], seen[2])
      assert.equal(seen[2], seen[3])
      assert.equal("suspended", coroutine.status(seen[1]))
    end)
  end)

  it("keeps error objects that are not strings", function()
    run(function()
      local obj = { code = 7 }
      local ok, err = sched.wait(sched.spawn(function() error(obj) end))
      assert.is_false(ok)
      assert.equal(obj, err)
    end)
  end)

  it("reports errors of threads nobody waited for, without failing run", function()
    local reported = {}
    sched.configure{ on_error = function(err) reported[#reported + 1] = err end }
    local r = run(function()
      sched.spawn(function() error("lonely") end)
      sched.spawn(function() sched.sleep(0.001) error("later") end)
      local waited = sched.spawn(function() error("collected") end)
      sched.wait(waited)
      return "main done"
    end)
    assert.equal("main done", r)
    assert.equal(2, #reported)
    assert.matches("lonely", reported[1])
    assert.matches("later", reported[2])
  end)

  it("run waits for every spawned thread, not only fn", function()
    local finished = 0
    run(function()
      for i = 1, 5 do
        sched.spawn(function()
          sched.sleep(0.001 * i)
          finished = finished + 1
        end)
      end
    end)
    assert.equal(5, finished)
  end)

  it("wakes sleepers in deadline order, ties in the order they slept", function()
    local order = {}
    run(function()
      local delays = { 0.05, 0.01, 0.03, 0.02, 0.04, 0.02 }
      for i, d in ipairs(delays) do
        sched.spawn(function()
          sched.sleep(d)
          order[#order + 1] = i
        end)
      end
    end)
    assert.same({ 2, 4, 6, 3, 5, 1 }, order)
  end)

  it("handles many timers (a heap, not a sorted list)", function()
    local woke = {}
    run(function()
      for i = 1, 2000 do
        sched.spawn(function()
          local d = (1 + (i * 7919) % 100) / 500 -- 2..200 ms; never 0: sleep(0) is a plain yield
          local deadline = sched.now() + d
          sched.sleep(d)
          woke[#woke + 1] = deadline
          assert(sched.now() >= deadline, "woke early")
        end)
      end
    end)
    assert.equal(2000, #woke)
    -- wake-ups follow deadlines (recorded just before the scheduler's own:
    -- a GC step in between shifts them a little, hence the slack)
    for i = 2, #woke do
      assert.is_true(woke[i - 1] <= woke[i] + 0.01, "out of order at " .. i)
    end
  end)

  it("sleep(0) and a bare coroutine.yield let other threads run", function()
    local log = {}
    run(function()
      local a = sched.spawn(function()
        for i = 1, 3 do log[#log + 1] = "a" .. i; sched.sleep(0) end
      end)
      local b = sched.spawn(function()
        for i = 1, 3 do log[#log + 1] = "b" .. i; coroutine.yield() end
      end)
      sched.wait_all{ a, b }
    end)
    assert.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, log)
  end)

  it("idle() says whether another thread is ready to run now", function()
    local seen = {}
    assert.is_true(sched.idle()) -- outside a run
    run(function()
      seen.alone = sched.idle()
      local other = sched.spawn(function() sched.sleep(0) end) -- ready again after its first yield
      seen.with_ready = sched.idle()
      sched.wait(other)
      local parked = sched.spawn(function() sched.suspend() end) -- parked: not ready
      seen.with_parked = sched.idle()
      sched.wakeup(parked)
      seen.after_wakeup = sched.idle()
      sched.wait(parked)
    end)
    assert.same({ alone = true, with_ready = false, with_parked = true, after_wakeup = false }, seen)
  end)

  it("wait_all returns each thread's outcome", function()
    run(function()
      local ths = {
        sched.spawn(function() return 1, 2 end),
        sched.spawn(function() sched.sleep(0.001) error("no") end),
      }
      local res = sched.wait_all(ths)
      assert.same({ n = 3, true, 1, 2 }, res[1])
      assert.is_false(res[2][1])
      assert.matches("no", res[2][2])
    end)
  end)

  it("detects a deadlock instead of hanging", function()
    local ok, err = pcall(run, function()
      local me = sched.spawn(function() end)
      local a
      local b = sched.spawn(function() sched.sleep(0.001) sched.wait(a) end)
      a = sched.spawn(function() sched.wait(b) end)
      sched.wait(me)
    end)
    assert.is_false(ok)
    assert.matches("deadlock", err)
  end)

  it("does not spin while idle", function()
    local cpu = os.clock()
    run(function() sched.sleep(0.3) end)
    -- a busy loop would burn the whole 0.3 s of CPU
    assert.is_true(os.clock() - cpu < 0.1)
  end)

  it("now() moves forward across a sleep", function()
    run(function()
      local t0 = sched.now()
      sched.sleep(0.02)
      assert.is_true(sched.now() - t0 >= 0.019)
    end)
  end)
end)

describe("tide.transport.engine", function()
  local srv, t

  fault.around(function(s) srv = s end)
  setup(function()
    t = transport_mod.new{ timeout_ms = 10000 }
  end)

  it("returns status, lower-cased headers and body", function()
    srv:script{ { status = 201, body = "hello", headers = { ["X-Amzn-RequestId"] = "RID1",
                                                             ["X-Amz-Crc32"] = "123",
                                                             ["Content-Type"] = "text/plain" } } }
    local resp, err = run(function() return t:request{ url = srv.url .. "/x" } end)
    assert.is_nil(err)
    assert.equal(201, resp.status)
    assert.equal("hello", resp.body)
    assert.equal("RID1", resp.headers["x-amzn-requestid"])
    assert.equal("123", resp.headers["x-amz-crc32"])
    assert.equal("text/plain", resp.headers["content-type"])
    assert.equal("5", resp.headers["content-length"])
  end)

  it("takes a core buffer as the body, and names the response headers it wants", function()
    local core = require "tide.core"
    assert.is_true(t.accepts_buffer_body)
    local params = { TableName = "t", Key = { pk = "k" } }
    local resp = run(function()
      return assert(t:request{ method = "POST", url = srv.url .. "/echo",
                               body = core.encode_request_buffer(params),
                               response_headers = { "x-echo-method" } })
    end)
    assert.same({ status = 200, headers = { ["x-echo-method"] = "POST" },
                  body = core.encode_request(params) }, resp)
    assert.has_error(function() run(function() t:request{ url = srv.url, body = io.stdout } end) end)
  end)

  it("sends method, headers and body as given", function()
    run(function()
      local resp = assert(t:request{ method = "POST", url = srv.url .. "/api?q=1",
                                     headers = { ["Content-Type"] = "application/x-amz-json-1.0",
                                                 ["X-Amz-Target"] = "DynamoDB_20120810.PutItem" },
                                     body = '{"a":1}' })
      assert.equal(200, resp.status)
    end)
    local reqs = srv:requests()
    assert.equal(1, #reqs)
    assert.equal("POST", reqs[1].method)
    assert.equal("/api?q=1", reqs[1].path)
    assert.equal("application/x-amz-json-1.0", reqs[1].headers["content-type"])
    assert.equal("DynamoDB_20120810.PutItem", reqs[1].headers["x-amz-target"])
    assert.equal('{"a":1}', reqs[1].body)
    assert.is_nil(reqs[1].headers["expect"])
  end)

  it("sends no form content-type nobody asked for", function()
    run(function() assert(t:request{ method = "POST", url = srv.url .. "/x", body = "a=b" }) end)
    assert.is_nil(srv:requests()[1].headers["content-type"])
  end)

  it("supports PUT, DELETE, HEAD and a POST without body", function()
    run(function()
      for _, m in ipairs{ "PUT", "DELETE", "PATCH" } do
        local resp = assert(t:request{ method = m, url = srv.url .. "/echo", body = m .. "!" })
        assert.equal(m, resp.headers["x-echo-method"])
        assert.equal(m .. "!", resp.body)
      end
      local head = assert(t:request{ method = "HEAD", url = srv.url .. "/x" })
      assert.equal(200, head.status)
      assert.equal("", head.body)
      local post = assert(t:request{ method = "POST", url = srv.url .. "/echo" })
      assert.equal("POST", post.headers["x-echo-method"])
      assert.equal("", post.body)
    end)
  end)

  it("switches methods on recycled handles (POST, GET, HEAD, PUT, POST)", function()
    run(function()
      for _ = 1, 3 do
        local post = assert(t:request{ method = "POST", url = srv.url .. "/echo", body = "p" })
        assert.equal("POST", post.headers["x-echo-method"])
        assert.equal("p", post.body)
        local get = assert(t:request{ url = srv.url .. "/echo" })
        assert.equal("GET", get.headers["x-echo-method"])
        assert.equal("", get.body)
        local head = assert(t:request{ method = "HEAD", url = srv.url .. "/echo" })
        assert.equal("", head.body)
        local put = assert(t:request{ method = "PUT", url = srv.url .. "/echo", body = "q" })
        assert.equal("PUT", put.headers["x-echo-method"])
        assert.equal("q", put.body)
        local empty = assert(t:request{ method = "POST", url = srv.url .. "/echo" })
        assert.equal("POST", empty.headers["x-echo-method"])
        assert.equal("", empty.body)
      end
    end)
  end)

  it("round-trips bodies with NUL bytes", function()
    local body = "a\0b\0\0c" .. string.char(255, 0, 1) .. "\0"
    local resp = run(function()
      return assert(t:request{ method = "POST", url = srv.url .. "/echo", body = body,
                               headers = { ["content-type"] = "application/octet-stream" } })
    end)
    assert.equal(#body, #resp.body)
    assert.equal(body, resp.body)
  end)

  it("moves large bodies both ways", function()
    local parts = {}
    for i = 1, 4 * 1024 do
      parts[i] = string.format("%04d", i % 10000):rep(256) -- 1 KiB each
    end
    local big = table.concat(parts) -- 4 MiB
    local n = 5 * 1000 * 1000
    local echoed, bytes = run(function()
      local a = assert(t:request{ method = "POST", url = srv.url .. "/echo", body = big })
      local b = assert(t:request{ url = srv.url .. "/bytes?n=" .. n })
      return a, b
    end)
    assert.equal(#big, #echoed.body)
    assert.is_true(echoed.body == big)
    assert.equal(n, #bytes.body)
    for _, i in ipairs{ 0, 1, 250, 251, 252, 123456, n - 1 } do
      assert.equal(i % 251, bytes.body:byte(i + 1))
    end
  end)

  it("returns HTTP error statuses as responses, not errors", function()
    srv:script{
      { status = 400, body = '{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}',
        headers = { ["content-type"] = "application/x-amz-json-1.0" } },
      { status = 500, body = "<html>oops</html>", headers = { ["content-type"] = "text/html" } },
    }
    run(function()
      local a = assert(t:request{ method = "POST", url = srv.url .. "/", body = "{}" })
      assert.equal(400, a.status)
      assert.matches("ProvisionedThroughputExceededException", a.body)
      local b = assert(t:request{ method = "POST", url = srv.url .. "/", body = "{}" })
      assert.equal(500, b.status)
      assert.equal("text/html", b.headers["content-type"])
    end)
  end)

  it("times out with kind 'timeout' (retryable)", function()
    local resp, err = run(function()
      return t:request{ url = srv.url .. "/slow?delay_ms=3000", timeout_ms = 200 }
    end)
    assert.is_nil(resp)
    assert.equal("timeout", err.kind)
    assert.is_true(err.retryable)
    assert.matches("127.0.0.1", err.message)
    assert.matches("^timeout: ", tostring(err))
  end)

  -- {description, the server's script (or nil), the request (given the
  -- server), the error's kind, retryable}
  for _, case in ipairs{
    -- two drops: libcurl re-sends once by itself when a reused connection
    -- dies before answering (see fault_server.js)
    { "reports a dropped connection as 'reset' (retryable)", { { drop = true }, { drop = true } },
      function(s) return { url = s.url .. "/x" } end, "reset", true },
    { "reports a body shorter than its Content-Length as 'truncated'",
      { { truncate = true, body = '{"Items":[' .. ('{"a":{"S":"x"}},'):rep(100) .. '{}]}' } },
      function(s) return { url = s.url .. "/x" } end, "truncated", true },
    { "reports a refused connection as 'connect'", nil,
      function() return { url = "http://127.0.0.1:1/" } end, "connect", true },
    -- .invalid never resolves (RFC 6761)
    { "reports an unknown host as 'resolve'", nil,
      function() return { url = "http://tide-spec.invalid/", timeout_ms = 5000 } end, "resolve", true },
    { "reports a malformed URL as 'url' (not retryable)", nil,
      function() return { url = "http//missing-colon" } end, "url", false },
    -- the fault server speaks plain HTTP: the handshake cannot succeed
    { "reports a failed TLS handshake as 'tls' (not retryable)", nil,
      function(s) return { url = "https://127.0.0.1:" .. s.port .. "/x" } end, "tls", false },
  } do
    it(case[1], function()
      if case[2] then srv:script(case[2]) end
      local resp, err = run(function() return t:request(case[3](srv)) end)
      assert.is_nil(resp)
      assert.equal(case[4], err.kind)
      assert.equal(case[5], err.retryable)
    end)
  end

  it("does not let libcurl re-send a request with a body after a drop", function()
    -- on a reused connection libcurl would retry silently; the server may
    -- have acted on the first copy, so the caller must see the failure
    local resp, err, stats = run(function()
      assert(t:request{ method = "POST", url = srv.url .. "/warm", body = "x" })
      srv:script{ { drop = true } }
      local r, e = t:request{ method = "POST", url = srv.url .. "/x", body = '{"a":1}' }
      return r, e, srv:stats()
    end)
    assert.is_nil(resp)
    assert.equal("reset", err.kind)
    assert.is_true(err.retryable)
    assert.equal(2, stats.requests)
    assert.equal(1, stats.connections)
  end)

  it("never puts request header values in error messages", function()
    local _, err = run(function()
      return t:request{ url = srv.url .. "/slow?delay_ms=3000", timeout_ms = 100,
                        headers = { Authorization = "AWS4-HMAC-SHA256 Credential=SECRETKEY" } }
    end)
    assert.equal("timeout", err.kind)
    assert.is_nil(err.message:find("SECRETKEY", 1, true))
  end)

  it("forwards sleep, spawn, wait and now to the scheduler", function()
    run(function()
      local t0 = t.now()
      local th = t.spawn(function(x) t.sleep(0.001) return x * 2 end, 21)
      local ok, v = t.wait(th)
      assert.is_true(ok)
      assert.equal(42, v)
      assert.is_true(t.now() >= t0)
    end)
  end)

  it("raises on a bad request table", function()
    run(function()
      assert.has_error(function() t:request() end)
      assert.has_error(function() t:request{ url = 1 } end)
      assert.has_error(function() t:request{ url = srv.url, body = 1 } end)
      assert.has_error(function() t:request{ url = srv.url, headers = 1 } end)
    end)
  end)

  describe("under load", function()
    after_each(function()
      sched.configure{ max_connections = 512 }
    end)

    -- Runs n threads, each doing one request the server delays; returns
    -- how many succeeded.
    local function wave(n, delay_ms)
      local threads, ok = {}, 0
      for i = 1, n do
        threads[i] = t.spawn(function()
          local resp, err = t:request{ url = srv.url .. "/load/" .. i .. "?delay_ms=" .. delay_ms }
          assert(resp, tostring(err))
          return resp.status
        end)
      end
      for i = 1, n do
        local good, status = t.wait(threads[i])
        if good and status == 200 then ok = ok + 1 end
      end
      return ok
    end

    it("keeps 256+ requests in flight on kept-alive connections", function()
      sched.configure{ max_connections = 512 }
      local first, second, stats1, stats2
      run(function()
        first = wave(300, 300)
        stats1 = srv:stats()
        srv:reset()
        second = wave(300, 300)
        stats2 = srv:stats()
      end)
      assert.equal(300, first)
      assert.equal(300, second)
      assert.is_true(stats1.max_concurrent >= 256, "max_concurrent " .. stats1.max_concurrent)
      assert.is_true(stats1.connections <= 512, "connections " .. stats1.connections)
      assert.equal(300, stats1.requests)
      -- the second wave rides on the first wave's connections
      assert.is_true(stats2.max_concurrent >= 256, "max_concurrent " .. stats2.max_concurrent)
      assert.is_true(stats2.connections <= 10, "new connections in wave 2: " .. stats2.connections)
    end)

    it("never opens more than max_connections", function()
      sched.configure{ max_connections = 8 }
      local n, stats
      run(function()
        n = wave(40, 50)
        stats = srv:stats()
      end)
      assert.equal(40, n)
      assert.is_true(stats.connections <= 8, "connections " .. stats.connections)
      assert.is_true(stats.max_concurrent <= 8, "max_concurrent " .. stats.max_concurrent)
      assert.equal(40, stats.requests)
    end)
  end)
end)
