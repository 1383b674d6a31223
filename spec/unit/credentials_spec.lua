-- tide.credentials, the parts that need no server: explicit options, the
-- environment, the shared credentials file and the config file, and the
-- region lookup (the network providers: spec/integration/credentials_chain_spec.lua).
-- These run in a child luajit started through `env`, with every AWS_*
-- variable unset first and HOME pointing at a temporary directory, so that
-- the chain reads the real process environment (os.getenv). The child
-- inherits the rest of the environment (LD_PRELOAD, ASAN_OPTIONS under the
-- sanitizer run).
local helpers = require "helpers"
local credentials = require "tide.credentials"

local q = helpers.shell_quote
local AWS_VARS = {
  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
  "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SHARED_CREDENTIALS_FILE",
  "AWS_CONFIG_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
  "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CREDENTIAL_EXPIRATION",
}

-- Runs the chain ("credentials") or the region lookup ("region") in a child
-- with the given environment; returns the result and the error message.
-- Credentials come back as {access_key_id=, secret_access_key=,
-- session_token=, source=} with source the provider's name.
local function child(home, env, fn_name, opts)
  env.AWS_EC2_METADATA_DISABLED = env.AWS_EC2_METADATA_DISABLED or "true"
  return helpers.child_lua{ home = home, unset = AWS_VARS, env = env, arg = { fn = fn_name, opts = opts or {} }, code = [[
    local credentials = require "tide.credentials"
    local o = arg.opts
    if arg.fn == "region" then
      local r, err = credentials.region{ region = o.region, profile = o.profile }
      return r, err and err.message
    end
    local explicit
    if o.access_key_id or o.secret_access_key then
      explicit = { access_key_id = o.access_key_id, secret_access_key = o.secret_access_key,
                   session_token = o.session_token }
    end
    local c, r = credentials.new{ credentials = explicit, profile = o.profile }:resolve()
    if not c then return nil, r.message end
    return { access_key_id = c.access_key_id, secret_access_key = c.secret_access_key,
             session_token = c.session_token, source = r.provider }
  ]] }
end

local SECRET_FILE = "fileSECRETabcdefghijklmnopqrstuvwxyz0123"
local SECRET_CONF = "confSECRETabcdefghijklmnopqrstuvwxyz0123"

