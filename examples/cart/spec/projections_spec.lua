-- The cart's projections, given events then read-model items (docs/testing.md).
local testing = require "tide.testing"

describe("carts", function()
  local t = testing.new()

  it("keeps one item per cart", function()
    t:projection("carts")
      :given("cart", "c1", { { type = "Opened", customer = "ann" },
                             { type = "ItemAdded", sku = "tea", qty = 2, price = 350 } })
      :given("cart", "c2", { { type = "Opened", customer = "bob" } })
      :given("cart", "c1", { { type = "ItemAdded", sku = "mug", qty = 1, price = 900 },
                             { type = "CheckedOut", total = 1600, items = 3 } })
      :then_items("carts", {
        { id = "c1", customer = "ann", status = "checked_out", items = 3, total = 1600 },
        { id = "c2", customer = "bob", status = "open", items = 0, total = 0 },
      })
  end)
end)

describe("sales", function()
  local t = testing.new()

  it("counts what was checked out, not what sits in open carts", function()
    t:projection("sales")
      :given("cart", "c1", { { type = "Opened", customer = "ann" },
                             { type = "ItemAdded", sku = "tea", qty = 2, price = 350 },
                             { type = "CheckedOut", total = 700, items = 2 } })
      :given("cart", "c2", { { type = "Opened", customer = "bob" },
                             { type = "ItemAdded", sku = "tea", qty = 1, price = 300 },
                             { type = "ItemAdded", sku = "mug", qty = 1, price = 900 },
                             { type = "ItemRemoved", sku = "mug", qty = 1, price = 900 },
                             { type = "CheckedOut", total = 300, items = 1 } })
      :given("cart", "c3", { { type = "Opened", customer = "cy" },
                             { type = "ItemAdded", sku = "mug", qty = 5, price = 900 } })
      :then_item("sales", "tea", { sku = "tea", units = 3, revenue = 1000, carts = 2 })
      :then_no_item("sales", "mug")
      :then_items("cart_lines", { { cart = "c3", lines = { mug = { qty = 5, price = 900 } } } })
  end)

  it("stops at an event it cannot apply", function()
    -- an ItemRemoved whose cart never had lines: the handler indexes nil
    t:projection("carts")
      :given("cart", "c9", { { type = "ItemAdded", sku = "tea", qty = 1, price = 1 } })
      :then_error("attempt to index")
  end)
end)
