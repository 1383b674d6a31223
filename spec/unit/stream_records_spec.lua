-- Specs for core.decode_stream_records: a GetRecords response of an events
-- table's stream, decoded straight to projector events.
local core = require "tide.core"
local cjson = require "cjson"
local helpers = require "helpers"

-- A stream record as DynamoDB Streams sends it.
local function record(name, seq, image, extra)
  local r = {
    eventID = "id-" .. seq, eventName = name, eventVersion = "1.1", eventSource = "aws:dynamodb",
    awsRegion = "us-east-1",
    dynamodb = { ApproximateCreationDateTime = 1700000000 + tonumber(seq), SequenceNumber = seq,
                 SizeBytes = 100, StreamViewType = "NEW_IMAGE", NewImage = image,
                 Keys = { stream = { S = "k" }, version = { N = "1" } } },
  }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

local function image(stream, version, etype)
  return { stream = { S = stream }, version = { N = tostring(version) }, type = { S = etype },
           data = { S = '{"M":{"amount":{"N":"5"}}}' }, meta = { S = '{"schema":1}' } }
end

local function body(records, next_iterator)
  return cjson.encode{ Records = records, NextShardIterator = next_iterator }
end

describe("core.decode_stream_records", function()
  it("turns INSERT and MODIFY images into events, in order, data and meta decoded", function()
    local r = assert(core.decode_stream_records(body({
      record("INSERT", "100", image("account#a1", 1, "Opened")),
      record("MODIFY", "101", image("account#a#2", 7, "Deposited")),
    }, "iter-2")))
    assert.equal(2, r.records)
    assert.equal(2, #r.events)
    -- data and meta are decoded; data is as stored (not upcast yet)
    assert.same({ stream = "account#a1", aggregate = "account", id = "a1", version = 1, type = "Opened",
                  data = { amount = 5 }, meta = { schema = 1 }, as_stored = true }, r.events[1])
    -- the id is everything after the first '#'
    assert.equal("account", r.events[2].aggregate)
    assert.equal("a#2", r.events[2].id)
    assert.equal(7, r.events[2].version)
    assert.equal("101", r.last_seq)
    assert.equal(1700000101, r.last_created)
    assert.equal("iter-2", r.NextShardIterator)
  end)

  it("skips REMOVE records and images of other items, but counts them and their sequence numbers", function()
    local r = assert(core.decode_stream_records(body({
      record("INSERT", "1", image("account#a1", 1, "Opened")),
      record("REMOVE", "2", nil),
      record("INSERT", "3", { other = { S = "item" } }),
      record("INSERT", "4", { stream = { S = "account#a1" }, version = { S = "not a number type" } }),
    })))
    assert.equal(4, r.records)
    assert.equal(1, #r.events)
    assert.equal("4", r.last_seq)
    assert.is_nil(r.NextShardIterator)
  end)

  it("a stream without '#' is its own aggregate, with an empty id", function()
    local r = assert(core.decode_stream_records(body({ record("INSERT", "1", image("plain", 3, "T")) })))
    assert.equal("plain", r.events[1].aggregate)
    assert.equal("", r.events[1].id)
  end)

  it("keeps escapes, unicode and NUL bytes of the text attributes", function()
    local img = image("account#é\0x", 2, "Dé\"posited")
    img.meta = { S = '{"note":"a\\nb"}' }
    local r = assert(core.decode_stream_records(body({ record("INSERT", "9", img) })))
    assert.equal("account#é\0x", r.events[1].stream)
    assert.equal("é\0x", r.events[1].id)
    assert.equal("Dé\"posited", r.events[1].type)
    assert.same({ note = "a\nb" }, r.events[1].meta)
  end)

  it("decodes data as one AttributeValue and meta as plain JSON, keeping what does not decode as text", function()
    local img = image("account#a1", 1, "Opened")
    img.data = { S = '{"M":{"n":{"N":"12345678901234567890123456789012345678"},"l":{"L":[{"S":"x"},{"NULL":true}]},'
      .. '"Item":{"M":{"a":{"BOOL":false}}}}}' }
    img.meta = { S = '{"Item":{"S":"not an AttributeValue"},"list":[1,2],"nothing":null}' }
    local bad = image("account#a1", 2, "Deposited")
    bad.data = { S = '{"M":{"amount":{"N":"5"}}} {"M":{}}' } -- two values
    bad.meta = { S = '{"schema":' }                           -- cut short
    local scalar = image("account#a1", 3, "Deposited")
    scalar.data = { S = '{"X":1}' }                           -- no such AttributeValue type
    scalar.meta = { S = '"just a string"' }
    local r = assert(core.decode_stream_records(body({ record("INSERT", "1", img), record("INSERT", "2", bad),
      record("INSERT", "3", scalar), record("INSERT", "4", image("account#a1", 4, "Closed")) })))
    local e = r.events[1]
    assert.is_true(core.is_number(e.data.n))
    assert.equal("12345678901234567890123456789012345678", tostring(e.data.n))
    assert.same({ "x", core.null }, { e.data.l[1], e.data.l[2] })
    assert.same({ a = false }, e.data.Item)
    assert.same({ S = "not an AttributeValue" }, e.meta.Item) -- meta keys mean nothing
    assert.equal(2, e.meta.list[2])
    assert.equal(core.null, e.meta.nothing)
    assert.is_true(e.as_stored)
    assert.equal('{"M":{"amount":{"N":"5"}}} {"M":{}}', r.events[2].data)
    assert.equal('{"schema":', r.events[2].meta)
    assert.is_nil(r.events[2].as_stored)
    assert.equal('{"X":1}', r.events[3].data)
    assert.equal('"just a string"', r.events[3].meta)
    -- a parser left half-way by a bad text is not used again
    assert.same({ amount = 5 }, r.events[4].data)
    assert.same({ schema = 1 }, r.events[4].meta)
  end)

  it("an empty page: no events, no last sequence number", function()
    local r = assert(core.decode_stream_records('{"Records":[],"NextShardIterator":"x"}'))
    assert.equal(0, r.records)
    assert.same({}, r.events)
    assert.is_nil(r.last_seq)
    assert.equal("x", r.NextShardIterator)
  end)

  it("ignores members it does not know, at any depth", function()
    local rec = record("INSERT", "5", image("account#a1", 1, "Opened"))
    rec.dynamodb.OldImage = { deep = { M = { x = { L = { { M = { y = { S = "z" } } } } } } } }
    rec.userIdentity = { type = "Service", principalId = "dynamodb.amazonaws.com" }
    local r = assert(core.decode_stream_records(cjson.encode{ Records = { rec }, Extra = { 1, { 2 } } }))
    assert.equal(1, #r.events)
  end)

  it("returns nil and a message naming the response for bad input", function()
    local r, err = core.decode_stream_records("{bad")
    assert.is_nil(r)
    assert.matches("^GetRecords response: malformed JSON at byte %d+ %(", err)
    r, err = core.decode_stream_records('{"Records":[]} {}')
    assert.is_nil(r)
    assert.equal("GetRecords response: malformed JSON: more than one value", err)
    r, err = core.decode_stream_records('{"Records":[{"eventName":"INSERT","dynamodb":{"NewImage":'
      .. '{"stream":{"S":"a#b\\n\255"},"version":{"N":"1"}}}}]}') -- not UTF-8
    assert.is_nil(r)
    assert.matches("^GetRecords response: the string at byte %d+ is not valid", err)
    r, err = core.decode_stream_records('{"Records":{}}')
    assert.is_nil(r)
    assert.equal("GetRecords response: Records is not an array", err)
    r, err = core.decode_stream_records("[]")
    assert.is_nil(r)
    assert.equal("GetRecords response: not a JSON object", err)
    r, err = core.decode_stream_records('{"Records":[{"eventName":"INSERT","dynamodb":{"NewImage":'
      .. '{"stream":{"S":"a#b"},"version":{"N":"1x"}}}}]}')
    assert.is_nil(r)
    assert.equal("GetRecords response: an event's version is not a number", err)
    r, err = core.decode_stream_records(string.rep("[", 100) .. string.rep("]", 100))
    assert.is_nil(r)
    -- deep nesting where nothing is kept costs a counter, not a stack
    r = assert(core.decode_stream_records('{"Records":[' .. string.rep('{"x":', 5000) .. "1"
      .. string.rep("}", 5000) .. "]}"))
    assert.equal(1, r.records)
    assert.has_error(function() core.decode_stream_records() end)
    assert.has_error(function() core.decode_stream_records({}) end)
  end)

  it("frees the parser when a Lua error interrupts the decoding, and the next call works", function()
    -- The tokens and parsers belong to the codec's guard, shared by the
    -- calls of the Lua state (runtime/core/lua_codec.h): a Lua error raised
    -- while the page is read (here by a failing __gc) leaves them behind,
    -- and the next call frees them. Under LeakSanitizer a loss is reported.
    local recs = {}
    for i = 1, 600 do
      local img = image("account#a" .. i, i, "Deposited")
      -- escapes: yajl's decode buffer grows; a text of its own per record,
      -- so that every call allocates enough for the collector to move
      img.data = { S = string.rep('{"note":"a\\nb"}', 140) .. i }
      recs[i] = record("INSERT", tostring(100 + i), img)
    end
    local text = body(recs, "next")
    local raised, after, last_err = helpers.interrupt_with_gc_error(30,
      function() assert(core.decode_stream_records(text)) end,
      function()
        local r = assert(core.decode_stream_records(body({ record("INSERT", "7", image("s#1", 1, "T")) })))
        assert(#r.events == 1 and r.events[1].version == 1)
      end)
    assert.matches("boom from __gc", last_err)
    assert.is_true(raised > 0)
    assert.is_true(after > 0)
    local r = assert(core.decode_stream_records(text))
    assert.equal(600, #r.events)
    assert.equal("next", r.NextShardIterator)
    assert.equal(string.rep('{"note":"a\\nb"}', 140) .. 600, r.events[600].data)
  end)
end)
