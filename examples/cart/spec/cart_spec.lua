-- The cart aggregate, given/when/then (docs/testing.md): `tide test` here.
local testing = require "tide.testing"

describe("cart", function()
  local t = testing.new()
  local opened = { type = "Opened", customer = "ann" }

  it("opens", function()
    t:aggregate("cart"):when{ type = "Open", customer = "ann" }
      :then_events{ { type = "Opened", customer = "ann" } }
  end)

  it("adds an item to an open cart", function()
    t:aggregate("cart")
      :given{ opened }
      :when{ type = "AddItem", sku = "tea", qty = 2, price = 350 }
      :then_events{ { type = "ItemAdded", sku = "tea", qty = 2, price = 350 } }
      :then_state{ total = 700, lines = { tea = { qty = 2, price = 350 } } }
  end)

  it("refuses items in a cart that is not open", function()
    t:aggregate("cart"):when{ type = "AddItem", sku = "tea", qty = 1, price = 350 }
      :then_rejected("not open")
  end)

  it("refuses more than 99 of one product", function()
    t:aggregate("cart")
      :given{ opened, { type = "ItemAdded", sku = "tea", qty = 98, price = 350 } }
      :when{ type = "AddItem", sku = "tea", qty = 2, price = 350 }
      :then_rejected("at most 99 of tea")
  end)

  it("checks the command's fields before any handler runs", function()
    t:aggregate("cart"):given{ opened }
      :when{ type = "AddItem", sku = "tea", qty = 0, price = 350 }
      :then_error("invalid", "qty")
  end)

  it("removes a line with what it held", function()
    t:aggregate("cart")
      :given{ opened, { type = "ItemAdded", sku = "tea", qty = 2, price = 350 } }
      :when{ type = "RemoveItem", sku = "tea" }
      :then_events{ { type = "ItemRemoved", sku = "tea", qty = 2, price = 350 } }
      :then_state{ total = 0 }
  end)

  it("checks out with the total, then accepts nothing", function()
    t:aggregate("cart")
      :given{ opened, { type = "ItemAdded", sku = "tea", qty = 2, price = 350 },
              { type = "ItemAdded", sku = "mug", qty = 1, price = 900 } }
      :when{ type = "CheckOut" }
      :then_events{ { type = "CheckedOut", total = 1600, items = 3 } }
      :when{ type = "AddItem", sku = "tea", qty = 1, price = 350 }
      :then_rejected("checked out")
  end)

  it("refuses to check out an empty cart", function()
    t:aggregate("cart"):given{ opened }:when{ type = "CheckOut" }:then_rejected("empty")
  end)

  it("appends nothing for a command sent twice", function()
    t:aggregate("cart"):given{ opened }
      :when{ id = "add-1", type = "AddItem", sku = "tea", qty = 1, price = 350 }
      :then_events{ { type = "ItemAdded", sku = "tea", qty = 1, price = 350 } }
      :when{ id = "add-1", type = "AddItem", sku = "tea", qty = 1, price = 350 }
      :then_nothing()
      :then_state{ total = 350 }
  end)
end)
