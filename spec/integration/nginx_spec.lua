-- tide inside nginx: the example site (examples/nginx/, tools/nginx.sh) on
-- real nginx (Debian's nginx-light + libnginx-mod-http-lua), every route
-- and every error status, against the embedded store and DynamoDB Local;
-- hot reload with `nginx -s reload`. Requests go through tide.sched's HTTP
-- client (libcurl), not a hand-written one.
--
-- nginx always loads the plain build (build/lua/tide/*.so), even in the
-- sanitizer run: nginx is not built with ASan. tools/nginx.sh drops
-- LD_PRELOAD for everything it starts.
local helpers = require "helpers"
local stores = require "stores"
local sched = require "tide.sched"
local cjson = require "cjson.safe"
local api = require "tide.http.api"
local conf = require "tide.http.conf"

local ROOT = helpers.root
local q = helpers.shell_quote

local function sh(cmd)
  return helpers.run("env -u LD_PRELOAD " .. stores.CLI_ENV .. cmd .. " 2>&1")
end

-- One HTTP exchange: status, decoded JSON body (or the raw text), headers, raw body.
-- Connection: close, so that no request rides a kept-alive connection to a
-- worker that a reload is retiring (it would answer with the old modules).
local function http(method, url, body, headers)
  headers = headers or {}
  headers["Connection"] = "close"
  local resp, err = sched.run(function()
    return sched.request{ method = method, url = url, body = body, headers = headers, timeout_ms = 20000 }
  end)
  assert(resp, "HTTP " .. method .. " " .. url .. ": " .. tostring(err and err.message or err))
  return resp.status, cjson.decode(resp.body) or resp.body, resp.headers, resp.body
end

local free_port = helpers.free_port

-- Starts the site in dir/site against config; returns its URL. Stops it
-- again if it did not come up, so a failed setup leaves nothing running.
local function start_site(dir, config, env)
  local out, status = sh("TIDE_NGINX_WORKERS=1 " .. (env or "") .. " tools/nginx.sh start " .. q(dir .. "/site")
                         .. " " .. q(config))
  if status ~= 0 then
    sh("tools/nginx.sh stop " .. q(dir .. "/site"))
    error("tools/nginx.sh start failed (" .. tostring(status) .. "): " .. out)
  end
  return (out:match("(http://127%.0%.0%.1:%d+)"))
end

local function stop_site(dir)
  if dir then sh("tools/nginx.sh stop " .. q(dir .. "/site")) end
end

local function copy(from, to)
  helpers.write_file(to, assert(helpers.read_file(from)))
end

-- A project folder: account + faulty aggregates, the example projections.
local function project(kind, desc)
  local dir = helpers.tmpdir()
  os.execute("mkdir -p " .. q(dir .. "/aggregates"))
  copy(ROOT .. "/aggregates/account.lua", dir .. "/aggregates/account.lua")
  copy(ROOT .. "/spec/fixtures/aggregates/faulty.lua", dir .. "/aggregates/faulty.lua")
  local store = { path = desc.path, endpoint = desc.endpoint, prefix = desc.prefix, aggregates = dir .. "/aggregates" }
  local path = stores.write_config(dir, kind, store,
    -- one attempt: a stale state is reported as a conflict at once (the 409
    -- test); desc.default_attempts: the default commands.max_attempts
    { "projections: " .. ROOT .. "/projections", "commands:",
      desc.default_attempts and "  batching: true" or "  max_attempts: 1" },
    kind == "sqlite" and { "busy_timeout_ms: 200" }
      or { "max_attempts: " .. (desc.max_attempts or 4), "timeout_ms: 5000" })
  return dir, path
end

------------------------------------------------------------------------

describe("tide.http.api without nginx", function()
  it("routes by method and %-decoded path segments", function()
    local h, p = api.route("POST", "/aggregates/account/a%2Fb?x=1")
    assert.equal("command", h)
    assert.same({ type = "account", id = "a/b" }, p)
    assert.equal("state", (api.route("GET", "/aggregates/account/a")))
    assert.equal("state", (api.route("HEAD", "/aggregates/account/a")))
    assert.equal("read", (api.route("GET", "/read/balances/k")))
    assert.equal("health", (api.route("GET", "/health")))
    local _, status, kind, msg, allow = api.route("DELETE", "/aggregates/account/a")
    assert.same({ 405, "method_not_allowed", "GET, POST" }, { status, kind, allow })
    assert.matches("answers GET, POST", msg)
    _, status, kind = api.route("GET", "/aggregates/account")
    assert.same({ 404, "not_found" }, { status, kind })
    _, status = api.route("POST", "/read/balances/k")
    assert.equal(405, status)
  end)

  it("maps every error kind to its status", function()
    local want = { invalid = 400, rejected = 422, conflict = 409, handler_error = 500, too_many_events = 500,
                   event_too_large = 413, store = 503, not_found = 404, too_large = 413, whatever = 500,
                   idempotency_mismatch = 422 }
    for kind, status in pairs(want) do assert.equal(status, api.status_of(kind), kind) end
  end)

  it("refuses bodies that are not one JSON object, naming the problem", function()
    assert.matches("empty", select(2, api.decode_command("")))
    assert.matches("not valid JSON", select(2, api.decode_command("{")))
    assert.matches("must be a JSON object", select(2, api.decode_command("[1,2]")))
    assert.matches("must be a JSON object", select(2, api.decode_command("42")))
    assert.same({ type = "Deposit", amount = 5 }, api.decode_command('{"type":"Deposit","amount":5}'))
    assert.equal('{"ok":false,"error":{"kind":"invalid","message":"x"}}', api.error_body("invalid", "x"))
  end)

  it("renders nginx.conf: the upstream from the DynamoDB endpoint, nothing of it for SQLite", function()
    local template = assert(helpers.read_file(ROOT .. "/examples/nginx/nginx.conf"))
    local base = { prefix = "/p", listen = "127.0.0.1:1", root = ROOT, config = "/c/tide.yaml" }
    local sq = assert(conf.render(template, assert(conf.site_vars(
      assert(require("tide.config").from_table({ store = "sqlite" })), base))))
    assert.not_matches("upstream", sq)
    assert.matches('init%({ config = "/c/tide.yaml", routes = {  } }%)', sq)
    local cfg = assert(require("tide.config").from_table({ store = "dynamodb",
      dynamodb = { endpoint = "https://dynamodb.eu-west-1.amazonaws.com", region = "eu-west-1", max_connections = 32 } }))
    local dd = assert(conf.render(template, assert(conf.site_vars(cfg, base))))
    assert.matches("server dynamodb%.eu%-west%-1%.amazonaws%.com:443;", dd)
    assert.matches("keepalive 32;", dd)
    assert.matches("proxy_pass https://tide_dynamodb/;", dd)
    assert.matches("proxy_ssl_verify on;", dd)
    assert.matches("proxy_ssl_name dynamodb%.eu%-west%-1%.amazonaws%.com;", dd)
    assert.not_matches("{{", dd)
    assert.is_nil((conf.render("{{nope}}", {})))
  end)
end)

------------------------------------------------------------------------

for _, kind in ipairs({ "sqlite", "dynamodb" }) do
  describe("the nginx site on the " .. kind .. " store", function()
    local dir, config, url, desc, store

    setup(function()
      if kind == "sqlite" then
        desc = { path = helpers.tmpdir() .. "/tide.db" }
      else
        desc = { endpoint = assert(helpers.dynamodb_endpoint(), "TIDE_TEST_DYNAMODB_ENDPOINT not set: run tools/test.sh"),
                 prefix = helpers.unique("ngx") .. "_" }
      end
      dir, config = project(kind, desc)
      url = start_site(dir, config)
    end)

    teardown(function()
      stop_site(dir)
      if store then pcall(function() store:close() end) end
      if dir then os.execute("rm -rf " .. q(dir)) end
      if desc and desc.path then os.execute("rm -rf " .. q((desc.path:gsub("/tide%.db$", "")))) end
    end)

    local function post(path, body, headers)
      return http("POST", url .. path, body, headers)
    end
    local function get(path) return http("GET", url .. path) end

    it("GET /health: 200 with the store kind and the module versions", function()
      local status, body = get("/health")
      assert.equal(200, status)
      assert.is_true(body.ok)
      assert.equal(kind, body.store)
      assert.equal(require("tide").version, body.versions.tide)
      assert.is_number(body.versions.nginx)
      assert.is_number(body.versions.ngx_lua)
      assert.is_string(body.aggregates.account)
      assert.is_string(body.aggregates.faulty)
    end)

    it("POST /aggregates/{type}/{id}: 200 with the result as tide exec prints it", function()
      local status, body, headers, raw = post("/aggregates/account/alice", '{"type":"Open","owner":"Alice"}')
      assert.equal(200, status, raw)
      assert.matches("^application/json", headers["content-type"])
      assert.matches('^{"ok":true,"stream":"account#alice","version":1,"events":%[', raw)
      assert.equal("Opened", body.events[1].type)
      assert.equal("Alice", body.events[1].data.owner)
      assert.equal("Open", body.events[1].meta.command)
      status, body = post("/aggregates/account/alice", '{"type":"Deposit","amount":100}')
      assert.equal(200, status)
      assert.equal(2, body.version)
    end)

    it("GET /aggregates/{type}/{id}: the state; 404 for a stream with no events", function()
      local status, body, _, raw = get("/aggregates/account/alice")
      assert.equal(200, status, raw)
      assert.same({ stream = "account#alice", version = 2,
                    state = { owner = "Alice", balance = 100, status = "open" } }, body)
      assert.matches('^{"stream":"account#alice","version":2,"state":', raw)
      status, body = get("/aggregates/account/nobody")
      assert.equal(404, status)
      assert.equal("not_found", body.error.kind)
      assert.matches("account#nobody has no events", body.error.message)
      -- an id with an encoded slash is one id
      status = post("/aggregates/account/x%2Fy", '{"type":"Open","owner":"S"}')
      assert.equal(200, status)
      assert.equal("account#x/y", select(2, get("/aggregates/account/x%2Fy")).stream)
    end)

    it("a repeated command id appends nothing (body id or Idempotency-Key)", function()
      local s1, b1 = post("/aggregates/account/alice", '{"type":"Deposit","amount":5,"id":"dep-1"}')
      local s2, b2 = post("/aggregates/account/alice", '{"type":"Deposit","amount":5,"id":"dep-1"}')
      assert.same({ 200, 200 }, { s1, s2 })
      assert.is_nil(b1.duplicate)
      assert.is_true(b2.duplicate)
      assert.equal(b1.version, b2.version)
      local s3, b3 = post("/aggregates/account/alice", '{"type":"Deposit","amount":5}', { ["Idempotency-Key"] = "dep-2" })
      local s4, b4 = post("/aggregates/account/alice", '{"type":"Deposit","amount":5}', { ["Idempotency-Key"] = "dep-2" })
      assert.same({ 200, 200 }, { s3, s4 })
      assert.equal("dep-2", b3.events[1].meta.command_id)
      assert.is_true(b4.duplicate)
      assert.equal(110, select(2, get("/aggregates/account/alice")).state.balance)
      -- the same id with another command: refused, nothing written
      local s5, b5 = post("/aggregates/account/alice", '{"type":"Deposit","amount":6,"id":"dep-1"}')
      assert.equal(422, s5)
      assert.equal("idempotency_mismatch", b5.error.kind)
      local s6, b6 = post("/aggregates/account/alice", '{"type":"Deposit","amount":7}', { ["Idempotency-Key"] = "dep-2" })
      assert.equal(422, s6)
      assert.equal("idempotency_mismatch", b6.error.kind)
      assert.equal(110, select(2, get("/aggregates/account/alice")).state.balance)
    end)

    it("400: bad JSON, not an object, unknown aggregate, unknown command, schema violation", function()
      local cases = {
        { "/aggregates/account/alice", '{"type":', "not valid JSON" },
        { "/aggregates/account/alice", "[1,2]", "must be a JSON object" },
        { "/aggregates/account/alice", "", "body is empty" },
        { "/aggregates/acount/alice", '{"type":"Open","owner":"A"}', "unknown aggregate 'acount' %(did you mean 'account'%?%)" },
        { "/aggregates/account/alice", '{"type":"Depositt","amount":1}', "unknown command 'Depositt'.*did you mean 'Deposit'" },
        { "/aggregates/account/alice", '{"type":"Deposit","amount":"lots"}', "amount" },
        { "/aggregates/account/alice", '{"type":"Deposit","amount":1,"amout":2}', "amout" },
      }
      for _, c in ipairs(cases) do
        local status, body, _, raw = post(c[1], c[2])
        assert.equal(400, status, c[2] .. " -> " .. raw)
        assert.is_false(body.ok)
        assert.equal("invalid", body.error.kind)
        assert.matches(c[3], body.error.message)
      end
      local status, body = get("/aggregates/acount/alice")
      assert.equal(400, status)
      assert.matches("unknown aggregate 'acount'", body.error.message)
      -- nothing was written by any of them
      assert.equal(110, select(2, get("/aggregates/account/alice")).state.balance)
    end)

    it("404 for an unknown route, 405 for a wrong method, as JSON", function()
      local status, body = get("/nowhere")
      assert.equal(404, status)
      assert.equal("not_found", body.error.kind)
      assert.matches("no route for GET /nowhere", body.error.message)
      local headers
      status, body, headers = http("DELETE", url .. "/aggregates/account/alice")
      assert.equal(405, status)
      assert.equal("method_not_allowed", body.error.kind)
      assert.equal("GET, POST", headers.allow)
    end)

    it("422: rejected by the domain", function()
      local status, body = post("/aggregates/account/alice", '{"type":"Withdraw","amount":1000}')
      assert.equal(422, status)
      assert.equal("rejected", body.error.kind)
      assert.matches("insufficient funds", body.error.message)
      assert.equal("account#alice", body.error.stream)
    end)

    it("409: the stream changed under the cached state and no attempt was left", function()
      -- the worker holds alice's state (version N) in its cache; another
      -- process appends N+1; the site's next command decides on N, loses the
      -- conditional append, and with commands.max_attempts = 1 reports it
      assert.equal(200, (post("/aggregates/account/alice", '{"type":"Deposit","amount":1}')))
      local out, code = sh("build/tide exec --config " .. q(config) .. " account alice '{\"type\":\"Deposit\",\"amount\":1}'")
      assert.equal(0, code, out)
      local status, body = post("/aggregates/account/alice", '{"type":"Deposit","amount":1}')
      assert.equal(409, status)
      assert.equal("conflict", body.error.kind)
      assert.matches("gave up after 1 attempts", body.error.message)
      -- the conflict dropped the stale state: the next command goes through
      assert.equal(200, (post("/aggregates/account/alice", '{"type":"Deposit","amount":1}')))
      assert.equal(113, select(2, get("/aggregates/account/alice")).state.balance)
    end)

    it("413: a body over client_max_body_size (refused before it is read), and an event too large", function()
      local status, body = post("/aggregates/account/bob", string.rep("x", 1024 * 1024 + 10))
      assert.equal(413, status)
      assert.equal("too_large", body.error.kind)
      assert.matches("client_max_body_size", body.error.message)
      status, body = post("/aggregates/account/bob", '{"type":"Open","owner":"' .. string.rep("b", 500 * 1024) .. '"}')
      assert.equal(413, status)
      assert.equal("event_too_large", body.error.kind)
      assert.matches("item limit", body.error.message)
      assert.equal(404, (get("/aggregates/account/bob")))
    end)

    it("500: a handler that raises or breaks the contract", function()
      local status, body = post("/aggregates/faulty/f1", '{"type":"Boom"}')
      assert.equal(500, status)
      assert.equal("handler_error", body.error.kind)
      assert.matches("boom in the handler", body.error.message)
      status, body = post("/aggregates/faulty/f1", '{"type":"Many","count":101}')
      assert.equal(500, status)
      assert.equal("too_many_events", body.error.kind)
      assert.equal(404, (get("/aggregates/faulty/f1")))
      -- the worker is fine afterwards
      assert.equal(200, (post("/aggregates/faulty/f1", '{"type":"Fine"}')))
    end)

    it("loads a stream larger than one 1 MB Query page through the site", function()
      for i = 1, 5 do
        local status, _, _, raw = post("/aggregates/faulty/big", '{"type":"Huge","bytes":300000}')
        assert.equal(200, status, raw)
      end
      local status, body, _, raw = get("/aggregates/faulty/big")
      assert.equal(200, status, raw:sub(1, 300))
      assert.equal(5, body.version)
      assert.equal(5, body.state.n)
    end)

    it("GET /read/{model}/{key}: the item, 404 when absent, 400 for an unknown model", function()
      -- project alice's events into the balances read model (as a projection runner would)
      local projector = require "tide.projector"
      local proj = assert(require("tide.projection").registry(ROOT .. "/projections"):get("balances"))
      sched.run(function()
        local backend
        if kind == "sqlite" then
          store = store or stores.open_sqlite(desc.path)
          backend = require("tide.projection.sqlite").new{ store = store }
        else
          local client = assert(require("tide.dynamodb").new{ endpoint = desc.endpoint, region = "us-east-1",
                                                              credentials = stores.CREDS })
          store = store or require("tide.store.dynamodb").new{ client = client, table_prefix = desc.prefix }
          backend = require("tide.projection.dynamodb").new{ client = client, table_prefix = desc.prefix }
        end
        assert(backend:init(proj))
        local rows = assert(store:load("account#alice", 0))
        for _, r in ipairs(rows) do r.stream = "account#alice" end
        local p = projector.new{ projection = proj, backend = backend, reader = projector.store_reader(store) }
        local plan = assert(p:apply(rows))
        assert(backend:write("balances", plan))
      end)
      local status, body, _, raw = get("/read/balances/alice")
      assert.equal(200, status, raw)
      assert.equal("alice", body.id)
      assert.equal(113, body.balance)
      assert.is_nil(body._tide)
      assert.is_nil(body._rev)
      status, body = get("/read/balances/nobody")
      assert.equal(404, status)
      assert.equal("not_found", body.error.kind)
      status, body = get("/read/balancez/alice")
      assert.equal(400, status)
      assert.equal("invalid", body.error.kind)
      assert.matches("unknown read model 'balancez'.*balances", body.error.message)
    end)

    it("503: a store failure, as JSON naming it", function()
      if kind == "sqlite" then
        -- another process holds the write lock beyond sqlite.busy_timeout_ms (200 ms)
        local mark = helpers.tmpdir()
        os.execute("(printf 'BEGIN IMMEDIATE;\\n.shell touch " .. mark .. "/locked; sleep 2\\nCOMMIT;\\n' | sqlite3 "
          .. q(desc.path) .. " >/dev/null 2>&1; touch " .. mark .. "/done) &")
        local function wait_file(name)
          for _ = 1, 200 do
            if helpers.read_file(mark .. "/" .. name) then return end
            os.execute("sleep 0.05")
          end
          error("the lock holder did not get to '" .. name .. "'")
        end
        wait_file("locked")
        local status, body = post("/aggregates/account/alice", '{"type":"Deposit","amount":1}')
        assert.equal(503, status)
        assert.equal("store", body.error.kind)
        assert.matches("locked", body.error.message)
        wait_file("done")
        os.execute("rm -rf " .. q(mark))
        assert.equal(200, (post("/aggregates/account/alice", '{"type":"Deposit","amount":1}')))
      else
        -- a second site whose DynamoDB endpoint refuses connections
        local d2, c2 = project("dynamodb", { endpoint = "http://127.0.0.1:" .. free_port(),
                                             prefix = desc.prefix, max_attempts = 2 })
        local ok, err = pcall(function()
          local u2 = start_site(d2, c2, "TIDE_NGINX_INIT=0")
          local status, body = http("POST", u2 .. "/aggregates/account/alice", '{"type":"Deposit","amount":1}')
          assert.equal(503, status)
          assert.equal("store", body.error.kind)
          assert.equal("TransportError", body.error.type)
          assert.matches("connect", body.error.message)
          status, body = http("GET", u2 .. "/aggregates/account/alice")
          assert.equal(503, status)
          assert.equal("store", body.error.kind)
        end)
        stop_site(d2)
        os.execute("rm -rf " .. q(d2))
        assert(ok, err)
      end
    end)

    if kind == "sqlite" then
      it("hot reload: nginx -s reload loads changed modules; a broken one leaves the old workers serving", function()
        local function health() return select(2, get("/health")) end
        local function reload()
          local out, code = sh("tools/nginx.sh reload " .. q(dir .. "/site"))
          assert.equal(0, code, out)
        end
        local function wait_for(pred, what)
          for _ = 1, 100 do
            local h = health()
            if pred(h) then return h end
            os.execute("sleep 0.1")
          end
          error("timed out waiting for " .. what)
        end
        -- Until an old worker has got its QUIT, it still accepts connections
        -- beside the new ones (and answers with the old modules): wait for it to exit.
        local function wait_gone(pid)
          for _ = 1, 100 do
            if select(2, helpers.run("kill -0 " .. pid .. " 2>/dev/null")) ~= 0 then return end
            os.execute("sleep 0.1")
          end
          error("the old worker " .. pid .. " did not exit")
        end
        local before = health()
        assert.is_nil(before.aggregates.counter)
        copy(ROOT .. "/spec/fixtures/aggregates/counter_v1.lua", dir .. "/aggregates/counter.lua")
        reload()
        local h1 = wait_for(function(h) return h.aggregates.counter ~= nil end, "counter v1")
        assert.not_equal(before.worker, h1.worker)
        wait_gone(before.worker)
        assert.equal(200, (post("/aggregates/counter/c", '{"type":"Add","n":2}')))
        -- a module that does not load: nginx refuses the new configuration
        helpers.write_file(dir .. "/aggregates/broken.lua", "return {")
        reload()
        local log
        for _ = 1, 50 do
          log = helpers.read_file(dir .. "/site/logs/error.log") or ""
          if log:find("aggregate 'broken' failed to load", 1, true) then break end
          os.execute("sleep 0.1")
        end
        assert.matches("aggregate 'broken' failed to load", log)
        local h2 = health()
        assert.equal(h1.worker, h2.worker)
        assert.equal(h1.aggregates.counter, h2.aggregates.counter)
        assert.is_nil(h2.aggregates.broken)
        assert.equal(200, (post("/aggregates/counter/c", '{"type":"Add","n":3}')))
        -- fixed, and counter replaced by its second version
        os.remove(dir .. "/aggregates/broken.lua")
        copy(ROOT .. "/spec/fixtures/aggregates/counter_v2.lua", dir .. "/aggregates/counter.lua")
        reload()
        local h3 = wait_for(function(h) return h.aggregates.counter ~= h1.aggregates.counter end, "counter v2")
        assert.not_equal(h1.worker, h3.worker)
        wait_gone(h1.worker)
        local status, _, _, raw = get("/aggregates/counter/c")
        assert.equal(200, status, raw)
      end)
    end
  end)
end

------------------------------------------------------------------------

-- Account "hot"'s events as `tide events` lists them: versions 1..n with
-- no gap, every command id once; check(ev, id, v) for each deposit (v > 1).
local function assert_hot_events(config, n, check)
  local out, code = sh("build/tide events --config " .. q(config) .. " account hot")
  assert.equal(0, code, out)
  local v, ids = 0, {}
  for l in out:gmatch("[^\n]+") do
    v = v + 1
    local ev = cjson.decode(l)
    assert.equal(v, ev.version)
    local id = ev.meta.command_id
    assert.is_nil(ids[id], id)
    ids[id] = true
    if v > 1 then check(ev, id, v) end
  end
  assert.equal(n, v)
end

for _, kind in ipairs({ "sqlite", "dynamodb" }) do
  describe("4 nginx workers on one hot account, " .. kind .. " store", function()
    it("take 800 concurrent deposits: all succeed, the balance is exact, no gap", function()
      local desc
      if kind == "sqlite" then
        desc = { path = helpers.tmpdir() .. "/tide.db", default_attempts = true }
      else
        desc = { endpoint = assert(helpers.dynamodb_endpoint()), prefix = helpers.unique("ngxhot") .. "_",
                 default_attempts = true }
      end
      local dir, config = project(kind, desc)
      finally(function()
        stop_site(dir)
        os.execute("rm -rf " .. q(dir))
        if desc.path then os.execute("rm -rf " .. q((desc.path:gsub("/tide%.db$", "")))) end
      end)
      local url = start_site(dir, config, "TIDE_NGINX_WORKERS=4")
      assert.equal(200, (http("POST", url .. "/aggregates/account/hot", '{"type":"Open","owner":"ada"}')))
      -- 32 clients, each 25 deposits, a new connection per request: the
      -- kernel spreads the connections over the 4 workers. Each deposit
      -- has its own command id and amount, and its response must be its
      -- own (a command another worker decided comes back to the request
      -- that sent it), at a version of its own.
      local statuses, pids, mixed, versions, byversion = {}, {}, {}, {}, {}
      local function deposit(n)
        local resp = sched.request{ method = "POST", url = url .. "/aggregates/account/hot",
          body = ('{"type":"Deposit","amount":%d,"id":"dep-%d"}'):format(n, n),
          headers = { Connection = "close" }, timeout_ms = 60000 }
        local body = resp and cjson.decode(resp.body)
        local ev = type(body) == "table" and type(body.events) == "table" and body.events[1]
        if ev and not (#body.events == 1 and ev.meta.command_id == "dep-" .. n and ev.data.amount == n
                       and ev.version == body.version) then
          mixed[#mixed + 1] = resp.body
        end
        return resp and resp.status or 0, body, resp and resp.body
      end
      sched.run(function()
        local threads = {}
        for c = 1, 32 do
          threads[c] = sched.spawn(function()
            for i = 1, 25 do
              local status, body, raw = deposit((c - 1) * 25 + i)
              statuses[status] = (statuses[status] or 0) + 1
              if status ~= 200 then statuses.last = raw end
              if status == 200 then
                versions[body.version] = (versions[body.version] or 0) + 1
                byversion[body.version] = (c - 1) * 25 + i
              end
            end
          end)
        end
        sched.wait_all(threads)
        -- which workers answered: /health names the worker's pid
        for _ = 1, 40 do
          local resp = sched.request{ method = "GET", url = url .. "/health", headers = { Connection = "close" } }
          local body = resp and cjson.decode(resp.body)
          if body and body.worker then pids[body.worker] = true end
        end
      end)
      assert.equal(800, statuses[200], cjson.encode(statuses))
      assert.same({}, mixed)
      for v = 2, 801 do assert.equal(1, versions[v], "version " .. v) end
      -- the workers forwarded commands to the one holding the stream's
      -- turn (tide.repository, "Forwarding"): counted by the holder
      local _, _, _, page = http("GET", url .. "/metrics")
      local forwarded = tonumber(page:match('tide_forwarded_commands_total{aggregate="account"} (%d+)')) or 0
      assert.is_true(forwarded > 0, "no command was forwarded")
      -- sent again with their ids (of the stream's last 128 commands, which
      -- it remembers): the original results, nothing appended
      sched.run(function()
        for _, v in ipairs({ 801, 760, 700 }) do
          local status, body = deposit(byversion[v])
          assert.equal(200, status)
          assert.is_true(body.duplicate)
          assert.equal(v, body.version)
        end
      end)
      local _, st = http("GET", url .. "/aggregates/account/hot")
      assert.equal(800 * 801 / 2, st.state.balance)
      assert.equal(801, st.version)
      assert_hot_events(config, 801, function(ev, id) assert.equal("dep-" .. ev.data.amount, id) end)
      local n = 0
      for _ in pairs(pids) do n = n + 1 end
      assert.is_true(n >= 2, "the requests reached " .. n .. " worker(s)")
    end)
  end)
end

describe("4 nginx workers on one hot account, one of them killed", function()
  it("every deposit applied exactly once: the senders of a dead holder's commands run them again", function()
    local desc = { endpoint = assert(helpers.dynamodb_endpoint()), prefix = helpers.unique("ngxkill") .. "_",
                   default_attempts = true }
    local dir, config = project("dynamodb", desc)
    finally(function()
      stop_site(dir)
      os.execute("rm -rf " .. q(dir))
    end)
    local url = start_site(dir, config, "TIDE_NGINX_WORKERS=4")
    assert.equal(200, (http("POST", url .. "/aggregates/account/hot", '{"type":"Open","owner":"ada"}')))
    -- 16 clients x 15 deposits, each with its own command id; a request
    -- that fails (its worker was killed, or it timed out) is sent again
    -- with the same id until it gets its 200
    local sent, done, killed, retried = {}, 0, nil, 0
    sched.run(function()
      local threads = {}
      for c = 1, 16 do
        threads[c] = sched.spawn(function()
          for i = 1, 15 do
            local n = (c - 1) * 15 + i
            for _ = 1, 20 do
              local resp = sched.request{ method = "POST", url = url .. "/aggregates/account/hot",
                body = ('{"type":"Deposit","amount":%d,"id":"k-%d"}'):format(n, n),
                headers = { Connection = "close" }, timeout_ms = 30000 }
              if resp and resp.status == 200 then
                sent[n] = cjson.decode(resp.body).version
                break
              end
              retried = retried + 1
              sched.sleep(0.05)
            end
            done = done + 1
          end
        end)
      end
      -- a quarter of the way through, kill the worker that answers /health
      threads[#threads + 1] = sched.spawn(function()
        while done < 60 do sched.sleep(0.01) end
        local resp = sched.request{ method = "GET", url = url .. "/health", headers = { Connection = "close" } }
        killed = resp and cjson.decode(resp.body).worker
        if killed then os.execute("kill -9 " .. killed) end
      end)
      sched.wait_all(threads)
    end)
    assert.is_number(killed)
    local n = 0
    for _ in pairs(sent) do n = n + 1 end
    assert.equal(240, n)
    local _, st = http("GET", url .. "/aggregates/account/hot")
    assert.equal(240 * 241 / 2, st.state.balance)
    assert.equal(241, st.version)
    assert_hot_events(config, 241, function(ev, id, v)
      assert.equal("k-" .. ev.data.amount, id)
      assert.equal(v, sent[ev.data.amount])
    end)
  end)
end)
