-- tide's credentials chain against botocore's (Debian's python3-botocore,
-- the AWS CLI's chain), over a table of config and environment layouts:
-- both must pick the same provider (botocore's `method`), the same static
-- key, or both refuse the layout. botocore runs in a child python3 with the
-- layout as its whole environment (spec/fixtures/botocore_resolve.py);
-- tide resolves in process with the same variables (opts.getenv).
local helpers = require "helpers"
local cjson = require "cjson"
local sched = require "tide.sched"
local credentials = require "tide.credentials"
local aws = require "fixtures.aws_server"

local q = helpers.shell_quote

-- Debian's botocore (tools/deps.sh installs python3-botocore), ahead of
-- any other copy python3 might find
local PYTHONPATH = "/usr/lib/python3/dist-packages"

local SSO_CACHE = '{"startUrl":"https://corp.awsapps.com/start","region":"eu-west-1",'
  .. '"accessToken":"ssoTOKENsecret","expiresAt":"2099-01-01T00:00:00Z"}'

local STATIC_CREDS = "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = filesecret\n"
  .. "[dev]\naws_access_key_id = AKIDDEVFILE\naws_secret_access_key = devfilesecret\n"
local ENV_KEYS = { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "envsecret" }

local function merge(...)
  local t = {}
  for _, src in ipairs{ ... } do for k, v in pairs(src) do t[k] = v end end
  return t
end

-- name, files (relative to HOME; "$HOME" replaced), env, explicit profile
local function layouts(srv)
  local container = { AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/v2",
                      AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" }
  local process = "[default]\ncredential_process = $HOME/creds.sh\n"
  return {
    { "environment only", {}, ENV_KEYS },
    { "environment over the credentials file", { [".aws/credentials"] = STATIC_CREDS }, ENV_KEYS },
    { "credentials file over the config file", { [".aws/credentials"] = STATIC_CREDS,
      [".aws/config"] = "[default]\naws_access_key_id = AKIDCONF\naws_secret_access_key = confsecret\n" }, {} },
    { "config file alone", { [".aws/config"] = "[default]\naws_access_key_id = AKIDCONF\naws_secret_access_key = confsecret\n" }, {} },
    { "credential_process over the config file", { [".aws/config"] = process
      .. "aws_access_key_id = AKIDCONF\naws_secret_access_key = confsecret\n" }, {} },
    { "credentials file over credential_process", { [".aws/credentials"] = STATIC_CREDS, [".aws/config"] = process }, {} },
    { "AWS_PROFILE", { [".aws/credentials"] = STATIC_CREDS }, { AWS_PROFILE = "dev" } },
    { "AWS_DEFAULT_PROFILE over AWS_PROFILE", { [".aws/credentials"] = STATIC_CREDS },
      { AWS_PROFILE = "nosuch", AWS_DEFAULT_PROFILE = "dev" } },
    { "a missing AWS_PROFILE", { [".aws/credentials"] = STATIC_CREDS }, merge(ENV_KEYS, { AWS_PROFILE = "nosuch" }) },
    { "an explicit profile skips the environment", { [".aws/credentials"] = STATIC_CREDS }, ENV_KEYS, "dev" },
    { "AWS_PROFILE keeps the environment first", { [".aws/credentials"] = STATIC_CREDS }, merge(ENV_KEYS, { AWS_PROFILE = "dev" }) },
    { "assume-role with a source profile", { [".aws/credentials"] = STATIC_CREDS,
      [".aws/config"] = "[default]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = dev\n" }, {} },
    { "assume-role over the same profile's static keys", { [".aws/credentials"] = STATIC_CREDS
      .. "[app]\naws_access_key_id = AKIDAPP\naws_secret_access_key = s\n",
      [".aws/config"] = "[profile app]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = dev\n" }, {}, "app" },
    { "assume-role with credential_source", { [".aws/config"] = "[profile app]\nrole_arn = arn:aws:iam::1:role/r\n"
      .. "credential_source = Environment\n" }, ENV_KEYS, "app" },
    { "a source_profile cycle", { [".aws/config"] = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n"
      .. "[profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = a\n" }, { AWS_PROFILE = "a" } },
    { "both source_profile and credential_source", { [".aws/credentials"] = STATIC_CREDS,
      [".aws/config"] = "[default]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = dev\ncredential_source = Environment\n" }, {} },
    { "web identity from the environment over the credentials file", { [".aws/credentials"] = STATIC_CREDS, token = "t" },
      { AWS_WEB_IDENTITY_TOKEN_FILE = "$HOME/token", AWS_ROLE_ARN = "arn:aws:iam::1:role/w" } },
    { "web identity from the profile", { token = "t",
      [".aws/config"] = "[default]\nweb_identity_token_file = $HOME/token\nrole_arn = arn:aws:iam::1:role/w\n" }, {} },
    { "SSO over the same profile's static keys", { [".aws/credentials"] = STATIC_CREDS,
      [".aws/config"] = "[profile dev]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = Dev\n"
        .. "[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n",
      [".aws/sso/cache/SHA1CORP.json"] = SSO_CACHE }, { AWS_PROFILE = "dev" } },
    { "the config file over the container", { [".aws/config"] = "[default]\naws_access_key_id = AKIDCONF\naws_secret_access_key = c\n" },
      container },
    { "container credentials", {}, container },
    { "the container over instance metadata", {}, merge(container, { AWS_EC2_METADATA_SERVICE_ENDPOINT = srv.url,
      AWS_EC2_METADATA_DISABLED = "false" }) },
    { "instance metadata", {}, { AWS_EC2_METADATA_SERVICE_ENDPOINT = srv.url, AWS_EC2_METADATA_DISABLED = "false" } },
    { "nothing at all", {}, {} },
    { "a key id without its secret in the environment", {}, { AWS_ACCESS_KEY_ID = "AKIDENV" } },
  }
end

local function materialize(home, files, env)
  local e = { HOME = home, AWS_EC2_METADATA_DISABLED = "true" }
  for k, v in pairs(env) do e[k] = (v:gsub("%$HOME", home)) end
  os.execute("mkdir -p " .. q(home .. "/.aws/sso/cache"))
  for name, text in pairs(files) do
    name = name:gsub("SHA1CORP", require("tide.core").sha1_hex("corp"))
    helpers.write_file(home .. "/" .. name, (text:gsub("%$HOME", home)))
  end
  helpers.write_file(home .. "/creds.sh", "#!/bin/sh\necho '{\"Version\":1,\"AccessKeyId\":\"AKIDPROC\",\"SecretAccessKey\":\"p\"}'\n")
  os.execute("chmod +x " .. q(home .. "/creds.sh"))
  return e
end

-- botocore's answers for a list of {env=, profile=}, in one python3
local function botocore(list)
  local input = helpers.tmpdir() .. "/layouts.json"
  for _, l in ipairs(list) do if l.profile == nil then l.profile = cjson.null end end
  helpers.write_file(input, cjson.encode(list))
  local out, status = helpers.run("env -i PATH=/usr/bin:/bin PYTHONPATH=" .. PYTHONPATH .. " python3 "
    .. q(helpers.root .. "/spec/fixtures/botocore_resolve.py") .. " < " .. q(input) .. " 2>&1")
  os.execute("rm -rf " .. q(input:match("^(.*)/")))
  assert(status == 0, out)
  return cjson.decode(out:match("([^\n]+)%s*$"))
end

-- tide fetches at once what botocore defers: its STS and SSO calls go to aws_server.js
local function tide(env, profile, srv)
  local e = merge(env, { AWS_ENDPOINT_URL_SSO = srv.url })
  return sched.run(function()
    local src = credentials.new{ getenv = function(n) return e[n] end, profile = profile, sts_endpoint = srv.url }
    local c, r = src:resolve()
    if c then return { method = r.provider, access_key = c.access_key_id } end
    if r.message:match("^no AWS credentials found") then return { method = cjson.null } end
    return { error = r.message }
  end)
end

describe("tide's credentials chain and botocore's", function()
  local srv
  setup(function()
    srv = aws.start{}
    srv:config{ web_identity_token = "t", sso_token = "ssoTOKENsecret",
                keys = { AKIDDEVFILE = { secret = "devfilesecret" }, AKIDENV = { secret = "envsecret" } } }
  end)
  teardown(function() srv:stop() end)

  it("pick the same provider and key for every layout", function()
    -- python3 is not ours: never under the sanitizer run's preload
    local out, status = helpers.run("env -i PATH=/usr/bin:/bin PYTHONPATH=" .. PYTHONPATH
      .. " python3 -c 'import botocore; print(botocore.__version__)' 2>&1")
    assert.equal(0, status, "python3-botocore is missing (tools/deps.sh test): " .. out)
    local rows, cases, homes = {}, {}, {}
    for i, l in ipairs(layouts(srv)) do
      homes[i] = helpers.tmpdir()
      cases[i] = { env = materialize(homes[i], l[2], l[3]), profile = l[4] }
    end
    local answers = botocore(cases)
    for i, l in ipairs(layouts(srv)) do
      local name, profile = l[1], l[4]
      local b = answers[i]
      local t = tide(cases[i].env, profile ~= cjson.null and profile or nil, srv)
      os.execute("rm -rf " .. q(homes[i]))
      local row = ("%-58s botocore: %-34s tide: %s"):format(name,
        b.error and ("error " .. b.error) or tostring(b.method ~= cjson.null and b.method or "none"),
        t.error and ("error: " .. t.error:sub(1, 70)) or tostring(t.method ~= cjson.null and t.method or "none"))
      rows[#rows + 1] = row
      if b.error then
        assert.truthy(t.error, row)
      else
        assert.is_nil(t.error, row)
        assert.equal(b.method, t.method, row)
        if b.access_key ~= nil and b.access_key ~= cjson.null then
          if b.access_key:match("^ASIATIDE") then
            -- fetched from aws_server.js, which hands out a new key each time
            assert.matches("^ASIATIDE", t.access_key, row)
          else
            assert.equal(b.access_key, t.access_key, row)
          end
        end
      end
    end
    io.stderr:write("\n[botocore] " .. #rows .. " layouts\n  " .. table.concat(rows, "\n  ") .. "\n")
  end)
end)
