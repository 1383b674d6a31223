-- projections/balances.lua: the balance of every account.
--
-- Read model `balances`, one item per account (key `id`, the account id):
--   id, owner, balance (integer), version (the last applied event's
--   version), status ("open" or "closed").
-- Each item is written by the events of one stream, so the table uses the
-- default "batch" mode.
local balances = {}

balances.subscribe = { aggregates = { "account" } }

balances.tables = { balances = { key = "id" } }

-- every event reads its account's item: fetch them all with one request
balances.prefetch = function(event)
  return "balances", event.id
end

-- The account's item, or a fix-it error when its Opened was never applied.
local function account(event, ctx)
  local item = ctx:get("balances", event.id)
  if not item then
    error(("balances: %s event %d (%s) for an account with no item: its Opened was not applied")
      :format(event.stream, event.version, event.type))
  end
  item.version = event.version
  return item
end

balances.handlers = {
  Opened = function(event, ctx)
    ctx:put("balances", { id = event.id, owner = event.data.owner, balance = 0,
                          version = event.version, status = "open" })
  end,
  Deposited = function(event, ctx)
    local item = account(event, ctx)
    item.balance = item.balance + event.data.amount
    ctx:put("balances", item)
  end,
  Withdrawn = function(event, ctx)
    local item = account(event, ctx)
    item.balance = item.balance - event.data.amount
    ctx:put("balances", item)
  end,
  Closed = function(event, ctx)
    local item = account(event, ctx)
    item.status = "closed"
    ctx:put("balances", item)
  end,
}

return balances
