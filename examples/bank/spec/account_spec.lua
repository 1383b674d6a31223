-- The bank account's rules (aggregates/account.lua), given/when/then:
-- `cd examples/bank && tide test` (make test runs it).
local testing = require "tide.testing"

describe("account", function()
  local t = testing.new()
  local opened = { type = "Opened", owner = "Alice" }

  it("opens once", function()
    t:aggregate("account"):when{ type = "Open", owner = "Alice" }
      :then_events{ { type = "Opened", owner = "Alice" } }
      :when{ type = "Open", owner = "Alice" }
      :then_rejected("already open")
  end)

  it("takes deposits and withdrawals within the balance", function()
    t:aggregate("account")
      :given{ opened, { type = "Deposited", amount = 100 } }
      :when{ type = "Withdraw", amount = 30 }
      :then_events{ { type = "Withdrawn", amount = 30 } }
      :then_state{ balance = 70, status = "open" }
  end)

  it("refuses an overdraft, saying by how much", function()
    t:aggregate("account")
      :given{ opened, { type = "Deposited", amount = 100 } }
      :when{ type = "Withdraw", amount = 500 }
      :then_rejected("insufficient funds: balance 100, withdrawal 500")
  end)

  it("needs an open account", function()
    t:aggregate("account"):when{ type = "Deposit", amount = 5 }:then_rejected("not open")
    t:aggregate("account"):given{ opened, { type = "Closed" } }
      :when{ type = "Deposit", amount = 5 }:then_rejected("closed")
  end)

  it("refuses amounts its schema does not allow, before any handler", function()
    local s = t:aggregate("account"):given{ opened }
    s:when{ type = "Deposit", amount = 0 }:then_error("invalid", "amount")
    s:when{ type = "Deposit", amount = 1.5 }:then_error("invalid", "amount")
    s:when{ type = "Deposit", amount = 1e13 }:then_error("invalid", "amount")
    s:when{ type = "Depositt", amount = 1 }:then_error("invalid", "did you mean 'Deposit'")
  end)

  it("keeps every balance exact: no deposit past 2^53 - 1", function()
    t:aggregate("account")
      :given{ opened, { type = "Deposited", amount = 9007199254740991 - 10 } }
      :when{ type = "Deposit", amount = 11 }
      :then_rejected("the largest this account keeps exactly")
  end)

  it("closes, then accepts nothing", function()
    t:aggregate("account"):given{ opened }
      :when{ type = "Close" }:then_events{ { type = "Closed" } }
      :when{ type = "Withdraw", amount = 1 }:then_rejected("closed")
  end)
end)
