-- core.credentials and core.region: the AWS credentials chain (explicit
-- options, environment, shared credentials file, config file) and the
-- region lookup. LuaJIT cannot setenv, so every case that depends on the
-- environment runs in a child luajit started through `env`, with every
-- AWS_* variable unset first and HOME pointing at a temporary directory.
-- The child inherits the rest of the environment (LD_PRELOAD, ASAN_OPTIONS
-- under the sanitizer run).
local helpers = require "helpers"
local core = require "tide.core"

local q = helpers.shell_quote
local AWS_VARS = {
  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
  "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SHARED_CREDENTIALS_FILE",
  "AWS_CONFIG_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
}

-- Runs `fn_name(opts)` of tide.core in a child with the given environment;
-- returns the result and the error.
local function child(home, env, fn_name, opts)
  return helpers.child_lua{ home = home, unset = AWS_VARS, env = env, arg = opts, code = ([[
    if next(arg) == nil then arg = nil end
    return require("tide.core").%s(arg)
  ]]):format(fn_name) }
end

local SECRET_FILE = "fileSECRETabcdefghijklmnopqrstuvwxyz0123"
local SECRET_CONF = "confSECRETabcdefghijklmnopqrstuvwxyz0123"

describe("core.credentials", function()
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
                      session_token = "envtoken", source = "environment" }, c)
  end)

  it("reads empty environment variables as unset, and skips a half-set environment", function()
    standard_files()
    local c = child(home, { AWS_ACCESS_KEY_ID = "", AWS_SECRET_ACCESS_KEY = "" }, "credentials")
    assert.are.equal("credentials-file", c.source)
    c = child(home, { AWS_ACCESS_KEY_ID = "AKIDENV" }, "credentials")
    assert.are.equal("AKIDFILEDEFAULT", c.access_key_id)
  end)

  it("reads the default profile of ~/.aws/credentials", function()
    standard_files()
    local c = child(home, {}, "credentials")
    assert.are.same({ access_key_id = "AKIDFILEDEFAULT", secret_access_key = SECRET_FILE,
                      source = "credentials-file" }, c)
  end)

  it("selects the profile with AWS_PROFILE, and opts.profile over it", function()
    standard_files()
    local c = child(home, { AWS_PROFILE = "work" }, "credentials")
    assert.are.same({ access_key_id = "AKIDFILEWORK", secret_access_key = SECRET_FILE,
                      session_token = "TOKENWORK", source = "credentials-file" }, c)
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

  it("lists the sources tried when there are no credentials", function()
    local c, err = child(home, { AWS_PROFILE = "nope" }, "credentials")
    assert.is_nil(c)
    assert.matches("none found for profile 'nope'", err, 1, true)
    assert.matches("environment", err, 1, true)
    assert.matches(home .. "/.aws/credentials (no such file)", err, 1, true)
    assert.matches(home .. "/.aws/config (no such file)", err, 1, true)
    assert.matches("not supported yet: container credentials, IMDSv2, web identity, SSO, credential_process", err, 1, true)
    standard_files()
    c, err = child(home, { AWS_PROFILE = "nope" }, "credentials")
    assert.matches("(no profile 'nope')", err, 1, true)
    assert.is_falsy(err:find(SECRET_FILE, 1, true))
  end)

  it("raises on wrong argument types", function()
    local ok, err = pcall(core.credentials, "default")
    assert.is_false(ok)
    assert.matches("credentials: opts must be a table or nil", err, 1, true)
    ok, err = pcall(core.credentials, { profile = 1 })
    assert.is_false(ok)
    assert.matches("credentials: opts.profile must be a string or nil", err, 1, true)
  end)

  it("returns explicit options in process", function()
    local c = core.credentials({ access_key_id = "A", secret_access_key = "B" })
    assert.are.same({ access_key_id = "A", secret_access_key = "B", source = "explicit" }, c)
  end)
end)

describe("core.region", function()
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
    assert.matches("region: not set; tried opts.region, AWS_REGION, AWS_DEFAULT_REGION", err, 1, true)
    assert.matches("profile 'nope' of " .. home .. "/.aws/config (no such profile)", err, 1, true)
  end)
end)
