-- tide.config (tide.yaml: lookup, defaults, validation) and what tide.open
-- takes from it. The YAML decoder under it is spec/unit/yaml_spec.lua.
-- LuaJIT cannot setenv, so the cases that depend on the environment
-- (TIDE_CONFIG, AWS_*) or on the working directory run in a child luajit
-- started through `env`, which keeps LD_PRELOAD and ASAN_OPTIONS under the
-- sanitizer run.
local helpers = require "helpers"
local config = require "tide.config"

local q = helpers.shell_quote
local FIXTURES = helpers.root .. "/spec/fixtures/config/"
local MiB = 1024 * 1024

-- Keys and defaults, as docs/configuration.md lists them.
local DEFAULTS = {
  source = "defaults",
  store = "sqlite",
  sqlite = { path = "./tide.db", busy_timeout_ms = 10000, synchronous = "normal" },
  dynamodb = { table_prefix = "tide_", max_attempts = 8, max_connections = 512, gather_us = 1000,
               timeout_ms = 30000, verify_tls = true },
  streams = { lease_ms = 10000, poll_ms = 200, max_poll_ms = 1000, describe_ms = 30000, batch_limit = 1000 },
  aggregates = "./aggregates",
  projections = "./projections",
  cache = { max_bytes = 64 * MiB },
  commands = { max_attempts = 20, batching = true, max_line_bytes = 1 * MiB },
  snapshots = { every = 100 },
  log = { level = "info", format = "text" },
  metrics = {},
  kafka = { sasl = {}, ssl = {}, wait_ms = 30000 },
  lua = { gc_pause = 400, jit_hotloop = 1000, jit_hotexit = 100, handler_budget_ms = 1000, sandbox_aggregates = true,
          sandbox_projections = true },
}

