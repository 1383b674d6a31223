-- tide.credentials.parse: the pure parts of the credentials chain, with
-- vectors (timestamps, STS XML answers and errors, the JSON documents of
-- the container endpoint, IMDS, credential_process and SSO, command lines,
-- refresh times), and core.aws_ini / core.sha1_hex under them.
local helpers = require "helpers"
local core = require "tide.core"
local parse = require "tide.credentials.parse"

describe("tide.credentials.parse", function()
  it("reads ISO-8601 timestamps as STS, IMDS, ECS and SSO write them", function()
    local vectors = {
      { "1970-01-01T00:00:00Z", 0 },
      { "2026-12-06T23:10:00Z", 1796598600 },
      { "2026-12-06T23:10:00.123Z", 1796598600 },
      { "2026-12-06T23:10:00UTC", 1796598600 },
      { "2026-12-07T00:10:00+01:00", 1796598600 },
      { "2026-12-06T22:10:00-0100", 1796598600 },
      { "2000-02-29T12:00:00Z", 951825600 },
      { "2024-03-01 00:00:00Z", 1709251200 },
    }
    for _, v in ipairs(vectors) do assert.equal(v[2], parse.iso8601(v[1]), v[1]) end
    assert.is_nil(parse.iso8601("yesterday"))
    assert.is_nil(parse.iso8601("2026-12-06T23:10:00 CET"))
    assert.is_nil(parse.iso8601(42))
    assert.equal("2026-12-06T23:10:00Z", parse.iso8601_format(1796598600))
    assert.equal("2026-12-06T23:10:00Z", parse.iso8601_format(1796598600.9))
    assert.is_nil(parse.iso8601_format(nil))
  end)

  it("reads STS answers and their errors (query protocol, XML)", function()
    local ok = [[<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>x</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764&amp;bNrC</SessionToken>
      <Expiration>2026-12-06T23:10:00Z</Expiration>
    </Credentials>
    <PackedPolicySize>8</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>]]
    local c = assert(parse.sts_credentials(ok, "assume-role"))
    assert.equal("ASIAIOSFODNN7EXAMPLE", c.access_key_id)
    assert.equal("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY", c.secret_access_key)
    assert.equal("AQoDYXdzEPT//////////wEXAMPLEtc764&bNrC", c.session_token) -- entities decoded
    assert.equal(1796598600, c.expiration)
    assert.equal("123456789012", c.account_id)
    assert.equal("assume-role", c.provider)
    -- printing credentials never shows the secret or the token
    assert.equal("credentials ASIAIOSFODNN7EXAMPLE (assume-role)", tostring(c))

    local id = assert(parse.sts([[<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/Alice</Arn>
  <UserId>AIDACKCEVSQ6C2EXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult>
</GetCallerIdentityResponse>]]))
    assert.same({ "arn:aws:iam::123456789012:user/Alice", "AIDACKCEVSQ6C2EXAMPLE", "123456789012" },
                { id.Arn, id.UserId, id.Account })

    local l, err = parse.sts([[<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>ExpiredToken</Code><Message>The security token included in the request is expired</Message></Error>
  <RequestId>r</RequestId></ErrorResponse>]])
    assert.is_nil(l)
    assert.same({ code = "ExpiredToken", type = "Sender", message = "The security token included in the request is expired" }, err)
    l, err = parse.sts("<AssumeRoleResponse><unclosed>")
    assert.is_nil(l)
    assert.equal("MalformedResponse", err.code)
    l, err = parse.sts_credentials("<AssumeRoleResponse><AssumeRoleResult/></AssumeRoleResponse>", "assume-role")
    assert.is_nil(l)
    assert.matches("without Credentials", err.message)
    assert.equal("MalformedResponse", select(2, parse.sts("")).code)
  end)

  it("form-encodes STS requests as botocore does", function()
    assert.equal("Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b&RoleSessionName=s~1.2-3_4",
      parse.query{ Action = "AssumeRole", RoleArn = "arn:aws:iam::1:role/a b", RoleSessionName = "s~1.2-3_4" })
  end)

  it("reads the container endpoint, IMDS, credential_process and SSO documents", function()
    local c = assert(parse.container('{"AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-06T23:10:00Z","RoleArn":"r"}'))
    assert.same({ "ASIA1", "s", "t", 1796598600, "container-role" },
                { c.access_key_id, c.secret_access_key, c.session_token, c.expiration, c.provider })
    assert.matches("no AccessKeyId", select(2, parse.container('{"code":"x","message":"denied"}')))
    assert.matches("not a JSON object", select(2, parse.container("<html>")))

    c = assert(parse.imds('{"Code":"Success","LastUpdated":"2026-12-06T22:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIA2","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-06T23:10:00Z"}'))
    assert.same({ "ASIA2", "iam-role", 1796598600 }, { c.access_key_id, c.provider, c.expiration })
    assert.matches("Code Failure", select(2, parse.imds('{"Code":"Failure"}')))

    c = assert(parse.process('{"Version":1,"AccessKeyId":"AKIA3","SecretAccessKey":"s"}'))
    assert.same({ "AKIA3", "custom-process" }, { c.access_key_id, c.provider })
    assert.is_nil(c.expiration)
    assert.is_nil(c.session_token)
    c = assert(parse.process('{"Version":1,"AccessKeyId":"ASIA3","SecretAccessKey":"s","SessionToken":"t","Expiration":"2026-12-06T23:10:00Z"}'))
    assert.equal(1796598600, c.expiration)
    assert.matches("Version 2", select(2, parse.process('{"Version":2,"AccessKeyId":"a","SecretAccessKey":"s"}')))
    assert.matches("no SecretAccessKey", select(2, parse.process('{"Version":1,"AccessKeyId":"a"}')))
    assert.matches("Expiration is not", select(2, parse.process('{"Version":1,"AccessKeyId":"a","SecretAccessKey":"s","Expiration":"soon"}')))

    local t = assert(parse.sso_token('{"startUrl":"https://x","region":"us-east-1","accessToken":"tok","expiresAt":"2026-12-06T23:10:00Z"}'))
    assert.same({ access_token = "tok", expires_at = 1796598600 }, t)
    assert.matches("no accessToken", select(2, parse.sso_token('{"expiresAt":"2026-12-06T23:10:00Z"}')))
    c = assert(parse.sso_role('{"roleCredentials":{"accessKeyId":"ASIA4","secretAccessKey":"s","sessionToken":"t","expiration":1796598600000}}'))
    assert.same({ "ASIA4", "sso", 1796598600 }, { c.access_key_id, c.provider, c.expiration })
  end)

  it("splits credential_process lines that need no shell, and sends the others to one", function()
    assert.same({ "/usr/bin/get-creds", "--profile", "a b", "c\"d", "e'f", "g h" },
      parse.split_command([[/usr/bin/get-creds --profile "a b" "c\"d" "e'f" g\ h]]))
    assert.same({ "aws-vault", "export", "--format=json", "prod" },
      parse.split_command("  aws-vault   export --format=json prod  "))
    for _, line in ipairs{ "get-creds | jq .", "a; b", "echo $HOME", "cat `x`", "a && b", "a > f",
                           "FOO=1 get-creds", "~/bin/creds", "get-creds *", "'unclosed", "" } do
      assert.is_nil(parse.split_command(line), line)
    end
  end)

  it("refreshes ahead of expiry: botocore's 15 and 10 minutes, scaled down for short lives", function()
    local adv, mand = parse.refresh_times(10000 + 3600, 10000)
    assert.equal(10000 + 3600 - 900, adv)
    assert.equal(10000 + 3600 - 600, mand)
    adv, mand = parse.refresh_times(100 + 15, 100)
    assert.equal(107.5, adv)
    assert.equal(111.25, mand)
    assert.is_nil((parse.refresh_times(nil, 1)))
  end)

  it("reads the shared files through core.aws_ini; core.sha1_hex names the SSO cache files", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/config", table.concat({
      "# comment", "[default]", "region = eu-west-1", "s3 =", "    max_concurrent_requests = 20",
      "[profile dev]", "role_arn=arn:aws:iam::1:role/dev", "source_profile = default",
      "[sso-session corp]", "sso_start_url = https://corp.awsapps.com/start", "",
    }, "\n"))
    local t = assert(core.aws_ini(dir .. "/config"))
    assert.same({ region = "eu-west-1", s3 = "" }, t.default)
    assert.equal("arn:aws:iam::1:role/dev", t["profile dev"].role_arn)
    assert.equal("https://corp.awsapps.com/start", t["sso-session corp"].sso_start_url)
    assert.is_false(core.aws_ini(dir .. "/absent"))
    helpers.write_file(dir .. "/bad", "[x]\nno equals sign\n")
    local r, err = core.aws_ini(dir .. "/bad")
    assert.is_nil(r)
    assert.matches("bad line 2 is malformed", err)
    local shared = assert(require("tide.credentials.files").load{ config_file = dir .. "/config",
                                                                   credentials_file = dir .. "/absent" })
    assert.equal("default", shared.profiles.dev.source_profile)
    assert.truthy(shared.sso_sessions.corp)
    os.execute("rm -rf " .. helpers.shell_quote(dir))
    -- botocore's SSO cache key: sha1 of the session name (or start URL)
    assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", core.sha1_hex("abc"))
    assert.equal("da39a3ee5e6b4b0d3255bfef95601890afd80709", core.sha1_hex(""))
  end)
end)
