-- tide.log: levels, the text and json formats, the configuration's log
-- section, and the same lines written by the tide process (build/tide).
local helpers = require "helpers"
local stores = require "stores"
local cjson = require "cjson"
local log = require "tide.log"
local config = require "tide.config"
local terror = require "tide.error"

-- A logger whose lines are collected: returns the logger and the lines.
local function collecting(opts)
  local lines = {}
  opts = opts or {}
  opts.sink = function(level, line) lines[#lines + 1] = { level = level, line = line } end
  return log.new(opts), lines
end

describe("tide.log", function()
  it("writes text lines: level, message and the fields sorted", function()
    local logger, lines = collecting{ level = "info", format = "text" }
    logger("warn", "snapshot skipped", { stream = "account#a1", version = 200 })
    assert.equal(1, #lines)
    assert.equal("warn", lines[1].level)
    assert.equal("tide: warn: snapshot skipped (stream=account#a1 version=200)", lines[1].line)
  end)

  it("writes a tide.error field as its text and leaves other tables out", function()
    local logger, lines = collecting{ format = "text" }
    local err = terror.new{ kind = "store", type = "Busy", message = "locked", stream = "s#1" }
    logger("error", "batch failed", { error = err, plan = { 1, 2 }, fn = print })
    assert.equal("tide: error: batch failed (error=Busy: locked (stream s#1))", lines[1].line)
  end)

  it("writes json lines: one object with ts, level, msg and the fields", function()
    local logger, lines = collecting{ format = "json" }
    logger("info", "projection started", { projection = "balances", n = 3, ok = true, t = {} })
    local rec = cjson.decode(lines[1].line)
    assert.equal("info", rec.level)
    assert.equal("projection started", rec.msg)
    assert.equal("balances", rec.projection)
    assert.equal(3, rec.n)
    assert.is_true(rec.ok)
    assert.is_nil(rec.t)
    assert.is_true(math.abs(rec.ts - os.time()) <= 2)
    assert.is_nil(lines[1].line:find("\n", 1, true))
  end)

  for _, case in ipairs{
    { level = "debug", shown = { "debug", "info", "warn", "error" } },
    { level = "info", shown = { "info", "warn", "error" } },
    { level = "warn", shown = { "warn", "error" } },
    { level = "error", shown = { "error" } },
  } do
    it("at level " .. case.level .. " drops the lines below it", function()
      local logger, lines = collecting{ level = case.level }
      for _, l in ipairs{ "debug", "info", "warn", "error" } do logger(l, l .. " line") end
      local got = {}
      for i, l in ipairs(lines) do got[i] = l.level end
      assert.same(case.shown, got)
    end)
  end

  it("raises on a level or format it does not know", function()
    assert.has_error(function() log.new{ level = "verbose" } end)
    assert.has_error(function() log.new{ format = "yaml" } end)
  end)

  describe("from_config", function()
    local function lines_of(cfg, defaults)
      local lines = {}
      defaults = defaults or {}
      defaults.sink = function(_, line) lines[#lines + 1] = line end
      local logger = log.from_config(cfg, defaults)
      logger("debug", "d")
      logger("info", "i")
      return lines
    end

    it("honours log.level and log.format", function()
      local cfg = assert(config.from_table{ log = { level = "debug", format = "json" } })
      local lines = lines_of(cfg)
      assert.equal(2, #lines)
      assert.equal("debug", cjson.decode(lines[1]).level)
    end)

    it("takes the host's default format only when the configuration sets none", function()
      local unset = assert(config.from_table{ log = { level = "info" } })
      assert.is_false(config.is_set(unset, "log.format"))
      assert.equal("i", cjson.decode(lines_of(unset, { format = "json" })[1]).msg)
      local text = assert(config.from_table{ log = { format = "text" } })
      assert.is_true(config.is_set(text, "log.format"))
      assert.same({ "tide: info: i" }, lines_of(text, { format = "json" }))
    end)
  end)
end)

describe("tide.log in the tide process", function()
  local q = helpers.shell_quote

  -- Runs `tide exec` in a SQLite folder with the log section given;
  -- returns stdout and stderr.
  local function exec_with(log_lines)
    local dir = stores.cli_dir("sqlite", log_lines)
    local errfile = dir .. "/stderr"
    local out, status = helpers.run("cd " .. q(dir) .. " && " .. q(helpers.tide_bin)
      .. " exec account a1 '{\"type\":\"Open\",\"owner\":\"ada\"}' 2> " .. q(errfile))
    local err = helpers.read_file(errfile) or ""
    os.execute("rm -rf " .. q(dir))
    assert.equal(0, status, out .. err)
    return out, err
  end

  it("writes debug lines as text at log.level debug, log.format text", function()
    local out, err = exec_with{ "log:", "  level: debug", "  format: text" }
    assert.is_true(cjson.decode(out).ok)
    assert.matches("tide: debug: configuration loaded %(.*store=sqlite", err)
  end)

  it("writes json lines at log.format json", function()
    local _, err = exec_with{ "log:", "  level: debug", "  format: json" }
    local rec = cjson.decode(err:match("[^\n]+"))
    assert.equal("debug", rec.level)
    assert.equal("configuration loaded", rec.msg)
    assert.equal("sqlite", rec.store)
  end)

  it("writes no debug line at the default level", function()
    local _, err = exec_with{}
    assert.equal("", err)
  end)
end)
