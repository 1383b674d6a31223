-- What a developer and an operator expect of the CLI (issue 21, part B), on
-- both stores: a failed catch-up gives its lease back, a read-model table
-- declared twice is a load error, `tide status` as a table and JSON, one
-- error line, idempotency_mismatch, not-found streams, correlation and
-- causation ids, events as stored; on the embedded store, `tide run`
-- starting and stopping projections added to and removed from the folder.
local helpers = require "helpers"
local stores = require "stores"
local cjson = require "cjson"

local q = helpers.shell_quote

-- stdout and stderr apart: returns stdout, stderr, exit status
local function tide3(dir, args)
  local out, status = helpers.run(("cd %s && %s%s %s 2> err.txt"):format(q(dir), stores.CLI_ENV,
    q(helpers.tide_bin), args))
  return out, helpers.read_file(dir .. "/err.txt") or "", status
end

local BAD = [[
local p = {}
p.subscribe = { aggregates = { "account" } }
p.tables = { opened = { key = "id" } }
p.handlers = { Opened = function(event, ctx) %s end }
return p
]]

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

stores.each(function(kind)
  describe("the CLI an operator expects, on the " .. kind .. " store", function()
    local dir
    setup(function()
      local pdir = helpers.tmpdir()
      dir = stores.cli_dir(kind, { "projections: " .. pdir })
      dir = dir .. ""
      helpers.write_file(dir .. "/pdir", pdir)
      helpers.write_file(pdir .. "/opened.lua", BAD:format('error("cannot open " .. event.id)'))
      local _, err, status = tide3(dir, "exec account o1 '{\"type\":\"Open\",\"owner\":\"ada\",\"id\":\"cmd-1\"}'")
      assert.equal(0, status, err)
    end)
    teardown(function()
      os.execute("rm -rf " .. q(helpers.read_file(dir .. "/pdir")) .. " " .. q(dir))
    end)

    it("reports a failed catch-up once, releases its lease: the rerun after the fix runs at once", function()
      local out, err, status = tide3(dir, "project opened --until-caught-up")
      assert.equal(1, status, err)
      assert.equal("", out)
      -- one error line (the user's frame under it), no retry lines
      assert.equal(1, count(err, "cannot open o1"), err)
      assert.matches("\ntide project: [^\n]*cannot open o1[^\n]*failed 5 times", "\n" .. err)
      out = tide3(dir, "status")
      assert.matches("opened +%S+ +%S+ +0 .* error: [^\n]*cannot open o1", out)
      assert.matches("at account#o1 version 1 %(Opened%): tide park opened account#o1 1", out)
      assert.is_nil(out:find("runner-", 1, true), out)
      out = tide3(dir, "status --json")
      local st = cjson.decode(out:match("[^\n]+")).status
      assert.same({}, st.workers)
      assert.is_nil(st.error:find("\n", 1, true), st.error)
      -- the fix
      local pdir = helpers.read_file(dir .. "/pdir")
      helpers.write_file(pdir .. "/opened.lua", BAD:format('ctx:put("opened", { id = event.id })'))
      out, err, status = tide3(dir, "project opened --until-caught-up")
      assert.equal(0, status, err)
      assert.equal(1, cjson.decode(out).handled)
      assert.is_nil(err:find("waiting for the lease", 1, true), err)
      out = tide3(dir, "status --json")
      st = cjson.decode(out:match("[^\n]+")).status
      assert.equal(1, st.handled, out)
      assert.is_nil(st.error, out)
    end)

    it("refuses a read-model table declared by two projections, naming both", function()
      local pdir = helpers.read_file(dir .. "/pdir")
      helpers.write_file(pdir .. "/twice.lua", BAD:format(""))
      local out, err, status = tide3(dir, "project twice --until-caught-up")
      os.remove(pdir .. "/twice.lua")
      assert.equal(2, status, err)
      assert.equal("", out)
      assert.matches("read%-model table 'opened' is declared by projection 'opened' and by projection 'twice'", err)
    end)

    it("answers idempotency_mismatch, not found, and keeps correlation and causation ids", function()
      local out, err, status = tide3(dir, "exec account o1 '{\"type\":\"Open\",\"owner\":\"bob\",\"id\":\"cmd-1\"}'")
      assert.equal(7, status, out .. err)
      assert.equal("idempotency_mismatch", cjson.decode(out).error.kind)
      out, err, status = tide3(dir, "exec account o1 '{\"type\":\"Open\",\"owner\":\"ada\",\"id\":\"cmd-1\"}'")
      assert.equal(0, status, out .. err)
      assert.is_true(cjson.decode(out).duplicate)
      for _, c in ipairs{ "state", "events" } do
        out, err, status = tide3(dir, c .. " account nope")
        assert.equal(6, status, err)
        assert.equal("", out)
        assert.equal("tide " .. c .. ": not_found: stream account#nope has no events\n", err)
        out, err = tide3(dir, c .. " account nope --json")
        assert.equal("not_found", cjson.decode(err).error.kind)
      end
      out, err, status = tide3(dir, "exec --correlation-id corr-9 --causation-id cause-9 account o2 "
        .. "'{\"type\":\"Open\",\"owner\":\"cy\"}'")
      assert.equal(0, status, err)
      local line = cjson.encode{ aggregate = "account", id = "o2", command = { type = "Deposit", amount = 5 },
                                 correlation_id = "corr-9", causation_id = "cause-10" }
      out, status = stores.tide(dir, "batch", line .. "\n", true)
      assert.equal(0, status, out)
      out = tide3(dir, "events --stored account o2")
      local evs = {}
      for _, l in ipairs(helpers.lines(out)) do evs[#evs + 1] = cjson.decode(l) end
      assert.equal(2, #evs)
      assert.same({ "corr-9", "cause-9" }, { evs[1].meta.correlation_id, evs[1].meta.causation_id })
      assert.same({ "corr-9", "cause-10" }, { evs[2].meta.correlation_id, evs[2].meta.causation_id })
      assert.same({ amount = 5 }, evs[2].data)
    end)

    do
      -- on DynamoDB one runner reads each shard for every projection: a
      -- projection added or removed restarts it with the new set
      it("tide run starts a projection added to the folder and stops a removed one", function()
        local pdir = helpers.read_file(dir .. "/pdir")
        local pid = assert(tonumber(helpers.run(("cd %s && %s%s run > run.out 2> run.err & echo $!")
          :format(q(dir), stores.CLI_ENV, q(helpers.tide_bin))):match("%d+")))
        local function wait_log(pattern)
          for _ = 1, 300 do
            local log = helpers.read_file(dir .. "/run.err") or ""
            if log:find(pattern) then return true end
            helpers.run("sleep 0.05")
          end
          error("no log line " .. pattern .. ":\n" .. (helpers.read_file(dir .. "/run.err") or ""))
        end
        local ok, perr = pcall(function()
          wait_log('"msg":"projection started","projection":"opened"')
          helpers.write_file(pdir .. "/later.lua", (BAD:gsub("opened", "later")):format(
            'ctx:put("later", { id = event.id })'))
          wait_log('"msg":"projection started","projection":"later"')
          if kind == "dynamodb" then
            -- the group runner was restarted with both (one reader per shard)
            assert.matches('"msg":"projections changed: restarting the shard readers with the new set"',
                           helpers.read_file(dir .. "/run.err"))
          end
          for _ = 1, 200 do
            local out = tide3(dir, "read later o1")
            if out ~= "" then break end
            helpers.run("sleep 0.05")
          end
          assert.equal("o1", cjson.decode((tide3(dir, "read later o1"))).id)
          if kind == "dynamodb" then
            -- a new version of a projection (its source changed) restarts the group too
            local restarts = '"msg":"projections changed: restarting the shard readers with the new set"'
            helpers.write_file(pdir .. "/later.lua", (BAD:gsub("opened", "later")):format(
              'ctx:put("later", { id = event.id, v = 2 })'))
            for _ = 1, 300 do
              if count(helpers.read_file(dir .. "/run.err") or "", restarts:gsub("%p", "%%%0")) >= 2 then break end
              helpers.run("sleep 0.05")
            end
            assert.equal(2, count(helpers.read_file(dir .. "/run.err") or "", restarts:gsub("%p", "%%%0")))
          end
          os.remove(pdir .. "/later.lua")
          wait_log('"msg":"projection stopped","projection":"later"')
        end)
        helpers.run("kill " .. pid .. "; while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
        assert(ok, perr)
      end)
    end
  end)
end)

describe("tide help, --version and tide script -e / -", function()
  local dir
  setup(function() dir = helpers.tmpdir() end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  it("lists every command on one line each, and each command's help has the five parts", function()
    local out, err, status = tide3(dir, "help")
    assert.equal(0, status, err)
    local names = {}
    for name in out:gmatch("\n  (%l+) +%S[^\n]*") do names[#names + 1] = name end
    assert.is_true(#names >= 16, out)
    for _, name in ipairs(names) do
      local h, herr, hstatus = tide3(dir, name .. " --help")
      assert.equal(0, hstatus, name .. ": " .. herr)
      assert.equal(h, (tide3(dir, "help " .. name)))
      if name ~= "help" then
        assert.matches("^usage: tide " .. name, h)
        -- synopsis, options, examples, output, exit status
        for _, part in ipairs{ "[Oo]ptions", "[Ee]xamples", "[Oo]utput", "[Ee]xit status" } do
          assert.matches(part, h, nil, false, name .. " --help has no " .. part)
        end
      end
    end
    out, err, status = tide3(dir, "--version")
    assert.equal(0, status, err)
    assert.matches("^tide %d+%.%d+%.%d+", out)
    out, err, status = tide3(dir, "stauts")
    assert.equal(2, status)
    assert.equal(1, #helpers.lines(err), err)
  end)

  it("runs code from -e and from stdin, with arg and ...", function()
    local out, err, status = tide3(dir, "script -e 'print(arg[0], select(\"#\", ...), ...)' a b")
    assert.equal(0, status, err)
    assert.equal("-e\t2\ta\tb\n", out)
    helpers.write_file(dir .. "/code.lua", "print(arg[0], ...)\n")
    out, err, status = tide3(dir, "script - x < code.lua")
    assert.equal(0, status, err)
    assert.equal("-\tx\n", out)
    out, err, status = tide3(dir, "script -e 'error(\"nope\")'")
    assert.equal(1, status)
    assert.matches("nope", err)
    out, err, status = tide3(dir, "script -e")
    assert.equal(2, status)
    assert.matches("-e needs CODE", err)
  end)
end)