-- assert_fields(cfg, {["sqlite.path"] = want, ...}): each dotted key path of
-- cfg holds its value.
local function assert_fields(cfg, want, context)
  local paths = {}
  for path in pairs(want) do paths[#paths + 1] = path end
  table.sort(paths)
  for _, path in ipairs(paths) do
    local v = cfg
    for k in path:gmatch("[^.]+") do v = v[k] end
    assert.same(want[path], v, (context and context .. ": " or "") .. path)
  end
end

-- {"log.level", "debug"} -> {log = {level = "debug"}}, over base when given.
local function nested(path, value, base)
  local t = base or {}
  local at, last = t, nil
  for k in path:gmatch("[^.]+") do
    if last then
      at[last] = at[last] or {}
      at = at[last]
    end
    last = k
  end
  at[last] = value
  return t
end

-- Runs config.load(opts) in a child luajit: in dir, with env (a table;
-- every AWS_* and TIDE_CONFIG unset first, HOME a temporary directory).
-- Returns the cfg or nil, and the error message.
local AWS_VARS = { "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                   "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_CONFIG_FILE",
                   "AWS_SHARED_CREDENTIALS_FILE", "TIDE_CONFIG" }
local function child_load(dir, env, opts)
  return helpers.child_lua{ dir = dir, home = dir, unset = AWS_VARS, env = env, arg = opts, code = [[
    local cfg, err = require("tide.config").load(arg)
    return cfg, err and tostring(err)
  ]] }
end

describe("tide.config", function()
  local dir

  before_each(function()
    dir = helpers.tmpdir()
  end)

  after_each(function()
    helpers.run("rm -rf " .. q(dir))
  end)

  local function write(name, text)
    helpers.write_file(dir .. "/" .. name, text)
    return dir .. "/" .. name
  end

  -- config.load of a YAML text written to DIR/tide.yaml.
  local function load_text(text)
    return config.load{ file = write("tide.yaml", text) }
  end

  local function load_error(text)
    local cfg, err = load_text(text)
    assert.is_nil(cfg)
    assert.is_true(config.is_error(err))
    return tostring(err), err
  end

  describe("defaults", function()
    it("fills in every key with no file", function()
      local cfg = assert(config.from_table({}, "defaults"))
      assert.same(DEFAULTS, cfg)
    end)

    it("uses the defaults when there is no config file at all", function()
      local cfg, err = child_load(dir)
      assert.is_nil(err)
      assert.same(DEFAULTS, cfg)
    end)

    it("leaves the AWS settings unset, for the DynamoDB client to resolve", function()
      local cfg = assert(config.from_table({}))
      for _, k in ipairs{ "region", "endpoint", "profile", "ca_bundle" } do
        assert.is_nil(cfg.dynamodb[k], k)
      end
    end)

    it("treats an empty file or a file of comments as all defaults", function()
      local cfg = assert(config.load{ file = FIXTURES .. "empty.yaml" })
      assert.equal(FIXTURES .. "empty.yaml", cfg.source)
      assert.equal(10000, cfg.sqlite.busy_timeout_ms)
      cfg = assert(load_text(""))
      assert.equal("sqlite", cfg.store)
    end)

    it("treats null values and null sections as absent", function()
      local cfg = assert(load_text("store: ~\nsqlite:\ndynamodb:\n  table_prefix: null\nlog: {level: }\n"))
      assert.equal("sqlite", cfg.store)
      assert.equal("tide_", cfg.dynamodb.table_prefix)
      assert.equal("info", cfg.log.level)
    end)
  end)

  describe("keys", function()
    it("reads every key (full.yaml)", function()
      local path = FIXTURES .. "full.yaml"
      local cfg = assert(config.load{ file = path })
      assert.same({
        source = path,
        store = "dynamodb",
        sqlite = { path = "/var/lib/tide/tide.db", busy_timeout_ms = 0, synchronous = "full" },
        dynamodb = {
          region = "eu-west-3", endpoint = "https://dynamodb.eu-west-3.amazonaws.com",
          table_prefix = "prod-tide.", max_attempts = 3, max_connections = 1024, gather_us = 250, timeout_ms = 1500,
          ca_bundle = FIXTURES .. "certs/ca.pem", verify_tls = false, profile = "tide-prod",
        },
        streams = { lease_ms = 20000, poll_ms = 100, max_poll_ms = 800, describe_ms = 60000, batch_limit = 500 },
        aggregates = "/srv/tide/aggregates",
        projections = "/srv/tide/projections",
        cache = { max_bytes = 1048576 },
        commands = { max_attempts = 1, batching = false, max_line_bytes = 1 * MiB },
        snapshots = { every = 0 },
        log = { level = "warn", format = "json" },
        metrics = { listen = "127.0.0.1:9464" },
        kafka = { brokers = "b-1.kafka:9096,b-2.kafka:9096", client_id = "tide-prod",
                  sasl = { mechanism = "SCRAM-SHA-512", username = "tide",
                           password = "file:" .. FIXTURES .. "secrets/kafka-password" },
                  ssl = { enabled = true, ca = FIXTURES .. "certs/ca.pem" },
                  properties = { ["linger.ms"] = "10", ["compression.type"] = "zstd" }, wait_ms = 5000 },
        lua = { gc_pause = 250, jit_hotloop = 500, jit_hotexit = 50, handler_budget_ms = 1000, sandbox_aggregates = true,
                sandbox_projections = true },
      }, cfg)
    end)

    for _, example in ipairs{
      { "loads the embedded-store example of docs/configuration.md", "sqlite.yaml", {
        store = "sqlite",
        sqlite = { path = FIXTURES .. "data/tide.db", busy_timeout_ms = 5000, synchronous = "full" },
        aggregates = FIXTURES .. "aggregates",
        ["cache.max_bytes"] = 128 * MiB,
        ["commands.max_attempts"] = 5,
        ["snapshots.every"] = 50,
        log = { level = "debug", format = "text" },
      } },
      { "loads the DynamoDB Local example of docs/configuration.md", "dynamodb-local.yaml", {
        store = "dynamodb",
        ["dynamodb.endpoint"] = "http://127.0.0.1:8000",
        ["dynamodb.region"] = "us-east-1",
        ["dynamodb.table_prefix"] = "dev_",
        aggregates = FIXTURES .. "../aggregates",
        ["log.format"] = "json",
      } },
    } do
      it(example[1], function()
        assert_fields(assert(config.load{ file = FIXTURES .. example[2] }), example[3])
      end)
    end

    it("accepts each enum value", function()
      for _, enum in ipairs{
        { "store", { "sqlite", "dynamodb" }, function() return { dynamodb = { region = "x" } } end },
        { "sqlite.synchronous", { "normal", "full" } },
        { "log.level", { "debug", "info", "warn", "error" } },
        { "log.format", { "text", "json" } },
      } do
        for _, value in ipairs(enum[2]) do
          local cfg = assert(config.from_table(nested(enum[1], value, enum[3] and enum[3]())))
          assert_fields(cfg, { [enum[1]] = value })
        end
      end
    end)

    it("accepts cache.max_bytes as bytes or as a size with a unit (powers of 1024)", function()
      local cases = {
        { 1000, 1000 }, { 0, 0 }, { "64MB", 64 * MiB }, { "64 MiB", 64 * MiB }, { "64m", 64 * MiB },
        { "512KB", 512 * 1024 }, { "512k", 512 * 1024 }, { "1GB", 1024 * MiB }, { "2gib", 2048 * MiB },
        { "1.5MB", 1.5 * MiB }, { "100", 100 }, { "100B", 100 },
      }
      for _, c in ipairs(cases) do
        assert.equal(c[2], assert(config.from_table{ cache = { max_bytes = c[1] } }).cache.max_bytes,
                     tostring(c[1]))
      end
      assert.equal(128 * MiB, assert(load_text("cache:\n  max_bytes: 128MB\n")).cache.max_bytes)
    end)

    it("returns a plain table", function()
      local cfg = assert(config.from_table{})
      assert.is_nil(getmetatable(cfg))
      assert.is_nil(getmetatable(cfg.sqlite))
    end)
  end)

  describe("relative paths", function()
    it("resolves them against the config file's directory, defaults included", function()
      helpers.run("mkdir -p " .. q(dir .. "/conf"))
      local path = write("conf/tide.yaml", "sqlite:\n  path: data/t.db\nprojections: ../proj\n"
                         .. "dynamodb:\n  ca_bundle: ./ca.pem\n")
      assert_fields(assert(config.load{ file = path }), {
        ["sqlite.path"] = dir .. "/conf/data/t.db",
        projections = dir .. "/conf/../proj",
        aggregates = dir .. "/conf/aggregates",
        ["dynamodb.ca_bundle"] = dir .. "/conf/ca.pem",
      })
    end)

    it("keeps absolute paths, :memory: and file: URIs", function()
      assert_fields(assert(load_text("sqlite:\n  path: ':memory:'\naggregates: /abs/agg\n")),
                    { ["sqlite.path"] = ":memory:", aggregates = "/abs/agg" })
      assert_fields(assert(load_text("sqlite:\n  path: file:tide.db?mode=ro\n")),
                    { ["sqlite.path"] = "file:tide.db?mode=ro" })
    end)

    it("resolves against a relative config path as given", function()
      helpers.run("mkdir -p " .. q(dir .. "/conf"))
      write("conf/tide.yaml", "sqlite:\n  path: ./t.db\n")
      local cfg, err = child_load(dir, nil, { file = "conf/tide.yaml" })
      assert.is_nil(err)
      assert_fields(cfg, { source = "conf/tide.yaml", ["sqlite.path"] = "conf/t.db", aggregates = "conf/aggregates" })
    end)

    it("keeps them relative to the working directory for ./tide.yaml and the defaults", function()
      write("tide.yaml", "sqlite:\n  path: data/t.db\n")
      assert_fields(child_load(dir), { source = "tide.yaml", ["sqlite.path"] = "data/t.db", aggregates = "./aggregates" })
    end)

    it("leaves them as given in from_table without opts.base, resolves them with it", function()
      assert.equal("x/t.db", assert(config.from_table{ sqlite = { path = "x/t.db" } }).sqlite.path)
      assert.equal("/etc/tide/t.db",
                   assert(config.from_table({ sqlite = { path = "t.db" } }, "t", { base = "/etc/tide" })).sqlite.path)
    end)
  end)

  describe("lookup order", function()
    before_each(function()
      helpers.run("mkdir -p " .. q(dir .. "/a") .. " " .. q(dir .. "/b"))
      write("tide.yaml", "log:\n  level: debug\n")
      write("a/env.yaml", "log:\n  level: warn\n")
      write("b/flag.yaml", "log:\n  level: error\n")
    end)

    -- {description, {env, opts, fields of the cfg loaded}...}
    for _, case in ipairs{
      { "takes --config (opts.file) first",
        { { TIDE_CONFIG = "a/env.yaml" }, { file = "b/flag.yaml" }, { source = "b/flag.yaml", ["log.level"] = "error" } } },
      { "then TIDE_CONFIG",
        { { TIDE_CONFIG = "a/env.yaml" }, nil,
          { source = "a/env.yaml", ["log.level"] = "warn", aggregates = "a/aggregates" } } },
      { "then ./tide.yaml",
        { nil, nil, { source = "tide.yaml", ["log.level"] = "debug" } },
        { { TIDE_CONFIG = "" }, nil, { source = "tide.yaml" } } }, -- an empty TIDE_CONFIG is unset
    } do
      it(case[1], function()
        for i = 2, #case do
          local env, opts, want = case[i][1], case[i][2], case[i][3]
          local cfg, err = child_load(dir, env, opts)
          assert.is_nil(err)
          assert_fields(cfg, want)
        end
      end)
    end

    it("then the defaults", function()
      local cfg, err = child_load(dir .. "/a")
      assert.is_nil(err)
      assert.same(DEFAULTS, cfg)
    end)

    it("reports a missing file named by --config or TIDE_CONFIG, never falls back", function()
      local cfg, err = child_load(dir, nil, { file = "nope.yaml" })
      assert.is_nil(cfg)
      assert.equal("nope.yaml: cannot read the configuration file (named by --config): No such file or directory", err)
      cfg, err = child_load(dir, { TIDE_CONFIG = dir .. "/gone.yaml" })
      assert.is_nil(cfg)
      assert.equal(dir .. "/gone.yaml: cannot read the configuration file (named by TIDE_CONFIG): "
                   .. "No such file or directory", err)
    end)

    it("reports a directory given as the config file", function()
      local cfg, err = config.load{ file = dir }
      assert.is_nil(cfg)
      assert.matches("^" .. dir:gsub("%p", "%%%0") .. ": cannot read the configuration file %(named by "
                     .. "%-%-config%): Is a directory", tostring(err))
    end)

    it("accepts opts.args_file as another name for opts.file", function()
      local cfg = assert(config.load{ args_file = FIXTURES .. "sqlite.yaml" })
      assert.equal(FIXTURES .. "sqlite.yaml", cfg.source)
    end)

    it("raises on wrong argument types", function()
      assert.has_error(function() config.load("tide.yaml") end)
      assert.has_error(function() config.load{ file = 5 } end)
      assert.has_error(function() config.load{ file = "" } end)
      assert.has_error(function() config.from_table("x") end)
      assert.has_error(function() config.from_table({}, 5) end)
    end)
  end)

  describe("validation", function()
    it("names file, line and key of a wrong type", function()
      local path = FIXTURES .. "bad_prefix.yaml"
      local cfg, err = config.load{ file = path }
      assert.is_nil(cfg)
      assert.equal(path .. ":4: dynamodb.table_prefix must be a string (got a number)", tostring(err))
      assert.equal("ConfigError", err.type)
      assert.equal(4, err.line)
      assert.equal("dynamodb.table_prefix", err.key)
      assert.equal(path, err.source)
      assert.equal("error: " .. tostring(err), "error: " .. err)
    end)

    -- Each {text, message}: tide.yaml holding text fails with
    -- DIR/tide.yaml:message.
    local function assert_load_errors(cases)
      for _, c in ipairs(cases) do
        assert.equal(dir .. "/tide.yaml:" .. c[2], (load_error(c[1])), c[1])
      end
    end

    it("reports every kind of wrong type with its line", function()
      assert_load_errors{
        { "store: 1\n", "1: store must be one of \"sqlite\", \"dynamodb\" (got a number)" },
        { "sqlite:\n  path: [a]\n", "2: sqlite.path must be a string (got a list)" },
        { "sqlite:\n  busy_timeout_ms: '10'\n", "2: sqlite.busy_timeout_ms must be an integer (got a string)" },
        { "\nsqlite:\n  synchronous: true\n", "3: sqlite.synchronous must be one of \"normal\", \"full\" (got a boolean)" },
        { "dynamodb:\n  region: 5\n", "2: dynamodb.region must be a string (got a number)" },
        { "dynamodb:\n  endpoint: {a: 1}\n", "2: dynamodb.endpoint must be a URL string (got a mapping)" },
        { "dynamodb:\n  max_attempts: x\n", "2: dynamodb.max_attempts must be an integer (got a string)" },
        { "dynamodb:\n  max_connections: true\n", "2: dynamodb.max_connections must be an integer (got a boolean)" },
        { "dynamodb:\n  timeout_ms: 1.5\n", "2: dynamodb.timeout_ms must be an integer (got 1.5)" },
        { "dynamodb:\n  ca_bundle: 1\n", "2: dynamodb.ca_bundle must be a string (got a number)" },
        { "dynamodb:\n  verify_tls: 'yes'\n", "2: dynamodb.verify_tls must be true or false (got a string)" },
        { "dynamodb:\n  verify_tls: yes\n", "2: dynamodb.verify_tls must be true or false (got a string)" },
        { "dynamodb:\n  profile: []\n", "2: dynamodb.profile must be a string (got a list)" },
        { "aggregates: 1\n", "1: aggregates must be a string (got a number)" },
        { "projections: {}\n", "1: projections must be a string (got a mapping)" },
        { "cache:\n  max_bytes: true\n", "2: cache.max_bytes must be a number of bytes or a size such as \"64MB\" (got a boolean)" },
        { "commands:\n  max_attempts: 2.5\n", "2: commands.max_attempts must be an integer (got 2.5)" },
        { "snapshots:\n  every: '100'\n", "2: snapshots.every must be an integer (got a string)" },
        { "log:\n  level: 3\n", "2: log.level must be one of \"debug\", \"info\", \"warn\", \"error\" (got a number)" },
        { "log:\n  format: [text]\n", "2: log.format must be one of \"text\", \"json\" (got a list)" },
        { "sqlite: ./tide.db\n", "1: sqlite must be a mapping (got a string)" },
        { "log:\n  - level: info\n", "1: log must be a mapping (got a list)" },
      }
    end)

    it("reports invalid values with their line", function()
      assert_load_errors{
        { "store: dynamo\n", "1: store must be one of \"sqlite\", \"dynamodb\" (got \"dynamo\"): did you mean \"dynamodb\"?" },
        { "store: postgres\n", "1: store must be one of \"sqlite\", \"dynamodb\" (got \"postgres\")" },
        { "sqlite:\n  synchronous: off\n", "2: sqlite.synchronous must be one of \"normal\", \"full\" (got \"off\")" },
        { "log:\n  level: warning\n", "2: log.level must be one of \"debug\", \"info\", \"warn\", \"error\" (got \"warning\"): did you mean \"warn\"?" },
        { "log:\n  format: yaml\n", "2: log.format must be one of \"text\", \"json\" (got \"yaml\")" },
        { "sqlite:\n  path: ''\n", "2: sqlite.path must not be empty" },
        { "sqlite:\n  busy_timeout_ms: -1\n", "2: sqlite.busy_timeout_ms must be at least 0 (got -1)" },
        { "dynamodb:\n  endpoint: localhost:8000\n", "2: dynamodb.endpoint must be an http:// or https:// URL (got \"localhost:8000\")" },
        { "dynamodb:\n  table_prefix: 'my app'\n", "2: dynamodb.table_prefix may hold only letters, digits, '_', '-' and '.' (DynamoDB table names) (got \"my app\")" },
        { "dynamodb:\n  max_attempts: 0\n", "2: dynamodb.max_attempts must be at least 1 (got 0)" },
        { "dynamodb:\n  max_connections: 0\n", "2: dynamodb.max_connections must be at least 1 (got 0)" },
        { "dynamodb:\n  gather_us: -1\n", "2: dynamodb.gather_us must be at least 0 (got -1)" },
        { "dynamodb:\n  timeout_ms: 0\n", "2: dynamodb.timeout_ms must be at least 1 (got 0)" },
        { "cache:\n  max_bytes: lots\n", "2: cache.max_bytes must be a number of bytes or a size such as \"64MB\" (got \"lots\")" },
        { "cache:\n  max_bytes: 64XB\n", "2: cache.max_bytes must be a number of bytes or a size such as \"64MB\" (got \"64XB\")" },
        { "cache:\n  max_bytes: -5\n", "2: cache.max_bytes must be a whole number of bytes, 0 or more (got -5)" },
        { "commands:\n  max_attempts: 0\n", "2: commands.max_attempts must be at least 1 (got 0)" },
        { "snapshots:\n  every: -1\n", "2: snapshots.every must be at least 0 (got -1)" },
        { "snapshots:\n  every: .inf\n", "2: snapshots.every must be an integer (got inf)" },
        { "lua:\n  gc_pause: 50\n", "2: lua.gc_pause must be at least 100 (got 50)" },
        { "lua:\n  gc_pause: 20000\n", "2: lua.gc_pause must be at most 10000 (got 20000)" },
        { "lua:\n  jit_hotloop: 0\n", "2: lua.jit_hotloop must be at least 1 (got 0)" },
        { "lua:\n  jit_hotexit: 255\n", "2: lua.jit_hotexit must be at most 200 (got 255)" },
      }
      assert.equal("", assert(config.from_table{ dynamodb = { table_prefix = "" } }).dynamodb.table_prefix)
    end)

    it("reports unknown keys with a suggestion", function()
      assert_load_errors{
        { "stor: sqlite\n", "1: unknown key 'stor' (did you mean 'store'?)" },
        { "store: sqlite\nsqlite:\n  pth: x\n", "3: unknown key 'sqlite.pth' (did you mean 'sqlite.path'?)" },
        { "dynamodb:\n  region: x\n  tableprefix: y\n", "3: unknown key 'dynamodb.tableprefix' (did you mean 'dynamodb.table_prefix'?)" },
        { "Log:\n  level: info\n", "1: unknown key 'Log' (did you mean 'log'?)" },
        { "region: eu-west-1\n", "1: unknown key 'region' (did you mean 'dynamodb.region'?)" },
        { "sqlite.path: x.db\n", "1: unknown key 'sqlite.path' (write it nested: 'sqlite:' with 'path:' under it)" },
        { "snapshots:\n  evry: 5\n", "2: unknown key 'snapshots.evry' (did you mean 'snapshots.every'?)" },
        { "frobnicate: 1\n", "1: unknown key 'frobnicate'" },
        { "1: x\n", "1: unknown key '1'" },
      }
    end)

    it("reports the first problem in the file", function()
      local msg = load_error("store: sqlite\nlog:\n  level: loud\nstor: x\nsqlite:\n  pth: 1\n")
      assert.matches(":3: log%.level must be one of", msg)
    end)

    it("refuses a file that is not a mapping", function()
      local cfg, err = config.load{ file = FIXTURES .. "not_mapping.yaml" }
      assert.is_nil(cfg)
      assert.equal(FIXTURES .. "not_mapping.yaml: the configuration must be a mapping of keys (got a list)",
                   tostring(err))
      assert.equal(dir .. "/tide.yaml: the configuration must be a mapping of keys (got a string)",
                   (load_error("just text\n")))
      cfg, err = config.from_table({ "a" }, "t")
      assert.is_nil(cfg)
      assert.equal("t: the configuration must be a mapping of keys (got a list)", tostring(err))
    end)

    it("passes YAML syntax errors and duplicate keys through with line and column", function()
      local msg, err = load_error("store: sqlite\nsqlite:\n  path: a: b\n")
      assert.equal(dir .. "/tide.yaml:3:10: mapping values are not allowed in this context", msg)
      assert.equal(3, err.line)
      msg = load_error("store: sqlite\nstore: dynamodb\n")
      assert.equal(dir .. "/tide.yaml:2:1: duplicate key 'store' (first defined at line 1)", msg)
    end)

    it("names the source without a line in from_table", function()
      local cfg, err = config.from_table({ dynamodb = { table_prefix = 5 } }, "test")
      assert.is_nil(cfg)
      assert.equal("test: dynamodb.table_prefix must be a string (got a number)", tostring(err))
      cfg, err = config.from_table({ bogus = 1 })
      assert.is_nil(cfg)
      assert.equal("table: unknown key 'bogus'", tostring(err))
    end)

    it("uses the line of the alias for values reached through it", function()
      local p = dir .. "/tide.yaml:"
      assert_load_errors{
        { "sqlite:\n  path: &p ./t.db\nlog: *p\n", "3: log must be a mapping (got a string)" },
        { "dynamodb:\n  region: &r us-east-1\nlog:\n  level: *r\n",
          "4: log.level must be one of \"debug\", \"info\", \"warn\", \"error\" (got \"us-east-1\")" },
      }
      assert.matches("^" .. p:gsub("%p", "%%%0") .. "3: unknown key 'log%.path'",
                     (load_error("sqlite: &s\n  path: ./t.db\nlog: *s\n")))
    end)
  end)

  describe("store: dynamodb needs a region", function()
    it("fails without dynamodb.region, AWS_REGION, AWS_DEFAULT_REGION, a profile or an endpoint", function()
      write("tide.yaml", "# DynamoDB\nstore: dynamodb\n")
      -- (instance metadata, the region chain's last source, switched off)
      local cfg, err = child_load(dir, { AWS_EC2_METADATA_DISABLED = "true" })
      assert.is_nil(cfg)
      assert.equal("tide.yaml:2: store is \"dynamodb\" but no AWS region is set: set dynamodb.region "
                   .. "(or AWS_REGION, AWS_DEFAULT_REGION, a profile's region) or dynamodb.endpoint", err)
    end)

    it("accepts any one of them", function()
      write("tide.yaml", "store: dynamodb\n")
      write("region.yaml", "store: dynamodb\ndynamodb:\n  region: eu-west-1\n")
      write("endpoint.yaml", "store: dynamodb\ndynamodb:\n  endpoint: http://127.0.0.1:8000\n")
      write("aws_config", "[profile tide]\nregion = ap-south-1\n")
      local envs = {
        { AWS_REGION = "us-east-2" }, { AWS_DEFAULT_REGION = "us-west-1" },
        { AWS_ENDPOINT_URL_DYNAMODB = "http://127.0.0.1:8000" }, { AWS_ENDPOINT_URL = "http://127.0.0.1:8000" },
        { AWS_CONFIG_FILE = dir .. "/aws_config", AWS_PROFILE = "tide" },
      }
      for _, env in ipairs(envs) do
        local cfg, err = child_load(dir, env)
        assert.is_nil(err, next(env))
        assert.equal("dynamodb", cfg.store)
        assert.is_nil(cfg.dynamodb.region) -- left to the client, which reads the same environment
      end
      for _, f in ipairs{ "region.yaml", "endpoint.yaml" } do
        local cfg, err = child_load(dir, nil, { file = f })
        assert.is_nil(err, f)
        assert.equal("dynamodb", cfg.store)
      end
      write("profile.yaml", "store: dynamodb\ndynamodb:\n  profile: tide\n")
      local cfg, err = child_load(dir, { AWS_CONFIG_FILE = dir .. "/aws_config" }, { file = "profile.yaml" })
      assert.is_nil(err)
      assert.equal("tide", cfg.dynamodb.profile)
    end)

    it("does not need one for the sqlite store", function()
      write("tide.yaml", "store: sqlite\n")
      local cfg, err = child_load(dir)
      assert.is_nil(err)
      assert.equal("sqlite", cfg.store)
    end)
  end)
end)

describe("tide.open", function()
  local tide = require "tide"

  -- {description, transport given to tide.open, the pause after it (lua.gc_pause is 300, the pause before 200),
  --  the JIT options it sets (lua.jit_hotloop is 700, lua.jit_hotexit 70)}
  for _, case in ipairs{
    { "sets the collector's pause and the JIT's thresholds to lua.gc_pause, lua.jit_hotloop and lua.jit_hotexit "
      .. "in the tide process", nil, 300, { "hotloop=700", "hotexit=70" } },
    { "leaves the pause and the JIT of a host that brings its own transport (nginx) alone", {}, 200, {} },
  } do
    it(case[1], function()
      local dir = helpers.tmpdir()
      local cfg = assert(config.from_table({ sqlite = { path = dir .. "/tide.db" }, aggregates = helpers.root .. "/aggregates",
                                             projections = helpers.root .. "/projections",
                                             lua = { gc_pause = 300, jit_hotloop = 700, jit_hotexit = 70 } }, "test"))
      local before = collectgarbage("setpause", 200)
      -- jit.opt.start has no reading side: what it is called with is recorded
      local start, set = jit.opt.start, {}
      jit.opt.start = function(...) for _, o in ipairs{ ... } do set[#set + 1] = o end end
      local ok, app = pcall(tide.open, { cfg = cfg, transport = case[2] })
      jit.opt.start = start
      assert.is_true(ok, tostring(app))
      assert.equal(case[3], collectgarbage("setpause", before))
      assert.same(case[4], set)
      assert(app).store:close()
      helpers.run("rm -rf " .. q(dir))
    end)
  end
end)
