-- User code and untrusted input, in process: tide.input (ids, strict
-- JSON), json_encode's output of invalid UTF-8, tide.sandbox, tide.budget
-- (also on loops LuaJIT would compile into traces), and a projection that
-- passes over a parked event (tide.projector with a parking).
local input = require "tide.input"
local budget = require "tide.budget"
local sandbox = require "tide.sandbox"
local aggregate = require "tide.aggregate"
local core = require "tide.core"

local function agg(src, opts)
  return aggregate.from_source("t", src, "aggregates/t.lua", opts)
end

describe("tide.input", function()
  it("accepts ids of valid UTF-8 within the limits, refuses the rest by name", function()
    assert.is_nil(input.id_error("a1"))
    assert.is_nil(input.id_error("héllo/wörld#1"))
    assert.is_nil(input.id_error(("x"):rep(1024)))
    assert.equal("the aggregate id is 1025 bytes, over the 1024-byte limit", input.id_error(("x"):rep(1025)))
    assert.equal("the aggregate id is not valid UTF-8 (byte 2)", input.id_error("a\255"))
    assert.equal("the aggregate id is not valid UTF-8 (byte 1)", input.id_error("\192\128")) -- overlong NUL
    assert.equal("the aggregate id is not valid UTF-8 (byte 1)", input.id_error("\237\160\128")) -- a surrogate
    assert.equal("the aggregate id holds a control character (byte 2)", input.id_error("a\0b"))
    assert.equal("the aggregate id must not be empty", input.id_error(""))
    assert.equal("the aggregate id must be a string, got number", input.id_error(5))
    assert.equal("the command id is 257 bytes, over the 256-byte limit", input.command_id_error(("c"):rep(257)))
    assert.equal("the aggregate name must not hold '#'", input.name_error("a#b"))
  end)

  it("decodes strict JSON only, naming the line and column", function()
    assert.same({ a = 1 }, input.decode_object('{"a":1}'))
    assert.same({}, input.decode_object(' {} '))
    assert.same({ a = -500 }, input.decode_object('{"a":-0.5e3}'))
    for _, c in ipairs{
      { '{"a":0x10}', "column 7: lexical error: invalid char in json text" },
      { '{"a":007}', "column 6" },
      { '{"a":+5}', "column 6: lexical error" },
      { '{"a":5.}', "column 7: lexical error: malformed number" },
      { '{"a":NaN}', "column 6" },
      { '{"a":Infinity}', "column 6" },
      { '{"a":1e400}', "numeric %(floating point%) overflow" },
      { '{"a":100000000000000000000}', "integer overflow" },
      { '{"a":1}\0{"b":2}', "column 8: a NUL byte" },
      { '{"a":"\255"}', "invalid bytes in UTF8 string" },
      { '{"a":1} x', "trailing garbage" },
      { '{\n"a":\n x}', "line 3, column 2" },
      { "", "premature EOF" },
    } do
      local v, err = input.decode_object(c[1], "the text")
      assert.is_nil(v, c[1])
      assert.matches("^the text is not valid JSON: .*" .. c[2], err)
    end
    assert.equal("the text must be a JSON object", select(2, input.decode_object("[1]", "the text")))
    assert.equal("the text must be a JSON object", select(2, input.decode_object("[]", "the text")))
  end)

  it("json_encode writes bytes that are not UTF-8 as U+FFFD: the output is always JSON", function()
    local text = assert(core.json_encode{ a = "x\255\254y", b = "héllo", c = "\240\159\152\128" })
    assert.equal('{"a":"x\239\191\189\239\191\189y","b":"héllo","c":"\240\159\152\128"}', text)
    assert(input.decode(text))
  end)
end)

describe("tide.sandbox", function()
  it("gives modules an allow-list of globals; the rest raises by name", function()
    local env = sandbox.env("aggregates/t.lua")
    for _, name in ipairs{ "pairs", "pcall", "tostring", "string", "table", "math", "os", "load", "require", "print" } do
      assert.is_not_nil(rawget(env, name), name)
    end
    for _, name in ipairs{ "io", "debug", "ffi", "jit", "package", "dofile", "loadfile", "setfenv", "getfenv",
                           "collectgarbage", "coroutine" } do
      assert.has_error(function() return env[name] end, "global '" .. name .. "' is not available in tide's sandbox (docs/sandbox.md)")
    end
    assert.has_error(function() return env.os.exit end)
    assert.has_error(function() return env.os.getenv end)
    assert.has_error(function() return env.string.dump end)
    assert.has_error(function() env.x = 1 end)
    assert.is_function(env.os.time)
    assert.equal(env.string, env.require("string"))
    assert.is_function(env.require("tide.core").number)
    assert.has_error(function() return env.require("tide.core").sha256_hex end)
    assert.has_error(function() env.require("ffi") end)
    assert.is_nil((env.load("\27LJ")))
    local f = assert(env.load("return 1 + 1"))
    assert.equal(2, f())
  end)

  it("is per folder: off, a module sees the globals and keeps its own", function()
    local boxed = assert(agg("return { commands = { A = function() return { type = 'E', v = io ~= nil } end }, "
      .. "events = { E = function(s) return s end } }"))
    local _, kind, msg = boxed:decide({}, { type = "A" }, {})
    assert.equal("handler_error", kind)
    assert.matches("global 'io' is not available in tide's sandbox", msg)
    local a = assert(agg("x_of_t = 1; return { commands = { A = function() return { type = 'E', v = io ~= nil } end }, "
      .. "events = { E = function(s) return s end } }", { sandbox = false }))
    assert.is_true(a:decide({}, { type = "A" }, {})[1].v)
    assert.is_nil(rawget(_G, "x_of_t"))
  end)
end)

