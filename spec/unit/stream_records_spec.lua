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
  it("turns INSERT and MODIFY images into events, in order, with their sequence numbers", function()
    local r = assert(core.decode_stream_records(body({
      record("INSERT", "100", image("account#a1", 1, "Opened")),
      record("MODIFY", "101", image("account#a#2", 7, "Deposited")),
    }, "iter-2")))
    assert.equal(2, r.records)
    assert.equal(2, #r.events)
    assert.same({ stream = "account#a1", aggregate = "account", id = "a1", version = 1, type = "Opened",
                  data = '{"M":{"amount":{"N":"5"}}}', meta = '{"schema":1}', seq = "100",
                  created = 1700000100 }, r.events[1])
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
    assert.equal('{"note":"a\\nb"}', r.events[1].meta)
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
    -- The parser belongs to the codec's guard, shared by the calls of the
    -- Lua state (runtime/core/lua_codec.h): a Lua error raised inside
    -- yajl's callbacks (here by a failing __gc) leaves it behind, and the
    -- next call frees it. Under LeakSanitizer a lost parser is reported.
    local recs = {}
    for i = 1, 600 do
      local img = image("account#a" .. i, i, "Deposited")
      img.data = { S = string.rep('{"note":"a\\nb"}', 140) } -- escapes: yajl's decode buffer grows
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
    assert.equal(string.rep('{"note":"a\\nb"}', 140), r.events[600].data)
  end)
end)
