-- core.yaml_decode (YAML -> Lua values, over libyaml; runtime/core/lua_yaml.c):
-- the YAML 1.2 core schema, structure, line numbers per key path, errors
-- with source, line and column, and limits. tide.config, which reads
-- tide.yaml through it, is spec/unit/config_spec.lua.
local helpers = require "helpers"
local core = require "tide.core"

local FIXTURES = helpers.root .. "/spec/fixtures/config/"

local function decode(text, source)
  return core.yaml_decode(text, source or "t.yaml")
end

local function fixture(name)
  return assert(helpers.read_file(FIXTURES .. name))
end

-- An expected error message given as a Lua pattern, not as the exact text.
local function like(pattern)
  return { pattern = pattern }
end

local function assert_message(want, got, context)
  if type(want) == "table" then
    assert.matches(want.pattern, got, nil, nil, context)
  else
    assert.equal(want, got, context)
  end
end

-- decode(text, source) fails with the message want (exact, or like(pattern)).
local function assert_refused(text, want, source)
  local r, err = decode(text, source)
  assert.is_nil(r, text)
  assert_message(want, err, text)
end

-- One spec per entry of list: {description, {text, message [, source]}...},
-- each text refused with its message.
local function refusals(list)
  for _, case in ipairs(list) do
    it(case[1], function()
      for i = 2, #case do assert_refused(case[i][1], case[i][2], case[i][3]) end
    end)
  end
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
      assert_refused("x: !!int abc", "t.yaml:1:4: 'abc' is not a valid !!int")
      assert_refused("x: !Ref foo", like "^t%.yaml:1:4: unsupported tag '!Ref'")
      assert_refused("x: !!set {a: ~}", like "^t%.yaml:1:4: unsupported tag 'tag:yaml.org,2002:set' on a mapping")
    end)

    it("keeps integers exact: up to 2^53, refused beyond", function()
      assert.equal(9007199254740992, decode("x: 9007199254740992").x)
      assert.equal(-9007199254740992, decode("x: -9007199254740992").x)
      assert_refused("x: 9007199254740993", "t.yaml:1:4: integer 9007199254740993 is too large for a Lua number "
                     .. "(beyond 2^53); quote it to keep it as a string")
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

    refusals{
      { "refuses undefined and recursive aliases",
        { "a: *nope\n", "t.yaml:1:4: undefined alias '*nope'" },
        { "a: &x\n  b: *x\n", "t.yaml:2:6: recursive alias '*x' (it refers to a node that contains it)" } },
      { "refuses collection and null keys",
        { "? [a, b]\n: c\n", "t.yaml:1:3: a sequence as a mapping key is not supported" },
        { "~: x\n", 't.yaml:1:1: a null mapping key is not supported (quote it: "~")' } },
    }
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
    refusals{
      { "names source, line and column, and libyaml's problem",
        { "store: sqlite\nsqlite:\n  path: a: b\n", "tide.yaml:3:10: mapping values are not allowed in this context",
          "tide.yaml" } },
      { "adds libyaml's context when it has one",
        { "a: [1, 2\nb: 3\n", like("^t%.yaml:2:2: did not find expected ',' or ']' %(while parsing a flow sequence "
                                   .. "at line 1, column 4%)$") },
        { "a:\n  b: 1\n c: 2\n", like "^t%.yaml:3:2: did not find expected key" } },
      { "reports tabs used for indentation",
        { "a:\n\tb: 1\n", like "^t%.yaml:2:1: found character that cannot start any token" } },
      { "reports invalid UTF-8 and control characters with their position",
        { "a: ok\nb: \255\n", "t.yaml:2:4: invalid leading UTF-8 octet (byte 0xFF)" },
        { "a: x\0y", "t.yaml:1:5: control characters are not allowed (byte 0x00)" } },
      { "refuses duplicate keys with both lines",
        { "a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\n", "t.yaml:5:3: duplicate key 'c' (first defined at line 3)" },
        { "{x: 1, y: 2, x: 3}", "t.yaml:1:14: duplicate key 'x' (first defined at line 1)" } },
      { "refuses a second document",
        { "a: 1\n---\nb: 2\n", "t.yaml:2:1: expected a single YAML document, found a second one" } },
    }

    it("names the default source <string>", function()
      local _, err = core.yaml_decode("a: b: c")
      assert.equal("<string>:1:5: mapping values are not allowed in this context", err)
    end)

    it("compares keys as the Lua values they become", function()
      assert_refused("1: a\n0x1: b\n", "t.yaml:2:1: duplicate key '0x1' (first defined at line 1)")
      local v = assert(decode("1: a\n'1': b\n"))
      assert.equal("a", v[1])
      assert.equal("b", v["1"])
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
      assert_refused(("["):rep(100000), "t.yaml:1:513: nesting deeper than 512 levels")
      local deep = {}
      for i = 0, 2000 do deep[#deep + 1] = (" "):rep(i) .. "k:" end
      assert_refused(table.concat(deep, "\n"), like "nesting deeper than 512 levels")
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
