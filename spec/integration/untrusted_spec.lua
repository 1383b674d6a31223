-- Bad input and bad user code never stop the runtime (issue 15), on both
-- stores, through the tide binary: poison ids, parking an event a
-- projection cannot apply, the user-code budget, huge batch lines, tide
-- run with nothing to run, the sandbox, strict JSON, the example's exact
-- balances, and the messages and exit codes of bad stores. The nginx host
-- is in the last block (ids, sandbox, budget, strict JSON).
local helpers = require "helpers"
local stores = require "stores"
local sched = require "tide.sched"
local input = require "tide.input"
local cjson = require "cjson.safe"

local ROOT = helpers.root
local q = helpers.shell_quote
local tide = stores.tide

local function copy(from, to) helpers.write_file(to, assert(helpers.read_file(from))) end

local U = require "untrusted"
local lines, json, check_store, wait_for = U.lines, U.json, U.check_store, U.wait_for

-- A project folder for kind: the example account, the hostile aggregate,
-- the picky projection; a 300 ms budget.
local function project(kind, extra)
  local dir, desc = stores.cli_dir(kind, extra)
  os.execute("mkdir -p " .. q(dir .. "/aggregates") .. " " .. q(dir .. "/projections"))
  copy(ROOT .. "/aggregates/account.lua", dir .. "/aggregates/account.lua")
  copy(ROOT .. "/spec/fixtures/aggregates/hostile.lua", dir .. "/aggregates/hostile.lua")
  copy(ROOT .. "/spec/fixtures/projections/picky.lua", dir .. "/projections/picky.lua")
  desc.aggregates = dir .. "/aggregates"
  stores.write_config(dir, kind, desc, { "projections: " .. dir .. "/projections", "lua:",
                                         "  handler_budget_ms: 300", unpack(extra or {}) })
  local out, status = tide(dir, "init")
  assert(status == 0, out)
  return dir, desc
end

-- Runs `tide ARGS` and checks that each line of its stdout is JSON.
local function tide_json(dir, args, stdin)
  local out, status = tide(dir, args, stdin, true)
  for _, l in ipairs(lines(out)) do json(l, args) end
  return out, status
end

-- `tide batch` with text on stdin from a file (any bytes: NUL, huge lines);
-- returns stdout, status.
local function batch_file(dir, text)
  helpers.write_file(dir .. "/input.ndjson", text)
  return helpers.run(("cd %s && %s%s batch < input.ndjson 2>/dev/null"):format(q(dir), stores.CLI_ENV,
    q(helpers.tide_bin)))
end

