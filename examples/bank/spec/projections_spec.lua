-- The bank's read models (projections/balances.lua, owners.lua), given
-- events then items.
local testing = require "tide.testing"

describe("balances", function()
  local t = testing.new()

  it("keeps each account's balance, owner, status and version", function()
    t:projection("balances")
      :given("account", "a1", { { type = "Opened", owner = "Alice" }, { type = "Deposited", amount = 100 } })
      :given("account", "a2", { { type = "Opened", owner = "Bob" } })
      :given("account", "a1", { { type = "Withdrawn", amount = 30 }, { type = "Closed" } })
      :then_items("balances", {
        { id = "a1", owner = "Alice", balance = 70, version = 4, status = "closed" },
        { id = "a2", owner = "Bob", balance = 0, version = 1, status = "open" },
      })
  end)

  it("stops, naming the event, at an account whose Opened it never saw", function()
    t:projection("balances")
      :given("account", "a9", { { type = "Deposited", amount = 5 } })
      :then_error("account#a9 event 1 %(Deposited%) for an account with no item")
  end)
end)

describe("owners", function()
  local t = testing.new()

  it("adds up an owner's accounts, closed ones included", function()
    t:projection("owners")
      :given("account", "a1", { { type = "Opened", owner = "Alice" }, { type = "Deposited", amount = 100 } })
      :given("account", "a2", { { type = "Opened", owner = "Alice" }, { type = "Deposited", amount = 5 },
                                { type = "Closed" } })
      :given("account", "b1", { { type = "Opened", owner = "Bob" } })
      :then_item("owners", "Alice", { owner = "Alice", accounts = 2, open = 1, total = 105 })
      :then_item("owners", "Bob", { owner = "Bob", accounts = 1, open = 1, total = 0 })
      :then_item("owner_of", "a2", { id = "a2", owner = "Alice" })
  end)
end)
