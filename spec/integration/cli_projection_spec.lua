-- The projection commands of the tide CLI: project --until-caught-up, read,
-- status, replay, and run as a daemon stopped by SIGTERM, a catch-up
-- stopped by SIGINT, on both stores.
local helpers = require "helpers"
local stores = require "stores"
local cjson = require "cjson"

-- many events on tables with streams: a DynamoDB Local of this file's own
helpers.private_dynamodb()

local q = helpers.shell_quote

local tide = stores.tide

local function tide_out(dir, args)
  return stores.tide(dir, args, nil, true)
end

local function prepare(kind)
  return (stores.cli_dir(kind, { "projections: " .. helpers.root .. "/projections" }))
end

local function exec(dir, id, cmd)
  local out, status = tide(dir, "exec account " .. id .. " " .. q(cjson.encode(cmd)))
  assert.equal(0, status, out)
end

stores.each(function(kind)
  describe("projection commands on the " .. kind .. " store", function()
    local dir
    setup(function()
      dir = prepare(kind)
      exec(dir, "p1", { type = "Open", owner = "ada" })
      exec(dir, "p1", { type = "Deposit", amount = 40 })
      exec(dir, "p2", { type = "Open", owner = "ada" })
      exec(dir, "p2", { type = "Deposit", amount = 2 })
      exec(dir, "p1", { type = "Withdraw", amount = 10 })
    end)
    teardown(function()
      -- a daemon left behind by a failed spec must not outlive the suite
      for _, name in ipairs{ "run", "hold", "catch" } do
        helpers.run("test -f " .. q(dir .. "/" .. name .. ".pid") .. " && kill -9 $(cat " .. q(dir .. "/" .. name .. ".pid") .. ") 2>/dev/null")
      end
      os.execute("rm -rf " .. q(dir))
    end)

    it("projects until caught up, then reads items, with clear errors", function()
      local out, status = tide(dir, "project balances --until-caught-up")
      assert.equal(0, status, out)
      out, status = tide_out(dir, "read balances p1")
      assert.equal(0, status, out)
      local item = cjson.decode(out)
      assert.same({ id = "p1", owner = "ada", balance = 30, status = "open", version = 3 }, item)
      out, status = tide(dir, "read balances nobody")
      assert.equal(6, status, out)
      assert.matches("no item 'nobody'", out)
      out, status = tide(dir, "read balance p1")
      assert.equal(2, status, out)
      assert.matches("did you mean 'balances'", out)
      out, status = tide(dir, "project owners --until-caught-up")
      assert.equal(0, status, out)
      local owner = cjson.decode((tide_out(dir, "read owners ada")))
      assert.equal(32, owner.total)
      assert.equal(2, owner.accounts)
      out, status = tide(dir, "project nosuch --until-caught-up")
      assert.equal(2, status, out)
      assert.matches("unknown projection 'nosuch'", out)
    end)

    it("shows each projection's status", function()
      local out, status = tide_out(dir, "status --json")
      assert.equal(0, status, out)
      local seen = {}
      for line in out:gmatch("[^\n]+") do
        local r = cjson.decode(line)
        if r.projection then seen[r.projection] = r end
      end
      assert.truthy(seen.balances, out)
      assert.truthy(seen.owners, out)
      assert.is_nil(seen.balances.error, out)
    end)

    it("rebuilds a projection with replay and gives the same read model", function()
      local before = tide_out(dir, "read balances p1")
      local out, status = tide(dir, "replay balances")
      assert.equal(0, status, out)
      assert.matches("events applied", out)
      assert.equal(before, (tide_out(dir, "read balances p1")))
      -- the projection continues from its source afterwards, applying nothing twice
      exec(dir, "p2", { type = "Deposit", amount = 5 })
      out, status = tide(dir, "project balances --until-caught-up")
      assert.equal(0, status, out)
      assert.equal(7, cjson.decode((tide_out(dir, "read balances p2"))).balance)
      assert.equal(30, cjson.decode((tide_out(dir, "read balances p1"))).balance)
    end)

    it("runs every projection as a daemon and stops cleanly on SIGTERM", function()
      local log = dir .. "/run.log"
      local inner = "echo $$ > run.pid; exec env " .. stores.CLI_ENV .. q(helpers.tide_bin) .. " run"
      helpers.run("cd " .. q(dir) .. " && (sh -c " .. q(inner) .. " > /dev/null 2> " .. q(log)
        .. "; echo $? > run.exit) > /dev/null 2>&1 & true")
      exec(dir, "p3", { type = "Open", owner = "bob" })
      exec(dir, "p3", { type = "Deposit", amount = 9 })
      local item
      for _ = 1, 300 do
        local out, status = tide_out(dir, "read balances p3")
        if status == 0 then
          item = cjson.decode(out)
          if item.balance == 9 then break end
        end
        os.execute("sleep 0.1")
      end
      assert.equal(9, item and item.balance, helpers.read_file(log))
      helpers.run("kill -TERM $(cat " .. q(dir .. "/run.pid") .. ")")
      local code
      for _ = 1, 300 do
        code = helpers.read_file(dir .. "/run.exit")
        if code then break end
        os.execute("sleep 0.1")
      end
      assert.equal("0", code and code:gsub("%s+", ""), helpers.read_file(log))
      local text = helpers.read_file(log)
      assert.matches('"msg":"SIGTERM: finishing the batch, then stopping"', text, 1, true)
      assert.matches('"msg":"projection stopped"', text, 1, true)
    end)

    it("stops --until-caught-up on SIGINT (exit 130) while it waits for a crashed worker's lease", function()
      local env = "TIDE_TEST_LEASE_MS=60000 " .. stores.CLI_ENV
      local function background(name, args)
        local inner = "echo $$ > " .. name .. ".pid; exec env " .. env .. q(helpers.tide_bin) .. " " .. args
        helpers.run("cd " .. q(dir) .. " && (sh -c " .. q(inner) .. " > " .. name .. ".out 2> " .. name
          .. ".err; echo $? > " .. name .. ".exit) > /dev/null 2>&1 & true")
      end
      local function wait_for(what, fn)
        for _ = 1, 600 do
          if fn() then return end
          os.execute("sleep 0.1")
        end
        error("gave up waiting for " .. what)
      end
      -- a worker holds the owners projection's lease, then crashes
      background("hold", "project owners")
      exec(dir, "p9", { type = "Open", owner = "zed" })
      wait_for("the worker to apply an event", function() return select(2, tide_out(dir, "read owners zed")) == 0 end)
      helpers.run("kill -9 $(cat " .. q(dir .. "/hold.pid") .. ")")
      -- the catch-up waits for that lease (a minute); its /ready says when
      -- it has started (its signal handler is set by then)
      local port = helpers.free_port()
      background("catch", "project owners --until-caught-up --metrics 127.0.0.1:" .. port)
      wait_for("the catch-up to start", function()
        assert.is_nil(helpers.read_file(dir .. "/catch.exit"), helpers.read_file(dir .. "/catch.err"))
        return helpers.run("env -u LD_PRELOAD curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" .. port
          .. "/ready") == "200"
      end)
      helpers.run("kill -INT $(cat " .. q(dir .. "/catch.pid") .. ")")
      wait_for("the catch-up to exit", function() return helpers.read_file(dir .. "/catch.exit") end)
      local err = helpers.read_file(dir .. "/catch.err")
      assert.equal("130", (helpers.read_file(dir .. "/catch.exit"):gsub("%s+", "")), err)
      assert.matches("Interrupted: stopped before caught up (0 ", err, 1, true)
      assert.equal("", helpers.read_file(dir .. "/catch.out"))
    end)
  end)
end)
