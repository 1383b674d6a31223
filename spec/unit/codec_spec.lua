-- The DynamoDB JSON codec of tide.core: the pure C of runtime/core/ddb_*.c
-- through its Lua binding (lua_encode.c, lua_decode.c, lua_codec.c).
-- Conventions: docs/codec.md.
local core = require "tide.core"
local cjson = require "cjson"
local helpers = require "helpers"

-- Raw JSON of an encoded value, for checking the wire form.
local function wire(json)
  return cjson.decode(json)
end

local function av(v)
  return wire(assert(core.encode_value(v)))
end

local function roundtrip(v)
  local json = assert(core.encode_value(v))
  local back, err = core.decode_value(json)
  assert(err == nil, err)
  return back, json
end

-- n tables nested in each other: {a = {a = ... {} }}
local function nested(n)
  local v = {}
  for _ = 2, n do v = { a = v } end
  return v
end

describe("tide.core codec", function()

  describe("strings (S)", function()
    it("round-trip ASCII, empty, NUL, multi-byte and emoji", function()
      for _, s in ipairs { "abc", "", "a\0b\0", "h\195\169llo w\195\182rld", "\226\130\172 euro",
                           "\240\159\152\128 grin", "\228\184\173\230\150\135" } do
        local back, json = roundtrip(s)
        assert.are.equal(s, back)
        assert.are.same({ S = s }, wire(json))
      end
    end)

    it("rejects a string that is not UTF-8, naming the path", function()
      local json, err = core.encode_request { Item = { name = "\255\254" } }
      assert.is_nil(json)
      assert.matches("^Item%.name: string is not valid UTF%-8", err)
      -- overlong, surrogate, truncated
      for _, s in ipairs { "\192\175", "\237\160\128", "\226\130" } do
        assert.is_nil(core.encode_value(s))
      end
    end)

    it("rejects a map key that is not UTF-8", function()
      local json, err = core.encode_value { ["\255"] = 1 }
      assert.is_nil(json)
      assert.matches("not valid UTF%-8", err)
    end)
  end)

  describe("numbers (N)", function()
    it("writes integers up to 2^53 without exponent or .0", function()
      assert.are.same({ N = "0" }, av(0))
      assert.are.same({ N = "0" }, av(-0.0))
      assert.are.same({ N = "42" }, av(42))
      assert.are.same({ N = "-7" }, av(-7))
      assert.are.same({ N = "9007199254740992" }, av(2 ^ 53))
      assert.are.same({ N = "-9007199254740992" }, av(-2 ^ 53))
      assert.are.same({ N = "1000000" }, av(1e6))
    end)

    it("writes other doubles with the shortest round-trip text", function()
      assert.are.same({ N = "0.1" }, av(0.1))
      assert.are.same({ N = "1.5" }, av(1.5))
      assert.are.same({ N = "0.3333333333333333" }, av(1 / 3))
      assert.are.same({ N = "18014398509481984" }, av(2 ^ 54))
      assert.are.same({ N = "1E+125" }, av(1e125))
      assert.are.same({ N = "1E-130" }, av(1e-130))
      for _, x in ipairs { 0.1, 1 / 3, math.pi, -2.5e-100, 1.7976931348623157e100, 2 ^ 53 + 2 } do
        assert.are.equal(x, (roundtrip(x)))
      end
    end)

    it("refuses NaN, infinities and doubles outside DynamoDB's range", function()
      for _, x in ipairs { 0 / 0, 1 / 0, -1 / 0, 1e126, 1e-131, 5e-324 } do
        local json, err = core.encode_value(x)
        assert.is_nil(json)
        assert.is_string(err)
      end
      local _, err = core.encode_request { Item = { price = 0 / 0 } }
      assert.matches("^Item%.price: NaN and infinity cannot be stored", err)
    end)

    it("decodes to a Lua number when exact enough, else to a tide.number", function()
      assert.are.equal(9007199254740992, core.decode_value '{"N":"9007199254740992"}')
      assert.are.equal(123456789012345, core.decode_value '{"N":"123456789012345"}')
      assert.are.equal(1e125, core.decode_value '{"N":"1E+125"}')
      assert.are.equal(1e-130, core.decode_value '{"N":"1E-130"}')
      assert.are.equal(0.5, core.decode_value '{"N":"0.50"}')
      local big = core.decode_value '{"N":"9007199254740993"}'
      assert.is_true(core.is_number(big))
      assert.are.equal("9007199254740993", tostring(big))
      -- 16 or 17 digits: a Lua number only when that double prints back the same
      assert.are.equal(1 / 3, core.decode_value '{"N":"0.3333333333333333"}')
      assert.are.equal(0.1 + 0.2, core.decode_value '{"N":"0.30000000000000004"}')
      local frac = core.decode_value '{"N":"0.12345678901234567"}'
      assert.is_true(core.is_number(frac))
      assert.are.equal("0.12345678901234567", tostring(frac))
      assert.is_true(core.is_number(core.decode_value '{"N":"123456789012345678"}'))
    end)

    it("keeps 38 significant digits exactly, both ways", function()
      for _, s in ipairs { "12345678901234567890123456789012345678",
                           "-0.000000000000000000000000000000000001",
                           "99999999999999999999999999999999999999",
                           "9.9999999999999999999999999999999999999E+125",
                           "-1.2345678901234567890123456789012345678E-130",
                           "1E+125", "1E-130", "9007199254740993" } do
        local n = core.number(s)
        local back, json = roundtrip(n)
        assert.are.equal(s, wire(json).N)
        -- whatever Lua form it takes, it encodes to the very same text
        assert.are.equal(json, core.encode_value(back))
      end
      local back = core.decode_value '{"N":"12345678901234567890123456789012345678"}'
      assert.is_true(core.is_number(back))
      assert.are.equal("12345678901234567890123456789012345678", tostring(back))
      assert.are.equal(core.number "12345678901234567890123456789012345678", back)
      -- a 1-digit number is exact as a double: it comes back as a Lua number
      assert.are.equal(-1e-36, core.decode_value '{"N":"-0.000000000000000000000000000000000001"}')
      -- and through a whole response
      local r = core.decode_response '{"Item":{"n":{"N":"12345678901234567890123456789012345678"}}}'
      assert.are.equal("12345678901234567890123456789012345678", tostring(r.Item.n))
    end)

    it("core.number validates and canonicalizes decimal text", function()
      assert.are.equal("1500", tostring(core.number "0001.500E3"))
      assert.are.equal("1E+125", tostring(core.number "1e125"))
      assert.are.equal("1E-130", tostring(core.number "0.1E-129"))
      assert.are.equal("0", tostring(core.number "-0.000"))
      assert.are.equal("0.5", tostring(core.number ".5"))
      assert.are.equal("5", tostring(core.number "+5."))
      assert.are.equal("0.1", tostring(core.number(0.1)))
      -- trailing zeros do not count as significant digits
      assert.are.equal("1" .. string.rep("0", 39), tostring(core.number("1" .. string.rep("0", 39))))
      for _, bad in ipairs { "", "abc", "1e", "1.2.3", "--1", "0x10", "1 ", " 1", "NaN", "Infinity",
                             "1E+126", "1E-131", "1234567890123456789012345678901234567890" } do
        local ok, err = pcall(core.number, bad)
        assert.is_false(ok, bad)
        assert.matches("not a valid DynamoDB number", err)
      end
      assert.has_error(function() core.number({}) end)
      assert.has_error(function() core.number(0 / 0) end)
    end)

    it("tide.number compares by value", function()
      assert.are.equal(core.number "1", core.number "1.000")
      assert.are.equal(core.number "100", core.number "1E2")
      assert.are_not.equal(core.number "1", core.number "-1")
      assert.is_true(core.number "-2" < core.number "1.5")
      assert.is_true(core.number "1E-130" < core.number "0.001")
      assert.is_true(core.number "12345678901234567890123456789012345678" >
                     core.number "12345678901234567890123456789012345677")
      assert.is_true(core.number "2" <= core.number "2.0")
    end)

    it("rejects an invalid number in a response with nil and a message naming it", function()
      local r, err = core.decode_response '{"Items":[{"id":{"S":"a"}},{"price":{"N":"12abc"}}]}'
      assert.is_nil(r)
      assert.matches('^Items%[2%]%.price: "12abc" is not a valid DynamoDB number', err)
    end)
  end)

  describe("binary (B)", function()
    it("round-trips bytes including NUL and invalid UTF-8", function()
      for _, s in ipairs { "\0", "\0\1\2\255\0", "", "abc", string.rep("\0\255", 10000) } do
        local b = core.binary(s)
        local back, json = roundtrip(b)
        assert.is_true(core.is_binary(back))
        assert.are.equal(s, core.bytes(back))
        assert.are.equal(s, back.bytes)
        assert.are.equal(s, tostring(back))
        assert.are.equal(b, back)
        assert.is_string(wire(json).B)
      end
      assert.are.same({ B = "AAEC" }, av(core.binary "\0\1\2"))
    end)

    it("compares by content", function()
      assert.are.equal(core.binary "x\0", core.binary "x\0")
      assert.are_not.equal(core.binary "x", core.binary "y")
    end)

    it("rejects invalid base64 in a response", function()
      local v, err = core.decode_value '{"B":"not base64!"}'
      assert.is_nil(v)
      assert.matches("not valid base64", err)
    end)
  end)

  describe("BOOL and NULL", function()
    it("round-trip", function()
      assert.are.same({ BOOL = true }, av(true))
      assert.are.same({ BOOL = false }, av(false))
      assert.are.equal(true, (roundtrip(true)))
      assert.are.equal(false, (roundtrip(false)))
      assert.are.same({ NULL = true }, av(core.null))
      assert.are.equal(core.null, (roundtrip(core.null)))
    end)

    it("core.null is the same value as cjson.null", function()
      assert.are.equal(cjson.null, core.null)
      assert.are.same({ NULL = true }, av(cjson.null))
    end)
  end)

  describe("maps (M) and lists (L)", function()
    it("round-trip nested documents", function()
      local doc = { name = "x", tags = { "a", "b" }, inner = { n = 1, deep = { ok = true } },
                    mixed = { 1, "two", { three = 3 }, core.null, core.binary "\0" } }
      local back = roundtrip(doc)
      assert.are.equal("x", back.name)
      assert.are.same({ "a", "b" }, { back.tags[1], back.tags[2] })
      assert.is_true(core.is_list(back.tags))
      assert.are.equal(true, back.inner.deep.ok)
      assert.are.equal(3, back.mixed[3].three)
      assert.are.equal(core.null, back.mixed[4])
      assert.are.equal(core.binary "\0", back.mixed[5])
      assert.are.equal(5, #back.mixed)
    end)

    it("writes the empty table as an empty map, core.list() as an empty list", function()
      assert.are.same({ M = {} }, av({}))
      assert.are.equal('{"L":[]}', core.encode_value(core.list()))
      assert.are.equal('{"M":{}}', core.encode_value({}))
      local t = {}
      assert.are.equal(t, core.list(t))
      assert.is_true(core.is_list(t))
      assert.is_false(core.is_list({}))
      assert.is_true(core.is_list(core.list { 1, 2 }))
    end)

    it("decodes an empty L as a list so it round-trips as L", function()
      local l = core.decode_value '{"L":[]}'
      assert.is_true(core.is_list(l))
      assert.are.equal('{"L":[]}', core.encode_value(l))
      local m = core.decode_value '{"M":{}}'
      assert.is_false(core.is_list(m))
      assert.are.equal('{"M":{}}', core.encode_value(m))
    end)

    it("rejects mixed keys, holes, non-integer and non-string keys, naming the path", function()
      local cases = {
        { { Item = { t = { 1, 2, x = 3 } } }, "^Item%.t: table mixes" },
        { { Item = { t = { [1] = 1, [3] = 3 } } }, "^Item%.t: array has holes" },
        { { Item = { t = { [1.5] = 1 } } }, "^Item%.t: table has a non%-integer key 1%.5" },
        { { Item = { t = { [true] = 1 } } }, "^Item%.t: table has a boolean key" },
        { { Item = { t = { a = 1, [7] = 2 } } }, "^Item%.t: table mixes" },
        { { Item = { t = core.list { a = 1 } } }, "^Item%.t: a core.list table has the string key" },
        { { Item = { 1, 2 } }, "^Item: expected a table of attribute name %-> value, got an array" },
        { { [1] = "x", y = 2 }, "^params: table mixes" },
      }
      for _, c in ipairs(cases) do
        local json, err = core.encode_request(c[1])
        assert.is_nil(json)
        assert.matches(c[2], err)
      end
    end)

    it("allows exactly 32 levels of nesting and refuses 33 with a clear message", function()
      assert.are.equal(32, core.limits.max_depth)
      assert.is_string(core.encode_value(nested(32)))
      local json, err = core.encode_value(nested(33))
      assert.is_nil(json)
      assert.matches("nesting deeper than 32 levels %(DynamoDB's limit", err)
      assert.is_string(core.encode_request { Item = { doc = nested(32) } })
      local _, err2 = core.encode_request { Item = { doc = nested(33) } }
      assert.matches("^Item%.doc%.a%.a.*: nesting deeper than 32 levels", err2)
      -- lists count too
      local l = "x"
      for _ = 1, 33 do l = { l } end
      assert.is_nil(core.encode_value(l))
      -- and the decoder accepts what the encoder writes
      local back = core.decode_value(core.encode_value(nested(32)))
      local depth = 0
      while back do depth = depth + 1; back = back.a end
      assert.are.equal(32, depth)
    end)

    it("stops on cyclic tables with an error, in values and in plain parts", function()
      local c = {}
      c.self = c
      local json, err = core.encode_request { Item = { c = c } }
      assert.is_nil(json)
      assert.matches("nesting deeper than 32 levels", err)
      local p = {}
      p.next = p
      json, err = core.encode_request { TableName = "t", Extra = p }
      assert.is_nil(json)
      assert.matches("cyclic table", err)
      local l = core.list()
      l[1] = l
      assert.is_nil(core.encode_value(l))
      assert.is_nil(core.item_size { c = c })
    end)

    it("guards the decoder against absurd depth", function()
      local deep = string.rep('{"M":{"a":', 200) .. '{"S":"x"}' .. string.rep("}}", 200)
      local v, err = core.decode_value(deep)
      assert.is_nil(v)
      assert.matches("nesting deeper than", err)
      local plain = string.rep("[", 5000) .. string.rep("]", 5000)
      v, err = core.decode_response(plain)
      assert.is_nil(v)
      assert.is_string(err)
      plain = '{"a":' .. string.rep("[", 150) .. string.rep("]", 150) .. "}"
      v, err = core.decode_response(plain)
      assert.is_nil(v)
      assert.matches("nesting deeper than 100 levels", err)
    end)
  end)

  describe("sets (SS, NS, BS)", function()
    it("round-trip with their kind", function()
      local ss = roundtrip(core.set("SS", { "a", "b", "" }))
      assert.is_true(core.is_set(ss))
      assert.are.equal("SS", ss.kind)
      assert.are.same({ "a", "b", "" }, { ss[1], ss[2], ss[3] })

      local ns = roundtrip(core.set("NS", { 1, 2.5, core.number "12345678901234567890123456789012345678" }))
      assert.are.equal("NS", ns.kind)
      assert.are.equal(1, ns[1])
      assert.are.equal(2.5, ns[2])
      assert.are.equal("12345678901234567890123456789012345678", tostring(ns[3]))

      local bs = roundtrip(core.set("BS", { core.binary "\0", core.binary "\1\2" }))
      assert.are.equal("BS", bs.kind)
      assert.are.equal(core.binary "\0", bs[1])
      assert.are.equal(core.binary "\1\2", bs[2])

      assert.are.same({ SS = { "a", "b" } }, av(core.set("SS", { "a", "b" })))
      assert.are.same({ NS = { "1", "0.5" } }, av(core.set("NS", { 1, 0.5 })))
      assert.are.same({ BS = { "AA==", "YWI=" } }, av(core.set("BS", { core.binary "\0", "ab" })))
    end)

    it("refuses empty sets, naming the path", function()
      local json, err = core.encode_request { Item = { tags = { "x", "y", core.set("SS", {}) } } }
      assert.is_nil(json)
      assert.are.equal("Item.tags[3]: empty sets cannot be stored in DynamoDB", err)
      assert.is_nil(core.encode_value(core.set("NS")))
    end)

    it("refuses duplicate members (numbers compare by value)", function()
      local _, err = core.encode_value(core.set("SS", { "a", "b", "a" }))
      assert.matches('duplicate member "a"', err)
      _, err = core.encode_value(core.set("NS", { 1, core.number "1.0" }))
      assert.matches("duplicate member 1 ", err)
      _, err = core.encode_value(core.set("BS", { core.binary "\0", "\0" }))
      assert.matches("duplicate binary member", err)
      local many = {}
      for i = 1, 100 do many[i] = tostring(i) end
      assert.is_string(core.encode_value(core.set("SS", many)))
      many[101] = "50"
      assert.is_nil(core.encode_value(core.set("SS", many)))
    end)

    it("refuses members of the wrong type", function()
      assert.is_nil(core.encode_value(core.set("SS", { 1 })))
      assert.is_nil(core.encode_value(core.set("NS", { "1" })))
      assert.is_nil(core.encode_value(core.set("BS", { 1 })))
      assert.is_nil(core.encode_value(core.set("SS", { "\255" })))
    end)

    it("are only allowed inside AttributeValues", function()
      local json, err = core.encode_request { TableName = core.set("SS", { "a" }) }
      assert.is_nil(json)
      assert.matches("^TableName: sets can only be stored inside AttributeValues", err)
    end)
  end)

  describe("values DynamoDB cannot store", function()
    it("give nil and a message naming the path and the type", function()
      local co = coroutine.create(function() end)
      for _, c in ipairs { { print, "function" }, { co, "thread" }, { io.stdout, "userdata" } } do
        local json, err = core.encode_request { Item = { bad = c[1] } }
        assert.is_nil(json)
        assert.are.equal("Item.bad: a " .. c[2] .. " value cannot be stored in DynamoDB", err)
      end
      local json, err = core.encode_request { TableName = print }
      assert.is_nil(json)
      assert.matches("^TableName: a function value cannot be encoded as JSON", err)
    end)

    it("quote awkward attribute names in the path", function()
      local _, err = core.encode_request { ExpressionAttributeValues = { [":v"] = 0 / 0 } }
      assert.matches('^ExpressionAttributeValues%[":v"%]: NaN', err)
    end)
  end)

  describe("encode_request", function()
    it("encodes a PutItem request: AV fields marshalled, the rest plain", function()
      local json = assert(core.encode_request {
        TableName = "events",
        Item = { stream = "account#1", version = 3, type = "Deposited",
                 payload = core.binary '{"amount":5}', meta = { ts = 1700000000123 } },
        ConditionExpression = "attribute_not_exists(#v)",
        ExpressionAttributeNames = { ["#v"] = "version" },
        ExpressionAttributeValues = { [":one"] = 1 },
        ReturnValuesOnConditionCheckFailure = "ALL_OLD",
      })
      assert.are.same({
        TableName = "events",
        Item = { stream = { S = "account#1" }, version = { N = "3" }, type = { S = "Deposited" },
                 payload = { B = "eyJhbW91bnQiOjV9" }, meta = { M = { ts = { N = "1700000000123" } } } },
        ConditionExpression = "attribute_not_exists(#v)",
        ExpressionAttributeNames = { ["#v"] = "version" },
        ExpressionAttributeValues = { [":one"] = { N = "1" } },
        ReturnValuesOnConditionCheckFailure = "ALL_OLD",
      }, wire(json))
    end)

    it("keeps plain numbers as JSON integers and plain tables as arrays or objects", function()
      local json = assert(core.encode_request { TableName = "t", Limit = 10, Segment = 0,
                                                TotalSegments = 4, Ratio = 0.5,
                                                AttributesToGet = { "a", "b" }, Empty = {},
                                                EmptyList = core.list(), Flag = true, Nothing = core.null })
      local w = wire(json)
      assert.matches('"Limit":10[,}]', json)
      assert.are.equal(0.5, w.Ratio)
      assert.are.same({ "a", "b" }, w.AttributesToGet)
      assert.matches('"Empty":{}', json)
      assert.matches('"EmptyList":%[%]', json)
      assert.are.equal(cjson.null, w.Nothing)
    end)

    it("encodes a Query request with ExclusiveStartKey", function()
      local w = wire(assert(core.encode_request {
        TableName = "events", KeyConditionExpression = "#s = :s AND #v > :v",
        ExpressionAttributeValues = { [":s"] = "account#1", [":v"] = 10 },
        ExclusiveStartKey = { stream = "account#1", version = 10 }, ScanIndexForward = true,
      }))
      assert.are.same({ [":s"] = { S = "account#1" }, [":v"] = { N = "10" } }, w.ExpressionAttributeValues)
      assert.are.same({ stream = { S = "account#1" }, version = { N = "10" } }, w.ExclusiveStartKey)
      assert.are.equal(true, w.ScanIndexForward)
    end)

    it("finds AV fields at any depth: BatchWriteItem, BatchGetItem, TransactWriteItems", function()
      local w = wire(assert(core.encode_request {
        RequestItems = {
          events = { { PutRequest = { Item = { id = "a", n = 1 } } },
                     { DeleteRequest = { Key = { id = "b" } } } },
          -- a table named like an AV field is still just a table name
          Item = { { PutRequest = { Item = { id = "c" } } } },
        },
      }))
      assert.are.same({ id = { S = "a" }, n = { N = "1" } }, w.RequestItems.events[1].PutRequest.Item)
      assert.are.same({ id = { S = "b" } }, w.RequestItems.events[2].DeleteRequest.Key)
      assert.are.same({ id = { S = "c" } }, w.RequestItems.Item[1].PutRequest.Item)

      w = wire(assert(core.encode_request {
        RequestItems = { events = { Keys = { { id = "a" }, { id = "b" } }, ConsistentRead = true,
                                    ProjectionExpression = "id" } },
      }))
      assert.are.same({ { id = { S = "a" } }, { id = { S = "b" } } }, w.RequestItems.events.Keys)

      w = wire(assert(core.encode_request {
        TransactItems = {
          { Put = { TableName = "e", Item = { id = "x", v = 2 },
                    ConditionExpression = "attribute_not_exists(id)" } },
          { Update = { TableName = "s", Key = { id = "x" }, UpdateExpression = "SET b = :b",
                       ExpressionAttributeValues = { [":b"] = core.set("NS", { 1, 2 }) } } },
          { ConditionCheck = { TableName = "s", Key = { id = "y" }, ConditionExpression = "x" } },
        },
        ClientRequestToken = "tok",
      }))
      assert.are.same({ id = { S = "x" }, v = { N = "2" } }, w.TransactItems[1].Put.Item)
      assert.are.same({ id = { S = "x" } }, w.TransactItems[2].Update.Key)
      assert.are.same({ NS = { "1", "2" } }, w.TransactItems[2].Update.ExpressionAttributeValues[":b"])
      assert.are.same({ id = { S = "y" } }, w.TransactItems[3].ConditionCheck.Key)
    end)

    it("leaves fields with AV names alone when they hold scalars (TagResource Key)", function()
      local w = wire(assert(core.encode_request {
        ResourceArn = "arn", Tags = { { Key = "env", Value = "prod" } } }))
      assert.are.same({ { Key = "env", Value = "prod" } }, w.Tags)
    end)

    it("marshals PartiQL Parameters as a list of AttributeValues", function()
      local w = wire(assert(core.encode_request {
        Statement = "SELECT * FROM t WHERE id = ? AND n = ?", Parameters = { "a", 1 } }))
      assert.are.same({ { S = "a" }, { N = "1" } }, w.Parameters)
    end)

    it("raises on a wrong argument type", function()
      assert.has_error(function() core.encode_request("x") end)
      assert.has_error(function() core.encode_request(nil) end)
      assert.has_error(function() core.encode_request() end)
      assert.has_error(function() core.encode_value() end)
      assert.has_error(function() core.item_size("x") end)
      assert.has_error(function() core.decode_response(nil) end)
      assert.has_error(function() core.decode_response({}) end)
      assert.has_error(function() core.decode_value(5) end)
      assert.has_error(function() core.binary(5) end)
      assert.has_error(function() core.bytes({}) end)
      assert.has_error(function() core.set("XS", {}) end)
      assert.has_error(function() core.set("SS", "a") end)
      assert.has_error(function() core.list("a") end)
    end)
  end)

  describe("JSON text", function()
    it("escapes strings exactly as jansson's compact dump did", function()
      local all = {}
      for c = 0, 127 do all[#all + 1] = string.char(c) end
      local s = table.concat(all)
      local want = '"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000B\\f\\r\\u000E\\u000F'
        .. '\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001A\\u001B\\u001C\\u001D\\u001E\\u001F'
        .. ' !\\"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\127"'
      assert.are.equal('{"T":' .. want .. "}", core.encode_request{ T = s })
      assert.are.equal('{"T":"\195\169\240\159\152\128"}', core.encode_request{ T = "\195\169\240\159\152\128" })
    end)

    it("round-trips long strings with escapes anywhere", function()
      local base = string.rep("abcdefgh", 40)
      for _, pos in ipairs{ 1, 7, 8, 9, 100, 319, 320 } do
        for _, c in ipairs{ '"', "\\", "\n", "\0", "\31", "\195\169" } do
          local s = base:sub(1, pos - 1) .. c .. base:sub(pos)
          local body = core.encode_request{ Item = { s = s } }
          assert.are.equal(s, core.decode_response(body).Item.s)
          assert.are.equal(s, core.decode_value(core.encode_value(s)))
        end
      end
    end)

    it("writes plain numbers as integers when they are, else as jansson did", function()
      assert.are.equal('{"Limit":25}', core.encode_request{ Limit = 25 })
      assert.are.equal('{"X":-3}', core.encode_request{ X = -3 })
      assert.are.equal('{"X":0.5}', core.encode_request{ X = 0.5 })
    end)
  end)

  describe("decode_response", function()
    it("decodes a Query response: Items, LastEvaluatedKey, plain fields", function()
      local r = assert(core.decode_response [[{"Count":2,"ScannedCount":2,
        "Items":[{"stream":{"S":"account#1"},"version":{"N":"1"},"type":{"S":"Opened"},
                  "payload":{"B":"eyJvd25lciI6ImFubiJ9"}},
                 {"stream":{"S":"account#1"},"version":{"N":"2"},"tags":{"SS":["x"]},
                  "doc":{"M":{"l":{"L":[{"N":"1"},{"NULL":true},{"BOOL":false}]}}}}],
        "LastEvaluatedKey":{"stream":{"S":"account#1"},"version":{"N":"2"}},
        "ConsumedCapacity":{"TableName":"events","CapacityUnits":0.5}}]])
      assert.are.equal(2, r.Count)
      assert.is_true(core.is_list(r.Items))
      assert.are.equal(2, #r.Items)
      assert.are.equal("account#1", r.Items[1].stream)
      assert.are.equal(1, r.Items[1].version)
      assert.are.equal('{"owner":"ann"}', core.bytes(r.Items[1].payload))
      assert.are.equal("x", r.Items[2].tags[1])
      assert.are.equal(core.null, r.Items[2].doc.l[2])
      assert.are.equal(false, r.Items[2].doc.l[3])
      assert.are.same({ stream = "account#1", version = 2 }, r.LastEvaluatedKey)
      assert.are.equal(0.5, r.ConsumedCapacity.CapacityUnits)
      -- LastEvaluatedKey goes straight back as ExclusiveStartKey
      local w = wire(assert(core.encode_request { TableName = "events", ExclusiveStartKey = r.LastEvaluatedKey }))
      assert.are.same({ stream = { S = "account#1" }, version = { N = "2" } }, w.ExclusiveStartKey)
    end)

    it("decodes GetItem with and without an item", function()
      assert.are.same({}, core.decode_response "{}")
      local r = assert(core.decode_response '{"Item":{"id":{"S":"a"},"e":{"S":""}}}')
      assert.are.same({ id = "a", e = "" }, r.Item)
    end)

    it("turns BatchWriteItem UnprocessedItems back into a request that can be resubmitted", function()
      local text = '{"UnprocessedItems":{"events":[{"PutRequest":{"Item":{"id":{"S":"a"},"n":{"N":"1"},' ..
                   '"s":{"NS":["1","2"]},"b":{"B":"AAE="}}}},{"DeleteRequest":{"Key":{"id":{"S":"b"}}}}]},' ..
                   '"ItemCollectionMetrics":{"events":[{"ItemCollectionKey":{"id":{"S":"a"}},' ..
                   '"SizeEstimateRangeGB":[0.0,1.0]}]}}'
      local r = assert(core.decode_response(text))
      local put = r.UnprocessedItems.events[1].PutRequest.Item
      assert.are.equal("a", put.id)
      assert.are.equal("NS", put.s.kind)
      assert.are.equal(core.binary "\0\1", put.b)
      assert.are.equal("b", r.UnprocessedItems.events[2].DeleteRequest.Key.id)
      assert.are.same({ id = "a" }, r.ItemCollectionMetrics.events[1].ItemCollectionKey)
      local again = wire(assert(core.encode_request { RequestItems = r.UnprocessedItems }))
      assert.are.same(wire(text).UnprocessedItems, again.RequestItems)
    end)

    it("decodes BatchGetItem Responses and UnprocessedKeys", function()
      local text = '{"Responses":{"events":[{"id":{"S":"a"}},{"id":{"S":"b"},"v":{"N":"3"}}],' ..
                   '"Items":[{"id":{"S":"t"}}]},' ..
                   '"UnprocessedKeys":{"events":{"Keys":[{"id":{"S":"c"}}],"ConsistentRead":true}}}'
      local r = assert(core.decode_response(text))
      assert.are.equal("a", r.Responses.events[1].id)
      assert.are.equal(3, r.Responses.events[2].v)
      -- a table called "Items" is a table name here, not the Items field
      assert.are.equal("t", r.Responses.Items[1].id)
      assert.are.equal("c", r.UnprocessedKeys.events.Keys[1].id)
      assert.are.equal(true, r.UnprocessedKeys.events.ConsistentRead)
      local again = wire(assert(core.encode_request { RequestItems = r.UnprocessedKeys }))
      assert.are.same(wire(text).UnprocessedKeys, again.RequestItems)
    end)

    it("decodes TransactGetItems Responses as a list", function()
      local r = assert(core.decode_response '{"Responses":[{"Item":{"id":{"S":"a"}}},{}]}')
      assert.are.equal("a", r.Responses[1].Item.id)
      assert.is_nil(r.Responses[2].Item)
    end)

    it("decodes a TransactionCanceledException with CancellationReasons", function()
      local r = assert(core.decode_response [[{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [ConditionalCheckFailed, None]",
        "CancellationReasons":[{"Code":"ConditionalCheckFailed","Message":"The conditional request failed",
                                "Item":{"id":{"S":"a"},"version":{"N":"7"}}},{"Code":"None"}]}]])
      assert.are.equal("ConditionalCheckFailed", r.CancellationReasons[1].Code)
      assert.are.same({ id = "a", version = 7 }, r.CancellationReasons[1].Item)
      assert.are.equal("None", r.CancellationReasons[2].Code)
    end)

    it("decodes a Streams GetRecords response", function()
      local r = assert(core.decode_response [[{"NextShardIterator":"it-2","Records":[
        {"eventID":"1","eventName":"INSERT","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"us-east-1",
         "dynamodb":{"ApproximateCreationDateTime":1.7e9,"Keys":{"stream":{"S":"account#1"},"version":{"N":"1"}},
                     "NewImage":{"stream":{"S":"account#1"},"version":{"N":"1"},"type":{"S":"Opened"}},
                     "SequenceNumber":"100000000000000000001","SizeBytes":40,"StreamViewType":"NEW_AND_OLD_IMAGES"}},
        {"eventID":"2","eventName":"MODIFY","dynamodb":{"Keys":{"id":{"S":"x"}},
                     "OldImage":{"id":{"S":"x"},"n":{"N":"1"}},"NewImage":{"id":{"S":"x"},"n":{"N":"2"}},
                     "SequenceNumber":"200"}}]}]])
      assert.are.equal("it-2", r.NextShardIterator)
      local d = r.Records[1].dynamodb
      assert.are.same({ stream = "account#1", version = 1 }, d.Keys)
      assert.are.equal("Opened", d.NewImage.type)
      assert.are.equal("100000000000000000001", d.SequenceNumber)
      assert.are.equal(1.7e9, d.ApproximateCreationDateTime)
      assert.are.equal(1, r.Records[2].dynamodb.OldImage.n)
      assert.are.equal(2, r.Records[2].dynamodb.NewImage.n)
    end)

    it("decodes plain arrays as lists and null as core.null", function()
      local r = assert(core.decode_response '{"TableNames":["a","b"],"Empty":[],"X":null}')
      assert.is_true(core.is_list(r.TableNames))
      assert.is_true(core.is_list(r.Empty))
      assert.are.equal(core.null, r.X)
      assert.matches('"Empty":%[%]', core.encode_request(r))
    end)

    it("returns nil and a message for malformed JSON", function()
      local cases = {
        { '{"Items":[{"id":{"S":"a"', "malformed JSON at line 1, column %d+" },
        { "not json at all", "malformed JSON at line 1, column %d+" },
        { "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>",
          'malformed JSON.*the text begins: "<html> <head><title>502 Bad Gateway' },
        { "", "malformed JSON: the text is empty" },
        { '{"a":1} trailing', "malformed JSON" },
      }
      for _, c in ipairs(cases) do
        local r, err = core.decode_response(c[1])
        assert.is_nil(r)
        assert.matches(c[2], err)
      end
      local _, err = core.decode_response(string.rep("x", 500))
      assert.is_true(#err < 300)
      assert.matches('%.%.%."$', err)
    end)

    it("parses JSON: numbers, escapes, surrogates, whitespace", function()
      local r = assert(core.decode_response(
        ' \r\n\t{"a" : [ 1 , -0.5e2 , 1E+2, 123456789012345678901234 ] ,"s":"x\\"y\\\\z\\/\\b\\f\\n\\r\\t",'
        .. '"u":"\\u00e9\\u20AC\\ud83d\\ude00\\u0000!","t":true,"f":false,"n":null} '))
      assert.are.same({ 1, -50, 100, 123456789012345678901234 }, { r.a[1], r.a[2], r.a[3], r.a[4] })
      assert.are.equal('x"y\\z/\b\f\n\r\t', r.s)
      assert.are.equal("\195\169\226\130\172\240\159\152\128\0!", r.u)
      assert.is_true(r.t)
      assert.is_false(r.f)
      assert.are.equal(core.null, r.n)
      assert.is_true(core.is_list(assert(core.decode_response("[]"))))
    end)

    it("refuses what jansson refused", function()
      local bad = {
        '"x"', "1", "   ", '{"a":01}', '{"a":1.}', '{"a":.5}', '{"a":2e}', '{"a":-}', '{"a":1e400}',
        '{"a":"\\ud800"}', '{"a":"\\udc00"}', '{"a":"\\u12"}', '{"a":"\\x"}', '{"a":"\1"}',
        '{"a":"\237\160\128"}', '{"a":"\192\128"}', '{"a":"\255"}', '{"a":tru}', '{"a":1,}', '[1,]',
        '{a:1}', '{"a" 1}', '{"a":1}}', '{"a":"x', string.rep("[", 3000) .. string.rep("]", 3000),
      }
      for _, text in ipairs(bad) do
        local r, err = core.decode_response(text)
        assert.is_nil(r, text)
        assert.matches("^malformed JSON", err)
      end
    end)

    it("lets the last of repeated keys win, also for an AttributeValue's type", function()
      local r = assert(core.decode_response '{"a":1,"a":2,"Item":{"x":{"S":"1","S":"2"}}}')
      assert.are.equal(2, r.a)
      assert.are.equal("2", r.Item.x)
    end)

    it("round-trips NUL bytes in keys and values", function()
      local item = { ["a\0b"] = "v\0w", ["\0"] = { ["x\0"] = core.list { "\0", core.binary "\0" } } }
      local json = assert(core.encode_request { Item = item })
      assert.matches('"a\\u0000b":{"S":"v\\u0000w"}', json, 1, true)
      local r = assert(core.decode_response(json))
      assert.are.same(item, r.Item)
      assert.are.equal("v\0w", r.Item["a\0b"])
      assert.are.equal(core.binary "\0", r.Item["\0"]["x\0"][2])
      -- decode_value, keys of M values
      local v = assert(core.decode_value(assert(core.encode_value { ["k\0"] = "v\0" })))
      assert.are.equal("v\0", v["k\0"])
      assert.are.same(item, roundtrip(item))
      -- plain JSON keys too, written by hand
      r = assert(core.decode_response '{"P\\u0000":{"q\\u0000r":"s\\u0000"},"Item":{"a\\u0000b":{"S":"v\\u0000w"}}}')
      assert.are.equal("s\0", r["P\0"]["q\0r"])
      assert.are.equal("v\0w", r.Item["a\0b"])
      -- item_size counts them as bytes
      assert.are.equal(#"a\0b" + #"v\0w", core.item_size { ["a\0b"] = "v\0w" })
      -- an error path shows them escaped
      local _, err = core.decode_response '{"Item":{"a\\u0000":{"S":1}}}'
      assert.are.equal('Item["a\\x00"]: an S value must be a string', err)
    end)

    it("refuses lone UTF-16 surrogate escapes (yajl would turn them into other text)", function()
      for _, text in ipairs {
        '{"a":"\\ud800x"}', '{"a":"x\\ud800"}', '{"a":"\\ud800\\u0041"}', '{"a":"\\udfff"}',
        '{"a":"\\ud800\\ud800"}', '{"\\ud800":1}', '{"Item":{"a":{"S":"\\ud83d"}}}',
      } do
        local r, err = core.decode_response(text)
        assert.is_nil(r, text)
        assert.matches("^malformed JSON at line 1, column %d+ %(a \\u escape is half of a UTF%-16 surrogate pair%)", err)
      end
      -- pairs are fine, and so is an escaped backslash before "ud800"
      local r = assert(core.decode_response '{"a":"\\uD83D\\uDE00 \\\\ud800 \\"\\ud83d\\ude00"}')
      assert.are.equal("\240\159\152\128 \\ud800 \"\240\159\152\128", r.a)
    end)

    it("says where malformed JSON is: line, column, the text around it", function()
      local _, err = core.decode_response '{\n  "a": 1,\n  "b": tru\n}'
      assert.matches("^malformed JSON at line 3, column %d+ %(.+%); the text begins: \"{   \"a\"", err)
      -- deep in a long text: the excerpt around the error comes first
      local long = '{"Items":[' .. string.rep('{"id":{"S":"x"}},', 50) .. '{"id":{"S":"x"}}}]}'
      _, err = core.decode_response(long)
      assert.matches('^malformed JSON at line 1, column %d+ %(.-%) near "%.%.%..*%}%]%}"; the text begins: "{"Items"', err)
      assert.is_true(#err < 400)
      -- premature end
      _, err = core.decode_response '{"Item":{"a":{"S":"x"}'
      assert.matches("^malformed JSON at line 1, column 23 %(.*EOF", err)
      -- columns count characters, not bytes
      _, err = core.decode_response '["\195\169\195\169", x]'
      assert.matches("^malformed JSON at line 1, column 9 ", err)
    end)

    it("reports malformed JSON before a value error, wherever it is", function()
      local r, err = core.decode_response '{"Item":{"a":"x"}} trailing'
      assert.is_nil(r)
      assert.matches("^malformed JSON", err)
      r, err = core.decode_response('{"Item":{"a":{"S":1}},"b":' .. string.rep("[", 3000) .. string.rep("]", 3000) .. "}")
      assert.is_nil(r)
      assert.matches("^malformed JSON at .*nesting deeper than 2048 levels", err)
      r, err = core.decode_response '{"Item":{"a":{"S":1}},"b":1e999}'
      assert.is_nil(r)
      assert.matches("^malformed JSON at .*number beyond a double's range", err)
      -- and a value error when the text is fine
      r, err = core.decode_response '{"Item":{"a":{"S":1}},"b":[[[]]]}'
      assert.is_nil(r)
      assert.are.equal("Item.a: an S value must be a string", err)
    end)

    it("keeps full precision: N text as is, plain numbers as doubles", function()
      local r = assert(core.decode_response('{"Item":{"n":{"N":"-1234567890123456789012345678901234567.8"}},'
        .. '"p":12345678901234567890,"q":-0,"t":1e-400,"u":0.1,"v":-12.5e3}'))
      assert.is_true(core.is_number(r.Item.n))
      assert.are.equal("-1234567890123456789012345678901234567.8", tostring(r.Item.n))
      assert.are.equal(12345678901234567890, r.p)
      assert.are.equal(0, r.q)
      assert.are.equal(-math.huge, 1 / r.q)
      assert.are.equal(0, r.t)
      assert.are.equal(0.1, r.u)
      assert.are.equal(-12500, r.v)
      -- a number is never an N value
      local _, err = core.decode_value '{"N":5}'
      assert.are.equal("value: an N value must be a string", err)
    end)

    it("decodes NULL whatever its value, and keys with escapes", function()
      assert.are.equal(core.null, core.decode_value '{"NULL":true}')
      assert.are.equal(core.null, core.decode_value '{"NULL":{"x":[1,{"y":null}]}}')
      local r = assert(core.decode_response '{"Item":{"a\\"b\\\\":{"NULL":[[]]},"c":{"S":"d"}},"x\\ty":[]}')
      assert.are.equal(core.null, r.Item['a"b\\'])
      assert.are.equal("d", r.Item.c)
      assert.is_true(core.is_list(r["x\ty"]))
    end)

    it("builds the path of an error only from where it is", function()
      local text = '{"Records":[{"dynamodb":{"NewImage":{"ok":{"S":"x"}}}},'
        .. '{"dynamodb":{"Keys":{"id":{"S":"a"}},"NewImage":{"my attr":{"L":[{"N":"1"},{"SS":["a",2]}]}}}}]}'
      local _, err = core.decode_response(text)
      assert.are.equal('Records[2].dynamodb.NewImage["my attr"][2][2]: SS members must be strings', err)
      _, err = core.decode_value '{"M":{"a":{"L":[{"BOOL":true},{}]}}}'
      assert.are.equal("value.a[2]: expected an AttributeValue (an object with one type key, e.g. {\"S\":\"x\"})", err)
      _, err = core.decode_value '{"M":{"a":{"Q":1}}}'
      assert.are.equal('value.a: unknown AttributeValue type "Q"', err)
      _, err = core.decode_response '{"Responses":{"t":[{"a":{"S":"x"}},["x"]]}}'
      assert.are.equal("Responses.t[2]: expected an object of attribute name -> value", err)
    end)

    it("frees the parser when a Lua error interrupts the decoding (a failing __gc)", function()
      -- LuaJIT passes on an error raised by a finalizer from the allocation
      -- that ran it: here from inside yajl's callbacks. Under ASan, a leaked
      -- parser would be reported when the process ends.
      local recs = {}
      for i = 1, 2000 do
        recs[i] = string.format('{"dynamodb":{"Keys":{"id":{"S":"k%d"}},"NewImage":{"id":{"S":"k%d"},'
          .. '"n":{"N":"%d"},"l":{"L":[{"S":"a"},{"N":"1.5"}]}}}}', i, i, i)
      end
      local text = '{"Records":[' .. table.concat(recs, ",") .. "]}"
      local armed, raised, decoded = true, 0, 0
      local function attempt()
        local p = newproxy(true)
        getmetatable(p).__gc = function() if armed then error("boom from __gc") end end
        p = nil
        local r = core.decode_response(text)
        decoded = decoded + 1
        assert(#r.Records == 2000)
      end
      -- Interpreted only: an error thrown by a finalizer that runs inside a
      -- compiled trace is beyond what LuaJIT handles.
      jit.off()
      jit.flush()
      local last_err
      -- whatever allocates between the attempts is inside pcall too
      pcall(function()
        for _ = 1, 60 do
          local ok, err = pcall(attempt)
          if not ok then
            raised = raised + 1
            last_err = err
          end
        end
      end)
      armed = false
      collectgarbage()
      jit.on()
      assert.matches("boom from __gc", last_err)
      assert.is_true(raised > 0)
      assert.is_true(decoded > 0)
      assert.are.equal(2000, #assert(core.decode_response(text)).Records)
    end)

    it("decodes large responses: many items, long strings, big sets", function()
      local items, want = {}, {}
      for i = 1, 3000 do
        want[i] = { id = "id-" .. i, n = i, s = string.rep("x", i % 50), ns = core.set("NS", { i, i + 1 }) }
        items[i] = string.format('{"id":{"S":"id-%d"},"n":{"N":"%d"},"s":{"S":"%s"},"ns":{"NS":["%d","%d"]}}',
                                 i, i, string.rep("x", i % 50), i, i + 1)
      end
      local r = assert(core.decode_response('{"Count":3000,"Items":[' .. table.concat(items, ",") .. "]}"))
      assert.are.equal(3000, #r.Items)
      for i = 1, 3000, 97 do
        assert.are.same(want[i], r.Items[i])
        assert.is_true(core.is_set(r.Items[i].ns))
      end
      local big = string.rep("\195\169", 300000)
      r = assert(core.decode_value(assert(core.encode_value { b = big, l = core.list { big } })))
      assert.are.equal(big, r.b)
      assert.are.equal(big, r.l[1])
    end)

    it("returns nil and a message for malformed AttributeValues", function()
      local cases = {
        { '{"Item":{"a":{"Q":"x"}}}', '^Item%.a: unknown AttributeValue type "Q"' },
        { '{"Item":{"a":{"S":"x","N":"1"}}}', "^Item%.a: expected an AttributeValue" },
        { '{"Item":{"a":"x"}}', "^Item%.a: expected an AttributeValue" },
        { '{"Item":{"a":{"S":1}}}', "^Item%.a: an S value must be a string" },
        { '{"Items":[{"a":{"L":[{"N":"1"},{"BOOL":"yes"}]}}]}', "^Items%[1%]%.a%[2%]: a BOOL value must be true or false" },
        { '{"Items":["x"]}', "^Items%[1%]: expected an object" },
        { '{"Item":{"a":{"NS":["1","x"]}}}', '^Item%.a%[2%]: "x" is not a valid DynamoDB number' },
      }
      for _, c in ipairs(cases) do
        local r, err = core.decode_response(c[1])
        assert.is_nil(r, c[1])
        assert.matches(c[2], err)
      end
    end)

    it("keeps NUL bytes in strings", function()
      local r = assert(core.decode_response '{"Item":{"a":{"S":"x\\u0000y"}},"P":"p\\u0000q"}')
      assert.are.equal("x\0y", r.Item.a)
      assert.are.equal("p\0q", r.P)
      assert.matches('"x\\u0000y"', core.encode_request(r))
    end)
  end)

  describe("item_size", function()
    it("counts names and values by DynamoDB's rules", function()
      assert.are.equal(2 + 3, core.item_size { id = "abc" })
      assert.are.equal(0, core.item_size {})
      -- strings count UTF-8 bytes, names too
      assert.are.equal(2 + 4, core.item_size { ["\195\169"] = "\240\159\152\128" })
      assert.are.equal(1 + 0, core.item_size { e = "" })
      -- numbers: ceil(significant digits / 2) + 1, + 1 when negative
      assert.are.equal(1 + 2, core.item_size { n = 5 })
      assert.are.equal(1 + 2, core.item_size { n = 12 })
      assert.are.equal(1 + 3, core.item_size { n = 123 })
      assert.are.equal(1 + 2, core.item_size { n = 1000000 })
      assert.are.equal(1 + 4, core.item_size { n = -12.34 })
      assert.are.equal(1 + 1, core.item_size { n = 0 })
      assert.are.equal(1 + 20, core.item_size { n = core.number "12345678901234567890123456789012345678" })
      -- binary counts raw bytes; bool and null 1
      assert.are.equal(1 + 3, core.item_size { b = core.binary "\0\1\2" })
      assert.are.equal(1 + 1 + 1 + 1, core.item_size { t = true, z = core.null })
      -- lists and maps: 3 + 1 per element + elements (map elements include their names)
      assert.are.equal(1 + 3, core.item_size { l = core.list() })
      assert.are.equal(1 + 3, core.item_size { m = {} })
      assert.are.equal(1 + 3 + (1 + 1) + (1 + 2), core.item_size { l = { "a", 1 } })
      assert.are.equal(1 + 3 + (1 + 2 + 1), core.item_size { m = { ab = "c" } })
      -- sets: the sum of their members
      assert.are.equal(2 + 3, core.item_size { ss = core.set("SS", { "a", "bc" }) })
      assert.are.equal(2 + 2 + 2, core.item_size { ns = core.set("NS", { 1, 22 }) })
      assert.are.equal(2 + 3, core.item_size { bs = core.set("BS", { core.binary "\0\0", "x" }) })
    end)

    it("lets the caller enforce the 400 KB item limit", function()
      assert.are.equal(409600, core.limits.item_bytes)
      local big = { id = "x", blob = core.binary(string.rep("\0", 409600)) }
      assert.is_true(core.item_size(big) > core.limits.item_bytes)
    end)

    it("reports values it cannot size", function()
      local n, err = core.item_size { bad = 0 / 0 }
      assert.is_nil(n)
      assert.matches("^item%.bad: NaN", err)
      n, err = core.item_size { core.set("SS", { "a" }) }
      assert.is_nil(n)
      assert.matches("^item: expected a table of attribute name", err)
    end)
  end)

  describe("the guard shared by the calls of a Lua state", function()
    -- One guard per Lua state owns what a call allocates (yajl's parser, the
    -- output buffer) and is reused call after call (lua_codec.h).
    local SMALL = '{"M":{"amount":{"N":"5"}}}'
    local LONG = string.rep('a"b\n', 2000)

    -- A response whose decoding allocates a lot (the GC, and so finalizers,
    -- run from inside the decoder), starting with an escaped string longer
    -- than the guard's arena (yajl's decode buffer then comes from malloc).
    local function big_text(n)
      local recs = {}
      for i = 1, n do
        recs[i] = string.format('{"id":{"S":"k%d"},"n":{"N":"%d"},"l":{"L":[{"S":"a"},{"N":"1.5"}]}}', i, i)
      end
      return '{"Items":[{"long":{"S":"' .. string.rep('a\\"b\\n', 2000) .. '"}},'
        .. table.concat(recs, ",") .. "]}"
    end

    local function all_calls_work(text, n)
      assert.are.equal(5, core.decode_value(SMALL).amount)
      local r = assert(core.decode_response(text))
      assert.are.equal(n + 1, #r.Items)
      assert.are.equal(LONG, r.Items[1].long)
      assert.are.equal(n, r.Items[n + 1].n)
      assert.are.equal('{"M":{"a":{"N":"1"}}}', core.encode_value { a = 1 })
      assert.are.equal('{"TableName":"t"}', core.encode_request { TableName = "t" })
      assert.are.equal(1 + 2, core.item_size { n = 5 })
      assert.are.equal('{"b":[1]}', core.json_encode { b = core.list { 1 } })
      assert.are.equal(0, assert(core.decode_stream_records '{"Records":[]}').records)
    end

    it("is taken over by the next call after a Lua error unwound one, and nothing leaks", function()
      -- The error comes from a __gc metamethod run by an allocation inside
      -- the decoder; the call it unwinds leaves the guard in use, with a
      -- half-used parser (and the malloc'd decode buffer): the next call
      -- frees them and takes the guard. Under LeakSanitizer, anything lost
      -- on the way would be reported when the process ends.
      local text = big_text(2000)
      -- after an error, at once, the next call (at the same C stack depth)
      local raised, after, last_err = helpers.interrupt_with_gc_error(40,
        function() assert(core.decode_response(text)) end,
        function() assert(core.decode_value(SMALL).amount == 5) end)
      assert.matches("boom from __gc", last_err)
      assert.is_true(raised > 0)
      assert.is_true(after > 0)
      all_calls_work(text, 2000)
    end)

    it("lets a call nested in another one (from a __gc metamethod) use a guard of its own", function()
      local text, small_text = big_text(3000), big_text(20)
      local inside, nested, wrong = false, 0, 0
      local function nested_calls()
        if not inside then return end
        nested = nested + 1
        local ok = pcall(all_calls_work, small_text, 20)
        if not ok then wrong = wrong + 1 end
      end
      for _ = 1, 20 do
        for _ = 1, 20 do
          getmetatable(newproxy(true)).__gc = nested_calls -- garbage at once
        end
        inside = true
        local r, err = core.decode_response(text)
        inside = false
        assert.is_nil(err)
        -- the outer call's parser and tables were left alone
        assert.are.equal(3001, #r.Items)
        assert.are.equal(LONG, r.Items[1].long)
        assert.are.equal(3000, r.Items[3001].n)
        if nested > 0 then break end
      end
      assert.is_true(nested > 0)
      assert.are.equal(0, wrong)

      -- the same with json_encode outside (its output buffer is the guard's)
      local doc = {}
      for i = 1, 2000 do doc[i] = { id = "k" .. i, n = i, tags = { "a", "b" } } end
      local want = core.json_encode(doc)
      nested = 0
      for _ = 1, 20 do
        for _ = 1, 20 do
          getmetatable(newproxy(true)).__gc = nested_calls
        end
        inside = true
        local got = core.json_encode(doc)
        inside = false
        assert.are.equal(want, got)
        if nested > 0 then break end
      end
      assert.is_true(nested > 0)
      assert.are.equal(0, wrong)
    end)

    it("keeps working across calls of every size", function()
      -- escaped strings around the arena's size (yajl's decode buffer starts
      -- at 2 KB and doubles), texts deeper than its byte stack's first
      -- block, outputs beyond the buffer kept between calls
      for _, n in ipairs { 1, 500, 1000, 1023, 1024, 1025, 2047, 2048, 2049, 4096, 20000 } do
        local s = string.rep('"', n)
        assert.are.equal(s, core.decode_value(core.encode_value(s)))
        assert.are.equal(5, core.decode_value(SMALL).amount)
      end
      for _, depth in ipairs { 127, 128, 129, 600, 2048 } do
        local v, err = core.decode_response(string.rep("[", depth) .. string.rep("]", depth))
        assert.is_true(v ~= nil or err:match("nesting deeper than") ~= nil)
        assert.are.equal(5, core.decode_value(SMALL).amount)
      end
      for _, n in ipairs { 10, 70000, 10, 300000, 10 } do
        local s = string.rep("x", n)
        assert.are.equal('{"S":"' .. s .. '"}', core.encode_value(s))
        assert.are.equal('"' .. s .. '"', core.json_encode(s))
        assert.are.equal(s, core.decode_response(core.encode_request { Item = { s = s } }).Item.s)
      end
      -- errors in the middle give the guard back too
      assert.is_nil(core.decode_value '{"M":{"a":{"N":"x"}}}')
      assert.is_nil(core.decode_response '{"a":[1,2}')
      assert.is_nil(core.encode_value { a = 0 / 0 })
      assert.is_nil(core.json_encode { f = print })
      assert.is_nil(core.decode_stream_records '{"Records":[')
      all_calls_work(big_text(10), 10)
    end)
  end)

  describe("limits", function()
    it("has DynamoDB's numbers", function()
      assert.are.same({ item_bytes = 409600, transact_items = 100, transact_bytes = 4194304,
                        batch_write_items = 25, batch_write_bytes = 16777216, batch_get_keys = 100,
                        query_page_bytes = 1048576, max_depth = 32 }, core.limits)
    end)
  end)
end)

describe("core.decode_json", function()
  it("reads plain JSON with numbers as exact as N values, and round-trips with json_encode", function()
    local text = '{"big":123456789012345678901234567890,"dec":0.12345678901234567,"d":1.5,"i":9007199254740993,'
      .. '"l":[1,{"e":-1.5E+100}],"n":null,"s":"Zoë\\u0000","t":true,"z":[],"m":{}}'
    local v = assert(core.decode_json(text))
    assert.is_true(core.is_number(v.big))
    assert.equal("123456789012345678901234567890", tostring(v.big))
    assert.equal("0.12345678901234567", tostring(v.dec))
    assert.equal(1.5, v.d)
    assert.equal("9007199254740993", tostring(v.i))
    assert.equal(-1.5e100, v.l[2].e)
    assert.is_true(core.is_list(v.l))
    assert.is_true(core.is_list(v.z))
    assert.equal(core.null, v.n)
    assert.equal("Zoë\0", v.s)
    assert.equal('{"big":123456789012345678901234567890,"d":1.5,"dec":0.12345678901234567,"i":9007199254740993,'
      .. '"l":[1,{"e":-1.5e+100}],"m":{},"n":null,"s":"Zoë\\u0000","t":true,"z":[]}', core.json_encode(v))
  end)

  it("refuses what is not one JSON object or array", function()
    for _, bad in ipairs{ "5", '"x"', "{", '{"a":1} x', '{"a":1e400}', "" } do
      local v, err = core.decode_json(bad)
      assert.is_nil(v, bad)
      assert.is_string(err, bad)
    end
    assert.has_error(function() core.decode_json(nil) end)
  end)
end)
