-- core.json_encode: the CLI's lossless JSON output.
local core = require "tide.core"

describe("core.json_encode", function()
  it("writes integers exactly, doubles in their shortest form, big numbers as their digits", function()
    assert.equal("9007199254740992", core.json_encode(2 ^ 53))
    assert.equal("-42", core.json_encode(-42))
    assert.equal("0.1", core.json_encode(0.1))
    assert.equal("0.30000000000000004", core.json_encode(0.1 + 0.2))
    assert.equal("12345678901234567890123456789012345678",
                 core.json_encode(core.number("12345678901234567890123456789012345678")))
  end)

  it("sorts object keys, tells lists from maps, and writes null", function()
    assert.equal('{"a":1,"b":[1,2],"c":{}}', core.json_encode{ c = {}, b = { 1, 2 }, a = 1 })
    assert.equal("[]", core.json_encode(core.list()))
    assert.equal("{}", core.json_encode({}))
    assert.equal('{"x":null}', core.json_encode{ x = core.null })
  end)

  it("escapes strings as JSON requires, keeping UTF-8 and NUL bytes", function()
    assert.equal('"é\\n\\u0000\\"\\\\\\u0001"', core.json_encode("é\n\0\"\\\1"))
  end)

  it("returns nil and a message for what JSON cannot hold", function()
    for _, v in ipairs{ print, 0 / 0, 1 / 0, { [1] = 1, x = 2 }, core.binary("x"), core.set("SS", { "a" }) } do
      local s, err = core.json_encode(v)
      assert.is_nil(s)
      assert.matches("^json_encode: ", err)
    end
    local t = {}
    t.t = t
    local s, err = core.json_encode(t)
    assert.is_nil(s)
    assert.matches("cycle", err)
  end)
  it("writes integral numbers below 1e17 as integers, exactly as %.0f would", function()
    local values = { 0, -0.0, 1, -1, 42, -123456789, 2 ^ 31, 2 ^ 32 + 1, 2 ^ 53, -(2 ^ 53), 1e16, 99999999999999984,
                     1796592080154 }
    for _, x in ipairs(values) do
      assert.equal(("%.0f"):format(x), core.json_encode(x), ("%.17g"):format(x))
    end
    assert.equal("[1e+17,-1e+17,0.5,1.5]", core.json_encode(core.list{ 1e17, -1e17, 0.5, 1.5 }))
  end)
end)
