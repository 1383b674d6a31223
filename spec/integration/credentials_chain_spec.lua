-- tide.credentials: every provider of the chain and every precedence rule,
-- against aws_server.js (the suite's own IMDSv2, container endpoint, STS
-- and SSO portal on loopback). The environment is handed to the chain as a
-- table (opts.getenv), so no case depends on the suite's own variables.
local helpers = require "helpers"
local sched = require "tide.sched"
local cjson = require "cjson"
local core = require "tide.core"
local credentials = require "tide.credentials"
local aws = require "fixtures.aws_server"

local q = helpers.shell_quote

local srv, home

local function write(name, text)
  helpers.write_file(home .. "/" .. name, text)
end

-- A source for env (HOME and IMDS off unless given); runs fn(src) in the scheduler.
local function with(env, fn, opts)
  env = env or {}
  if env.HOME == nil then env.HOME = home end
  if env.AWS_EC2_METADATA_DISABLED == nil and not env.AWS_EC2_METADATA_SERVICE_ENDPOINT then
    env.AWS_EC2_METADATA_DISABLED = "true"
  end
  if env.AWS_ENDPOINT_URL_STS == nil then env.AWS_ENDPOINT_URL_STS = srv.url end
  if env.AWS_ENDPOINT_URL_SSO == nil then env.AWS_ENDPOINT_URL_SSO = srv.url end
  local o = opts or {}
  o.getenv = function(n) return env[n] end
  return sched.run(function()
    local src = credentials.new(o)
    return fn(src)
  end)
end

local function resolve(env, opts)
  return with(env, function(src)
    local c, r = src:resolve()
    return c, r
  end, opts)
end

local SRC_SECRET = "srcSECRETsecretSECRET0123456789abcdefghij"