describe("tide.budget", function()
  local saved
  before_each(function() saved = budget.ms; budget.configure{ ms = 150 } end)
  after_each(function() budget.configure{ ms = saved } end)

  local SPIN = [[
    local M = { events = { E = function(s) return s end } }
    M.commands = {
      Spin = function() local n = 0 while true do n = n + 1 end end,
      Count = function(_, cmd) local n = 0 for i = 1, cmd.n do n = n + i % 7 end return { type = "E", n = n } end,
      Catch = function() while true do pcall(error, "x") end end,
      Inner = function() local f = load("local n = 0 while true do n = n + 1 end") f() end,
    }
    return M]]

  it("stops a handler that never returns, even when the loop is hot enough for the JIT", function()
    local a = assert(agg(SPIN))
    -- a long but finite loop runs to the end
    local ev = assert(a:decide({}, { type = "Count", n = 100000 }, {}))
    assert.equal("E", ev[1].type)
    for _, c in ipairs{ "Spin", "Catch", "Inner" } do
      local events, kind, msg = a:decide({}, { type = c }, {})
      assert.is_nil(events)
      assert.equal("handler_error", kind)
      assert.matches("t.commands." .. c .. " ran past its budget of 150 ms %(lua.handler_budget_ms%)", msg)
    end
    -- nothing is left armed
    assert.equal(0, budget.active())
    assert.is_nil(debug.gethook())
  end)

  it("the reason: a count hook alone does not fire inside a compiled trace", function()
    if not (jit and jit.status()) then return end
    local fired = 0
    local function hot(n) local x = 0 for i = 1, n do x = x + i % 3 end return x end
    hot(1000) -- compiled now
    debug.sethook(function() fired = fired + 1 end, "", 1000)
    hot(10000000)
    debug.sethook()
    -- 10^7 iterations of several instructions would fire tens of thousands of times interpreted
    assert.is_true(fired < 1000, "fired " .. fired)
  end)

  it("stops a module's top level that never returns", function()
    local a, err = agg("while true do end\nreturn {}")
    assert.is_nil(a)
    assert.matches("t's top level %(aggregates/t.lua%) ran past its budget of 150 ms", err)
  end)

  it("does not count the time a handler waits for the store (budget.io)", function()
    local slept = budget.call("x", debug.traceback, function()
      return budget.io(function()
        local t = require("tide.clock").live_ms()
        while require("tide.clock").live_ms() - t < 300 do end
        return "waited"
      end)
    end)
    assert.is_true(slept)
  end)
end)

describe("parking in the projector", function()
  it("passes over a parked event; a batch failing on an event parked since is applied again at once", function()
    local projector = require "tide.projector"
    local projection = require "tide.projection"
    local proj = assert(projection.from_source("p", [[
      return { subscribe = { aggregates = { "account" } }, tables = { t = { key = "id" } },
        handlers = { Opened = function(ev, ctx)
          if ev.data.owner == "bad" then error("no") end
          ctx:put("t", { id = ev.id, owner = ev.data.owner })
        end } }]], "projections/p.lua"))
    local items, positions = {}, {}
    local backend = {
      get_positions = function(_, _, streams) local o = {} for _, s in ipairs(streams) do o[s] = positions[s] end return o end,
      get_items = function(_, reqs) local o = {} for _, r in ipairs(reqs) do o[r.table .. "\0" .. r.key] = items[r.key] end return o end,
    }
    local parked = {}
    local parking = { set = function() local s = {} for k in pairs(parked) do s[k] = true end return s end }
    local p = projector.new{ projection = proj, backend = backend, parking = parking }
    local function ev(id, owner)
      return { stream = "account#" .. id, version = 1, type = "Opened", data = { owner = owner }, meta = {},
               aggregate = "account", id = id }
    end
    local events = { ev("a", "A"), ev("b", "bad"), ev("c", "C") }
    local plan, err = p:apply(events)
    assert.is_nil(plan)
    assert.equal("account#b", err.stream)
    parked["account#b\0" .. "1"] = true
    plan = assert(p:apply(events))
    assert.equal(2, plan.applied)
    assert.equal(1, plan.parked)
    assert.equal(1, plan.positions["account#b"])
  end)
end)
