-- projections/owners.lua: totals per owner, across their accounts.
--
-- Read model `owners`, one item per owner (key `owner`):
--   owner, accounts (accounts opened), open (accounts still open),
--   total (the sum of the balances of all their accounts, closed ones
--   included).
-- An owner's item gathers the events of many streams (one per account),
-- which several workers may process at once: "conditional" mode (each
-- write is conditioned on the revision that was read).
--
-- Deposited, Withdrawn and Closed do not carry the owner, so the table
-- `owner_of` (one item per account, written by that account's events
-- only: "batch" mode) remembers it.
local owners = {}

owners.subscribe = { aggregates = { "account" } }

owners.tables = {
  owners = { key = "owner", mode = "conditional" },
  owner_of = { key = "id" },
}

owners.prefetch = function(event)
  if event.type == "Opened" then
    return { { "owner_of", event.id }, { "owners", event.data.owner } }
  end
  return "owner_of", event.id
end

local function owner_item(ctx, owner)
  return ctx:get("owners", owner) or { owner = owner, accounts = 0, open = 0, total = 0 }
end

-- The owner's item of the event's account, or a fix-it error.
local function of_account(event, ctx)
  local link = ctx:get("owner_of", event.id)
  if not link then
    error(("owners: %s event %d (%s) for an account whose Opened was not applied")
      :format(event.stream, event.version, event.type))
  end
  return owner_item(ctx, link.owner)
end

owners.handlers = {
  Opened = function(event, ctx)
    local owner = event.data.owner
    ctx:put("owner_of", { id = event.id, owner = owner })
    local o = owner_item(ctx, owner)
    o.accounts = o.accounts + 1
    o.open = o.open + 1
    ctx:put("owners", o)
  end,
  Deposited = function(event, ctx)
    local o = of_account(event, ctx)
    o.total = o.total + event.data.amount
    ctx:put("owners", o)
  end,
  Withdrawn = function(event, ctx)
    local o = of_account(event, ctx)
    o.total = o.total - event.data.amount
    ctx:put("owners", o)
  end,
  Closed = function(event, ctx)
    local o = of_account(event, ctx)
    o.open = o.open - 1
    ctx:put("owners", o)
  end,
}

return owners
