-- Loading aggregate modules: every mistake gets a message that says how to
-- fix it; schemas; the LRU state cache.
local aggregate = require "tide.aggregate"
local schema = require "tide.schema"
local cache = require "tide.cache"

local function load(src)
  return aggregate.from_source("thing", src, "aggregates/thing.lua")
end

describe("aggregate modules", function()
  it("loads a valid module with a content-hash version", function()
    local src = "return { commands = { Do = function() return { type = 'Done' } end }, "
      .. "events = { Done = function(s) return s end } }"
    local a = assert(load(src))
    assert.equal("thing", a.name)
    assert.equal(16, #a.version)
    assert.equal(a.version, assert(load(src)).version)
    assert.are_not.equal(a.version, assert(load(src .. " ")).version)
  end)

  local mistakes = {
    { "syntax error", "return {", "aggregates/thing.lua:1:" },
    { "a raising init", "error('no way')", "raised while loading: .*no way" },
    { "no table returned", "return 42", "must return a table .*return thing" },
    { "no commands", "return { events = {} }", "missing `commands`: add a table of handlers" },
    { "no events", "return { commands = { A = function() end } }", "missing `events`: add a table of appliers" },
    { "empty commands", "return { commands = {}, events = {} }", "`commands` is empty" },
    { "a handler that is not a function", "return { commands = { A = 1 }, events = {} }",
      "commands.A must be a function%(state, cmd, ctx%), got number" },
    { "an applier that is not a function", "return { commands = { A = function() end }, events = { B = 'x' } }",
      "events.B must be a function%(state, event%) returning the new state" },
    { "initial of the wrong type", "return { initial = 3, commands = { A = function() end }, events = {} }",
      "`initial` must be a table or a function" },
    { "initial function returning nothing",
      "return { initial = function() end, commands = { A = function() end }, events = {} }",
      "`initial` must return a table" },
    { "a schema for an unknown command",
      "return { commands = { A = function() end }, events = {}, schemas = { commands = { B = {} } } }",
      "schemas.commands.B names no command handler" },
    { "a schema with an unknown type",
      "return { commands = { A = function() end }, events = {}, schemas = { commands = { A = { x = 'strng' } } } }",
      "unknown type strng" },
    { "an upcaster chain with a hole",
      "return { commands = { A = function() end }, events = { E = function(s) return s end }, "
        .. "upcasters = { E = { [2] = function(d) return d end } } }", "upcasters.E has no step %[1%]" },
    { "a bad snapshot interval",
      "return { commands = { A = function() end }, events = {}, snapshot_every = 0 }", "snapshot_every" },
  }
  for _, m in ipairs(mistakes) do
    it("explains " .. m[1], function()
      local a, err = load(m[2])
      assert.is_nil(a)
      assert.matches(m[3], err)
    end)
  end

  it("refuses new globals in the sandbox; without it, keeps a module's globals to itself", function()
    local src = "leaked_global_of_thing = 1; return { commands = { A = function() end }, events = {} }"
    local a, err = load(src)
    assert.is_nil(a)
    assert.matches("assigning the global 'leaked_global_of_thing': tide's sandbox allows no new globals", err)
    assert(aggregate.from_source("thing", src, "aggregates/thing.lua", { sandbox = false }))
    assert.is_nil(rawget(_G, "leaked_global_of_thing"))
  end)

  it("names the registry's aggregates when one is unknown", function()
    local reg = aggregate.registry("aggregates")
    local a, err = reg:get("acount")
    assert.is_nil(a)
    assert.matches("did you mean 'account'", err)
    local _, err2 = aggregate.registry("/nonexistent/dir"):get("account")
    assert.matches("cannot list directory /nonexistent/dir", err2)
  end)
end)

describe("schemas", function()
  local s = assert(schema.compile{ name = "string", n = { type = "integer", min = 1, max = 9 },
                                   tag = "string?", kind = { type = "string", enum = { "a", "b" } } })
  it("accepts a valid record and refuses each kind of mistake, naming the field", function()
    assert.is_true(schema.validate(s, { name = "x", n = 3, kind = "a" }))
    local cases = {
      { { n = 3, kind = "a" }, "missing required field 'name'" },
      { { name = 1, n = 3, kind = "a" }, "field 'name' must be a string %(got integer%)" },
      { { name = "x", n = 3.5, kind = "a" }, "field 'n' must be an integer %(got number%)" },
      { { name = "x", n = 0, kind = "a" }, "at least 1" },
      { { name = "x", n = 10, kind = "a" }, "at most 9" },
      { { name = "x", n = 3, kind = "c" }, "must be one of a, b" },
      { { name = "x", n = 3, kind = "a", nme = 1 }, "unexpected field 'nme' %(did you mean 'name'%?%)" },
    }
    for _, c in ipairs(cases) do
      local ok, err = schema.validate(s, c[1])
      assert.is_nil(ok)
      assert.matches(c[2], err)
    end
  end)
end)

describe("schema fast checks", function()
  it("answer as the full check does, for every kind of field and value", function()
    local specs = {
      { amount = { type = "integer", min = 1, max = 100 } },
      { owner = "string", note = "string?", n = "number", t = "table", a = "array", b = "boolean", x = "any" },
      { kind = { type = "string", enum = { "a", "b" } }, v = { type = "any", min = 0 } },
      {},
    }
    local values = { 1, 0, 1.5, 2 ^ 53, -2 ^ 53, 0 / 0, "a", "", true, false, {}, { 1 }, { a = 1 },
                     setmetatable({}, { __name = "integer" }), 100, 101 }
    local skips = { { type = true, id = true }, { type = true }, false, { ["1"] = true }, { [1] = true },
                    { type = false, zzz = true } }
    local checked = 0
    for _, spec in ipairs(specs) do
      local c = assert(schema.compile(spec))
      local fields = { "type", "id", "zzz", 1 }
      for f in pairs(spec) do fields[#fields + 1] = f end
      table.sort(fields, function(x, y) return tostring(x) < tostring(y) end)
      for seed = 1, 400 do
        local r, k = {}, seed
        for _, f in ipairs(fields) do
          k = (k * 1103515245 + 12345) % 2147483648
          if k % 5 < 3 then r[f] = values[k % #values + 1] end
        end
        local skip = skips[seed % #skips + 1] or nil
        local a1, a2 = schema.validate(c, r, skip)
        local b1, b2 = schema.full_validate(c, r, skip)
        assert.equal(b1, a1)
        assert.equal(b2, a2)
        checked = checked + 1
      end
    end
    assert.equal(1600, checked)
  end)
end)

describe("the state cache", function()
  it("evicts the least recently used values beyond its byte budget", function()
    local c = cache.new(1000)
    c:put("a", "x", 400)
    c:put("b", "y", 400)
    assert.equal("x", c:get("a")) -- a is now the most recent
    c:put("c", "z", 400)
    assert.is_nil(c:get("b"))
    assert.equal("x", c:get("a"))
    assert.equal("z", c:get("c"))
    assert.equal(800, c.bytes)
    assert.equal(1, c.evictions)
  end)

  it("never keeps a value larger than the whole budget, and replaces on put", function()
    local c = cache.new(100)
    c:put("big", "v", 101)
    assert.is_nil(c:get("big"))
    c:put("k", 1, 10)
    c:put("k", 2, 20)
    assert.equal(2, c:get("k"))
    assert.equal(20, c.bytes)
    c:drop("k")
    assert.equal(0, c.bytes)
    assert.equal(0, c.count)
  end)

  it("estimates sizes from the contents", function()
    assert.is_true(cache.estimate({ s = string.rep("x", 1000) }) > 1000)
    assert.is_true(cache.estimate({}) < cache.estimate({ 1, 2, 3 }))
  end)
end)
