-- Specs for the `tide` binary: subcommand dispatch and `tide script`.
local helpers = require "helpers"
local fault = require "fixtures.fault_server"

local q = helpers.shell_quote
local fixtures = helpers.root .. "/spec/fixtures/"

-- Runs `tide <args>` (a shell fragment); returns stdout, stderr, status.
local function tide(args, env)
  local errfile = os.tmpname()
  local out, status = helpers.run((env or "") .. " " .. q(helpers.tide_bin) .. " " .. args
                                  .. " 2>" .. q(errfile))
  local err = helpers.read_file(errfile) or ""
  os.remove(errfile)
  return out, err, status
end

describe("tide (CLI)", function()
  it("--help prints the commands and exits 0", function()
    local out, err, status = tide("--help")
    assert.equal(0, status)
    assert.matches("usage: tide <command>", out)
    assert.matches("script", out)
    assert.equal("", err)
    assert.equal(out, (tide("help")))
  end)

  it("without a command prints usage on stderr and exits 2", function()
    local out, err, status = tide("")
    assert.equal(2, status)
    assert.equal("", out)
    assert.matches("usage: tide", err)
  end)

  it("rejects an unknown command with usage on stderr, exit 2", function()
    local out, err, status = tide("frobnicate")
    assert.equal(2, status)
    assert.equal("", out)
    assert.matches("unknown command 'frobnicate'", err)
    assert.matches("usage: tide", err)
  end)

  it("prints its version", function()
    local out, _, status = tide("version")
    assert.equal(0, status)
    assert.matches("^tide %d+%.%d+%.%d+", out)
    assert.equal(out, (tide("--version")))
  end)
end)

describe("tide script", function()
  it("--help prints usage and exits 0", function()
    local out, _, status = tide("script --help")
    assert.equal(0, status)
    assert.matches("usage: tide script [--config FILE] FILE.lua", out, 1, true)
    assert.equal(out, (tide("help script")))
  end)

  it("without FILE exits 2 with usage on stderr", function()
    local out, err, status = tide("script")
    assert.equal(2, status)
    assert.equal("", out)
    assert.matches("missing FILE", err)
  end)

  it("rejects an unknown option with exit 2", function()
    local _, err, status = tide("script --frob x.lua")
    assert.equal(2, status)
    assert.matches("unknown option '%-%-frob'", err)
  end)

  it("exits 2 with a message when the file is missing", function()
    local out, err, status = tide("script /nonexistent/dir/nope.lua")
    assert.equal(2, status)
    assert.equal("", out)
    assert.matches("^tide: cannot open /nonexistent/dir/nope.lua", err)
  end)

  it("runs a file with arg, varargs and the scheduler available", function()
    local file = fixtures .. "script_args.lua"
    local out, err, status = tide("script " .. q(file) .. " one 'two words' ''")
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("arg0=" .. file .. "\narg1=one\narg2=two words\narg3=\nvarargs=3\nslept\n", out)
  end)

  it("runs with the collector's pause at 400, not LuaJIT's 200", function()
    local file = os.tmpname()
    helpers.write_file(file, 'print(collectgarbage("setpause", 200))')
    local out, err, status = tide("script " .. q(file))
    os.remove(file)
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("400\n", out)
  end)

  it("accepts -- before FILE", function()
    local out, _, status = tide("script -- " .. q(fixtures .. "script_args.lua"))
    assert.equal(0, status)
    assert.matches("varargs=0", out)
  end)

  it("reports a runtime error as FILE:LINE: message plus traceback, exit 1", function()
    local out, err, status = tide("script spec/fixtures/script_error.lua")
    assert.equal(1, status)
    assert.equal("before\n", out)
    assert.matches("^tide: spec/fixtures/script_error.lua:4: boom: kaput\n", err)
    assert.matches("stack traceback:", err)
    assert.matches("in function 'explode'", err)
    assert.matches("script_error.lua:12: in main chunk", err)
  end)

  it("reports a syntax error clearly, exit 1", function()
    local out, err, status = tide("script spec/fixtures/script_syntax.lua")
    assert.equal(1, status)
    assert.equal("", out)
    assert.matches("^tide: spec/fixtures/script_syntax.lua:3: unexpected symbol near '='", err)
  end)

  it("reports error objects through __tostring", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/obj.lua",
      "error(setmetatable({}, {__tostring = function() return 'custom failure' end}))")
    local _, err, status = tide("script " .. q(dir .. "/obj.lua"))
    assert.equal(1, status)
    assert.matches("^tide: custom failure", err)
    os.execute("rm -rf " .. q(dir))
  end)

  it("exits with os.exit's code, even from a thread with timers pending", function()
    local out, _, status = tide("script spec/fixtures/script_exit.lua 3")
    assert.equal(3, status)
    assert.equal("exiting with 3\n", out)
    local _, _, status0 = tide("script spec/fixtures/script_exit.lua 0")
    assert.equal(0, status0)
  end)

  it("finds tide's modules from any working directory", function()
    local out, status = helpers.run("cd / && " .. q(helpers.tide_bin) .. " script "
                                         .. q(fixtures .. "script_args.lua") .. " 2>&1")
    assert.equal(0, status, out)
    assert.matches("slept", out)
  end)

  it("uses $LUA_PATH when it is set", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/mymod.lua", "return { answer = 42 }")
    helpers.write_file(dir .. "/main.lua",
      "print(require('mymod').answer) print(require('tide.sched') ~= nil)")
    local env = "LUA_PATH=" .. q(dir .. "/?.lua;" .. helpers.root .. "/lua/?.lua;;")
    local out, err, status = tide("script " .. q(dir .. "/main.lua"), env)
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("42\ntrue\n", out)
    os.execute("rm -rf " .. q(dir))
  end)

  describe("with HTTP", function()
    local srv

    fault.around(function(s) srv = s end)

    it("runs concurrent requests from the top level of a script", function()
      srv:reset()
      local out, err, status = tide("script spec/fixtures/script_http.lua " .. q(srv.url) .. " 64")
      assert.equal("", err)
      assert.equal(0, status)
      assert.equal("ok 64 sum 2080\n", out)
      local stats = srv:stats()
      assert.equal(64, stats.requests)
      assert.is_true(stats.max_concurrent >= 32, "max_concurrent " .. stats.max_concurrent)
    end)

    it("a failed request in a script is an error with exit 1", function()
      local _, err, status = tide("script spec/fixtures/script_http.lua http://127.0.0.1:1 2")
      assert.equal(1, status)
      assert.matches("connect: ", err)
    end)
  end)
end)
