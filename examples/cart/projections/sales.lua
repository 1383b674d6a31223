-- examples/cart/projections/sales.lua: units and revenue per product, from
-- the carts that were checked out. Items in open carts are not sales yet,
-- so each cart's lines are kept (table `cart_lines`, one item per cart)
-- until its CheckedOut; a product's item gathers many carts, which several
-- workers may apply at once: "conditional" mode.
local sales = {}

sales.subscribe = { aggregates = { "cart" } }
sales.tables = {
  sales = { key = "sku", mode = "conditional" },
  cart_lines = { key = "cart" },
}

local function lines(ctx, id)
  return ctx:get("cart_lines", id) or { cart = id, lines = {} }
end

sales.handlers = {
  ItemAdded = function(event, ctx)
    local d, l = event.data, lines(ctx, event.id)
    local line = l.lines[d.sku] or { qty = 0, price = d.price }
    line.qty, line.price = line.qty + d.qty, d.price
    l.lines[d.sku] = line
    ctx:put("cart_lines", l)
  end,
  ItemRemoved = function(event, ctx)
    local l = lines(ctx, event.id)
    l.lines[event.data.sku] = nil
    ctx:put("cart_lines", l)
  end,
  CheckedOut = function(event, ctx)
    local l = lines(ctx, event.id)
    for sku, line in pairs(l.lines) do
      local s = ctx:get("sales", sku) or { sku = sku, units = 0, revenue = 0, carts = 0 }
      s.units, s.revenue, s.carts = s.units + line.qty, s.revenue + line.qty * line.price, s.carts + 1
      ctx:put("sales", s)
    end
    ctx:delete("cart_lines", event.id)
  end,
}

return sales
