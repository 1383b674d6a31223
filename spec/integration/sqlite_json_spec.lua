-- The embedded store keeps event data and read-model items as plain JSON
-- (numbers exact, readable with SQLite's JSON functions), and a file of
-- the old format (AttributeValue JSON, schema 1) is converted on open.
local helpers = require "helpers"
local stores = require "stores"
local cjson = require "cjson"

local q = helpers.shell_quote
local LEGACY = helpers.root .. "/spec/fixtures/legacy"

local function query(path, sql, ...)
  local db = assert(require("tide.sqlite").open(path, {}))
  local rows = assert(db:query(sql, ...))
  db:close()
  return rows
end

local function project_dir()
  local dir = helpers.tmpdir()
  stores.write_config(dir, "sqlite", { path = dir .. "/tide.db", aggregates = LEGACY .. "/aggregates" },
                      { "projections: " .. LEGACY .. "/projections" })
  return dir
end

describe("plain JSON in the embedded store", function()
  it("converts a file of the old format on open, then goes on in the new one", function()
    local dir = project_dir()
    local db = assert(require("tide.sqlite").open(dir .. "/tide.db", {}))
    assert(db:exec(helpers.read_file(helpers.root .. "/spec/fixtures/sqlite_v1.sql")))
    db:close()
    assert.equal('{"M":{"amount":{"N":"123456789012345678901234567890"},"note":{"S":"big"},"rate":{"N":"0.1"}}}',
      query(dir .. "/tide.db", "SELECT data FROM events WHERE position = 1")[1][1])

    -- the first command that opens it converts it
    local out, status = stores.tide(dir, "events ledger l1", nil, true)
    assert.equal(0, status, out)
    local events = helpers.lines(out)
    assert.matches('"data":{"amount":123456789012345678901234567890,"note":"big","rate":0.1}', events[1], 1, true)
    assert.matches('"data":{"amount":0.12345678901234567,"note":"decimal","rate":0.1}', events[2], 1, true)
    local path = dir .. "/tide.db"
    assert.equal(2, query(path, "SELECT user_version FROM pragma_user_version")[1][1])
    local rows = query(path, "SELECT data FROM events ORDER BY position")
    assert.equal('{"amount":123456789012345678901234567890,"note":"big","rate":0.1}', rows[1][1])
    assert.equal('{"amount":0.12345678901234567,"note":"decimal","rate":0.1}', rows[2][1])
    -- a binary value has no plain JSON form: kept as AttributeValue JSON, marked
    assert.matches('^%["av",{"M":{.*}}%]$', rows[3][1])
    assert.matches('"raw":{"B":"AGJpbg=="}', rows[3][1], 1, true)
    assert.matches('"amount":{"N":"9007199254740993"}', rows[3][1], 1, true)
    -- SQLite's JSON functions read both events and items
    assert.same({ { "big", 0.1 } }, query(path, "SELECT json_extract(data, '$.note'), json_extract(data, '$.rate')"
      .. " FROM events WHERE position = 1"))
    assert.same({ { "9007199254740993" } }, query(path, "SELECT json_extract(data, '$[1].M.amount.N') FROM events"
      .. " WHERE position = 3"))
    assert.same({ { "l1/1", "big" }, { "l1/2", "decimal" }, { "l2/1", "past 2^53" } },
      query(path, "SELECT key, coalesce(json_extract(item, '$.note'), json_extract(item, '$[1].M.note.S'))"
        .. " FROM read_models WHERE model = 'entries' ORDER BY key"))
    assert.equal('{"_rev":1,"_tide":{"ledger#l1":1},"amount":123456789012345678901234567890,"key":"l1/1",'
      .. '"note":"big","rate":0.1}', query(path, "SELECT item FROM read_models WHERE key = 'l1/1'")[1][1])

    -- the state, the read model and new commands and projections read and write it
    out, status = stores.tide(dir, "state ledger l2", nil, true)
    assert.equal(0, status, out)
    assert.equal(1, cjson.decode(out).state.entries)
    out, status = stores.tide(dir, "exec ledger l1 " .. q('{"type":"Record","amount":"-1.5E+100","note":"n"}'))
    assert.equal(0, status, out)
    assert.equal('{"amount":-1.5E+100,"note":"n","rate":0.1}',
      query(path, "SELECT data FROM events WHERE stream = 'ledger#l1' AND version = 3")[1][1])
    out, status = stores.tide(dir, "project entries --until-caught-up")
    assert.equal(0, status, out)
    out, status = stores.tide(dir, "read entries l1/3", nil, true)
    assert.equal(0, status, out)
    assert.equal('{"amount":-1.5e+100,"key":"l1/3","note":"n","rate":0.1}', out:gsub("\n$", ""))
    out, status = stores.tide(dir, "read entries l1/1", nil, true)
    assert.equal('{"amount":123456789012345678901234567890,"key":"l1/1","note":"big","rate":0.1}', out:gsub("\n$", ""))
    -- rebuilt from the converted events, the read model is the same
    out, status = stores.tide(dir, "replay entries")
    assert.equal(0, status, out)
    assert.matches('"amount":{"N":"9007199254740993"}',
      query(path, "SELECT item FROM read_models WHERE key = 'l2/1'")[1][1], 1, true)
    assert.equal('{"_rev":1,"_tide":{"ledger#l1":1},"amount":123456789012345678901234567890,"key":"l1/1",'
      .. '"note":"big","rate":0.1}', query(path, "SELECT item FROM read_models WHERE key = 'l1/1'")[1][1])
    os.execute("rm -rf " .. q(dir))
  end)

  it("writes new stores plain from the start", function()
    local dir = helpers.tmpdir()
    stores.write_config(dir, "sqlite", { path = dir .. "/tide.db" }, { "projections: " .. helpers.root .. "/projections" })
    local out, status = stores.tide(dir, "exec account a1 " .. q('{"type":"Open","owner":"Zoë"}'))
    assert.equal(0, status, out)
    out, status = stores.tide(dir, "exec account a1 " .. q('{"type":"Deposit","amount":42}'))
    assert.equal(0, status, out)
    out, status = stores.tide(dir, "project balances --until-caught-up")
    assert.equal(0, status, out)
    local path = dir .. "/tide.db"
    assert.equal(2, query(path, "SELECT user_version FROM pragma_user_version")[1][1])
    assert.same({ { '{"owner":"Zoë"}' }, { '{"amount":42}' } }, query(path, "SELECT data FROM events ORDER BY position"))
    assert.same({ { 42, "Zoë" } }, query(path, "SELECT json_extract(item, '$.balance'), json_extract(item, '$.owner')"
      .. " FROM read_models WHERE model = 'balances' AND key = 'a1'"))
    os.execute("rm -rf " .. q(dir))
  end)
end)
