-- examples/cart/aggregates/cart.lua: a shopping cart.
--
-- State:    status ("new", "open", "checked_out"), customer, lines
--           (sku -> {qty=, price=}), total (cents)
-- Commands: Open {customer}, AddItem {sku, qty, price}, RemoveItem {sku},
--           CheckOut {}
-- Events:   Opened {customer}, ItemAdded {sku, qty, price}, ItemRemoved {sku, qty, price},
--           CheckedOut {total, items}
-- Rules:    items go into an open cart only; quantities from 1 to 99 per
--           line; removing an item that is not in the cart is refused;
--           an empty cart cannot be checked out; a checked-out cart
--           accepts nothing.
local cart = {}

cart.initial = { status = "new", lines = {}, total = 0 }

cart.schemas = {
  commands = {
    Open = { customer = "string" },
    AddItem = { sku = "string", qty = { type = "integer", min = 1, max = 99 }, price = { type = "integer", min = 0 } },
    RemoveItem = { sku = "string" },
    CheckOut = {},
  },
}

local function must_be_open(state)
  if state.status == "new" then return "the cart is not open" end
  if state.status == "checked_out" then return "the cart is checked out" end
end

cart.commands = {
  Open = function(state, cmd)
    if state.status ~= "new" then return nil, "the cart is already open" end
    return { type = "Opened", customer = cmd.customer }
  end,

  AddItem = function(state, cmd)
    local closed = must_be_open(state)
    if closed then return nil, closed end
    local line = state.lines[cmd.sku]
    if line and line.qty + cmd.qty > 99 then
      return nil, ("at most 99 of %s per cart (it holds %d)"):format(cmd.sku, line.qty)
    end
    return { type = "ItemAdded", sku = cmd.sku, qty = cmd.qty, price = cmd.price }
  end,

  RemoveItem = function(state, cmd)
    local closed = must_be_open(state)
    if closed then return nil, closed end
    local line = state.lines[cmd.sku]
    if not line then return nil, ("%s is not in the cart"):format(cmd.sku) end
    return { type = "ItemRemoved", sku = cmd.sku, qty = line.qty, price = line.price }
  end,

  CheckOut = function(state)
    local closed = must_be_open(state)
    if closed then return nil, closed end
    local items = 0
    for _, line in pairs(state.lines) do items = items + line.qty end
    if items == 0 then return nil, "the cart is empty" end
    return { type = "CheckedOut", total = state.total, items = items }
  end,
}

cart.events = {
  Opened = function(state, e)
    state.status, state.customer = "open", e.customer
    return state
  end,
  ItemAdded = function(state, e)
    local line = state.lines[e.sku] or { qty = 0, price = e.price }
    line.qty, line.price = line.qty + e.qty, e.price
    state.lines[e.sku] = line
    state.total = state.total + e.qty * e.price
    return state
  end,
  ItemRemoved = function(state, e)
    state.lines[e.sku] = nil
    state.total = state.total - e.qty * e.price
    return state
  end,
  CheckedOut = function(state)
    state.status = "checked_out"
    return state
  end,
}

return cart