stores.each(function(kind)
  describe("untrusted input on the " .. kind .. " store:", function()
    local dir, desc
    setup(function() dir, desc = project(kind) end)
    teardown(function() os.execute("rm -rf " .. q(dir)) end)

    it("1. ids, aggregate names and command ids are checked before anything is written; output is JSON", function()
      local cases = {
        { "exec account " .. q("\255\254") .. " '{\"type\":\"Open\",\"owner\":\"X\"}'", "the aggregate id is not valid UTF%-8 %(byte 1%)" },
        { "exec account " .. q("a\1b") .. " '{\"type\":\"Open\",\"owner\":\"X\"}'", "the aggregate id holds a control character" },
        { "exec account " .. q(("x"):rep(1025)) .. " '{\"type\":\"Open\",\"owner\":\"X\"}'", "the aggregate id is 1025 bytes, over the 1024%-byte limit" },
        { "exec " .. q("acc\255") .. " a1 '{\"type\":\"Open\",\"owner\":\"X\"}'", "the aggregate name is not valid UTF%-8" },
        { "exec account a1 " .. q('{"type":"Open","owner":"X","id":"\\u0000"}'), "the command id holds a control character" },
        { "state account " .. q("\255"), "the aggregate id is not valid UTF%-8" },
        { "events account " .. q("\255"), "the aggregate id is not valid UTF%-8" },
      }
      for _, c in ipairs(cases) do
        local out, status = tide(dir, c[1], nil, false)
        assert.equal(2, status, c[1] .. " -> " .. out)
        assert.matches(c[2], out)
        if c[1]:match("^exec") then assert.equal("invalid", json(out).error.kind) end
      end
      -- a 250 KB command id (too long for a command line: in a batch)
      helpers.write_file(dir .. "/long-id.ndjson", cjson.encode{ aggregate = "account", id = "a1",
        command = { type = "Open", owner = "X", id = ("c"):rep(250 * 1024) } } .. "\n")
      local out, status = helpers.run(("cd %s && %s%s batch < long-id.ndjson 2>&1"):format(q(dir), stores.CLI_ENV,
        q(helpers.tide_bin)))
      assert.equal(2, status, out)
      assert.matches("the command id is 256000 bytes, over the 256%-byte limit", json(out).error.message)
      -- the same in a batch, line by line; the good line runs
      out, status = tide_json(dir, "batch", table.concat({
        '{"aggregate":"account","id":"\\u0001","command":{"type":"Open","owner":"X"}}',
        '{"aggregate":"account","id":"\255","command":{"type":"Open","owner":"X"}}',
        '{"aggregate":"account","id":"ok-1","command":{"type":"Open","owner":"X"}}',
      }, "\n"))
      assert.equal(2, status)
      local r = lines(out)
      assert.matches("control character", json(r[1]).error.message)
      assert.matches("line 2 is not valid JSON: column %d+: .*UTF8", json(r[2]).error.message)
      assert.is_true(json(r[3]).ok)
      -- only the good command was written, and every projection goes on
      local n, streams = check_store(kind, desc)
      assert.equal(1, n)
      assert.truthy(streams["account#ok-1"])
    end)

    it("2. the budget stops a handler that never returns; other commands and lines go on", function()
      for _, c in ipairs{ "Spin", "Catch", "Load" } do
        local out, status = tide_json(dir, "exec hostile h1 '{\"type\":\"" .. c .. "\"}'")
        assert.equal(1, status, out)
        local e = json(out).error
        assert.equal("handler_error", e.kind)
        assert.matches("hostile.commands." .. c .. " ran past its budget of 300 ms %(lua.handler_budget_ms%)", e.message)
      end
      local out, status = tide_json(dir, "batch", table.concat({
        '{"aggregate":"hostile","id":"h2","command":{"type":"Spin"}}',
        '{"aggregate":"account","id":"b2","command":{"type":"Open","owner":"B"}}',
        '{"aggregate":"hostile","id":"h2","command":{"type":"Ok","n":1}}',
      }, "\n"))
      assert.equal(1, status)
      local r = lines(out)
      assert.equal(3, #r)
      assert.matches("ran past its budget", json(r[1]).error.message)
      assert.is_true(json(r[2]).ok)
      assert.is_true(json(r[3]).ok)
      -- a module whose top level never returns: reported, and nothing else is held up
      helpers.write_file(dir .. "/aggregates/frozen.lua", "local n = 0\nwhile true do n = n + 1 end\nreturn {}\n")
      out, status = tide_json(dir, "exec account b3 '{\"type\":\"Open\",\"owner\":\"C\"}'")
      assert.equal(0, status, out)
      out = tide_json(dir, "status --json") -- (on DynamoDB, exit 5 before a projection made its leases)
      assert.matches('"aggregate":"frozen","load_error":"[^"]*frozen.lua: the module raised while loading: '
        .. "frozen's top level %([^)]*%) ran past its budget of 300 ms", out)
      out, status = tide_json(dir, "exec frozen f1 '{\"type\":\"X\"}'")
      assert.equal(2, status)
      assert.matches("aggregate 'frozen' failed to load", json(out).error.message)
      os.remove(dir .. "/aggregates/frozen.lua")
    end)

    it("2. the budget stops a projection handler that never returns", function()
      local out, status = tide_json(dir, "exec account spin-1 '{\"type\":\"Open\",\"owner\":\"spin\"}'")
      assert.equal(0, status, out)
      if kind == "sqlite" then
        out, status = tide(dir, "project picky --until-caught-up")
        assert.equal(1, status, out)
        assert.matches("picky.handlers.Opened ran past its budget of 300 ms", out)
      end
      -- set it aside, or the next specs would stop at it too (on DynamoDB
      -- the parking spec's tide run would, with this very message)
      out, status = tide(dir, "park picky account#spin-1 1")
      assert.equal(0, status, out)
    end)

    it("parks an event a projection cannot apply: named by status, recorded, passed over, listed", function()
      for i, owner in ipairs{ "fine", "poison", "also fine" } do
        local out, status = tide(dir, ("exec account p%d '{\"type\":\"Open\",\"owner\":\"%s\"}'"):format(i, owner))
        assert.equal(0, status, out)
      end
      if kind == "sqlite" then
        local out, status = tide(dir, "project picky --until-caught-up")
        assert.equal(1, status, out)
        assert.matches("stream account#p2 version 1 %(Opened%): handler_error: picky.handlers.Opened raised: "
          .. "[^\n]*picky.lua:%d+: cannot take the owner poison", out)
        assert.not_matches("lua/tide/", out)
        -- never skipped silently: it stops there again
        out, status = tide(dir, "project picky --until-caught-up")
        assert.equal(1, status, out)
        out = tide_json(dir, "status --json")
        local st
        for _, l in ipairs(lines(out)) do
          local v = json(l)
          if v.projection == "picky" then st = v.status end
        end
        assert.same({ stream = "account#p2", version = 1, type = "Opened" }, st.failing_event)
        assert.matches("cannot take the owner poison", st.error)
        assert.equal("fine", select(1, tide(dir, "read picky p1", nil, true)):match('"owner":"([^"]+)"'))
        local _, rs = tide(dir, "read picky p3", nil, true)
        assert.equal(6, rs)
        out, status = tide_json(dir, "park picky account#p2 1")
        assert.equal(0, status, out)
        local parked = json(out)
        assert.same({ true, "picky", "account#p2", 1, "Opened" },
          { parked.ok, parked.projection, parked.stream, parked.version, parked.type })
        assert.matches("cannot take the owner poison", parked.error)
        out, status = tide(dir, "project picky --until-caught-up")
        assert.equal(0, status, out)
        assert.matches("passing over a parked event", out)
      else
        -- DynamoDB Streams: the daemon retries the event; parked, it goes on
        local run = ("cd %s && %s%s run > run.out 2> run.err & echo $!"):format(q(dir), stores.CLI_ENV,
          q(helpers.tide_bin))
        local pid = assert(tonumber(helpers.run(run):match("%d+")))
        local ok, err = pcall(function()
          local line = wait_for(function()
            local out = tide(dir, "status --json", nil, true)
            for _, l in ipairs(lines(out)) do
              local v = json(l)
              if v.projection == "picky" and v.status and v.status.error
                  and v.status.error:find("account#p2", 1, true) then
                return v.status.error
              end
            end
          end, 120, "tide status to name the failing event")
          assert.matches("account#p2 v1 %(Opened%): picky.handlers.Opened raised: [^\n]*cannot take the owner poison", line)
          local out, status = tide_json(dir, "park picky account#p2 1")
          assert.equal(0, status, out)
          wait_for(function() return select(2, tide(dir, "read picky p3", nil, true)) == 0 end, 120,
            "the projection to go on past the parked event")
        end)
        os.execute("kill -TERM " .. pid)
        wait_for(function() return os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0 end, 60, "tide run to stop")
        for _, l in ipairs(lines(helpers.read_file(dir .. "/run.err"))) do json(l, "tide run's stderr") end
        assert(ok, err)
      end
      local out = tide_json(dir, "read picky p3")
      assert.equal("also fine", json(out).owner)
      local _, s = tide(dir, "read picky p2", nil, true)
      assert.equal(6, s)
      -- listed by status until unparked
      out = tide_json(dir, "status --json")
      assert.matches('"parked":%[{[^]]*"stream":"account#p2"', out)
      local status
      out, status = tide_json(dir, "unpark picky account#p2 1")
      assert.equal(0, status, out)
      _, status = tide(dir, "unpark picky account#p2 1")
      assert.equal(6, status)
      _, status = tide(dir, "park picky account#p2 99")
      assert.equal(6, status)
      _, status = tide(dir, "park picky nostream 1")
      assert.equal(2, status)
    end)

    it("3. tide batch: a line over commands.max_line_bytes is refused by name, the next lines run", function()
      local big = '{"aggregate":"account","id":"l1","command":{"type":"Open","owner":"' .. ("x"):rep(2 * 1024 * 1024) .. '"}}'
      local path = dir .. "/big.ndjson"
      helpers.write_file(path, big .. "\n" .. '{"aggregate":"account","id":"l1","command":{"type":"Open","owner":"L"}}\n'
        .. big .. "\n" .. '{"aggregate":"account","id":"l1","command":{"type":"Deposit","amount":3}}')
      local out, status = helpers.run(("cd %s && %s%s batch < %s 2>/dev/null"):format(q(dir), stores.CLI_ENV,
        q(helpers.tide_bin), q(path)))
      assert.equal(2, status)
      local r = lines(out)
      assert.equal(4, #r)
      assert.matches("line 1 is 2097222 bytes, over the 1048576%-byte limit %(commands.max_line_bytes%): skipped",
        json(r[1]).error.message)
      assert.is_true(json(r[2]).ok)
      assert.matches("line 3 is", json(r[3]).error.message)
      assert.equal(2, json(r[4]).version)
    end)

    it("5. the sandbox: no os.exit, io, os.getenv, ffi, bytecode or new globals; the batch goes on", function()
      local cmds = {
        { "Exit", "os.exit is not available in tide's sandbox" },
        { "Popen", "global 'io' is not available in tide's sandbox" },
        { "Secret", "os.getenv is not available in tide's sandbox" },
        { "Ffi", "require \"ffi\": tide's sandbox loads only" },
        { "Bytecode", "string.dump is not available" },
        { "Global", "assigning the global 'leaked'" },
        { "Ok" },
      }
      local batch = {}
      for i, c in ipairs(cmds) do
        batch[i] = cjson.encode{ aggregate = "hostile", id = "s1", command = { type = c[1] } }
      end
      local out, status = tide_json(dir, "batch", table.concat(batch, "\n"))
      assert.equal(1, status)
      local r = lines(out)
      assert.equal(#cmds, #r)
      for i, c in ipairs(cmds) do
        local v = json(r[i])
        if c[2] then
          assert.equal("handler_error", v.error.kind)
          assert.matches(c[2], v.error.message, 1, true)
        else
          assert.is_true(v.ok)
        end
      end
      assert.not_matches("tidetestsecret", out)
      out = tide(dir, "events hostile s1", nil, true)
      assert.not_matches("tidetestsecret", out)
    end)

    it("6. strict JSON: invalid numbers and NUL bytes are refused with the line and column", function()
      for _, c in ipairs{ { "0x10", 29 }, { "007", 29 }, { "+5", 29 }, { "5.", 30 }, { "NaN", 29 },
                          { "Infinity", 29 }, { "1e400", 29 } } do
        local out, status = tide_json(dir, "exec account j1 '{\"type\":\"Deposit\",\"amount\":" .. c[1] .. "}'")
        assert.equal(2, status, out)
        assert.matches("COMMAND_JSON is not valid JSON: column %d+: ", json(out).error.message)
      end
      local out, status = tide_json(dir, "exec account j1 " .. q('{"type":"Open",\n "owner": 0x1}'))
      assert.equal(2, status)
      assert.matches("line 2, column 12", json(out).error.message)
      -- a NUL byte on a batch line: refused, not cut off
      out, status = batch_file(dir,
        '{"aggregate":"account","id":"j2","command":{"type":"Open","owner":"N"}}\0{"x":1}\n'
        .. '{"aggregate":"account","id":"j3","command":{"type":"Open","owner":"N"}}')
      assert.equal(2, status)
      local r = lines(out)
      assert.matches("line 1 is not valid JSON: column 72: a NUL byte", json(r[1]).error.message)
      assert.is_true(json(r[2]).ok)
      -- nothing was written: the stream is not found (exit 6, as HTTP's 404)
      local _, s = tide(dir, "state account j2")
      assert.equal(6, s)
    end)

    it("7. the example keeps balances exact: amounts and balances are bounded", function()
      assert.equal(0, select(2, tide(dir, "exec account x1 '{\"type\":\"Open\",\"owner\":\"X\"}'")))
      local out, status = tide_json(dir, "exec account x1 '{\"type\":\"Deposit\",\"amount\":9007199254740991}'")
      assert.equal(2, status)
      assert.matches("must be at most 1000000000000", out)
      for _ = 1, 3 do
        out, status = tide_json(dir, "exec account x1 '{\"type\":\"Deposit\",\"amount\":1000000000000}'")
        assert.equal(0, status, out)
      end
      out = tide_json(dir, "state account x1")
      assert.matches('"balance":3000000000000', out)
    end)

    it("8. a stack overflow, a corrupt event and a module's load error say what they are", function()
      local out, status = tide_json(dir, "exec hostile o1 '{\"type\":\"Deep\"}'")
      assert.equal(1, status)
      assert.matches("stack overflow", json(out).error.message)
      assert.not_matches("error in error handling", out)
      -- an event whose stored data cannot be read: a store failure (5)
      sched.run(function()
        local store = kind == "sqlite" and stores.open_sqlite(desc.path) or select(1, stores.open_dynamodb(desc.prefix))
        assert(store:append("account#bad", 0, { { type = "Opened", data = "garbage{", meta = "{}" } }))
        if store.close then store:close() end
      end)
      out, status = tide_json(dir, "exec account bad '{\"type\":\"Deposit\",\"amount\":1}'")
      assert.equal(5, status, out)
      assert.equal("store", json(out).error.kind)
      assert.matches("stored event 1 cannot be read", out)
      out, status = tide(dir, "state account bad")
      assert.equal(5, status, out)
      -- a broken module's error names the user's file and line, not tide's insides
      helpers.write_file(dir .. "/aggregates/broken.lua", "local x = nil\nreturn x.y\n")
      out = tide_json(dir, "status --json")
      assert.matches('"aggregate":"broken","load_error":"[^"]*broken.lua:2: attempt to index local \'x\'', out)
      assert.not_matches("lua/tide/", out)
      assert.not_matches("xpcall", out)
      os.remove(dir .. "/aggregates/broken.lua")
    end)

    it("4. tide run: nothing runnable exits 2; every stderr line is JSON", function()
      local empty = helpers.tmpdir()
      os.execute("mkdir -p " .. q(empty .. "/projections"))
      local d = { path = empty .. "/tide.db", endpoint = desc.endpoint, prefix = desc.prefix,
                  aggregates = dir .. "/aggregates" }
      stores.write_config(empty, kind, d, { "projections: " .. empty .. "/projections" })
      local out, status = helpers.run(("cd %s && %s%s run 2>&1 >/dev/null"):format(q(empty), stores.CLI_ENV,
        q(helpers.tide_bin)))
      assert.equal(2, status, out)
      for _, l in ipairs(lines(out)) do json(l) end
      assert.matches("no projection can run", out)
      -- the only projection module is broken
      helpers.write_file(empty .. "/projections/bad.lua", "return 42\n")
      out, status = helpers.run(("cd %s && %s%s run 2>&1 >/dev/null"):format(q(empty), stores.CLI_ENV,
        q(helpers.tide_bin)))
      assert.equal(2, status, out)
      for _, l in ipairs(lines(out)) do json(l) end
      assert.matches("every projection module failed to load", out)
      os.execute("rm -rf " .. q(empty))
    end)
  end)
end)

describe("tide run with the store unreachable", function()
  it("retries with backoff, logs JSON, and exits 5 when stopped before a projection started", function()
    local dir = helpers.tmpdir()
    os.execute("mkdir -p " .. q(dir .. "/projections"))
    copy(ROOT .. "/projections/balances.lua", dir .. "/projections/balances.lua")
    stores.write_config(dir, "dynamodb", { endpoint = "http://127.0.0.1:9", prefix = "nowhere_",
                                           aggregates = ROOT .. "/aggregates" },
      { "projections: " .. dir .. "/projections" }, { "max_attempts: 1", "timeout_ms: 500" })
    local pid = assert(tonumber(helpers.run(("cd %s && %s%s run > out 2> err & echo $!"):format(q(dir),
      stores.CLI_ENV, q(helpers.tide_bin))):match("%d+")))
    wait_for(function()
      return select(2, (helpers.read_file(dir .. "/err") or ""):gsub("failed to start; retrying", "")) >= 2
    end, 60, "two failed starts")
    assert.equal(0, os.execute("kill -TERM " .. pid))
    wait_for(function() return os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0 end, 30, "tide run to stop")
    local err = helpers.read_file(dir .. "/err")
    for _, l in ipairs(lines(err)) do json(l, "stderr") end
    assert.matches('"msg":"tide run: stopped before every projection could start"', err)
    os.execute("rm -rf " .. q(dir))
  end)
end)

describe("tide run with a projection handler that never returns", function()
  it("2. logs the budget's error, keeps retrying, and stops on SIGTERM", function()
    local dir = project("sqlite")
    assert.equal(0, select(2, tide(dir, "exec account loop-1 '{\"type\":\"Open\",\"owner\":\"spin\"}'")))
    local pid = assert(tonumber(helpers.run(("cd %s && %s%s run > run.out 2> run.err & echo $!"):format(q(dir),
      stores.CLI_ENV, q(helpers.tide_bin))):match("%d+")))
    wait_for(function()
      return (helpers.read_file(dir .. "/run.err") or ""):find("picky.handlers.Opened ran past its budget", 1, true)
    end, 60, "the budget's error in the log")
    os.execute("kill -TERM " .. pid)
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    wait_for(function() return os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0 end, 60, "tide run to stop")
    for _, l in ipairs(lines(helpers.read_file(dir .. "/run.err"))) do json(l, "tide run's stderr") end
    os.execute("rm -rf " .. q(dir))
  end)
end)

describe("a crashed worker's lease", function()
  it("tide project --until-caught-up waits for it to run out instead of failing at once", function()
    local dir, desc = project("sqlite")
    assert.equal(0, select(2, tide(dir, "exec account w1 '{\"type\":\"Open\",\"owner\":\"W\"}'")))
    sched.run(function()
      local store = stores.open_sqlite(desc.path)
      local backend = require("tide.projection.sqlite").new{ store = store }
      assert(backend:init("picky"))
      -- a worker that took the lease for 1.5 s and died
      assert.is_true(backend:acquire("picky", "crashed-worker", 1500))
      store:close()
    end)
    local out, status = tide(dir, "project picky --until-caught-up")
    assert.equal(0, status, out)
    assert.matches("waiting for the lease of another owner to run out", out)
    assert.equal("W", json((tide(dir, "read picky w1", nil, true))).owner)
    os.execute("rm -rf " .. q(dir))
  end)
end)

describe("untrusted input in nginx (the embedded store):", function()
  local dir, url
  setup(function()
    dir = helpers.tmpdir()
    os.execute("mkdir -p " .. q(dir .. "/aggregates"))
    copy(ROOT .. "/aggregates/account.lua", dir .. "/aggregates/account.lua")
    copy(ROOT .. "/spec/fixtures/aggregates/hostile.lua", dir .. "/aggregates/hostile.lua")
    local config = stores.write_config(dir, "sqlite", { path = dir .. "/tide.db", aggregates = dir .. "/aggregates" },
      { "projections: " .. ROOT .. "/projections", "lua:", "  handler_budget_ms: 300" })
    url = U.start_site(dir, config)
  end)
  teardown(function()
    U.stop_site(dir)
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  local function post(path, body)
    local status, raw = assert(U.http("POST", url .. path, body))
    return status, json(raw, "the response to POST " .. path), raw
  end

  it("1. refuses ids and command ids that are not valid UTF-8 or too long; the body is JSON", function()
    for _, c in ipairs{
      { "/aggregates/account/%FF%FE", '{"type":"Open","owner":"X"}', "the aggregate id is not valid UTF%-8" },
      { "/aggregates/account/a%01b", '{"type":"Open","owner":"X"}', "control character" },
      { "/aggregates/acc%FF/a1", '{"type":"Open","owner":"X"}', "the aggregate name is not valid UTF%-8" },
      { "/aggregates/account/" .. ("x"):rep(1100), '{"type":"Open","owner":"X"}', "1100 bytes, over the 1024%-byte limit" },
      { "/aggregates/account/a1", '{"type":"Open","owner":"X","id":"' .. ("c"):rep(300) .. '"}', "the command id is 300 bytes" },
    } do
      local status, body = post(c[1], c[2])
      assert.equal(400, status)
      assert.equal("invalid", body.error.kind)
      assert.matches(c[3], body.error.message)
    end
    local status, raw = assert(U.http("GET", url .. "/aggregates/account/%FF"))
    assert.equal(400, status)
    json(raw)
  end)

  it("5. runs handlers in the sandbox", function()
    for _, c in ipairs{ { "Exit", "os.exit is not available" }, { "Secret", "os.getenv is not available" },
                        { "Popen", "global 'io' is not available" }, { "Ffi", "tide's sandbox loads only" } } do
      local status, body = post("/aggregates/hostile/n1", '{"type":"' .. c[1] .. '"}')
      assert.equal(500, status)
      assert.equal("handler_error", body.error.kind)
      assert.matches(c[2], body.error.message, 1, true)
    end
    -- the worker is alive
    assert.equal(200, (post("/aggregates/hostile/n1", '{"type":"Ok"}')))
  end)

  it("2. stops a handler that never returns; the worker goes on", function()
    for _, c in ipairs{ "Spin", "Catch" } do
      local status, body = post("/aggregates/hostile/n2", '{"type":"' .. c .. '"}')
      assert.equal(500, status)
      assert.matches("hostile.commands." .. c .. " ran past its budget of 300 ms", body.error.message)
    end
    assert.equal(200, (post("/aggregates/account/n2", '{"type":"Open","owner":"N"}')))
  end)

  it("6. strict JSON bodies: invalid numbers and NUL bytes, with the column", function()
    for _, b in ipairs{ '{"type":"Deposit","amount":0x10}', '{"type":"Deposit","amount":007}',
                        '{"type":"Deposit","amount":NaN}', '{"type":"Deposit","amount":5.}',
                        '{"type":"Open","owner":"x"}\0{"type":"Close"}' } do
      local status, body = post("/aggregates/account/n3", b)
      assert.equal(400, status, b)
      assert.matches("the request body is not valid JSON: column %d+: ", body.error.message)
    end
    assert.equal(404, (U.http("GET", url .. "/aggregates/account/n3")))
  end)
end)