describe("tide.credentials without a network", function()
  local home

  before_each(function()
    home = helpers.tmpdir()
    helpers.run("mkdir -p " .. q(home .. "/.aws"))
  end)

  after_each(function()
    helpers.run("rm -rf " .. q(home))
  end)

  local function write(name, text)
    helpers.write_file(home .. "/" .. name, text)
  end

  local function standard_files()
    write(".aws/credentials", table.concat({
      "# shared credentials",
      "[default]",
      "aws_access_key_id = AKIDFILEDEFAULT",
      "aws_secret_access_key = " .. SECRET_FILE,
      "",
      "  ; indented comment",
      "[work]",
      "aws_access_key_id=AKIDFILEWORK",
      "aws_secret_access_key=" .. SECRET_FILE,
      "aws_session_token =   TOKENWORK  ",
      "",
    }, "\n"))
    write(".aws/config", table.concat({
      "[default]",
      "region = eu-west-3",
      "[profile work]",
      "region = ap-south-1",
      "s3 =",
      "    max_concurrent_requests = 20",
      "[profile confonly]",
      "aws_access_key_id = AKIDCONFONLY",
      "aws_secret_access_key = " .. SECRET_CONF,
      "region = us-west-1",
      "[confonly]",
      "aws_access_key_id = AKIDWRONGSECTION",
      "aws_secret_access_key = wrong",
    }, "\n"))
  end

  it("takes explicit options first", function()
    standard_files()
    local c = child(home, { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "envsecret" },
                    "credentials", { access_key_id = "AKIDOPT", secret_access_key = "optsecret",
                                     session_token = "opttoken" })
    assert.are.same({ access_key_id = "AKIDOPT", secret_access_key = "optsecret",
                      session_token = "opttoken", source = "explicit" }, c)
  end)

  it("refuses half-given explicit options, naming the missing field only", function()
    local c, err = child(home, {}, "credentials", { access_key_id = "AKIDOPT" })
    assert.is_nil(c)
    assert.matches("access_key_id given without secret_access_key", err, 1, true)
    c, err = child(home, {}, "credentials", { secret_access_key = "optsecret" })
    assert.is_nil(c)
    assert.matches("secret_access_key given without access_key_id", err, 1, true)
    assert.is_falsy(err:find("optsecret", 1, true))
  end)

  it("takes the environment before the files", function()
    standard_files()
    local c = child(home, { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "envsecret",
                            AWS_SESSION_TOKEN = "envtoken", AWS_PROFILE = "work" }, "credentials")
    assert.are.same({ access_key_id = "AKIDENV", secret_access_key = "envsecret",
                      session_token = "envtoken", source = "env" }, c)
  end)

  it("reads empty environment variables as unset; a key id without its secret is an error (as botocore)", function()
    standard_files()
    local c = child(home, { AWS_ACCESS_KEY_ID = "", AWS_SECRET_ACCESS_KEY = "" }, "credentials")
    assert.are.equal("shared-credentials-file", c.source)
    local err
    c, err = child(home, { AWS_ACCESS_KEY_ID = "AKIDENV" }, "credentials")
    assert.is_nil(c)
    assert.matches("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY", err, 1, true)
    -- a secret alone is no key: the chain goes on
    c = child(home, { AWS_SECRET_ACCESS_KEY = "envsecret" }, "credentials")
    assert.are.equal("AKIDFILEDEFAULT", c.access_key_id)
  end)

  it("reads the default profile of ~/.aws/credentials", function()
    standard_files()
    local c = child(home, {}, "credentials")
    assert.are.same({ access_key_id = "AKIDFILEDEFAULT", secret_access_key = SECRET_FILE,
                      source = "shared-credentials-file" }, c)
  end)

  it("selects the profile with AWS_PROFILE, and opts.profile over it", function()
    standard_files()
    local c = child(home, { AWS_PROFILE = "work" }, "credentials")
    assert.are.same({ access_key_id = "AKIDFILEWORK", secret_access_key = SECRET_FILE,
                      session_token = "TOKENWORK", source = "shared-credentials-file" }, c)
    c = child(home, { AWS_PROFILE = "work" }, "credentials", { profile = "default" })
    assert.are.equal("AKIDFILEDEFAULT", c.access_key_id)
  end)

  it("falls back to [profile NAME] of the config file", function()
    standard_files()
    local c = child(home, { AWS_PROFILE = "confonly" }, "credentials")
    assert.are.same({ access_key_id = "AKIDCONFONLY", secret_access_key = SECRET_CONF,
                      source = "config-file" }, c)
  end)

  it("reads [default] of the config file", function()
    write(".aws/config", "[default]\naws_access_key_id = AKIDCONFDEFAULT\naws_secret_access_key = s\n")
    local c = child(home, {}, "credentials")
    assert.are.same({ access_key_id = "AKIDCONFDEFAULT", secret_access_key = "s", source = "config-file" }, c)
  end)

  it("follows AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE", function()
    standard_files()
    write("creds.ini", "[default]\naws_access_key_id = AKIDELSEWHERE\naws_secret_access_key = s\n")
    local c = child(home, { AWS_SHARED_CREDENTIALS_FILE = home .. "/creds.ini" }, "credentials")
    assert.are.equal("AKIDELSEWHERE", c.access_key_id)
    write("conf.ini", "[profile p]\naws_access_key_id = AKIDCONFELSEWHERE\naws_secret_access_key = s\n")
    c = child(home, { AWS_CONFIG_FILE = home .. "/conf.ini", AWS_PROFILE = "p" }, "credentials")
    assert.are.equal("AKIDCONFELSEWHERE", c.access_key_id)
  end)

  it("reports a malformed line by file and line number, without its content", function()
    write(".aws/credentials", "[default]\naws_access_key_id = AKID\n" .. SECRET_FILE .. "\n")
    local c, err = child(home, {}, "credentials")
    assert.is_nil(c)
    assert.matches(home .. "/.aws/credentials line 3 is malformed", err, 1, true)
    assert.is_falsy(err:find(SECRET_FILE, 1, true))
    write(".aws/credentials", "[default\n")
    c, err = child(home, {}, "credentials")
    assert.matches("line 1 is malformed", err, 1, true)
  end)

  it("lists the sources tried when there are no credentials, and names a missing profile", function()
    local c, err = child(home, {}, "credentials")
    assert.is_nil(c)
    assert.matches("no AWS credentials found for profile 'default'", err, 1, true)
    assert.matches("env (AWS_ACCESS_KEY_ID unset)", err, 1, true)
    assert.matches("shared-credentials-file (no profile 'default' in " .. home .. "/.aws/credentials)", err, 1, true)
    assert.matches("container-role (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI unset)", err, 1, true)
    assert.matches("iam-role (AWS_EC2_METADATA_DISABLED=true)", err, 1, true)
    standard_files()
    c, err = child(home, { AWS_PROFILE = "nope" }, "credentials")
    assert.matches("profile 'nope' not found in " .. home .. "/.aws/config or " .. home .. "/.aws/credentials", err, 1, true)
    assert.is_falsy(err:find(SECRET_FILE, 1, true))
  end)

  it("raises on wrong argument types", function()
    local ok, err = pcall(credentials.new, "default")
    assert.is_false(ok)
    assert.matches("credentials.new: opts must be a table", err, 1, true)
  end)

  it("returns explicit options in process", function()
    local c, r = credentials.new{ credentials = { access_key_id = "A", secret_access_key = "B" } }:resolve()
    assert.are.same({ "A", "B", "explicit" }, { c.access_key_id, c.secret_access_key, r.provider })
  end)
end)

describe("tide.credentials.region", function()
  local home

  before_each(function()
    home = helpers.tmpdir()
    helpers.run("mkdir -p " .. q(home .. "/.aws"))
    helpers.write_file(home .. "/.aws/config",
      "[default]\nregion = eu-west-3\n[profile work]\n# comment\nregion=ap-south-1\n")
  end)

  after_each(function()
    helpers.run("rm -rf " .. q(home))
  end)

  it("takes opts.region, AWS_REGION, AWS_DEFAULT_REGION, then the profile, in that order", function()
    local all = { AWS_REGION = "us-east-2", AWS_DEFAULT_REGION = "us-west-2", AWS_PROFILE = "work" }
    assert.are.equal("sa-east-1", (child(home, all, "region", { region = "sa-east-1" })))
    assert.are.equal("us-east-2", (child(home, all, "region")))
    all.AWS_REGION = nil
    assert.are.equal("us-west-2", (child(home, all, "region")))
    all.AWS_DEFAULT_REGION = nil
    assert.are.equal("ap-south-1", (child(home, all, "region")))
    assert.are.equal("eu-west-3", (child(home, {}, "region")))
  end)

  it("returns nil and the places tried", function()
    local r, err = child(home, { AWS_PROFILE = "nope" }, "region")
    assert.is_nil(r)
    assert.matches("not set: set AWS_REGION, AWS_DEFAULT_REGION or the profile's region", err, 1, true)
  end)
end)