describe("tide.credentials chain", function()
  setup(function() srv = aws.start{ lifetime = 3600 } end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:reset()
    home = helpers.tmpdir()
    os.execute("mkdir -p " .. q(home .. "/.aws/sso/cache"))
  end)
  after_each(function() os.execute("rm -rf " .. q(home)) end)

  describe("static providers", function()
    it("takes explicit credentials first, then the environment; half of either is an error", function()
      local c, r = resolve({ AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "envsecret" },
        { credentials = { access_key_id = "AKIDOPT", secret_access_key = "optsecret", session_token = "tok" } })
      assert.same({ "AKIDOPT", "optsecret", "tok", "explicit" }, { c.access_key_id, c.secret_access_key, c.session_token, r.provider })
      c, r = resolve({ AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "envsecret", AWS_SESSION_TOKEN = "envtok",
                       AWS_CREDENTIAL_EXPIRATION = "2030-01-01T00:00:00Z" })
      assert.same({ "AKIDENV", "envtok", "env", 1893456000 }, { c.access_key_id, c.session_token, r.provider, c.expiration })
      local _, err = resolve({}, { credentials = { access_key_id = "AKIDOPT" } })
      assert.matches("access_key_id given without secret_access_key", err.message)
      _, err = resolve({ AWS_ACCESS_KEY_ID = "AKIDENV" })
      assert.matches("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY", err.message)
    end)

    it("takes the credentials file, then credential_process, then the config file", function()
      write(".aws/credentials", "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = filesecret\n")
      write("creds.sh", "#!/bin/sh\necho 'process stderr line' >&2\n"
        .. "printf '{\"Version\":1,\"AccessKeyId\":\"AKIDPROC\",\"SecretAccessKey\":\"procsecret\",\"SessionToken\":\"%s\",\"Expiration\":\"2030-01-01T00:00:00Z\"}' \"$1\"\n")
      os.execute("chmod +x " .. q(home .. "/creds.sh"))
      write(".aws/config", "[default]\ncredential_process = " .. home .. "/creds.sh 'tok en'\n"
        .. "aws_access_key_id = AKIDCONF\naws_secret_access_key = confsecret\n")
      local c, r = resolve({})
      assert.same({ "AKIDFILE", "shared-credentials-file" }, { c.access_key_id, r.provider })
      os.remove(home .. "/.aws/credentials")
      c, r = resolve({})
      assert.same({ "AKIDPROC", "tok en", 1893456000, "custom-process" },
                  { c.access_key_id, c.session_token, c.expiration, r.provider })
      write(".aws/config", "[default]\naws_access_key_id = AKIDCONF\naws_secret_access_key = confsecret\n")
      c, r = resolve({})
      assert.same({ "AKIDCONF", "config-file" }, { c.access_key_id, r.provider })
      -- a named profile: AWS_PROFILE, else AWS_DEFAULT_PROFILE; a missing one is an error
      write(".aws/config", "[profile dev]\naws_access_key_id = AKIDDEV\naws_secret_access_key = devsecret\n")
      c = resolve({ AWS_PROFILE = "dev" })
      assert.equal("AKIDDEV", c.access_key_id)
      c = resolve({ AWS_DEFAULT_PROFILE = "dev" })
      assert.equal("AKIDDEV", c.access_key_id)
      local _, err = resolve({ AWS_PROFILE = "nosuch", AWS_ACCESS_KEY_ID = "A", AWS_SECRET_ACCESS_KEY = "s" })
      assert.matches("profile 'nosuch' not found", err.message)
    end)

    it("skips the environment's keys when the configuration names a profile (as botocore)", function()
      write(".aws/credentials", "[dev]\naws_access_key_id = AKIDDEV\naws_secret_access_key = devsecret\n")
      local c, r = resolve({ AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "envsecret" }, { profile = "dev" })
      assert.same({ "AKIDDEV", "shared-credentials-file" }, { c.access_key_id, r.provider })
      c = resolve({ AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "envsecret", AWS_PROFILE = "dev" })
      assert.equal("AKIDENV", c.access_key_id)
    end)

    it("runs credential_process with a timeout and reports its failures without its output", function()
      write("slow.sh", "#!/bin/sh\nsleep 5\n")
      write("fail.sh", "#!/bin/sh\necho '{\"Version\":1,\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"leakedSECRET\"}'\nexit 3\n")
      write("bad.sh", "#!/bin/sh\necho '{\"Version\":1,\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"leakedSECRET\",\"Expiration\":\"soon\"}'\n")
      os.execute("chmod +x " .. q(home .. "/slow.sh") .. " " .. q(home .. "/fail.sh") .. " " .. q(home .. "/bad.sh"))
      write(".aws/config", "[default]\ncredential_process = " .. home .. "/slow.sh\n")
      local t0 = os.time()
      local _, err = resolve({}, { process_timeout = 1 })
      assert.matches("did not finish within 1 s", err.message)
      assert.is_true(os.time() - t0 < 5)
      write(".aws/config", "[default]\ncredential_process = " .. home .. "/fail.sh\n")
      _, err = resolve({})
      assert.matches("exited with status 3", err.message)
      write(".aws/config", "[default]\ncredential_process = " .. home .. "/bad.sh\n")
      _, err = resolve({})
      assert.matches("Expiration is not an ISO%-8601 timestamp", err.message)
      assert.not_matches("leaked", tostring(err))
      -- a line that needs a shell goes through /bin/sh -c
      write(".aws/config", "[default]\ncredential_process = " .. home .. "/bad.sh | sed 's/soon/2030-01-01T00:00:00Z/'\n")
      local c = resolve({})
      assert.equal(1893456000, c.expiration)
    end)
  end)

  describe("assume-role", function()
    local function static_source()
      srv:config{ keys = { AKIDSOURCE = { secret = SRC_SECRET } } }
      write(".aws/credentials", "[src]\naws_access_key_id = AKIDSOURCE\naws_secret_access_key = " .. SRC_SECRET .. "\n")
    end

    it("assumes a role with a source profile, signed by the source's key, with the profile's settings", function()
      static_source()
      write(".aws/config", "[profile app]\nrole_arn = arn:aws:iam::123456789012:role/app\nsource_profile = src\n"
        .. "external_id = ext-1\nrole_session_name = tide-spec\nduration_seconds = 1800\n")
      local c, r = resolve({ AWS_PROFILE = "app" })
      assert.equal("assume-role", r.provider)
      assert.matches("^ASIATIDE", c.access_key_id)
      assert.truthy(c.expiration)
      local st = srv:stats()
      assert.equal(1, #st.sts)
      assert.same({ Action = "AssumeRole", Version = "2011-06-15", RoleArn = "arn:aws:iam::123456789012:role/app",
                    ExternalId = "ext-1", RoleSessionName = "tide-spec", DurationSeconds = "1800" }, st.sts[1].params)
      assert.equal(1, st.used.AKIDSOURCE)
      -- the role's profile wins over static keys of the same profile in the credentials file
      write(".aws/credentials", "[src]\naws_access_key_id = AKIDSOURCE\naws_secret_access_key = " .. SRC_SECRET
        .. "\n[app]\naws_access_key_id = AKIDAPP\naws_secret_access_key = appsecret\n")
      c, r = resolve({ AWS_PROFILE = "app" })
      assert.equal("assume-role", r.provider)
    end)

    it("follows chains of source profiles, each role assumed with the previous one's credentials", function()
      static_source()
      write(".aws/config", "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n"
        .. "[profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = src\n")
      local c, r = resolve({ AWS_PROFILE = "a" })
      assert.equal("assume-role", r.provider)
      local st = srv:stats()
      assert.equal(2, #st.sts)
      assert.equal("arn:aws:iam::1:role/b", st.sts[1].params.RoleArn)
      assert.equal("arn:aws:iam::1:role/a", st.sts[2].params.RoleArn)
      -- the second call was signed by the first role's key (the server checked the signature)
      assert.equal(1, st.used[st.issued[1].akid])
      assert.equal(st.issued[2].akid, c.access_key_id)
    end)

    it("names the loop of a source_profile cycle; a profile may source its own static keys", function()
      write(".aws/config", "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n"
        .. "[profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = c\n"
        .. "[profile c]\nrole_arn = arn:aws:iam::1:role/c\nsource_profile = a\n"
        .. "[profile self]\nrole_arn = arn:aws:iam::1:role/self\nsource_profile = self\n")
      local _, err = resolve({ AWS_PROFILE = "a" })
      assert.matches("the source_profile chain loops: a %-> b %-> c %-> a", err.message)
      _, err = resolve({ AWS_PROFILE = "self" })
      assert.matches("loops: self %-> self", err.message)
      srv:config{ keys = { AKIDSELF = { secret = "selfsecret" } } }
      write(".aws/credentials", "[self]\naws_access_key_id = AKIDSELF\naws_secret_access_key = selfsecret\n")
      local c, r = resolve({ AWS_PROFILE = "self" })
      assert.equal("assume-role", r.provider)
      assert.matches("^ASIATIDE", c.access_key_id)
    end)

    it("takes credential_source Environment, EcsContainer and Ec2InstanceMetadata, and refuses bad settings", function()
      srv:config{ keys = { AKIDENVSRC = { secret = "envsrcsecret" } } }
      write(".aws/config", "[profile e]\nrole_arn = arn:aws:iam::1:role/e\ncredential_source = Environment\n"
        .. "[profile k]\nrole_arn = arn:aws:iam::1:role/k\ncredential_source = EcsContainer\n"
        .. "[profile i]\nrole_arn = arn:aws:iam::1:role/i\ncredential_source = Ec2InstanceMetadata\n"
        .. "[profile both]\nrole_arn = arn:aws:iam::1:role/x\ncredential_source = Environment\nsource_profile = e\n"
        .. "[profile none]\nrole_arn = arn:aws:iam::1:role/x\n"
        .. "[profile odd]\nrole_arn = arn:aws:iam::1:role/x\ncredential_source = Laptop\n"
        .. "[profile denied]\nrole_arn = arn:aws:iam::1:role/denied\ncredential_source = Environment\n")
      -- (AWS_PROFILE=e would let the environment's keys answer first: the
      -- profile is named in the configuration, as `aws --profile e` does)
      local c, r = resolve({ AWS_ACCESS_KEY_ID = "AKIDENVSRC", AWS_SECRET_ACCESS_KEY = "envsrcsecret" }, { profile = "e" })
      assert.equal("assume-role", r.provider)
      assert.equal(1, srv:stats().used.AKIDENVSRC)
      c, r = resolve({ AWS_PROFILE = "k", AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/x",
                       AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" })
      assert.equal("assume-role", r.provider)
      c, r = resolve({ AWS_PROFILE = "i", AWS_EC2_METADATA_SERVICE_ENDPOINT = srv.url })
      assert.equal("assume-role", r.provider)
      local kinds = {}
      for _, k in ipairs(srv:stats().issued) do kinds[#kinds + 1] = k.kind end
      assert.same({ "assume-role", "container", "assume-role", "imds", "assume-role" }, kinds)
      local _, err = resolve({ AWS_PROFILE = "both" })
      assert.matches("both source_profile and credential_source", err.message)
      _, err = resolve({ AWS_PROFILE = "none" })
      assert.matches("neither source_profile nor credential_source", err.message)
      _, err = resolve({ AWS_PROFILE = "odd" })
      assert.matches("credential_source 'Laptop' is not one of", err.message)
      _, err = resolve({ AWS_ACCESS_KEY_ID = "AKIDENVSRC", AWS_SECRET_ACCESS_KEY = "envsrcsecret" }, { profile = "denied" })
      assert.equal("AccessDenied", err.type)
      assert.matches("not authorized to perform sts:AssumeRole", err.message)
      assert.is_nil(c and nil)
    end)
  end)

  describe("web identity", function()
    it("exchanges the token file at STS (unsigned), from the environment or the profile", function()
      local token = "eyJhbGciOiJSUzI1NiJ9.webIDENTITYtokenSECRET.sig"
      srv:config{ web_identity_token = token }
      write("token", token .. "\n")
      local c, r = resolve({ AWS_WEB_IDENTITY_TOKEN_FILE = home .. "/token", AWS_ROLE_ARN = "arn:aws:iam::1:role/irsa",
                             AWS_ROLE_SESSION_NAME = "pod-1" })
      assert.equal("assume-role-with-web-identity", r.provider)
      assert.matches("^ASIATIDE", c.access_key_id)
      local st = srv:stats()
      assert.same({ Action = "AssumeRoleWithWebIdentity", Version = "2011-06-15", RoleArn = "arn:aws:iam::1:role/irsa",
                    RoleSessionName = "pod-1" }, st.sts[1].params)
      assert.is_false(st.sts[1].signed)
      write(".aws/config", "[default]\nweb_identity_token_file = " .. home .. "/token\nrole_arn = arn:aws:iam::1:role/p\n")
      c, r = resolve({})
      assert.equal("assume-role-with-web-identity", r.provider)
      write("token", "another-token")
      local _, err = resolve({})
      assert.equal("InvalidIdentityToken", err.type)
      _, err = resolve({ AWS_WEB_IDENTITY_TOKEN_FILE = home .. "/token" })
      -- the config's role_arn serves; without any role ARN it is an error
      os.remove(home .. "/.aws/config")
      _, err = resolve({ AWS_WEB_IDENTITY_TOKEN_FILE = home .. "/token" })
      assert.matches("no role ARN", err.message)
      -- the environment's keys come first
      c, r = resolve({ AWS_WEB_IDENTITY_TOKEN_FILE = home .. "/token", AWS_ROLE_ARN = "arn:aws:iam::1:role/irsa",
                       AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "s" })
      assert.equal("env", r.provider)
    end)
  end)

  describe("IAM Identity Center (SSO)", function()
    local SSO_TOKEN = "ssoACCESStokenSECRET-0123456789"
    local function cache(key, expires)
      write(".aws/sso/cache/" .. core.sha1_hex(key) .. ".json", cjson.encode{
        startUrl = "https://corp.awsapps.com/start", region = "eu-west-1", accessToken = SSO_TOKEN, expiresAt = expires })
    end

    it("reads the token cache of `aws sso login` and calls GetRoleCredentials", function()
      srv:config{ sso_token = SSO_TOKEN }
      write(".aws/config", "[profile dev]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = Dev\n"
        .. "[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n"
        .. "[profile legacy]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n"
        .. "sso_account_id = 111122223333\nsso_role_name = Dev\n"
        .. "[profile half]\nsso_session = corp\n")
      cache("corp", "2099-01-01T00:00:00Z")
      local c, r = resolve({ AWS_PROFILE = "dev" })
      assert.equal("sso", r.provider)
      assert.equal("111122223333", c.account_id)
      assert.matches("^ASIATIDE", c.access_key_id)
      local _, err = resolve({ AWS_PROFILE = "legacy" })
      assert.matches("no SSO token cached.*aws sso login %-%-profile legacy", err.message)
      cache("https://corp.awsapps.com/start", "2099-01-01T00:00:00Z")
      c, r = resolve({ AWS_PROFILE = "legacy" })
      assert.equal("sso", r.provider)
      cache("corp", "2020-01-01T00:00:00Z")
      _, err = resolve({ AWS_PROFILE = "dev" })
      assert.matches("expired at 2020%-01%-01T00:00:00Z: run `aws sso login %-%-profile dev`", err.message)
      _, err = resolve({ AWS_PROFILE = "half" })
      assert.matches("is missing sso_account_id, sso_role_name", err.message)
      srv:config{ sso_token = "another" }
      cache("corp", "2099-01-01T00:00:00Z")
      _, err = resolve({ AWS_PROFILE = "dev" })
      assert.matches("was refused %(HTTP 401%)", err.message)
      assert.not_matches(SSO_TOKEN, tostring(err), 1, true)
    end)
  end)

  describe("container credentials", function()
    it("fetch FULL_URI with the authorization token (or its file); only loopback or link-local over HTTP", function()
      local env = { AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/v2/credentials",
                    AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" }
      local c, r = resolve(env)
      assert.equal("container-role", r.provider)
      assert.matches("^ASIATIDE", c.access_key_id)
      write("token", "container-auth-token-SECRET\n")
      c, r = resolve({ AWS_CONTAINER_CREDENTIALS_FULL_URI = env.AWS_CONTAINER_CREDENTIALS_FULL_URI,
                       AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = home .. "/token",
                       AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong" })
      assert.equal("container-role", r.provider)
      local _, err = resolve({ AWS_CONTAINER_CREDENTIALS_FULL_URI = env.AWS_CONTAINER_CREDENTIALS_FULL_URI,
                               AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong" })
      assert.matches("answered HTTP 401", err.message)
      assert.equal(1, srv:stats().requests["container:refused"])
      for _, url in ipairs{ "http://10.0.0.1/creds", "http://169.254.169.254/creds", "http://example.com/x" } do
        _, err = resolve({ AWS_CONTAINER_CREDENTIALS_FULL_URI = url })
        assert.matches("over plain HTTP", err.message, 1, false)
      end
      for _, url in ipairs{ "http://127.0.0.1:1/x", "http://localhost/x", "http://169.254.170.2/x",
                            "http://169.254.170.23/x", "http://[fd00:ec2::23]/x", "https://example.com/x" } do
        assert.is_true(credentials.providers.container_allowed(url), url)
      end
      -- file and environment keys come first
      write(".aws/credentials", "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n")
      c, r = resolve(env)
      assert.equal("shared-credentials-file", r.provider)
    end)
  end)

  describe("EC2 instance metadata", function()
    it("uses IMDSv2 only (the token first), and is passed over when disabled or absent", function()
      local c, r = resolve({ AWS_EC2_METADATA_SERVICE_ENDPOINT = srv.url })
      assert.equal("iam-role", r.provider)
      assert.matches("^ASIATIDE", c.access_key_id)
      local st = srv:stats()
      assert.equal(1, st.requests["imds:token"])
      assert.is_nil(st.requests["imds:refused"])
      -- the server refuses a request without a token, as IMDSv2-only hosts do
      local resp = sched.run(function()
        return sched.request{ method = "GET", url = srv.url .. "/latest/meta-data/iam/security-credentials/" }
      end)
      assert.equal(401, resp.status)
      local _, err = resolve({ AWS_EC2_METADATA_SERVICE_ENDPOINT = srv.url, AWS_EC2_METADATA_DISABLED = "true" })
      assert.matches("iam%-role %(AWS_EC2_METADATA_DISABLED=true%)", err.message)
      -- nothing listening: passed over after AWS_METADATA_SERVICE_NUM_ATTEMPTS tries
      _, err = resolve({ AWS_EC2_METADATA_SERVICE_ENDPOINT = "http://127.0.0.1:1", AWS_METADATA_SERVICE_TIMEOUT = "1",
                         AWS_METADATA_SERVICE_NUM_ATTEMPTS = "2" })
      assert.matches("no AWS credentials found", err.message)
      assert.matches("iam%-role %(instance metadata unreachable", err.message)
      -- the container comes before IMDS
      c, r = resolve({ AWS_EC2_METADATA_SERVICE_ENDPOINT = srv.url,
                       AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/x",
                       AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" })
      assert.equal("container-role", r.provider)
    end)
  end)

  describe("region and STS endpoints", function()
    it("resolves the region from AWS_REGION, AWS_DEFAULT_REGION, the profile, then IMDS", function()
      write(".aws/config", "[default]\nregion = ap-south-1\n")
      local function region(env, imds)
        env.HOME = home
        return sched.run(function()
          return credentials.region{ getenv = function(n) return env[n] end, imds = imds }
        end)
      end
      assert.same({ "us-west-2", "AWS_REGION" }, { region({ AWS_REGION = "us-west-2", AWS_DEFAULT_REGION = "eu-west-1" }) })
      assert.same({ "eu-west-1", "AWS_DEFAULT_REGION" }, { region({ AWS_DEFAULT_REGION = "eu-west-1" }) })
      local r, source = region({})
      assert.equal("ap-south-1", r)
      assert.matches("profile 'default'", source)
      os.remove(home .. "/.aws/config")
      assert.same({ "eu-west-3", "instance metadata" }, { region({ AWS_EC2_METADATA_SERVICE_ENDPOINT = srv.url }, true) })
      local none, err = region({ AWS_EC2_METADATA_DISABLED = "true" }, true)
      assert.is_nil(none)
      assert.matches("not set", err.message)
    end)

    it("sends STS calls to AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, else the regional endpoint", function()
      local function endpoint(env, region)
        env.HOME = home
        local src = credentials.new{ getenv = function(n) return env[n] end, region = region }
        return credentials.sts_endpoint(src)
      end
      assert.equal("http://127.0.0.1:9/sts", endpoint({ AWS_ENDPOINT_URL_STS = "http://127.0.0.1:9/sts/",
                                                        AWS_ENDPOINT_URL = "http://127.0.0.1:8" }, "eu-west-1"))
      assert.equal("http://127.0.0.1:8", endpoint({ AWS_ENDPOINT_URL = "http://127.0.0.1:8" }, "eu-west-1"))
      assert.equal("https://sts.eu-west-1.amazonaws.com", endpoint({}, "eu-west-1"))
      assert.equal("https://sts.cn-north-1.amazonaws.com.cn", endpoint({}, "cn-north-1"))
      assert.equal("https://sts.ap-south-1.amazonaws.com", endpoint({ AWS_REGION = "ap-south-1" }))
      assert.equal("https://sts.amazonaws.com", endpoint({}))
    end)

    it("answers GetCallerIdentity for the resolved credentials, signed", function()
      local id, where = with({ AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/x",
                               AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" }, function(src)
        return credentials.caller_identity(src)
      end)
      assert.equal("123456789012", id.Account)
      assert.equal(srv.url, where)
      assert.matches("assumed%-role/tide/ASIATIDE", id.Arn)
    end)
  end)

  describe("freshness", function()
    it("refreshes in the background before expiry: get() never waits, and keys rotate", function()
      srv:config{ lifetime = 3 }
      local env = { AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/x",
                    AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" }
      local keys, waited, errors = {}, 0, 0
      with(env, function(src)
        local first = assert(src:get())
        keys[first.access_key_id] = true
        -- a thread that ticks whenever the others yield: get() must never
        -- yield (a refresh runs in a thread of its own)
        local ticks, running = 0, true
        local ticker = sched.spawn(function()
          while running do ticks = ticks + 1; sched.sleep(0) end
        end)
        local deadline = sched.now() + 7
        while sched.now() < deadline do
          local before = ticks
          local c = src:get()
          if ticks ~= before then waited = waited + 1 end
          if c then keys[c.access_key_id] = true else errors = errors + 1 end
          assert.is_true(c.expiration > require("tide.clock").wall_s())
          sched.sleep(0.05)
        end
        running = false
        sched.wait(ticker)
      end)
      local n = 0
      for _ in pairs(keys) do n = n + 1 end
      assert.is_true(n >= 3, "keys used: " .. n)
      assert.equal(0, errors)
      assert.equal(0, waited)
    end)

    it("retries a failed refresh with backoff, keeping the current credentials meanwhile", function()
      srv:config{ lifetime = 4 }
      local env = { AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/x",
                    AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" }
      local lines = {}
      local log = function(level, message, fields) lines[#lines + 1] = { level, message, fields } end
      local first, last
      with(env, function(src)
        first = assert(src:get())
        srv:config{ fail_next = { container = 6 } } -- 2 refreshes of 3 attempts each
        local deadline = sched.now() + 5
        while sched.now() < deadline do
          last = assert(src:get())
          sched.sleep(0.05)
        end
      end, { log = log })
      local warns = 0
      for _, l in ipairs(lines) do if l[1] == "warn" then warns = warns + 1 end end
      assert.is_true(warns >= 1, cjson.encode(lines))
      assert.not_equal(first.access_key_id, last.access_key_id)
    end)

    it("retries a request refused with ExpiredTokenException once, with fresh credentials", function()
      local ddb = helpers.dynamodb_endpoint()
      srv:config{ lifetime = 1, upstream = ddb }
      local env = { AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/container/x",
                    AWS_CONTAINER_AUTHORIZATION_TOKEN = "container-auth-token-SECRET" }
      local res, err = with(env, function(src)
        local client = assert(require("tide.dynamodb").new{ endpoint = srv.url, region = "us-east-1",
                                                            credential_source = src, max_attempts = 1 })
        assert(src:get())
        -- tide believes them good for an hour; the service knows better
        src.creds.expiration = require("tide.clock").wall_s() + 3600
        sched.sleep(1.5)
        return client:list_tables{ Limit = 1 }
      end)
      assert.is_nil(err)
      assert.truthy(res.TableNames)
      local st = srv:stats()
      assert.equal(1, st.refused)
      assert.equal(2, #st.issued)
    end)
  end)
end)
