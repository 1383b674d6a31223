-- SIGPIPE in the tide process: the engine sets CURLOPT_NOSIGNAL, so a
-- peer that closes a connection mid-request must fail that request with a
-- clear error, never end the process; and a reader of tide's output that
-- goes away ends the command quietly.
local helpers = require "helpers"
local stores = require "stores"

local q = helpers.shell_quote

describe("the tide process and SIGPIPE", function()
  local dir, server
  setup(function()
    dir = helpers.tmpdir()
    local out, status = helpers.run("cd " .. q(dir) .. " && openssl req -x509 -newkey rsa:2048 -nodes"
      .. " -keyout key.pem -out cert.pem -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>&1")
    assert(status == 0, out)
    -- the server exits when this pipe (its stdin) closes
    server = assert(io.popen("env -u LD_PRELOAD python3 " .. q(helpers.root .. "/spec/fixtures/tls_reset_server.py")
      .. " " .. q(dir .. "/key.pem") .. " " .. q(dir .. "/cert.pem") .. " > " .. q(dir .. "/port") .. " 2>&1", "w"))
    for _ = 1, 100 do
      if (helpers.read_file(dir .. "/port") or ""):match("PORT=%d+") then break end
      helpers.run("sleep 0.05")
    end
  end)
  teardown(function()
    if server then server:close() end
    os.execute("rm -rf " .. q(dir))
  end)

  it("ignores it, so that an HTTPS peer resetting mid-request fails the request, not the process", function()
    local port = assert((helpers.read_file(dir .. "/port") or ""):match("PORT=(%d+)"), "the TLS server did not start")
    local out, status = helpers.run(stores.CLI_ENV .. q(helpers.tide_bin) .. " script "
      .. q(helpers.root .. "/spec/fixtures/script_https_reset.lua") .. " " .. q("https://127.0.0.1:" .. port)
      .. " " .. q(dir .. "/cert.pem") .. " 2>&1")
    assert.equal(0, status, out)
    local failures = 0
    for i = 1, 5 do
      local line = out:match("request " .. i .. ": ([^\n]*)")
      assert.is_not_nil(line, out)
      -- each request fails with the transport's kind and libcurl's reason
      assert.matches("^failed: %a+: .+%(host 127%.0%.0%.1%)$", line)
      failures = failures + 1
    end
    assert.equal(5, failures)
    assert.matches("\ndone\n", "\n" .. out)
  end)

  it("is ignored from the start of every tide command", function()
    helpers.write_file(dir .. "/status.lua", [[
for l in io.lines("/proc/self/status") do
  local mask = l:match("^SigIgn:%s*(%x+)")
  if mask then print(mask) end
end]])
    local out, status = helpers.run(stores.CLI_ENV .. q(helpers.tide_bin) .. " script " .. q(dir .. "/status.lua"))
    assert.equal(0, status, out)
    local mask = tonumber(out:match("%x+"):sub(-8), 16)
    -- SIGPIPE is signal 13: bit 12 of the mask
    assert.equal(1, math.floor(mask / 2 ^ 12) % 2, "SigIgn " .. out)
  end)

  it("ends a command quietly when its reader goes away", function()
    local cdir = stores.cli_dir("sqlite")
    local cmds = {}
    for i = 1, 3000 do
      cmds[i] = i == 1 and '{"aggregate":"account","id":"pipe","command":{"type":"Open","owner":"ada"}}'
        or '{"aggregate":"account","id":"pipe","command":{"type":"Deposit","amount":1}}'
    end
    helpers.write_file(cdir .. "/in.ndjson", table.concat(cmds, "\n") .. "\n")
    local out, status = helpers.run("cd " .. q(cdir) .. " && bash -c " .. q(stores.CLI_ENV .. q(helpers.tide_bin)
      .. " batch < in.ndjson 2> err | head -1; echo \"tide=${PIPESTATUS[0]}\""))
    assert.equal(0, status, out)
    assert.matches('^{"ok":true', out)
    assert.matches("tide=1", out)
    assert.equal("", helpers.read_file(cdir .. "/err"))
    os.execute("rm -rf " .. q(cdir))
  end)
end)
