-- aggregates/account.lua: a bank account, the example domain of tide.
--
-- State:    owner, balance (integer), status ("new", "open" or "closed")
-- Commands: Open {owner}, Deposit {amount}, Withdraw {amount}, Close {}
-- Events:   Opened {owner}, Deposited {amount}, Withdrawn {amount}, Closed {}
-- Rules:    deposits and withdrawals need an open account and a positive
--           integer amount; a withdrawal may not take the balance below
--           zero; a closed account accepts nothing. Amounts are at most
--           MAX_AMOUNT and a deposit may not take the balance above
--           MAX_BALANCE (2^53 - 1): Lua numbers are doubles, exact for
--           integers up to 2^53 (docs/codec.md, "Exact numbers past 2^53").
local account = {}

account.MAX_AMOUNT = 1000000000000          -- 10^12 (in the smallest unit, e.g. cents)
account.MAX_BALANCE = 9007199254740991      -- 2^53 - 1

account.initial = { owner = nil, balance = 0, status = "new" }

account.schemas = {
  commands = {
    Open = { owner = "string" },
    Deposit = { amount = { type = "integer", min = 1, max = account.MAX_AMOUNT } },
    Withdraw = { amount = { type = "integer", min = 1, max = account.MAX_AMOUNT } },
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
    if state.balance > account.MAX_BALANCE - cmd.amount then
      return nil, ("the balance would pass %d, the largest this account keeps exactly"):format(account.MAX_BALANCE)
    end
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
