-- tide.testing, run by busted itself (the same module `tide test` gives
-- a project): scenarios that must pass pass, each kind of mismatch fails
-- the test with a message naming both sides, and the cost per scenario.
local helpers = require "helpers"
local testing = require "tide.testing"

local CART = helpers.root .. "/examples/cart"

-- f must fail as a busted failure (not an error) with a message matching pattern
local function fails(pattern, f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected a failure")
  local msg = type(err) == "table" and tostring(err.message or err) or tostring(err)
  assert.matches(pattern, msg)
end

describe("tide.testing", function()
  local t = testing.new{ aggregates = CART .. "/aggregates", projections = CART .. "/projections", now = 1000 }

  it("checks aggregates: events, rejections, error kinds, state", function()
    local s = t:aggregate("cart"):given{ { type = "Opened", customer = "ann" } }
      :when{ type = "AddItem", sku = "tea", qty = 2, price = 350 }
      :then_events{ { type = "ItemAdded", sku = "tea", qty = 2, price = 350 } }
      :then_state{ total = 700 }
    -- the next command sees the state the previous one left
    s:when{ type = "AddItem", sku = "tea", qty = 98, price = 350 }:then_rejected("at most 99")
    fails("expected the events %[{\"customer\":\"bob\",\"type\":\"Opened\"}%]\n  but got %[{\"customer\":\"ann\"",
      function() t:aggregate("cart"):when{ type = "Open", customer = "ann" }:then_events{ { type = "Opened", customer = "bob" } } end)
    fails("expected a rejection, but the command appended", function()
      t:aggregate("cart"):when{ type = "Open", customer = "ann" }:then_rejected()
    end)
    fails("expected a rejection with a message matching \"full\", but the message is: the cart is not open", function()
      t:aggregate("cart"):when{ type = "CheckOut" }:then_rejected("full")
    end)
    fails("expected an error of kind 'handler_error', but the command failed: rejected", function()
      t:aggregate("cart"):when{ type = "CheckOut" }:then_error("handler_error")
    end)
    fails("expected the events .* but the command failed: invalid: .*qty", function()
      t:aggregate("cart"):when{ type = "AddItem", sku = "tea", qty = 0, price = 1 }:then_events{}
    end)
    fails("expected the state to hold {\"total\":1}", function()
      t:aggregate("cart"):when{ type = "Open", customer = "a" }:then_state{ total = 1 }
    end)
    fails("unknown aggregate 'crat' %(did you mean 'cart'%?%)", function() t:aggregate("crat") end)
  end)

  it("stores given events as the repository would: the command's context sees them", function()
    local res = t:aggregate("cart", "c7")
      :given{ { type = "Opened", customer = "ann" }, { type = "ItemAdded", sku = "tea", qty = 1, price = 2 } }
      :when{ type = "CheckOut" }:then_events{ { type = "CheckedOut", total = 2, items = 1 } }:outcome()
    assert.equal("cart#c7", res.stream)
    assert.equal(3, res.version)
    assert.equal(1000, res.events[1].meta.timestamp) -- the bench's clock
  end)

  it("checks projections: items, one item, no item, a failing handler", function()
    local p = t:projection("carts"):given("cart", "c1", { { type = "Opened", customer = "ann" } })
    p:then_item("carts", "c1", { id = "c1", customer = "ann", status = "open", items = 0, total = 0 })
    p:then_no_item("carts", "c2")
    fails('expected carts%["c1"%] to be {"id":"c1"}\n  but it is {"customer":"ann"', function()
      p:then_item("carts", "c1", { id = "c1" })
    end)
    fails("expected carts to hold %[%]\n  but it holds %[{", function() p:then_items("carts", {}) end)
    fails('expected no item carts%["c1"%]', function() p:then_no_item("carts", "c1") end)
    fails("projection 'carts' failed: .*attempt to index", function()
      t:projection("carts"):given("cart", "x", { { type = "ItemAdded", sku = "a", qty = 1, price = 1 } })
        :then_items("carts", {})
    end)
    fails("expected projection 'carts' to fail, but it applied every event", function()
      t:projection("carts"):given("cart", "x", { { type = "Opened", customer = "a" } }):then_error()
    end)
  end)

  it("runs hundreds of scenarios a second, each on a fresh store", function()
    local clock = require "tide.clock"
    local n, started = 200, clock.mono()
    for i = 1, n do
      t:aggregate("cart"):given{ { type = "Opened", customer = "c" .. i } }
        :when{ type = "AddItem", sku = "tea", qty = 1, price = 3 }
        :then_events{ { type = "ItemAdded", sku = "tea", qty = 1, price = 3 } }
    end
    local agg_rate = n / (clock.mono() - started)
    local m = 100
    started = clock.mono()
    for i = 1, m do
      t:projection("carts"):given("cart", "c" .. i, { { type = "Opened", customer = "c" },
                                                     { type = "ItemAdded", sku = "tea", qty = 1, price = 3 } })
        :then_item("carts", "c" .. i, { id = "c" .. i, customer = "c", status = "open", items = 1, total = 3 })
    end
    local proj_rate = m / (clock.mono() - started)
    -- a figure, not a check (the machine is shared)
    print(("\ntide.testing: %.0f aggregate scenarios/s, %.0f projection scenarios/s (%s)"):format(
      agg_rate, proj_rate, os.getenv("TIDE_BUILD") or "build"))
  end)
end)
