-- The tide CLI (build/tide): exec, batch, events, state, init, exit codes,
-- bad input and bad config; 16 concurrent writer processes on both stores.
local helpers = require "helpers"
local stores = require "stores"
local cjson = require "cjson"

-- many events on tables with streams: a DynamoDB Local of this file's own
helpers.private_dynamodb()

local q = helpers.shell_quote

local tide = stores.tide

local lines = helpers.lines

local function prepare(kind)
  return stores.cli_dir(kind, { "commands:", "  max_attempts: 1000" })
end

stores.each(function(kind)
  describe("tide CLI on the " .. kind .. " store", function()
    local dir
    setup(function() dir = prepare(kind) end)
    teardown(function() os.execute("rm -rf " .. q(dir)) end)

    it("runs commands with exec and prints one JSON result, with distinct exit codes", function()
      local out, status = tide(dir, "exec account a1 '{\"type\":\"Open\",\"owner\":\"ada\"}'")
      assert.equal(0, status, out)
      local r = cjson.decode(out)
      assert.is_true(r.ok)
      assert.equal("account#a1", r.stream)
      assert.equal(1, r.version)
      assert.equal("Opened", r.events[1].type)
      assert.matches('^{"ok":true,"stream":"account#a1","version":1,"events":', out)

      out, status = tide(dir, "exec account a1 '{\"type\":\"Withdraw\",\"amount\":5}'")
      assert.equal(3, status, out)
      r = cjson.decode(out)
      assert.is_false(r.ok)
      assert.equal("rejected", r.error.kind)
      assert.matches("insufficient funds", r.error.message)

      out, status = tide(dir, "exec account a1 '{\"type\":\"Deposit\",\"amount\":'")
      assert.equal(2, status, out)
      assert.equal("invalid", cjson.decode(out).error.kind)
      assert.matches("not valid JSON", out)

      for _, bad in ipairs{
        { "exec account a1 '{\"type\":\"Fly\"}'", "unknown command 'Fly'" },
        { "exec nosuch a1 '{\"type\":\"Open\"}'", "unknown aggregate 'nosuch'" },
        { "exec account a1", "usage: tide exec" },
      } do
        out, status = tide(dir, bad[1])
        assert.equal(2, status, out)
        assert.matches(bad[2], out)
      end

      out, status = tide(dir, "exec account a1 '{\"type\":\"Deposit\",\"amount\":7,\"id\":\"x-1\"}'")
      assert.equal(0, status, out)
      local again = tide(dir, "exec account a1 '{\"type\":\"Deposit\",\"amount\":7,\"id\":\"x-1\"}'")
      local first, second = cjson.decode(out), cjson.decode(again)
      assert.is_true(second.duplicate)
      assert.equal(first.version, second.version)
    end)

    it("prints events as NDJSON and the state as JSON", function()
      tide(dir, "exec account e1 '{\"type\":\"Open\",\"owner\":\"eve\"}'")
      tide(dir, "exec account e1 '{\"type\":\"Deposit\",\"amount\":12}'")
      local out, status = tide(dir, "events account e1")
      assert.equal(0, status, out)
      local ls = lines(out)
      assert.equal(2, #ls)
      local e2 = cjson.decode(ls[2])
      assert.equal(2, e2.version)
      assert.equal("Deposited", e2.type)
      assert.equal(12, e2.data.amount)
      assert.equal("Deposit", e2.meta.command)
      out, status = tide(dir, "state account e1")
      assert.equal(0, status, out)
      local st = cjson.decode(out)
      assert.equal(2, st.version)
      assert.equal(12, st.state.balance)
      assert.equal("eve", st.state.owner)
    end)

    it("runs a batch concurrently with results in input order", function()
      local input = {}
      for i = 1, 20 do
        input[#input + 1] = cjson.encode{ aggregate = "account", id = "b" .. (i % 4),
                                          command = { type = "Open", owner = "o" .. i } }
      end
      input[#input + 1] = "not json"
      input[#input + 1] = cjson.encode{ aggregate = "account", id = "b1", command = { type = "Deposit", amount = 3 } }
      input[#input + 1] = cjson.encode{ aggregate = "account", id = "b1", command = { type = "Withdraw", amount = 2 } }
      local out, status = tide(dir, "batch", table.concat(input, "\n") .. "\n")
      local ls = lines(out)
      assert.equal(#input, #ls, out)
      assert.equal(2, status)
      for i = 1, 4 do assert.is_true(cjson.decode(ls[i]).ok, ls[i]) end
      for i = 5, 20 do
        local r = cjson.decode(ls[i])
        assert.equal("rejected", r.error.kind, ls[i])
      end
      assert.equal("invalid", cjson.decode(ls[21]).error.kind)
      assert.matches("line 21", ls[21])
      local dep, wd = cjson.decode(ls[22]), cjson.decode(ls[23])
      assert.is_true(dep.ok)
      assert.is_true(wd.ok, ls[23])
      assert.equal(dep.version + 1, wd.version)
    end)

    it("keeps up to 256 lines in flight unless --concurrency says, and --stats names the window", function()
      local input = cjson.encode{ aggregate = "account", id = "w1", command = { type = "Open", owner = "o" } } .. "\n"
      -- {arguments, the window, the exit status: w1 opens once, the second Open is rejected}
      for _, case in ipairs{ { "batch --stats", 256, 0 }, { "batch --stats --concurrency 7", 7, 3 } } do
        local out, status = tide(dir, case[1], input)
        assert.equal(case[3], status, out)
        local ls = lines(out)
        assert.equal(case[2], cjson.decode(ls[#ls]).stats.window, out)
      end
    end)

    it("has --help on every command", function()
      for _, c in ipairs{ "init", "exec", "batch", "events", "state" } do
        local out, status = tide(dir, c .. " --help")
        assert.equal(0, status, c)
        assert.matches("usage: tide " .. c, out)
      end
    end)

    it("takes an id or a command text that starts with '-' as data, not as an option", function()
      local out, status = tide(dir, "exec account -dash '{\"type\":\"Open\",\"owner\":\"ada\"}'", nil, true)
      assert.equal(0, status, out)
      assert.equal("account#-dash", cjson.decode(out).stream)
      out, status = tide(dir, "exec account -dash -5", nil, true)
      assert.equal(2, status, out)
      assert.equal("invalid", cjson.decode(out).error.kind)
    end)

    it("keeps the balance exact with 16 concurrent writer processes of 100 deposits each", function()
      assert.equal(0, select(2, tide(dir, "exec account hot '{\"type\":\"Open\",\"owner\":\"ada\"}'")))
      local batch = {}
      for i = 1, 100 do
        batch[i] = cjson.encode{ aggregate = "account", id = "hot", command = { type = "Deposit", amount = i } }
      end
      helpers.write_file(dir .. "/deposits.ndjson", table.concat(batch, "\n") .. "\n")
      local ok_count = 0
      for _, proc in ipairs(stores.batch_processes(dir, 16, "deposits.ndjson")) do
        assert.equal("0", proc.rc, proc.out .. proc.err)
        for _, l in ipairs(lines(proc.out)) do
          if cjson.decode(l).ok then ok_count = ok_count + 1 end
        end
      end
      assert.equal(1600, ok_count)
      local st = cjson.decode((tide(dir, "state account hot")))
      assert.equal(16 * 5050, st.state.balance)
      assert.equal(1601, st.version)
      stores.assert_versions(dir, "hot", 1601)
    end)
  end)
end)

describe("tide init", function()
  it("creates the DynamoDB tables once, and again is harmless", function()
    local dir = helpers.tmpdir()
    local prefix = helpers.unique("init") .. "_"
    stores.write_config(dir, "dynamodb", { prefix = prefix, endpoint = assert(helpers.dynamodb_endpoint()) },
                        { "projections: " .. helpers.root .. "/projections" })
    for _ = 1, 2 do
      local out, status = tide(dir, "init")
      assert.equal(0, status, out)
      local r = cjson.decode(out)
      assert.is_true(r.ok)
      assert.equal(prefix .. "events", r.tables.events.table)
      assert.truthy(r.tables.events.stream_arn)
      assert.equal(prefix .. "snapshots", r.tables.snapshots.table)
      table.sort(r.read_models)
      assert.same({ "balances", "owner_of", "owners" }, r.read_models)
    end
    -- reads work at once: an absent item, not a missing table
    local out, status = tide(dir, "read balances nobody")
    assert.equal(6, status, out)
    assert.matches("no item 'nobody'", out)
    os.execute("rm -rf " .. q(dir))
  end)

  it("creates the SQLite file", function()
    local dir = helpers.tmpdir()
    stores.write_config(dir, "sqlite", { path = dir .. "/x.db" })
    local out, status = tide(dir, "init")
    assert.equal(0, status, out)
    assert.truthy(helpers.read_file(dir .. "/x.db"))
    os.execute("rm -rf " .. q(dir))
  end)
end)

describe("tide CLI configuration errors", function()
  it("names the file, line and key of an invalid config", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/bad.yaml", "store: sqlite\nsqlite:\n  path: [unclosed\n")
    local out, status = tide(dir, "exec --config bad.yaml account a '{\"type\":\"Open\",\"owner\":\"x\"}'")
    assert.equal(2, status, out)
    assert.matches("bad.yaml:%d+", out)
    helpers.write_file(dir .. "/typo.yaml", "store: sqlite\nsqlit:\n  path: x.db\n")
    out, status = tide(dir, "state --config typo.yaml account a")
    assert.equal(2, status, out)
    assert.matches("typo.yaml:2", out)
    assert.matches("sqlit", out)
    out, status = tide(dir, "state --config missing.yaml account a")
    assert.equal(2, status, out)
    assert.matches("missing.yaml", out)
    os.execute("rm -rf " .. q(dir))
  end)

  it("runs with no configuration at all on ./tide.db and ./aggregates", function()
    local dir = helpers.tmpdir()
    os.execute("cp -r " .. q(helpers.root .. "/aggregates") .. " " .. q(dir .. "/aggregates"))
    local out, status = tide(dir, "exec account z '{\"type\":\"Open\",\"owner\":\"zed\"}'")
    assert.equal(0, status, out)
    assert.truthy(helpers.read_file(dir .. "/tide.db"))
    os.execute("rm -rf " .. q(dir))
  end)
end)

describe("tide help and --config on every command", function()
  local COMMANDS = { "init", "exec", "batch", "events", "state", "run", "project", "read", "status", "replay",
                     "skip-parent", "script", "version", "help" }

  it("shows every command's help with status 0, as --help and through tide help", function()
    local dir = helpers.tmpdir()
    for _, c in ipairs(COMMANDS) do
      local out, status = tide(dir, c .. " --help")
      assert.equal(0, status, c .. ": " .. out)
      assert.matches("usage: tide", out, 1, true)
      out, status = tide(dir, "help " .. c)
      assert.equal(0, status, "help " .. c .. ": " .. out)
      assert.matches("usage: tide", out, 1, true)
    end
    local out, status = tide(dir, "help nosuch")
    assert.equal(2, status, out)
    assert.matches("unknown command 'nosuch'", out, 1, true)
    os.execute("rm -rf " .. q(dir))
  end)

  it("lets a script open tide with the file given to tide script --config", function()
    local dir = helpers.tmpdir()
    local elsewhere = helpers.tmpdir()
    helpers.write_file(dir .. "/other.yaml", "store: sqlite\nsqlite:\n  path: " .. dir .. "/other.db\naggregates: "
      .. helpers.root .. "/aggregates\n")
    helpers.write_file(dir .. "/open.lua", [[
local app = assert(require("tide").open())
print(app.cfg.store, app.cfg.sqlite.path)]])
    for _, form in ipairs{ "--config " .. q(dir .. "/other.yaml"), "--config=" .. q(dir .. "/other.yaml") } do
      local out, status = tide(elsewhere, "script " .. form .. " " .. q(dir .. "/open.lua"))
      assert.equal(0, status, out)
      assert.equal("sqlite\t" .. dir .. "/other.db\n", out)
    end
    local out, status = tide(elsewhere, "script --config missing.yaml " .. q(dir .. "/open.lua"))
    assert.equal(2, status, out)
    assert.matches("cannot read the config file 'missing.yaml'", out, 1, true)
    os.execute("rm -rf " .. q(dir) .. " " .. q(elsewhere))
  end)
end)
