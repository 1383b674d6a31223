-- Loading projection modules (tide.projection): every mistake gets a
-- message that says how to fix it; subscriptions; the registry.
local projection = require "tide.projection"
local helpers = require "helpers"

local function load(src)
  return projection.from_source("thing", src, "projections/thing.lua")
end

local VALID = [[
return {
  subscribe = { aggregates = { "account" } },
  tables = { things = { key = "id" } },
  handlers = { Opened = function(event, ctx) end },
}]]

describe("projection modules", function()
  it("loads a valid module with a content-hash version and its tables", function()
    local p = assert(load(VALID))
    assert.equal("thing", p.name)
    assert.equal(16, #p.version)
    assert.equal(p.version, assert(load(VALID)).version)
    assert.are_not.equal(p.version, assert(load(VALID .. " ")).version)
    assert.same({ things = { key = "id", mode = "batch" } }, p.tables)
    assert.same({ "things" }, p:table_names())
  end)

  local mistakes = {
    { "a syntax error", "return {", "projections/thing.lua:1:" },
    { "a raising module", "error('no way')", "raised while loading: .*no way" },
    { "no table returned", "return 42", "must return a table .*return thing" },
    { "no subscribe", "return { tables = { t = { key = 'id' } }, handlers = { A = function() end } }",
      "missing `subscribe`: say which events it reads, e.g. thing.subscribe = { aggregates = { \"account\" } }" },
    { "subscribe of the wrong type", "return { subscribe = 'account', tables = {}, handlers = {} }",
      "`subscribe` must be a table { aggregates = {...}, events = {...} }, got string" },
    { "a misspelt subscribe field",
      "return { subscribe = { aggregate = { 'account' } }, tables = { t = { key = 'id' } }, handlers = { A = function() end } }",
      "subscribe.aggregate is not a subscription field %(did you mean `aggregates`%?%)" },
    { "subscribe.aggregates as a string",
      "return { subscribe = { aggregates = 'account' }, tables = { t = { key = 'id' } }, handlers = { A = function() end } }",
      "subscribe.aggregates must be a list of names, e.g. { \"account\" }" },
    { "an empty subscription", "return { subscribe = { events = {} }, tables = { t = { key = 'id' } }, handlers = { A = function() end } }",
      "subscribe.events is empty: name at least one" },
    { "no tables", "return { subscribe = { aggregates = { 'a' } }, handlers = { A = function() end } }",
      "missing `tables`: declare the read%-model tables it writes, e.g. thing.tables = { thing = { key = \"id\" } }" },
    { "a table without key", "return { subscribe = { aggregates = { 'a' } }, tables = { t = {} }, handlers = { A = function() end } }",
      "tables.t needs `key`, the item attribute that holds its key" },
    { "an unknown mode",
      "return { subscribe = { aggregates = { 'a' } }, tables = { t = { key = 'id', mode = 'fast' } }, handlers = { A = function() end } }",
      "tables.t.mode must be \"batch\" .* or \"conditional\"" },
    { "no handlers", "return { subscribe = { aggregates = { 'a' } }, tables = { t = { key = 'id' } } }",
      "missing `handlers`: add one function per event type" },
    { "a handler that is not a function",
      "return { subscribe = { aggregates = { 'a' } }, tables = { t = { key = 'id' } }, handlers = { Opened = 'x' } }",
      "handlers.Opened must be a function%(event, ctx%), got string" },
    { "a handler for an event it does not subscribe to",
      "return { subscribe = { events = { 'Opened' } }, tables = { t = { key = 'id' } }, handlers = { Closed = function() end } }",
      "handlers.Closed is never called: subscribe.events does not list Closed" },
    { "both handlers and handle",
      "return { subscribe = { aggregates = { 'a' } }, tables = { t = { key = 'id' } }, handlers = { A = function() end }, handle = function() end }",
      "define either `handlers` .* or `handle%(event, ctx%)`, not both" },
    { "a hook that is not a function",
      "return { subscribe = { aggregates = { 'a' } }, tables = { t = { key = 'id' } }, handlers = { A = function() end }, after_batch = 1 }",
      "`after_batch` must be a function, got number" },
    { "a misspelt field",
      "return { subscribe = { aggregates = { 'a' } }, tables = { t = { key = 'id' } }, handlers = { A = function() end }, prefech = function() end }",
      "`prefech` is not a projection field %(did you mean `prefetch`%?%)" },
  }
  for _, m in ipairs(mistakes) do
    it("refuses " .. m[1] .. " with a fix-it message", function()
      local p, err = load(m[2])
      assert.is_nil(p)
      assert.matches(m[3], err)
      assert.matches("projections/thing.lua", err, nil, true)
    end)
  end

  it("subscribes by aggregate, by event type, or both", function()
    local by_agg = assert(load(VALID))
    assert.is_true(by_agg:subscribes{ aggregate = "account", type = "Closed" })
    assert.is_false(by_agg:subscribes{ aggregate = "user", type = "Opened" })
    assert.is_true(by_agg:tracks("account"))
    assert.is_false(by_agg:tracks("user"))
    local by_type = assert(load([[return { subscribe = { events = { "Opened" } },
      tables = { t = { key = "id" } }, handlers = { Opened = function() end } }]]))
    assert.is_true(by_type:subscribes{ aggregate = "user", type = "Opened" })
    assert.is_false(by_type:subscribes{ aggregate = "user", type = "Closed" })
    assert.is_true(by_type:tracks("anything"))
    local both = assert(load([[return { subscribe = { aggregates = { "account" }, events = { "Opened" } },
      tables = { t = { key = "id" } }, handle = function() end }]]))
    assert.is_true(both:subscribes{ aggregate = "account", type = "Opened" })
    assert.is_false(both:subscribes{ aggregate = "user", type = "Opened" })
    assert.is_false(both:subscribes{ aggregate = "account", type = "Closed" })
  end)

  it("keeps a registry of a folder, with load errors and did-you-mean", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/good.lua", VALID)
    helpers.write_file(dir .. "/bad.lua", "return { tables = {} }")
    local reg = projection.registry(dir)
    assert.same({ "good" }, reg:names())
    assert.equal("good", assert(reg:get("good")).name)
    local p, err = reg:get("bad")
    assert.is_nil(p)
    assert.matches("projection 'bad' failed to load: .*missing `subscribe`", err)
    p, err = reg:get("goood")
    assert.is_nil(p)
    assert.matches("unknown projection 'goood' %(did you mean 'good'%?%)", err)
    helpers.run("rm -rf " .. helpers.shell_quote(dir))
  end)

  it("loads the example projections", function()
    local reg = projection.registry("projections")
    assert.same({}, reg.errors)
    assert.equal("conditional", assert(reg:get("owners")).tables.owners.mode)
    assert.equal("batch", assert(reg:get("balances")).tables.balances.mode)
  end)
end)
