-- `make run`'s main job (examples/bank.sh) on the embedded store: commands,
-- events, state, then projections caught up and read, and a read model
-- that moves after one more command.
local helpers = require "helpers"
local stores = require "stores"

local q = helpers.shell_quote

describe("examples/bank.sh", function()
  it("runs end to end with the only failure the one it shows on purpose", function()
    local dir = helpers.tmpdir()
    local out, status = helpers.run(stores.CLI_ENV .. "TIDE=" .. q(helpers.tide_bin) .. " "
      .. q(helpers.root .. "/examples/bank.sh") .. " " .. q(dir .. "/work") .. " 2>&1")
    assert.equal(0, status, out)
    local failures = {}
    for code in ("\n" .. out):gmatch("\n%(exit status (%d+)%)") do failures[#failures + 1] = code end
    assert.same({ "3" }, failures, out) -- the overdraft, rejected by the domain
    assert.matches('{"balance":70,"id":"alice","owner":"Alice","status":"open","version":3}', out, 1, true)
    assert.matches('{"accounts":1,"open":1,"owner":"Alice","total":70}', out, 1, true)
    assert.matches('{"balance":82,"id":"alice","owner":"Alice","status":"open","version":4}', out, 1, true)
    assert.matches("tide run", out, 1, true)
    os.execute("rm -rf " .. q(dir))
  end)
end)
