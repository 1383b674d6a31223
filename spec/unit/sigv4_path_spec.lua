-- The canonical path of a SigV4 request with dot segments, as botocore and
-- @smithy/signature-v4 normalize it: "." dropped, ".." resolved, slashes
-- merged, and a trailing "/" only where the path ends in one.
local helpers = require "helpers"
local cjson = require "cjson"
local core = require "tide.core"

local CREDS = { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" }
local OPTS = { region = "us-east-1", service = "dynamodb", time = 1700000000, debug = true }

local CASES = {
  { "/a/b/.", "/a/b" },
  { "/a/b/./", "/a/b/" },
  { "/a/b/c/..", "/a/b" },
  { "/a/b/c/../", "/a/b/" },
  { "/a/./b/../c", "/a/c" },
  { "/.", "/" },
  { "/..", "/" },
  { "/a/..", "/" },
  { "/a/../..", "/" },
  { "//a//b//", "/a/b/" },
  { "/a/b", "/a/b" },
  { "/", "/" },
  { "/./a", "/a" },
  { "/a/.b/..c/.", "/a/.b/..c" },
}

local function sign(path)
  local h, d = core.sign({ method = "GET", host = "example.amazonaws.com", path = path, headers = {}, body = "" },
                         CREDS, OPTS)
  return h.authorization, d.canonical_request:match("^[^\n]*\n([^\n]*)\n")
end

describe("SigV4 canonical paths with dot segments", function()
  it("are normalized as botocore and @smithy/signature-v4 do", function()
    for _, c in ipairs(CASES) do
      local _, canonical = sign(c[1])
      assert.are.equal(c[2], canonical, c[1])
    end
  end)

  it("sign as @smithy/signature-v4 signs them", function()
    local paths = {}
    for i, c in ipairs(CASES) do paths[i] = c[1] end
    local out, status = helpers.run("cd " .. helpers.shell_quote(helpers.root)
      .. " && env -u LD_PRELOAD NODE_PATH=.deps/node_modules node spec/fixtures/sigv4_smithy_paths.js "
      .. helpers.shell_quote(cjson.encode(paths)) .. " 2>&1")
    assert.are.equal(0, status, out)
    local theirs = cjson.decode(out)
    for i, path in ipairs(paths) do
      assert.are.equal(theirs[i], (sign(path)), path)
    end
  end)
end)
