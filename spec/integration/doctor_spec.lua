-- `tide doctor`, and the rule that no secret (secret key, session token,
-- SSO access token, web identity token, container authorization token)
-- ever appears in logs, doctor's output or errors. aws_server.js plays
-- the container endpoint, STS and the SSO portal, and proxies DynamoDB
-- Local; its /__secrets lists every secret it handed out or was told.
local helpers = require "helpers"
local cjson = require "cjson"
local core = require "tide.core"
local aws = require "fixtures.aws_server"

local q = helpers.shell_quote

local WEB_TOKEN = "eyJhbGciOiJSUzI1NiJ9.WEBidentitySECRETtoken.signature"
local SSO_TOKEN = "SSOaccessTOKENsecretValue0123456789"
local FILE_SECRET = "fileSECRETkey0123456789abcdefghijABCDEFGH"

describe("tide doctor", function()
  local srv, dir, prefix

  setup(function()
    srv = aws.start{ upstream = helpers.dynamodb_endpoint() }
  end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:reset()
    srv:config{ upstream = helpers.dynamodb_endpoint() }
    dir = helpers.tmpdir()
    os.execute("mkdir -p " .. q(dir .. "/.aws/sso/cache"))
    prefix = helpers.unique("doc") .. "_"
  end)
  after_each(function() os.execute("rm -rf " .. q(dir)) end)

  local function config(extra)
    helpers.write_file(dir .. "/tide.yaml", table.concat({
      "aggregates: " .. helpers.root .. "/aggregates",
      "projections: " .. helpers.root .. "/projections",
      "store: dynamodb",
      "dynamodb:",
      "  region: us-east-1",
      "  endpoint: " .. srv.url,
      "  table_prefix: " .. prefix,
      extra or "",
    }, "\n") .. "\n")
  end

  -- runs tide with a clean AWS environment plus env; returns stdout, stderr, status
  local function tide(args, env)
    local parts = { "cd " .. q(dir) .. " && env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN",
      "-u AWS_PROFILE -u AWS_CONFIG_FILE -u AWS_SHARED_CREDENTIALS_FILE -u AWS_REGION -u AWS_DEFAULT_REGION",
      "HOME=" .. q(dir), "AWS_EC2_METADATA_DISABLED=true", "AWS_ENDPOINT_URL_STS=" .. q(srv.url),
      "AWS_ENDPOINT_URL_SSO=" .. q(srv.url) }
    for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
    parts[#parts + 1] = q(helpers.tide_bin) .. " " .. args .. " 2> " .. q(dir .. "/stderr")
    local out, status = helpers.run(table.concat(parts, " "))
    return out, helpers.read_file(dir .. "/stderr") or "", status
  end

  local function assert_no_secret(text, where)
    local secrets = srv:secrets()
    for _, extra in ipairs{ WEB_TOKEN, SSO_TOKEN, FILE_SECRET } do secrets[#secrets + 1] = extra end
    for _, s in ipairs(secrets) do
      assert.is_nil(text:find(s, 1, true), where .. " shows a secret")
    end
  end

  local CONTAINER = { AWS_CONTAINER_CREDENTIALS_FULL_URI = nil, AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" }

  it("reports config, region, provider, key, expiry, identity and tables, in text and JSON", function()
    config()
    local env = { AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/v2",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN = CONTAINER.AWS_CONTAINER_AUTHORIZATION_TOKEN }
    -- before tide init: the tables are missing, so doctor fails, but reports everything
    local out, err, status = tide("doctor --json", env)
    assert.equal(5, status, out .. err)
    local r = cjson.decode(out)
    assert.equal("us-east-1", r.region)
    assert.equal("configuration (dynamodb.region)", r.region_source)
    assert.equal("container-role", r.credentials.provider)
    assert.matches("^ASIATIDE", r.credentials.access_key_id)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", r.credentials.expiration)
    assert.equal("123456789012", r.caller_identity.account)
    assert.is_false(r.ok)
    local failing = {}
    for _, c in ipairs(r.checks) do if not c.ok then failing[#failing + 1] = c.name end end
    assert.same({ "table " .. prefix .. "events", "table " .. prefix .. "snapshots", "table " .. prefix .. "positions",
                  "table " .. prefix .. "rm_balances", "table " .. prefix .. "rm_owner_of", "table " .. prefix .. "rm_owners" },
                failing)
    assert_no_secret(out .. err, "doctor --json")

    out, err, status = tide("init", env)
    assert.equal(0, status, out .. err)
    out, err, status = tide("doctor", env)
    assert.equal(0, status, out .. err)
    assert.matches("credentials  container%-role, key ASIATIDE%d+, expires %d+%-", out)
    assert.matches("identity     arn:aws:sts::123456789012:assumed%-role/tide/ASIATIDE", out)
    assert.matches("ok   table " .. prefix .. "events: present %(ACTIVE%), key schema stream HASH, version RANGE, stream NEW_IMAGE", out)
    assert.matches("%d+ checks, 0 failed", out)
    assert_no_secret(out .. err, "doctor")
  end)

  it("reports the credentials even when DynamoDB cannot be reached, and skips STS for a local endpoint", function()
    helpers.write_file(dir .. "/tide.yaml", "store: dynamodb\ndynamodb:\n  endpoint: http://127.0.0.1:1\n  max_attempts: 1\n")
    helpers.write_file(dir .. "/.aws/credentials", "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = " .. FILE_SECRET .. "\n")
    local out, err, status = tide("doctor --json", { AWS_ENDPOINT_URL_STS = "" })
    assert.equal(5, status, out .. err)
    local r = cjson.decode(out)
    assert.equal("shared-credentials-file", r.credentials.provider)
    assert.equal("AKIDFILE", r.credentials.access_key_id)
    assert.equal(cjson.null, r.credentials.expiration or cjson.null)
    assert.matches("the DynamoDB endpoint is local", r.caller_identity.skipped)
    local reach
    for _, c in ipairs(r.checks) do if c.name == "DynamoDB reachable" then reach = c end end
    assert.is_false(reach.ok)
    assert_no_secret(out .. err, "doctor")
  end)

  it("fails the credentials check with the chain's reason, never its secrets", function()
    config()
    -- a web identity token STS refuses
    srv:config{ web_identity_token = "another" }
    helpers.write_file(dir .. "/token", WEB_TOKEN)
    local env = { AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/token", AWS_ROLE_ARN = "arn:aws:iam::1:role/w" }
    local out, err, status = tide("doctor", env)
    assert.equal(5, status)
    assert.matches("FAIL credentials: .*InvalidIdentityToken", out)
    assert_no_secret(out .. err, "doctor")
    out, err, status = tide("exec account a1 '{\"type\":\"Open\",\"owner\":\"x\"}'", env)
    assert.not_equal(0, status)
    assert.matches("InvalidIdentityToken", out .. err)
    assert_no_secret(out .. err, "tide exec")

    -- an SSO token the portal refuses, and one that expired
    srv:config{ sso_token = "another" }
    helpers.write_file(dir .. "/.aws/config", "[default]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = R\n"
      .. "[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n")
    local cache = dir .. "/.aws/sso/cache/" .. core.sha1_hex("corp") .. ".json"
    helpers.write_file(cache, cjson.encode{ accessToken = SSO_TOKEN, expiresAt = "2099-01-01T00:00:00Z" })
    out, err = tide("doctor --json")
    assert.matches("refused %(HTTP 401%)", cjson.decode(out).credentials.error)
    assert_no_secret(out .. err, "doctor")
    helpers.write_file(cache, cjson.encode{ accessToken = SSO_TOKEN, expiresAt = "2020-01-01T00:00:00Z" })
    out, err = tide("doctor")
    assert.matches("run `aws sso login %-%-profile default`", out)
    assert_no_secret(out .. err, "doctor")
    out, err = tide("exec account a1 '{\"type\":\"Open\",\"owner\":\"x\"}'")
    assert.matches("aws sso login", out .. err)
    assert_no_secret(out .. err, "tide exec")
    os.remove(dir .. "/.aws/config")

    -- a container authorization token the endpoint refuses
    out, err = tide("doctor", { AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/v2",
                                AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong-container-token-SECRET" })
    assert.matches("answered HTTP 401", out)
    assert.is_nil((out .. err):find("wrong-container-token-SECRET", 1, true))
  end)

  it("keeps secrets out of debug logs while credentials are fetched and refreshed", function()
    config("log:\n  level: debug")
    srv:config{ lifetime = 2, sso_token = SSO_TOKEN }
    helpers.write_file(dir .. "/.aws/config", "[default]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = R\n"
      .. "[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n")
    helpers.write_file(dir .. "/.aws/sso/cache/" .. core.sha1_hex("corp") .. ".json",
      cjson.encode{ accessToken = SSO_TOKEN, expiresAt = "2099-01-01T00:00:00Z" })
    local out, err, status = tide("init")
    assert.equal(0, status, out .. err)
    -- a batch that outlives two lifetimes: its credentials are refreshed
    local lines = {}
    for i = 1, 40 do
      lines[i] = cjson.encode{ aggregate = "account", id = "s1", command = i == 1 and { type = "Open", owner = "x" }
                                                                       or { type = "Deposit", amount = 1 } }
    end
    helpers.write_file(dir .. "/cmds", table.concat(lines, "\n") .. "\n")
    out, status = helpers.run("cd " .. q(dir) .. " && while IFS= read -r l; do printf '%s\\n' \"$l\"; sleep 0.15; done < cmds | "
      .. "env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_PROFILE -u AWS_REGION HOME=" .. q(dir)
      .. " AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL_SSO=" .. q(srv.url) .. " "
      .. q(helpers.tide_bin) .. " batch 2>&1")
    assert.equal(0, status, out)
    assert.matches("AWS credentials refreshed", out)
    assert.is_true(#srv:stats().issued >= 3)
    assert_no_secret(out, "tide batch's output and debug log")
  end)
end)
