-- core.yaml_decode (YAML -> Lua values, over libyaml) and tide.config
-- (tide.yaml: lookup, defaults, validation). LuaJIT cannot setenv, so the
-- cases that depend on the environment (TIDE_CONFIG, AWS_*) or on the
-- working directory run in a child luajit started through `env`, which
-- keeps LD_PRELOAD and ASAN_OPTIONS under the sanitizer run.
local helpers = require "helpers"
local cjson = require "cjson"
local core = require "tide.core"
local config = require "tide.config"

local q = helpers.shell_quote
local FIXTURES = helpers.root .. "/spec/fixtures/config/"
local MiB = 1024 * 1024

local function decode(text, source)
  return core.yaml_decode(text, source or "t.yaml")
end

local function fixture(name)
  return assert(helpers.read_file(FIXTURES .. name))
end

describe("core.yaml_decode", function()
  describe("scalars (YAML 1.2 core schema)", function()
    local v, lines = decode(fixture("types.yaml"), "types.yaml")

    it("decodes the fixture", function()
      assert.is_table(v)
      assert.is_table(lines)
    end)

    it("turns plain integers (decimal, hex, octal) into numbers", function()
      assert.same({ 0, 42, -17, 3, 31, 15, 7 }, v.ints)
    end)

    it("turns plain floats, .inf and .nan into numbers", function()
      assert.same({ 1.5, -0.25, 0.5, 1000, 0.025, 1 }, { unpack(v.floats, 1, 6) })
      assert.equal(math.huge, v.floats[7])
      assert.equal(-math.huge, v.floats[8])
      assert.equal(math.huge, v.floats[9])
      assert.is_true(v.nan ~= v.nan)
    end)

    it("turns the core schema's booleans into booleans, and only those", function()
      assert.same({ true, true, true, false, false, false }, v.bools)
      assert.equal("yes", v.strings.yes)
      assert.equal("on", v.strings.on)
    end)

    it("turns null, ~ and empty values into core.null", function()
      assert.equal(4, #v.nulls)
      for i = 1, 4 do assert.equal(core.null, v.nulls[i]) end
      assert.equal(core.null, v.empty)
    end)

    it("keeps quoted and !!str scalars as strings, whatever they look like", function()
      assert.equal("42", v.strings.quoted_int)
      assert.equal("true", v.strings.single)
      assert.equal("1.10", v.strings.version)
      assert.equal("123", v.strings.tagged)
      assert.equal("hello world", v.strings.words)
      assert.equal("-x", v.strings.dash)
    end)

    it("reads '#' as a comment only after a space", function()
      assert.equal("a#b", v.strings.hash)
      assert.equal("a # b", v.strings.spaced)
    end)

    it("checks explicit core tags and refuses others", function()
      assert.same({ a = 42, b = 1, c = true, d = core.null }, (decode('{a: !!int "42", b: !!float 1, c: !!bool "true", d: !!null ""}')))
      local r, err = decode("x: !!int abc")
      assert.is_nil(r)
      assert.equal("t.yaml:1:4: 'abc' is not a valid !!int", err)
      r, err = decode("x: !Ref foo")
      assert.is_nil(r)
      assert.matches("^t%.yaml:1:4: unsupported tag '!Ref'", err)
      r, err = decode("x: !!set {a: ~}")
      assert.is_nil(r)
      assert.matches("^t%.yaml:1:4: unsupported tag 'tag:yaml.org,2002:set' on a mapping", err)
    end)

    it("keeps integers exact: up to 2^53, refused beyond", function()
      assert.equal(9007199254740992, decode("x: 9007199254740992").x)
      assert.equal(-9007199254740992, decode("x: -9007199254740992").x)
      local r, err = decode("x: 9007199254740993")
      assert.is_nil(r)
      assert.equal("t.yaml:1:4: integer 9007199254740993 is too large for a Lua number (beyond 2^53); "
                   .. "quote it to keep it as a string", err)
      assert.equal("9007199254740993", decode('x: "9007199254740993"').x)
      assert.equal("0", tostring(decode("x: -0").x))
    end)

    it("decodes block scalars, escapes and multi-line plain scalars", function()
      local r = assert(decode('lit: |\n  a\n  b\nfold: >\n  a\n  b\nesc: "tab\\there \\u00e9 \\x41"\n'
                              .. "sq: 'it''s'\nplain: one\n  two\n"))
      assert.equal("a\nb\n", r.lit)
      assert.equal("a b\n", r.fold)
      assert.equal("tab\there \195\169 A", r.esc)
      assert.equal("it's", r.sq)
      assert.equal("one two", r.plain)
    end)

    it("keeps NUL bytes written as escapes", function()
      assert.equal("x\0y", decode('a: "x\\0y"').a)
    end)

    it("decodes a bare scalar document", function()
      assert.equal(5, (decode("5")))
      assert.equal("hello", (decode("hello")))
    end)
  end)

  describe("structure", function()
    it("decodes nested block mappings and sequences", function()
      local v = assert(decode([[
dynamodb:
  region: eu-west-1
  tables:
    - name: events
      keys: [stream, version]
    - name: snapshots
      keys:
        - stream
]]))
      assert.same({ dynamodb = { region = "eu-west-1", tables = {
        { name = "events", keys = { "stream", "version" } },
        { name = "snapshots", keys = { "stream" } },
      } } }, v)
    end)

    it("decodes flow style", function()
      local v = assert(decode("{a: 1, b: [x, 'y', {c: true}], d: {}, e: []}"))
      assert.same({ a = 1, b = { "x", "y", { c = true } }, d = {}, e = {} }, v)
    end)

    it("marks sequences as lists (core.is_list), so [] and {} differ", function()
      local v = assert(decode("a: []\nb: {}\nc: [1]\n"))
      assert.is_true(core.is_list(v.a))
      assert.is_false(core.is_list(v.b))
      assert.is_true(core.is_list(v.c))
      assert.is_false(core.is_list(v))
    end)

    it("ignores comments everywhere", function()
      local v = assert(decode("# head\na: 1 # trailing\n# between\nb: # before a value\n  - x # item\n"))
      assert.same({ a = 1, b = { "x" } }, v)
    end)

    it("turns plain keys into Lua keys of their type", function()
      local v, lines = assert(decode("1: one\n'1': quoted\ntrue: yes\n1.5: x\n"))
      assert.same({ ["1"] = 2, ["true"] = 3, ["1.5"] = 4 }, lines) -- 1 and '1' share a path: the last wins
      assert.equal("one", v[1])
      assert.equal("quoted", v["1"])
      assert.equal("yes", v[true])
      assert.equal("x", v[1.5])
    end)

    it("keeps unicode text byte for byte", function()
      local text = "clé: \"café\"\n日本: 東京\nemoji: \"\240\159\154\128\"\nescaped: \"\\u00e9\\U0001F680\"\n"
      local v = assert(decode(text))
      assert.equal("café", v["clé"])
      assert.equal("東京", v["日本"])
      assert.equal("\240\159\154\128", v.emoji)
      assert.equal("é\240\159\154\128", v.escaped)
    end)

    it("skips a UTF-8 byte order mark", function()
      assert.same({ a = 1 }, (decode("\239\187\191a: 1\n")))
    end)

    it("gives an alias the very value of its anchor", function()
      local v = assert(decode("base: &b {region: x, n: 1}\ncopy: *b\nname: &n hello\nagain: *n\n"))
      assert.equal(v.base, v.copy)
      assert.same({ region = "x", n = 1 }, v.copy)
      assert.equal("hello", v.again)
    end)

    it("refuses undefined and recursive aliases", function()
      local r, err = decode("a: *nope\n")
      assert.is_nil(r)
      assert.equal("t.yaml:1:4: undefined alias '*nope'", err)
      r, err = decode("a: &x\n  b: *x\n")
      assert.is_nil(r)
      assert.equal("t.yaml:2:6: recursive alias '*x' (it refers to a node that contains it)", err)
    end)

    it("refuses collection and null keys", function()
      local r, err = decode("? [a, b]\n: c\n")
      assert.is_nil(r)
      assert.equal("t.yaml:1:3: a sequence as a mapping key is not supported", err)
      r, err = decode("~: x\n")
      assert.is_nil(r)
      assert.equal('t.yaml:1:1: a null mapping key is not supported (quote it: "~")', err)
    end)
  end)

  describe("line numbers", function()
    it("maps every key path to its line", function()
      local _, lines = assert(decode([[
# comment
store: dynamodb

dynamodb:
  region: us-east-1
  endpoint: http://localhost:8000
list:
  - a
  - {b: 1}
  -
    c: 2
]]))
      assert.same({
        store = 2, dynamodb = 4, ["dynamodb.region"] = 5, ["dynamodb.endpoint"] = 6,
        list = 7, ["list[1]"] = 8, ["list[2]"] = 9, ["list[2].b"] = 9,
        ["list[3]"] = 11, ["list[3].c"] = 11,
      }, lines)
    end)

    it("names numeric keys as text and records alias keys, not inside them", function()
      local _, lines = assert(decode("a: &x {k: 1}\nb: *x\n10: ten\n"))
      assert.same({ a = 1, ["a.k"] = 1, b = 2, ["10"] = 3 }, lines)
    end)

    it("gives an empty table for an empty document", function()
      local v, lines = decode("")
      assert.equal(core.null, v)
      assert.same({}, lines)
    end)
  end)

  describe("errors", function()
    it("names source, line and column, and libyaml's problem", function()
      local r, err = decode("store: sqlite\nsqlite:\n  path: a: b\n", "tide.yaml")
      assert.is_nil(r)
      assert.equal("tide.yaml:3:10: mapping values are not allowed in this context", err)
    end)

    it("adds libyaml's context when it has one", function()
      local r, err = decode("a: [1, 2\nb: 3\n")
      assert.is_nil(r)
      assert.matches("^t%.yaml:2:2: did not find expected ',' or ']' %(while parsing a flow sequence "
                     .. "at line 1, column 4%)$", err)
      r, err = decode("a:\n  b: 1\n c: 2\n")
      assert.is_nil(r)
      assert.matches("^t%.yaml:3:2: did not find expected key", err)
    end)

    it("reports tabs used for indentation", function()
      local r, err = decode("a:\n\tb: 1\n")
      assert.is_nil(r)
      assert.matches("^t%.yaml:2:1: found character that cannot start any token", err)
    end)

    it("reports invalid UTF-8 and control characters with their position", function()
      local r, err = decode("a: ok\nb: \255\n")
      assert.is_nil(r)
      assert.equal("t.yaml:2:4: invalid leading UTF-8 octet (byte 0xFF)", err)
      r, err = decode("a: x\0y")
      assert.is_nil(r)
      assert.equal("t.yaml:1:5: control characters are not allowed (byte 0x00)", err)
    end)

    it("names the default source <string>", function()
      local _, err = core.yaml_decode("a: b: c")
      assert.equal("<string>:1:5: mapping values are not allowed in this context", err)
    end)

    it("refuses duplicate keys with both lines", function()
      local r, err = decode("a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\n")
      assert.is_nil(r)
      assert.equal("t.yaml:5:3: duplicate key 'c' (first defined at line 3)", err)
      r, err = decode("{x: 1, y: 2, x: 3}")
      assert.is_nil(r)
      assert.equal("t.yaml:1:14: duplicate key 'x' (first defined at line 1)", err)
    end)

    it("compares keys as the Lua values they become", function()
      local r, err = decode("1: a\n0x1: b\n")
      assert.is_nil(r)
      assert.equal("t.yaml:2:1: duplicate key '0x1' (first defined at line 1)", err)
      local v = assert(decode("1: a\n'1': b\n"))
      assert.equal("a", v[1])
      assert.equal("b", v["1"])
    end)

    it("refuses a second document", function()
      local r, err = decode("a: 1\n---\nb: 2\n")
      assert.is_nil(r)
      assert.equal("t.yaml:2:1: expected a single YAML document, found a second one", err)
    end)

    it("raises on a wrong argument type", function()
      assert.has_error(function() core.yaml_decode(nil) end)
      assert.has_error(function() core.yaml_decode({}) end)
    end)
  end)

  describe("empty and large documents", function()
    it("decodes an empty text, blanks, comments and an explicit empty document to core.null", function()
      for _, text in ipairs{ "", "\n\n   \n", "# only a comment\n", "---\n", "--- # c\n...\n" } do
        local v, lines = decode(text)
        assert.equal(core.null, v, text)
        assert.same({}, lines)
      end
    end)

    it("decodes a large document", function()
      local parts = {}
      for i = 1, 20000 do parts[#parts + 1] = ("key%d: [%d, v%d]"):format(i, i, i) end
      local v, lines = assert(decode(table.concat(parts, "\n")))
      assert.same({ 20000, "v20000" }, v.key20000)
      assert.equal(20000, lines.key20000)
      assert.equal(20000, lines["key20000[2]"])
    end)

    it("decodes nesting up to 512 levels and refuses deeper, without crashing", function()
      local v = assert(decode(("["):rep(512) .. ("]"):rep(512)))
      for _ = 1, 511 do v = v[1] end
      assert.same({}, v)
      local r, err = decode(("["):rep(100000))
      assert.is_nil(r)
      assert.equal("t.yaml:1:513: nesting deeper than 512 levels", err)
      local deep = {}
      for i = 0, 2000 do deep[#deep + 1] = (" "):rep(i) .. "k:" end
      r, err = decode(table.concat(deep, "\n"))
      assert.is_nil(r)
      assert.matches("nesting deeper than 512 levels", err)
    end)

    it("stays linear on many aliases of a nested anchor (no billion laughs)", function()
      local text = { "a0: &a0 [x, x, x, x, x, x, x, x, x, x]" }
      for i = 1, 30 do
        text[#text + 1] = ("a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]")
          :format(i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1)
      end
      local v, lines = assert(decode(table.concat(text, "\n")))
      assert.equal(v.a29, v.a30[10])
      assert.equal(31, lines.a30)
    end)
  end)
end)

------------------------------------------------------------------------

-- Keys and defaults, as docs/configuration.md lists them.
local DEFAULTS = {
  source = "defaults",
  store = "sqlite",
  sqlite = { path = "./tide.db", busy_timeout_ms = 10000, synchronous = "normal" },
  dynamodb = { table_prefix = "tide_", max_attempts = 8, max_connections = 512, gather_us = 1000,
               timeout_ms = 30000, verify_tls = true },
  aggregates = "./aggregates",
  projections = "./projections",
  cache = { max_bytes = 64 * MiB },
  commands = { max_attempts = 10 },
  snapshots = { every = 100 },
  log = { level = "info", format = "text" },
  lua = { gc_pause = 400 },
}

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = type(v) == "table" and copy(v) or v end
  return c
end

-- Runs config.load(opts) in a child luajit: in dir, with env (a table;
-- every AWS_* and TIDE_CONFIG unset first, HOME a temporary directory).
-- Returns the cfg or nil, and the error message.
local AWS_VARS = { "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                   "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_CONFIG_FILE",
                   "AWS_SHARED_CREDENTIALS_FILE", "TIDE_CONFIG" }
local function child_load(dir, env, opts)
  local parts = { "cd " .. q(dir) .. " && env" }
  for _, v in ipairs(AWS_VARS) do parts[#parts + 1] = "-u " .. v end
  parts[#parts + 1] = "HOME=" .. q(dir)
  parts[#parts + 1] = "LUA_PATH=" .. q(helpers.root .. "/lua/?.lua;" .. helpers.root .. "/lua/?/init.lua;;")
  parts[#parts + 1] = "LUA_CPATH=" .. q(helpers.root .. "/" .. helpers.build .. "/lua/?.so;;")
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  local code = ([[
    local cjson = require "cjson"
    local opts = cjson.decode(%s)
    local cfg, err = require("tide.config").load(opts)
    io.write(cjson.encode({ cfg = cfg or cjson.null, err = err and tostring(err) or cjson.null }))
  ]]):format(("%q"):format(cjson.encode(opts or {})))
  parts[#parts + 1] = "luajit -e " .. q(code) .. " 2>&1"
  local out, status = helpers.run(table.concat(parts, " "))
  assert(status == 0, "child failed: " .. out)
  local decoded = cjson.decode(out)
  local cfg, err = decoded.cfg, decoded.err
  if cfg == cjson.null then cfg = nil end
  if err == cjson.null then err = nil end
  return cfg, err
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
        aggregates = "/srv/tide/aggregates",
        projections = "/srv/tide/projections",
        cache = { max_bytes = 1048576 },
        commands = { max_attempts = 1 },
        snapshots = { every = 0 },
        log = { level = "warn", format = "json" },
        lua = { gc_pause = 250 },
      }, cfg)
    end)

    it("loads the embedded-store example of docs/configuration.md", function()
      local cfg = assert(config.load{ file = FIXTURES .. "sqlite.yaml" })
      assert.equal("sqlite", cfg.store)
      assert.same({ path = FIXTURES .. "data/tide.db", busy_timeout_ms = 5000, synchronous = "full" },
                  cfg.sqlite)
      assert.equal(FIXTURES .. "aggregates", cfg.aggregates)
      assert.equal(128 * MiB, cfg.cache.max_bytes)
      assert.equal(5, cfg.commands.max_attempts)
      assert.equal(50, cfg.snapshots.every)
      assert.same({ level = "debug", format = "text" }, cfg.log)
    end)

    it("loads the DynamoDB Local example of docs/configuration.md", function()
      local cfg = assert(config.load{ file = FIXTURES .. "dynamodb-local.yaml" })
      assert.equal("dynamodb", cfg.store)
      assert.equal("http://127.0.0.1:8000", cfg.dynamodb.endpoint)
      assert.equal("us-east-1", cfg.dynamodb.region)
      assert.equal("dev_", cfg.dynamodb.table_prefix)
      assert.equal(FIXTURES .. "../aggregates", cfg.aggregates)
      assert.equal("json", cfg.log.format)
    end)

    it("accepts each enum value", function()
      for _, s in ipairs{ "sqlite", "dynamodb" } do
        assert.equal(s, assert(config.from_table{ store = s, dynamodb = { region = "x" } }).store)
      end
      for _, s in ipairs{ "normal", "full" } do
        assert.equal(s, assert(config.from_table{ sqlite = { synchronous = s } }).sqlite.synchronous)
      end
      for _, s in ipairs{ "debug", "info", "warn", "error" } do
        assert.equal(s, assert(config.from_table{ log = { level = s } }).log.level)
      end
      for _, s in ipairs{ "text", "json" } do
        assert.equal(s, assert(config.from_table{ log = { format = s } }).log.format)
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
      local cfg = assert(config.load{ file = path })
      assert.equal(dir .. "/conf/data/t.db", cfg.sqlite.path)
      assert.equal(dir .. "/conf/../proj", cfg.projections)
      assert.equal(dir .. "/conf/aggregates", cfg.aggregates)
      assert.equal(dir .. "/conf/ca.pem", cfg.dynamodb.ca_bundle)
    end)

    it("keeps absolute paths, :memory: and file: URIs", function()
      local cfg = assert(load_text("sqlite:\n  path: ':memory:'\naggregates: /abs/agg\n"))
      assert.equal(":memory:", cfg.sqlite.path)
      assert.equal("/abs/agg", cfg.aggregates)
      cfg = assert(load_text("sqlite:\n  path: file:tide.db?mode=ro\n"))
      assert.equal("file:tide.db?mode=ro", cfg.sqlite.path)
    end)

    it("resolves against a relative config path as given", function()
      helpers.run("mkdir -p " .. q(dir .. "/conf"))
      write("conf/tide.yaml", "sqlite:\n  path: ./t.db\n")
      local cfg, err = child_load(dir, nil, { file = "conf/tide.yaml" })
      assert.is_nil(err)
      assert.equal("conf/tide.yaml", cfg.source)
      assert.equal("conf/t.db", cfg.sqlite.path)
      assert.equal("conf/aggregates", cfg.aggregates)
    end)

    it("keeps them relative to the working directory for ./tide.yaml and the defaults", function()
      write("tide.yaml", "sqlite:\n  path: data/t.db\n")
      local cfg = child_load(dir)
      assert.equal("tide.yaml", cfg.source)
      assert.equal("data/t.db", cfg.sqlite.path)
      assert.equal("./aggregates", cfg.aggregates)
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

    it("takes --config (opts.file) first", function()
      local cfg, err = child_load(dir, { TIDE_CONFIG = "a/env.yaml" }, { file = "b/flag.yaml" })
      assert.is_nil(err)
      assert.equal("b/flag.yaml", cfg.source)
      assert.equal("error", cfg.log.level)
    end)

    it("then TIDE_CONFIG", function()
      local cfg, err = child_load(dir, { TIDE_CONFIG = "a/env.yaml" })
      assert.is_nil(err)
      assert.equal("a/env.yaml", cfg.source)
      assert.equal("warn", cfg.log.level)
      assert.equal("a/aggregates", cfg.aggregates)
    end)

    it("then ./tide.yaml", function()
      local cfg, err = child_load(dir)
      assert.is_nil(err)
      assert.equal("tide.yaml", cfg.source)
      assert.equal("debug", cfg.log.level)
      cfg = child_load(dir, { TIDE_CONFIG = "" }) -- an empty TIDE_CONFIG is unset
      assert.equal("tide.yaml", cfg.source)
    end)

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

    it("reports every kind of wrong type with its line", function()
      local p = dir .. "/tide.yaml:"
      local cases = {
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
      for _, c in ipairs(cases) do
        assert.equal(p .. c[2], (load_error(c[1])), c[1])
      end
    end)

    it("reports invalid values with their line", function()
      local p = dir .. "/tide.yaml:"
      local cases = {
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
      }
      for _, c in ipairs(cases) do
        assert.equal(p .. c[2], (load_error(c[1])), c[1])
      end
      assert.equal("", assert(config.from_table{ dynamodb = { table_prefix = "" } }).dynamodb.table_prefix)
    end)

    it("reports unknown keys with a suggestion", function()
      local p = dir .. "/tide.yaml:"
      local cases = {
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
      for _, c in ipairs(cases) do
        assert.equal(p .. c[2], (load_error(c[1])), c[1])
      end
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
      assert.equal(p .. "3: log must be a mapping (got a string)",
                   (load_error("sqlite:\n  path: &p ./t.db\nlog: *p\n")))
      assert.equal(p .. "4: log.level must be one of \"debug\", \"info\", \"warn\", \"error\" (got \"us-east-1\")",
                   (load_error("dynamodb:\n  region: &r us-east-1\nlog:\n  level: *r\n")))
      assert.matches("^" .. p:gsub("%p", "%%%0") .. "3: unknown key 'log%.path'",
                     (load_error("sqlite: &s\n  path: ./t.db\nlog: *s\n")))
    end)
  end)

  describe("store: dynamodb needs a region", function()
    it("fails without dynamodb.region, AWS_REGION, AWS_DEFAULT_REGION, a profile or an endpoint", function()
      write("tide.yaml", "# DynamoDB\nstore: dynamodb\n")
      local cfg, err = child_load(dir)
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

  local function cfg_with_pause(pause, dir)
    return assert(config.from_table({ sqlite = { path = dir .. "/tide.db" }, aggregates = helpers.root .. "/aggregates",
                                      projections = helpers.root .. "/projections", lua = { gc_pause = pause } }, "test"))
  end

  it("sets the collector's pause to lua.gc_pause in the tide process", function()
    local dir = helpers.tmpdir()
    local before = collectgarbage("setpause", 200)
    local app = assert(tide.open{ cfg = cfg_with_pause(300, dir) })
    assert.equal(300, collectgarbage("setpause", before))
    app.store:close()
    helpers.run("rm -rf " .. q(dir))
  end)

  it("leaves the pause of a host that brings its own transport (nginx) alone", function()
    local dir = helpers.tmpdir()
    local before = collectgarbage("setpause", 200)
    local app = assert(tide.open{ cfg = cfg_with_pause(300, dir), transport = {} })
    assert.equal(200, collectgarbage("setpause", before))
    app.store:close()
    helpers.run("rm -rf " .. q(dir))
  end)
end)
