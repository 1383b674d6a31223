-- The codec's pure layer, tested in C with no Lua (spec/c/codec_test.c,
-- built by make as <build>/test/codec_test): the decoder through a
-- visitor of its own, the encoder driven by hand, the GetRecords reader,
-- item sizes and stream names. Under the sanitizer run it is the ASan
-- build's binary.
local helpers = require "helpers"

describe("the codec's pure C layer", function()
  it("passes its C checks", function()
    local bin = helpers.root .. "/" .. helpers.build .. "/test/codec_test"
    local out, status = helpers.run(helpers.shell_quote(bin) .. " 2>&1")
    assert.are.equal(0, status, out)
    assert.matches("^%d+ checks, 0 failed\n$", out)
  end)
end)
