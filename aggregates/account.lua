-- aggregates/account.lua: a bank account, the example domain of tide.
--
-- State:    owner, balance (integer), status ("new", "open" or "closed")
-- Commands: Open {owner}, Deposit {amount}, Withdraw {amount}, Close {}
-- Events:   Opened {owner}, Deposited {amount}, Withdrawn {amount}, Closed {}
-- Rules:    deposits and withdrawals need an open account and a positive
--           integer amount; a withdrawal may not take the balance below
--           zero; a closed account accepts nothing.
local account = {}

account.initial = { owner = nil, balance = 0, status = "new" }

account.schemas = {
  commands = {
    Open = { owner = "string" },
    Deposit = { amount = { type = "integer", min = 1 } },
    Withdraw = { amount = { type = "integer", min = 1 } },
    Close = {},
  },
  events = {
    Opened = { owner = "string" },
    Deposited = { amount = "integer" },
    Withdrawn = { amount = "integer" },
    Closed = {},
  },
}

account.snapshot_every = 100

local function must_be_open(state)
  if state.status == "new" then return "account is not open" end
  if state.status == "closed" then return "account is closed" end
end

account.commands = {
  Open = function(state, cmd)
    if state.status == "open" then return nil, "account is already open" end
    if state.status == "closed" then return nil, "account is closed" end
    if cmd.owner == "" then return nil, "owner must not be empty" end
    return { type = "Opened", owner = cmd.owner }
  end,

  Deposit = function(state, cmd)
    local closed = must_be_open(state)
    if closed then return nil, closed end
    return { type = "Deposited", amount = cmd.amount }
  end,

  Withdraw = function(state, cmd)
    local closed = must_be_open(state)
    if closed then return nil, closed end
    if cmd.amount > state.balance then
      return nil, ("insufficient funds: balance %d, withdrawal %d"):format(state.balance, cmd.amount)
    end
    return { type = "Withdrawn", amount = cmd.amount }
  end,

  Close = function(state)
    local closed = must_be_open(state)
    if closed then return nil, closed end
    return { type = "Closed" }
  end,
}

account.events = {
  Opened = function(state, e)
    state.owner = e.owner
    state.status = "open"
    return state
  end,
  Deposited = function(state, e)
    state.balance = state.balance + e.amount
    return state
  end,
  Withdrawn = function(state, e)
    state.balance = state.balance - e.amount
    return state
  end,
  Closed = function(state)
    state.status = "closed"
    return state
  end,
}

return account
