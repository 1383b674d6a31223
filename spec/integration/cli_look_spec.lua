-- Looking around and testing from the CLI: `tide test` on the examples'
-- specs, and `tide read MODEL` (listing), `tide streams`, `tide modules`,
-- `tide tail` on both stores.
local helpers = require "helpers"
local stores = require "stores"
local cjson = require "cjson"

local q = helpers.shell_quote
local tide = stores.tide

local function json_lines(text)
  local out = {}
  for _, l in ipairs(helpers.lines(text)) do
    if l:sub(1, 1) == "{" then out[#out + 1] = cjson.decode(l) end
  end
  return out
end

-- `tide ARGS` in dir -> stdout, stderr, status
local function tide3(dir, args)
  local err = dir .. "/stderr.txt"
  local out, status = helpers.run("cd " .. q(dir) .. " && " .. stores.CLI_ENV .. q(helpers.tide_bin) .. " " .. args
    .. " 2> " .. q(err))
  return out, helpers.read_file(err) or "", status
end

describe("tide test", function()
  it("runs the bank's and the cart's specs, and fails on a failing one", function()
    for _, ex in ipairs{ { "bank", 10 }, { "cart", 12 } } do
      local out, status = tide(helpers.root .. "/examples/" .. ex[1], "test")
      assert.equal(0, status, out)
      assert.matches(ex[2] .. " successes / 0 failures / 0 errors", out, 1, true)
    end
    local dir = helpers.tmpdir()
    os.execute("mkdir -p " .. q(dir .. "/spec") .. " && cp -r " .. q(helpers.root .. "/examples/cart/aggregates") .. " " .. q(dir))
    helpers.write_file(dir .. "/spec/cart_spec.lua", [[
local t = require("tide.testing").new()
describe("cart", function()
  it("passes", function() t:aggregate("cart"):when{ type = "Open", customer = "a" }:then_events{ { type = "Opened", customer = "a" } } end)
  it("fails", function()
    t:aggregate("cart"):when{ type = "Open", customer = "a" }:then_rejected()
  end)
end)
]])
    local out, status = tide(dir, "test")
    assert.equal(1, status, out)
    assert.matches("1 success / 1 failure / 0 errors", out, 1, true)
    assert.matches("spec/cart_spec.lua:5: expected a rejection, but the command appended", out, 1, true)
    out, status = tide(dir, "test spec/cart_spec.lua -- --filter passes")
    assert.equal(0, status, out)
    out, status = tide(dir, "test nowhere")
    assert.equal(2, status, out)
    assert.matches("no such file or folder: nowhere", out, 1, true)
    os.execute("rm -rf " .. q(dir))
  end)
end)

stores.each(function(kind)
  describe("looking around on the " .. kind .. " store", function()
    local dir
    setup(function()
      dir = stores.cli_dir(kind, { "projections: " .. helpers.root .. "/projections" })
      local lines = {}
      for _, id in ipairs{ "a1", "a2", "b1" } do
        lines[#lines + 1] = cjson.encode{ aggregate = "account", id = id, command = { type = "Open", owner = "O" .. id } }
      end
      lines[#lines + 1] = cjson.encode{ aggregate = "account", id = "a2", command = { type = "Deposit", amount = 5 } }
      local out, status = tide(dir, "batch", table.concat(lines, "\n") .. "\n")
      assert.equal(0, status, out)
      out, status = tide(dir, "project balances --until-caught-up")
      assert.equal(0, status, out)
    end)
    teardown(function() os.execute("rm -rf " .. q(dir)) end)

    it("lists a read model's items, a page at a time", function()
      local out, err, status = tide3(dir, "read balances")
      assert.equal(0, status, err)
      local items = json_lines(out)
      assert.equal(3, #items)
      local by_id = {}
      for _, it in ipairs(items) do by_id[it.id] = it; assert.is_nil(it._tide) end
      assert.same({ id = "a2", owner = "Oa2", balance = 5, version = 2, status = "open" }, by_id.a2)
      -- pages: --limit, then --after the last key printed, together all items once
      out, err, status = tide3(dir, "read balances --limit 2")
      assert.equal(0, status, err)
      local first = json_lines(out)
      assert.equal(2, #first)
      local after = err:match("more items: %-%-after '([^']+)'")
      assert.equal(first[2].id, after)
      out, err, status = tide3(dir, "read balances --after " .. after)
      assert.equal(0, status, err)
      local rest = json_lines(out)
      assert.equal(1, #rest)
      assert.equal("", err)
      local seen = {}
      for _, it in ipairs{ first[1], first[2], rest[1] } do seen[it.id] = true end
      assert.same({ a1 = true, a2 = true, b1 = true }, seen)
      if kind == "sqlite" then
        assert.same({ "a1", "a2", "b1" }, { items[1].id, items[2].id, items[3].id }) -- key order
        out, err, status = tide3(dir, "read balances --prefix a")
        assert.equal(0, status, err)
        local pre = json_lines(out)
        assert.same({ "a1", "a2" }, { pre[1].id, pre[2].id })
        assert.equal(2, #pre)
      else
        out, err, status = tide3(dir, "read balances --prefix a")
        assert.equal(2, status, out)
        assert.matches("a prefix would be a Scan of the whole table", err, 1, true)
      end
      -- one item still reads as before; an unknown model is named
      out, err, status = tide3(dir, "read balances b1")
      assert.equal(0, status, err)
      assert.equal("Ob1", cjson.decode(out).owner)
      out, err, status = tide3(dir, "read balance")
      assert.equal(2, status, out)
      assert.matches("did you mean 'balances'", err, 1, true)
    end)

    it("lists an aggregate's streams with their versions", function()
      local out, err, status = tide3(dir, "streams account")
      assert.equal(0, status, err)
      local streams = json_lines(out)
      table.sort(streams, function(a, b) return a.stream < b.stream end)
      assert.same({ { stream = "account#a1", id = "a1", version = 1 }, { stream = "account#a2", id = "a2", version = 2 },
                    { stream = "account#b1", id = "b1", version = 1 } }, streams)
      if kind == "dynamodb" then
        assert.matches("tide streams: Scan read 4 events in %d+ pages?, [%d.]+ RCU", err)
      end
      out, err, status = tide3(dir, "streams account --limit 2")
      assert.equal(0, status, err)
      local first = json_lines(out)
      assert.equal(2, #first)
      local after = err:match("more streams: %-%-after '([^']+)'")
      assert.equal(first[2].id, after)
      out, err, status = tide3(dir, "streams account --after " .. after)
      assert.equal(0, status, err)
      assert.equal(1, #json_lines(out))
      out, err, status = tide3(dir, "streams acount")
      assert.equal(2, status, out)
      assert.matches("did you mean 'account'", err, 1, true)
    end)

    it("follows events as they are appended", function()
      -- from the start: the 4 events there, then one appended while it runs
      local out, status = helpers.run("cd " .. q(dir) .. " && export " .. stores.CLI_ENV .. "; "
        .. "timeout 60 " .. q(helpers.tide_bin) .. " tail account --from-start --limit 5 > tail.out 2> tail.err & pid=$!; "
        .. q(helpers.tide_bin) .. " exec account c1 '{\"type\":\"Open\",\"owner\":\"C\"}' > /dev/null; wait $pid; echo rc=$?")
      assert.matches("rc=0", out, 1, true)
      local events = json_lines(helpers.read_file(dir .. "/tail.out"))
      assert.equal(5, #events, helpers.read_file(dir .. "/tail.err"))
      local seen = {}
      for _, ev in ipairs(events) do seen[ev.stream .. "@" .. ev.version] = ev.type end
      assert.same({ ["account#a1@1"] = "Opened", ["account#a2@1"] = "Opened", ["account#b1@1"] = "Opened",
                    ["account#a2@2"] = "Deposited", ["account#c1@1"] = "Opened" }, seen)
      if kind == "sqlite" then
        assert.equal(5, events[5].position)
        -- only what comes after it starts
        out, status = helpers.run("cd " .. q(dir) .. " && export " .. stores.CLI_ENV .. "; "
          .. "timeout 60 " .. q(helpers.tide_bin) .. " tail account --limit 1 > tail.out 2> tail.err & pid=$!; "
          .. "until grep -q following tail.err; do sleep 0.05; done; "
          .. q(helpers.tide_bin) .. " exec account c1 '{\"type\":\"Deposit\",\"amount\":7}' > /dev/null; wait $pid; echo rc=$?")
        assert.matches("rc=0", out, 1, true)
        events = json_lines(helpers.read_file(dir .. "/tail.out"))
        assert.equal(1, #events)
        assert.same({ amount = 7 }, events[1].data)
        assert.equal("account#c1", events[1].stream)
        assert.matches("following from position 5", helpers.read_file(dir .. "/tail.err"), 1, true)
      end
    end)
  end)
end)

describe("tide modules", function()
  it("lists the modules with their versions, and those that failed to load", function()
    local dir = helpers.tmpdir()
    os.execute("mkdir -p " .. q(dir .. "/projections") .. " && cp " .. q(helpers.root .. "/projections/balances.lua")
      .. " " .. q(dir .. "/projections/"))
    helpers.write_file(dir .. "/projections/broken.lua", "return { subscribe = {} }\n")
    stores.write_config(dir, "sqlite", { path = dir .. "/tide.db" }, { "projections: " .. dir .. "/projections" })
    local out, err, status = tide3(dir, "modules --json")
    assert.equal(1, status, err)
    local rows = json_lines(out)
    assert.equal(3, #rows)
    assert.same({ "aggregate", "account" }, { rows[1].kind, rows[1].name })
    assert.matches("^%x+$", rows[1].version)
    assert.same({ "Close", "Deposit", "Open", "Withdraw" }, rows[1].commands)
    assert.same({ "projection", "balances", { "balances" } }, { rows[2].kind, rows[2].name, rows[2].tables })
    assert.same({ "projection", "broken" }, { rows[3].kind, rows[3].name })
    assert.matches("subscribe", rows[3].error)
    out, err, status = tide3(dir, "modules")
    assert.equal(1, status, err)
    assert.matches("KIND%s+NAME%s+VERSION%s+HANDLES", out)
    assert.matches("projection%s+broken%s+%-%s+LOAD ERROR: ", out)
    os.execute("rm -rf " .. q(dir))
  end)
end)
