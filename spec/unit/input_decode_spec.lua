-- core.decode_input and tide.input.decode: one pass of yajl that builds the
-- values (runtime/core/lua_input.c). What they give must be what tide gave
-- when yajl only checked the text and lua-cjson built the values: the same
-- values (down to -0, cjson.null and the order pairs() visits keys in) and
-- the same messages.
local core = require "tide.core"
local helpers = require "helpers"
local input = require "tide.input"
local tffi = require "tide.ffi"
local ffi = require "ffi"
local cjson = require("cjson.safe").new()
cjson.decode_invalid_numbers(false)

-- The decoding tide had before: yajl's check (tide_json_check), then
-- lua-cjson. Kept here as the reference.
local at, err = ffi.new("double[1]"), tffi.new_error()
local function old_decode(text, what)
  if tffi.lib.tide_ffi_json_check(text, #text, at, err) ~= 0 then
    local line, col = input.position(text, at[0])
    local where = text:find("\n", 1, true) and ("line %d, column %d"):format(line, col) or ("column " .. col)
    return nil, ("%s is not valid JSON: %s: %s"):format(what or "the input", where, tffi.message(err))
  end
  local v, derr = cjson.decode(text)
  if v == nil and derr then return nil, (what or "the input") .. " is not valid JSON: " .. tostring(derr) end
  return v
end

-- nil when a and b are the same value, else where they differ
local function differ(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if a ~= b and not (a ~= a and b ~= b) then return path .. ": " .. a .. " vs " .. b end
    if a == 0 and 1 / a ~= 1 / b then return path .. ": the sign of zero" end
    return nil
  end
  if type(a) ~= "table" then
    if not rawequal(a, b) then return path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
    return nil
  end
  if getmetatable(a) ~= nil or getmetatable(b) ~= nil then return path .. ": a metatable" end
  -- the same keys, visited by pairs() in the same order
  local ka, kb = next(a), next(b)
  local i = 0
  while ka ~= nil or kb ~= nil do
    i = i + 1
    if ka ~= kb then return ("%s: key %d: %s vs %s"):format(path, i, tostring(ka), tostring(kb)) end
    local d = differ(a[ka], b[kb], path .. "[" .. tostring(ka) .. "]")
    if d then return d end
    ka, kb = next(a, ka), next(b, kb)
  end
  return nil
end

local function assert_as_cjson(text)
  local want, werr = cjson.decode(text)
  assert(want ~= nil, text:sub(1, 80) .. ": " .. tostring(werr))
  local got = core.decode_input(text)
  assert(got ~= nil, "decode_input refused " .. text:sub(1, 80))
  local d = differ(got, want)
  assert(d == nil, d and (text:sub(1, 80) .. ": " .. d))
  local v, e = input.decode(text)
  assert(e == nil, e)
  d = differ(v, want)
  assert(d == nil, d)
end

describe("core.decode_input", function()
  it("gives lua-cjson's values", function()
    local corpus = {
      "{}", "[]", " [ ] ", "\t{ }\r\n", "[[]]", "[{}]", "{\"a\":[],\"b\":{}}",
      "null", "true", "false", "0", "5", "\"\"", "\"x\"",
      "[true,false,null]", "[null]", "[null, 1, null]", "[1, null]", "{\"a\":null}", "{\"a\":null,\"b\":null,\"c\":1}",
      -- numbers: integers up to 64 bits, doubles as strtod reads them
      "-0", " -0", "-0 ", "[-0]", "[0,-0,-0.0]", "{\"a\":-0}", "{\"a\":-0,\"b\":-0e0}", "-0.0", "-0E+0",
      "1.5e300", "-1.5e300", "1e-400", "[1e-400, -1e-400]", "4.9e-324", "2.2250738585072014e-308",
      "1.7976931348623157e308", "-1.7976931348623157e308", "0.1", "1E5", "1e+5", "123.456e-7",
      "9223372036854775807", "-9223372036854775807", "9007199254740993", "-9007199254740993",
      "[9007199254740993, 18014398509481985, 123456789012345678]", "123456789012345678901234567890.5",
      "0.000000000000000000000000000000000000000000001", "[1,2.5,-3,4e2,-5.5E-2]",
      -- strings: escapes, \u escapes and surrogate pairs, NUL bytes, UTF-8
      "\"a\\u0000b\"", "\"\\u0000\"", "{\"k\\u0000\":\"v\\u0000\"}", "\"\\u00e9\\u4e2d\\u0800\\u07ff\\u0080\\u007f\"",
      "\"\\ud83d\\ude00\"", "\"\\uD83D\\uDE00x\\ud800\\udc00\\udbff\\udfff\"", "\"\\ud7ff\\ue000\\uffff\\ufffe\"",
      "{\"\\ud83d\\ude00\":\"\\ud83d\\ude00\"}", "\"x\\\\ud800\"", "[\"\\\\\", \"\\ud83d\\ude00\"]",
      "\"\\t\\n\\r\\b\\f\\/\\\"\\\\\"", "\"\195\169\226\130\172\240\159\152\128\"", "\"\192\128\"", "\"\237\160\128\"",
      "\"" .. string.rep("x", 5000) .. "\"", "\"" .. string.rep("a\\\"b\\n", 2000) .. "\"",
      -- duplicate keys: the last one wins, where the first one was
      "{\"a\":1,\"a\":2}", "{\"a\":{\"b\":[1,{\"c\":\"d\"}]},\"a\":3}", "{\"a\":1,\"b\":2,\"a\":null}",
      "{\"type\":\"deposit\",\"id\":\"c1\",\"aggregate\":\"account\",\"aggregate_id\":\"a1\",\"amount\":25}",
      "{\"z\":1,\"y\":2,\"x\":3,\"w\":4,\"v\":5,\"u\":6,\"t\":7,\"s\":8,\"r\":9,\"q\":10,\"p\":11}",
      "{\"a\":{\"b\":{\"c\":[1,[2,[3,{\"d\":null}]]]}},\"e\":[{},[],\"\",0]}",
      "\n{\"a\":1,\n\"b\":[\n1,\n2]}\n",
      string.rep("[", 1000) .. string.rep("]", 1000),
      string.rep("{\"a\":", 1000) .. "1" .. string.rep("}", 1000),
      string.rep("[1,", 999) .. "1" .. string.rep("]", 999),
      "[" .. string.rep("1,", 100000) .. "1]",
    }
    local many = {}
    for i = 1, 3000 do many[i] = ("\"k%d\":%d"):format(i, i) end
    corpus[#corpus + 1] = "{" .. table.concat(many, ",") .. "}"
    for _, text in ipairs(corpus) do assert_as_cjson(text) end
  end)

  it("gives null as cjson.null (core.null), objects and arrays without metatables", function()
    local v = core.decode_input '{"a":null,"l":[null,1],"o":{}}'
    assert.is_true(rawequal(v.a, cjson.null))
    assert.is_true(rawequal(v.a, require("cjson").null))
    assert.is_true(rawequal(v.l[1], core.null))
    assert.are.equal(2, #v.l)
    assert.is_nil(getmetatable(v))
    assert.is_nil(getmetatable(v.l))
    assert.is_nil(getmetatable(v.o))
    assert.is_true(rawequal(core.decode_input "null", cjson.null))
  end)

  it("returns nil, yajl's message and the byte offset for text that is not JSON", function()
    local cases = {
      { "", "parse error: premature EOF", 0 },
      { "0x10", "parse error: trailing garbage", 1 },
      { "007", "parse error: trailing garbage", 1 },
      { "+5", "lexical error: invalid char in json text", 0 },
      { "5.", "lexical error: malformed number, a digit is required after the decimal point", 1 },
      { "NaN", "lexical error: invalid char in json text", 0 },
      { "Infinity", "lexical error: invalid char in json text", 0 },
      { "-Infinity", "lexical error: malformed number, a digit is required after the minus sign", 0 },
      { "[1,2]x", "parse error: trailing garbage", 5 },
      { "{\"a\":1}\0", "a NUL byte", 7 },
      { "[1,\0]", "a NUL byte", 3 },
      { "\"\255\"", "lexical error: invalid bytes in UTF8 string", 1 },
      { "1e400", "parse error: numeric (floating point) overflow", 4 },
      { "[1.5e308, 2e308]", "parse error: numeric (floating point) overflow", 9 },
      { "9223372036854775808", "parse error: integer overflow", 18 },
      { "-9223372036854775808", "parse error: integer overflow", 19 },
      { "{\"a\":1,}", "parse error: invalid object key (must be a string)", 7 },
    }
    for _, c in ipairs(cases) do
      local v, msg, offset = core.decode_input(c[1])
      assert.is_nil(v, c[1])
      assert.are.equal(c[2], msg)
      assert.are.equal(c[3], offset)
    end
  end)

  it("leaves to lua-cjson (a lone nil) the JSON it reads otherwise than yajl", function()
    local cases = {
      "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\ud800x\"", "\"\\ud800\\n\"", "{\"\\ud800\":1}",
      "[\"ok\", \"\\udfff\\ud800\"]", "\f5", "5\v", "[1,\v2]", "{\"a\"\f:1}",
      string.rep("[", 1001) .. string.rep("]", 1001),
      string.rep("{\"a\":", 1001) .. "1" .. string.rep("}", 1001),
      string.rep("[", 100000) .. string.rep("]", 100000),
    }
    for _, text in ipairs(cases) do
      assert.are.equal(1, select("#", core.decode_input(text)))
      assert.is_nil(core.decode_input(text))
      local _, want = cjson.decode(text)
      assert.is_string(want)
      local v, msg = input.decode(text)
      assert.is_nil(v)
      assert.are.equal("the input is not valid JSON: " .. want, msg)
    end
  end)

  it("raises on a value that is not a string", function()
    assert.has_error(function() core.decode_input(5) end)
    assert.has_error(function() core.decode_input() end)
  end)

  it("frees its parser when a Lua error interrupts it (a failing __gc), and works after", function()
    local items = {}
    for i = 1, 3000 do
      items[i] = ('{"id":"k%d","n":%d,"l":["a",1.5,null,{"x":"%s"}]}'):format(i, i, string.rep("y\\n", i % 40))
    end
    local text = "[" .. table.concat(items, ",") .. "]"
    local raised, after, last_err = helpers.interrupt_with_gc_error(40,
      function() assert(#core.decode_input(text) == 3000) end,
      function() assert(core.decode_input('{"a":5}').a == 5) end)
    assert.matches("boom from __gc", last_err)
    assert.is_true(raised > 0)
    assert.is_true(after > 0)
    assert_as_cjson(text)
    assert.are.equal(5, core.decode_value('{"M":{"amount":{"N":"5"}}}').amount)
  end)
end)

describe("tide.input.decode", function()
  it("gives the messages it gave, with the line and column", function()
    local cases = {
      { "", nil, "the input is not valid JSON: column 1: parse error: premature EOF" },
      { "5 6", 3, "line 3 is not valid JSON: column 3: parse error: trailing garbage" },
      { "{\"a\":1}\n\n x", nil, "the input is not valid JSON: line 3, column 2: parse error: trailing garbage" },
      { "{\"a\":1\n,\"b\":\n tru}", "the body", "the body is not valid JSON: line 3, column 4: lexical error: invalid string in json text" },
      { "\0", nil, "the input is not valid JSON: column 1: a NUL byte" },
      { "\"\\ud800\"", nil, "the input is not valid JSON: Expected value but found invalid unicode escape code at character 2" },
      { string.rep("[", 1001) .. string.rep("]", 1001), 7,
        "line 7 is not valid JSON: Found too many nested data structures (1001) at character 1001" },
      { string.rep("[", 2000) .. string.rep("]", 1999), nil,
        "the input is not valid JSON: column 3999: parse error: premature EOF" },
    }
    for _, c in ipairs(cases) do
      local v, msg = input.decode(c[1], c[2])
      assert.is_nil(v)
      assert.are.equal(c[3], msg)
    end
    local v, msg = input.decode(5)
    assert.is_nil(v)
    assert.are.equal("the input must be JSON text", msg)
  end)

  it("decode_object keeps its checks", function()
    assert.are.same({ a = 1 }, input.decode_object '{"a":1}')
    assert.are.same({}, input.decode_object ' {} ')
    for _, text in ipairs { "[]", " [ ]", "[1]", "5", "null", "\"x\"" } do
      local v, msg = input.decode_object(text)
      assert.is_nil(v)
      assert.are.equal("the input must be a JSON object", msg)
    end
  end)

  it("answers as the check and lua-cjson did, on random and mutated texts", function()
    local pieces = { "{", "}", "[", "]", ",", ":", " ", "\n", "\"a\"", "\"\\u00e9\"", "\"\\ud83d\\ude00\"",
      "\"\\ud800\"", "0", "-0", "1.5", "-2e3", "1e400", "007", "true", "null", "fals", "\f", "\"x\0\"",
      "\"\\\\\"", "12345678901234567890", "\"\192\128\"", "\"\255\"" }
    local function random_value(depth)
      local r = math.random(depth > 4 and 6 or 9)
      if r <= 6 then
        return ({ "null", "true", "false", ("%d"):format(math.random(-1e6, 1e6)),
          ("%.17g"):format((math.random() - 0.5) * 10 ^ math.random(-300, 300)),
          cjson.encode(string.char(math.random(32, 126), math.random(32, 126))) })[r]
      elseif r <= 7 then
        local t = {}
        for i = 1, math.random(0, 4) do t[i] = random_value(depth + 1) end
        return "[" .. table.concat(t, ",") .. "]"
      else
        local t = {}
        for i = 1, math.random(0, 4) do t[i] = ("\"k%d\":%s"):format(math.random(3), random_value(depth + 1)) end
        return "{" .. table.concat(t, ",") .. "}"
      end
    end
    for _ = 1, 3000 do
      local text = random_value(0)
      local r = math.random(4)
      if r == 1 then -- a piece put in somewhere
        local i = math.random(0, #text)
        text = text:sub(1, i) .. pieces[math.random(#pieces)] .. text:sub(i + 1)
      elseif r == 2 then -- a byte dropped
        local i = math.random(#text)
        text = text:sub(1, i - 1) .. text:sub(i + 1)
      end
      local want, want_err = old_decode(text)
      local got, got_err = input.decode(text)
      assert.are.equal(want_err, got_err, text)
      if want ~= nil then
        local d = differ(got, want)
        assert(d == nil, d and (text .. ": " .. d))
      end
    end
  end)
end)
