-- examples/cart/projections/carts.lua: one item per cart, for a "my cart"
-- page: customer, status, items (units), total (cents).
local carts = {}

carts.subscribe = { aggregates = { "cart" } }
carts.tables = { carts = { key = "id" } }

carts.handlers = {
  Opened = function(event, ctx)
    ctx:put("carts", { id = event.id, customer = event.data.customer, status = "open", items = 0, total = 0 })
  end,
  ItemAdded = function(event, ctx)
    local d = event.data
    local c = ctx:get("carts", event.id)
    c.items, c.total = c.items + d.qty, c.total + d.qty * d.price
    ctx:put("carts", c)
  end,
  ItemRemoved = function(event, ctx)
    local d = event.data
    local c = ctx:get("carts", event.id)
    c.items, c.total = c.items - d.qty, c.total - d.qty * d.price
    ctx:put("carts", c)
  end,
  CheckedOut = function(event, ctx)
    ctx:update("carts", event.id, { status = "checked_out" })
  end,
}

return carts
