-- tide.core loads in nginx's Lua module (Debian's nginx-light +
-- libnginx-mod-http-lua, the luajit2 branch) and gives the same answers as
-- in the tide process.
local helpers = require "helpers"
local core = require "tide.core"

-- nginx loads the plain build even in the sanitizer run: nginx itself is
-- not built with ASan, and the ASan .so cannot load without its runtime.
local CPATH = helpers.root .. "/build/lua/?.so"
-- core.sign is lua/tide/sigv4.lua (over the FFI): tide.core needs tide's Lua
-- library on the path, as lua-nginx-module needs lua-resty-core's.
local LPATH = helpers.root .. "/lua/?.lua"

local REQ = [[{ method = "POST", host = "dynamodb.eu-west-1.amazonaws.com", path = "/",
  headers = { ["content-type"] = "application/x-amz-json-1.0", ["x-amz-target"] = "DynamoDB_20120810.GetItem" },
  body = '{"TableName":"t"}' }]]
local CREDS = [[{ access_key_id = "AKIDEXAMPLE", secret_access_key = "secret", session_token = "tok" }]]
local OPTS = [[{ region = "eu-west-1", service = "dynamodb", time = 1700000000 }]]

local free_port = helpers.free_port

describe("tide.core in nginx", function()
  local prefix, port

  setup(function()
    prefix = helpers.tmpdir()
    port = free_port()
    os.execute("mkdir -p " .. prefix .. "/logs " .. prefix .. "/conf")
    -- As root, nginx's workers would run as nobody, who may not enter the
    -- folder this tree lives in (a home folder is 0700): run them as the
    -- tree's owner, as tools/nginx.sh does for the example site.
    local user = ""
    if helpers.run("id -u"):match("^0%s") then
      user = "user " .. helpers.run("stat -c %U " .. helpers.shell_quote(helpers.root)):gsub("%s+$", "") .. ";"
    end
    helpers.write_file(prefix .. "/conf/nginx.conf", user .. "\n" .. ([[
load_module /usr/share/nginx/modules/ndk_http_module.so;
load_module /usr/share/nginx/modules/ngx_http_lua_module.so;
daemon on;
master_process on;
worker_processes 1;
pid %s/logs/nginx.pid;
error_log %s/logs/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %s/tmp;
  lua_package_path "%s;;";
  lua_package_cpath "%s;;";
  server {
    listen 127.0.0.1:%d;
    location /sign {
      content_by_lua_block {
        local core = require "tide.core"
        local h = core.sign(%s, %s, %s)
        ngx.say(h.authorization)
        ngx.say(core.encode_request{ TableName = "t", Key = { id = "a", n = core.number("12345678901234567890123456789012345678") } })
        ngx.say(tostring(core.null == ngx.null))
      }
    }
  }
}
]]):format(prefix, prefix, prefix, LPATH, CPATH, port, REQ, CREDS, OPTS))
    local out, status = helpers.run("env -u LD_PRELOAD nginx -p " .. prefix .. " -c conf/nginx.conf 2>&1")
    assert(status == 0, "nginx did not start: " .. out)
  end)

  teardown(function()
    helpers.run("env -u LD_PRELOAD nginx -p " .. prefix .. " -c conf/nginx.conf -s stop 2>&1")
    for _ = 1, 50 do
      if not helpers.read_file(prefix .. "/logs/nginx.pid") then break end
      os.execute("sleep 0.1")
    end
    os.execute("rm -rf " .. prefix)
  end)

  it("signs and encodes exactly as the tide process does", function()
    local out = helpers.run("env -u LD_PRELOAD node -e 'require(\"http\").get(\"http://127.0.0.1:" .. port
      .. "/sign\",r=>{let b=\"\";r.on(\"data\",d=>b+=d);r.on(\"end\",()=>process.stdout.write(b))})'")
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    local expected = core.sign(loadstring("return " .. REQ)(), loadstring("return " .. CREDS)(),
                               loadstring("return " .. OPTS)())
    assert.equal(expected.authorization, lines[1], out)
    -- key order within a JSON object follows Lua's table iteration: compare values
    local decoded = assert(core.decode_response(lines[2]))
    assert.equal("t", decoded.TableName)
    assert.equal("a", decoded.Key.id)
    assert.equal("12345678901234567890123456789012345678", tostring(decoded.Key.n))
    assert.equal("true", lines[3], "core.null is not ngx.null")
  end)
end)
