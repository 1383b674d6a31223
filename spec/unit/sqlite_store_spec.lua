-- Specs for the embedded store: tide.sqlite (the C binding of
-- runtime/sqlite/store.c) and tide.store.sqlite (the store interface of
-- docs/data-model.md, with group commit), against real SQLite files in
-- temp dirs.
--
-- Group commit is asserted through store.stats (transactions per append),
-- never with timings.
local helpers = require "helpers"
local sqlite = require "tide.sqlite"
local store_mod = require "tide.store.sqlite"
local sched = require "tide.sched"

local q = helpers.shell_quote

local dirs = {}
local function new_path(name)
  local dir = helpers.tmpdir()
  dirs[#dirs + 1] = dir
  return dir .. "/" .. (name or "tide.db")
end

local function new_store(opts)
  opts = opts or {}
  opts.path = opts.path or new_path()
  local store = assert(store_mod.new(opts))
  assert(store:init())
  return store, opts.path
end

local function ev(type_, data, meta)
  return { type = type_ or "Happened", data = data or "{}", meta = meta or "{}" }
end

-- Big-endian 32-bit integer of the file's header at offset (0-based).
local function header_u32(path, offset)
  local s = assert(helpers.read_file(path))
  local a, b, c, d = s:byte(offset + 1, offset + 4)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- Overwrites 4 header bytes of a closed database file.
local function patch_u32(path, offset, v)
  local s = assert(helpers.read_file(path))
  local bytes = string.char(math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256,
    math.floor(v / 256) % 256, v % 256)
  helpers.write_file(path, s:sub(1, offset) .. bytes .. s:sub(offset + 5))
end

teardown(function()
  for _, d in ipairs(dirs) do
    helpers.run("rm -rf " .. q(d))
  end
end)

describe("tide.sqlite (binding)", function()
  it("opens a new file in WAL mode and creates the schema once", function()
    local path = new_path()
    local db = assert(sqlite.open(path))
    assert.equal(path, db:path())
    assert.is_true(db:init())
    assert.is_true(db:init()) -- idempotent
    db:close()
    -- header bytes 18/19: file format 2 = WAL; 60: user_version; 68: application_id
    local s = helpers.read_file(path)
    assert.equal(2, s:byte(19))
    assert.equal(2, s:byte(20))
    assert.equal(sqlite.schema_version, header_u32(path, 60))
    assert.equal(0x74696465, header_u32(path, 68))
  end)

  it("keeps a transaction in the caller's hands, with one savepoint per append", function()
    local db = assert(sqlite.open(new_path()))
    assert(db:init())
    assert.is_false(db:in_transaction())
    assert(db:begin())
    assert.is_true(db:in_transaction())
    assert(db:savepoint())
    assert.is_true(db:insert_events("s#1", 1, { ev("A"), ev("B") }))
    assert(db:release())
    assert(db:savepoint())
    assert.is_true(db:insert_events("s#2", 1, { ev("C") }))
    assert(db:rollback_to())
    assert(db:release())
    assert(db:commit())
    assert.is_false(db:in_transaction())
    assert.equal(2, db:max_version("s#1"))
    assert.equal(0, db:max_version("s#2"))
    assert.is_true(db:rollback()) -- outside a transaction: a no-op
    db:close()
  end)

  it("reports a UNIQUE violation in the middle of an insert as a Conflict, undone by its savepoint", function()
    local db = assert(sqlite.open(new_path()))
    assert(db:init())
    -- version 2 exists (the binding does no version check; the store does)
    assert(db:insert_events("s#1", 2, { ev("Two") }))
    assert(db:begin())
    assert(db:savepoint())
    local ok, err = db:insert_events("s#1", 1, { ev("One"), ev("Two?"), ev("Three") })
    assert.is_nil(ok)
    assert.equal("Conflict", err.type)
    assert.equal("ECONFLICT", err.code)
    assert.matches("version 2 exists already", err.message)
    assert.matches("^Conflict: ", tostring(err))
    assert(db:rollback_to())
    assert(db:release())
    assert(db:commit())
    local events = assert(db:load("s#1", 0))
    assert.equal(1, #events)
    assert.equal(2, events[1].version)
    assert.equal("Two", events[1].type)
    db:close()
  end)

  it("raises on wrong argument types and on use after close", function()
    local db = assert(sqlite.open(new_path()))
    assert(db:init())
    assert.has_error(function() db:max_version(1) end, "tide.sqlite: stream must be a string, got number")
    assert.has_error(function() db:insert_events("s", 0, {}) end)
    assert.has_error(function() db:insert_events("s", 1.5, {}) end)
    assert.has_error(function() db:insert_events("s", 1, "x") end)
    assert.has_error(function() db:insert_events("s", 1, { { type = 1 } }) end,
      "tide.sqlite: insert_events: events[1].type must be a string, got number")
    assert.has_error(function() db:insert_events("s", 1, { ev(), { type = "X", data = {} } }) end)
    assert.equal(0, db:max_version("s")) -- nothing of the bad calls was written
    assert.has_error(function() db:read_all(0, 0) end)
    assert.has_error(function() db:put_snapshot("s", "1", "{}") end)
    assert.has_error(function() sqlite.open(new_path(), { synchronous = "sometimes" }) end)
    assert.has_error(function() sqlite.open(new_path(), { busy_timeout_ms = -1 }) end)
    assert.has_error(function() sqlite.open({}) end)
    db:close()
    db:close() -- twice is fine
    assert.has_error(function() db:load("s", 0) end, "tide.sqlite: the store is closed")
  end)

  it("a store that is never closed is closed by the garbage collector", function()
    local path = new_path()
    do
      local db = assert(sqlite.open(path))
      assert(db:init())
      assert(db:insert_events("s", 1, { ev() }))
    end
    collectgarbage()
    collectgarbage()
    -- the last connection closed: SQLite checkpointed and removed the WAL
    assert.is_nil(io.open(path .. "-wal", "rb"))
    local db = assert(sqlite.open(path))
    assert.equal(1, db:max_version("s"))
    db:close()
  end)
end)

describe("tide.sched.suspend / wakeup (group commit's primitive)", function()
  it("parks a thread until another wakes it with values", function()
    local log = {}
    sched.run(function()
      local parked
      local th = sched.spawn(function()
        parked = sched.current()
        log[#log + 1] = "parked"
        local a, b = sched.suspend()
        log[#log + 1] = "woken " .. a .. " " .. b
      end)
      assert.equal(th, parked)
      sched.sleep(0)
      assert.is_true(sched.wakeup(th, "x", 2))
      assert.is_false(sched.wakeup(th, "again")) -- not suspended any more
      assert(sched.wait(th))
    end)
    assert.same({ "parked", "woken x 2" }, log)
    assert.is_nil(sched.current())
    assert.has_error(function() sched.suspend() end, "sched.suspend called outside sched.run")
    assert.has_error(function() sched.wakeup({}) end, "sched.wakeup: expected a thread")
  end)
end)

describe("tide.store.sqlite", function()
  describe("opening", function()
    it("creates the file, and a reopened store sees what was written", function()
      local store, path = new_store()
      assert.equal(3, store:append("account#1", 0, { ev("A"), ev("B"), ev("C") }))
      assert(store:put_snapshot("account#1", 2, '{"n":2}', "{}"))
      store:close()
      local again = assert(store_mod.new{ path = path })
      assert(again:init())
      local events = assert(again:load("account#1", 0))
      assert.equal(3, #events)
      assert.same({ version = 2, state = '{"n":2}', meta = "{}" }, again:get_snapshot("account#1"))
      again:close()
    end)

    it("returns an error naming the path when its directory does not exist", function()
      local path = new_path("no/such/dir/tide.db")
      local store, err = store_mod.new{ path = path }
      assert.is_nil(store)
      assert.equal("StoreError", err.type)
      assert.truthy(err.message:find(path, 1, true))
      assert.matches("unable to open database file", err.message)
      assert.matches("No such file or directory", err.message)
      assert.matches("^StoreError: ", tostring(err))
    end)

    it("returns an error naming the path for a file that is not a database", function()
      local path = new_path("notes.txt")
      helpers.write_file(path, string.rep("these are not the pages you are looking for\n", 40))
      local store, err = store_mod.new{ path = path }
      assert.is_nil(store)
      assert.equal("StoreError", err.type)
      assert.truthy(err.message:find(path, 1, true))
      assert.matches("file is not a database", err.message)
    end)

    it("refuses another application's database and a newer tide schema", function()
      local store, path = new_store()
      store:close()
      patch_u32(path, 68, 0x12345678) -- application_id
      local s2, err = store_mod.new{ path = path }
      assert.is_nil(s2)
      assert.equal("StoreError", err.type)
      assert.truthy(err.message:find(path, 1, true))
      assert.matches("not a tide store", err.message)

      patch_u32(path, 68, 0x74696465)
      patch_u32(path, 60, 99) -- user_version
      s2, err = store_mod.new{ path = path }
      assert.is_nil(s2)
      assert.matches("schema version 99 is newer", err.message)

      patch_u32(path, 60, 1)
      s2 = assert(store_mod.new{ path = path })
      assert(s2:init())
      s2:close()
    end)

    it("returns an error when used before init", function()
      local store = assert(store_mod.new{ path = new_path() })
      local v, err = store:append("s", 0, { ev() })
      assert.is_nil(v)
      assert.equal("StoreError", err.type)
      assert.matches("no such table: events", err.message)
      store:close()
    end)

    it("takes synchronous and busy_timeout_ms options, and checks them", function()
      local store = new_store{ synchronous = "full", busy_timeout_ms = 0 }
      assert.equal(1, store:append("s", 0, { ev() }))
      store:close()
      assert.has_error(function() store_mod.new{ path = new_path(), synchronous = "yes" } end)
      assert.has_error(function() store_mod.new{ path = new_path(), busy_timeout_ms = -5 } end)
      assert.has_error(function() store_mod.new{ path = 42 } end)
      assert.has_error(function() store_mod.new{ path = new_path(), group_max = 0 } end)
    end)
  end)

  describe("append and load", function()
    local store
    before_each(function() store = new_store() end)
    after_each(function() store:close() end)

    it("numbers a new stream's events from 1 and loads them in order", function()
      assert.equal(2, store:append("account#1", 0, { ev("Opened"), ev("Deposited") }))
      assert.equal(3, store:append("account#1", 2, { ev("Withdrawn") }))
      local events = assert(store:load("account#1", 0))
      assert.equal(3, #events)
      for i, e in ipairs(events) do
        assert.equal(i, e.version)
      end
      assert.same({ "Opened", "Deposited", "Withdrawn" }, { events[1].type, events[2].type, events[3].type })
      local after = assert(store:load("account#1", 2))
      assert.equal(1, #after)
      assert.equal("Withdrawn", after[1].type)
      assert.same({}, store:load("account#2", 0))
      assert.same({}, store:load("account#1", 3))
    end)

    it("keeps data and meta text exactly: unicode, NUL bytes, invalid UTF-8, large", function()
      local data = '{"owner":"Zoë Ωmega ✓ 𝄞","raw":"a\0b\0"}'
      local meta = '{"command_id":"c-1","x":"\255\254\0"}'
      local big = '{"p":"' .. string.rep("x\0y", 100000) .. '"}'
      assert.equal(2, store:append("s#ü", 0, { ev("Ünïcode", data, meta), ev("Big", big, "") }))
      local events = assert(store:load("s#ü", 0))
      assert.equal(data, events[1].data)
      assert.equal(meta, events[1].meta)
      assert.equal("Ünïcode", events[1].type)
      assert.equal(#big, #events[2].data)
      assert.equal(big, events[2].data)
      assert.equal("", events[2].meta)
      -- format: the data's, for the decoder (tide.stream): plain JSON
      assert.same({ "version", "type", "data", "meta", "format" }, (function()
        local keys = {}
        for k in pairs(events[1]) do keys[#keys + 1] = k end
        table.sort(keys, function(a, b)
          local order = { version = 1, type = 2, data = 3, meta = 4, format = 5 }
          return (order[a] or 9) < (order[b] or 9)
        end)
        return keys
      end)())
    end)

    it("accepts an empty append at the current version and rejects it at another", function()
      assert.equal(0, store:append("s", 0, {}))
      assert.equal(1, store:append("s", 0, { ev() }))
      assert.equal(1, store:append("s", 1, {}))
      local v, err = store:append("s", 0, {})
      assert.is_nil(v)
      assert.equal("Conflict", err.type)
    end)

    it("fails with a Conflict when the expected version is too low", function()
      assert.equal(3, store:append("account#1", 0, { ev(), ev(), ev() }))
      local v, err = store:append("account#1", 1, { ev("Late") })
      assert.is_nil(v)
      assert.equal("Conflict", err.type)
      assert.equal("account#1", err.stream)
      assert.equal(3, err.current_version)
      assert.is_false(err.retryable)
      assert.matches("at version 3, not at the expected 1", err.message)
      assert.matches("^Conflict: .*%(stream account#1%)$", tostring(err))
      assert.equal(3, #store:load("account#1", 0))
    end)

    it("fails with a Conflict when the expected version is too high (no gaps)", function()
      assert.equal(1, store:append("account#1", 0, { ev() }))
      local v, err = store:append("account#1", 5, { ev("Gap") })
      assert.is_nil(v)
      assert.equal("Conflict", err.type)
      v, err = store:append("account#9", 1, { ev() })
      assert.is_nil(v)
      assert.equal("Conflict", err.type)
      assert.equal(1, #store:load("account#1", 0))
      assert.same({}, store:load("account#9", 0))
    end)

    it("checks a stream it saw committed by its insert alone, with the same Conflict when another writer came first", function()
      local path = new_path()
      local a = new_store{ path = path }
      local b = new_store{ path = path }
      assert.equal(2, a:append("s", 0, { ev("A"), ev("B") }))
      assert.equal(2, a.reached.s) -- its own append: the next one expecting 2 reads no version
      assert.equal(3, b:append("s", 2, { ev("C") }))
      for _, events in ipairs{ { ev("X") }, { ev("X"), ev("Y") } } do
        local v, err = a:append("s", 2, events)
        assert.is_nil(v)
        assert.equal("Conflict", err.type)
        assert.equal(3, err.current_version)
        assert.matches("at version 3, not at the expected 2", err.message)
        assert.is_false(a.db:in_transaction())
      end
      -- a load tells it too
      assert.same({ "A", "B", "C" }, (function(evs)
        local t = {} for i, e in ipairs(evs) do t[i] = e.type end return t end)(a:load("s", 0)))
      assert.equal(3, a.reached.s)
      assert.equal(4, b:append("s", 3, { ev("D") }))
      local v, err = a:append("s", 3, { ev("E") })
      assert.is_nil(v)
      assert.equal(4, err.current_version)
      assert.equal(5, a:append("s", 4, { ev("E") }))
      -- a stream it never saw is read first; so is one expected past what it saw
      assert.equal(1, b:append("t", 0, { ev() }))
      v, err = a:append("t", 1, { ev() })
      assert.equal(2, v, tostring(err))
      v, err = a:append("s", 9, { ev("Gap") })
      assert.is_nil(v)
      assert.equal(5, err.current_version)
      assert.equal(5, #a:load("s", 0))
      a:close()
      b:close()
    end)

    it("writes all events of an append or none", function()
      assert.equal(2, store:append("s", 0, { ev("A"), ev("B") }))
      -- stale writer: its three events would be versions 2..4; 2 exists
      local v, err = store:append("s", 1, { ev("X"), ev("Y"), ev("Z") })
      assert.is_nil(v)
      assert.equal("Conflict", err.type)
      local events = store:load("s", 0)
      assert.equal(2, #events)
      assert.same({ "A", "B" }, { events[1].type, events[2].type })
      -- the backing UNIQUE constraint: version 4 exists, below a max check
      assert(store.db:insert_events("t", 4, { ev("Four") }))
      v, err = store:append("t", 0, { ev("1"), ev("2"), ev("3"), ev("4"), ev("5") })
      assert.is_nil(v)
      assert.equal("Conflict", err.type)
      assert.equal(1, #store:load("t", 0))
      assert.is_false(store.db:in_transaction())
    end)

    it("raises on wrong argument types", function()
      assert.has_error(function() store:append(nil, 0, {}) end)
      assert.has_error(function() store:append("", 0, {}) end)
      assert.has_error(function() store:append("s", -1, {}) end)
      assert.has_error(function() store:append("s", 0.5, {}) end)
      assert.has_error(function() store:append("s", "0", {}) end)
      assert.has_error(function() store:append("s", 0, "events") end)
      assert.has_error(function() store:append("s", 0, { { data = "{}" } }) end,
        "store:append: events[1].type must be a string")
      assert.has_error(function() store:append("s", 0, { ev(), { type = "X", data = { a = 1 } } }) end)
      assert.has_error(function() store:append("s", 0, { { type = "X", meta = 7 } }) end)
      assert.has_error(function() store:load(7) end)
      assert.has_error(function() store:load("s", -1) end)
      assert.has_error(function() store:get_snapshot({}) end)
      assert.has_error(function() store:put_snapshot("s", 1, {}) end)
      assert.has_error(function() store:put_snapshot("s", "1", "{}") end)
      assert.has_error(function() store:read_all(-1) end)
      assert.has_error(function() store:read_all(0, 0) end)
      assert.same({}, store:load("s", 0))
    end)
  end)

  describe("snapshots", function()
    it("are false when absent and keep the newer of stored and given", function()
      local store = new_store()
      assert.is_false(store:get_snapshot("s"))
      assert.is_true(store:put_snapshot("s", 5, '{"v":5}', '{"handler":"h1"}'))
      assert.is_true(store:put_snapshot("s", 3, '{"v":3}', "{}")) -- older: ignored
      assert.same({ version = 5, state = '{"v":5}', meta = '{"handler":"h1"}' }, store:get_snapshot("s"))
      assert.is_true(store:put_snapshot("s", 5, '{"v":"5b"}', '{"handler":"h2"}')) -- same version: replaced
      assert.same({ version = 5, state = '{"v":"5b"}', meta = '{"handler":"h2"}' }, store:get_snapshot("s"))
      assert.is_true(store:put_snapshot("s", 9, '{"v":9}'))
      assert.same({ version = 9, state = '{"v":9}' }, store:get_snapshot("s"))
      assert.is_false(store:get_snapshot("other"))
      store:close()
    end)
  end)

  describe("read_all", function()
    it("returns events in position order, after a position, at most limit", function()
      local store = new_store()
      assert(store:append("a", 0, { ev("a1"), ev("a2") }))
      assert(store:append("b", 0, { ev("b1") }))
      assert(store:append("a", 2, { ev("a3") }))
      assert(store:append("c", 0, { ev("c1", '{"x":1}', '{"m":1}') }))
      local all = assert(store:read_all(0, 100))
      assert.equal(5, #all)
      local seen = {}
      for i, e in ipairs(all) do
        if i > 1 then assert.is_true(e.position > all[i - 1].position) end
        seen[i] = e.type .. "@" .. e.stream .. "#" .. e.version
      end
      assert.same({ "a1@a#1", "a2@a#2", "b1@b#1", "a3@a#3", "c1@c#1" }, seen)
      assert.same({ position = all[5].position, stream = "c", version = 1, type = "c1",
        data = '{"x":1}', meta = '{"m":1}', format = "json" }, all[5])
      local page = assert(store:read_all(all[2].position, 2))
      assert.equal(2, #page)
      assert.equal("b1", page[1].type)
      assert.equal("a3", page[2].type)
      assert.same({}, store:read_all(all[5].position, 10))
      assert.equal(5, #store:read_all()) -- defaults: from the start, 1000
      store:close()
    end)
  end)

  describe("group commit", function()
    it("outside a scheduler commits each append on its own", function()
      local store = new_store()
      for i = 1, 5 do
        assert.equal(1, store:append("s#" .. i, 0, { ev() }))
      end
      assert.equal(5, store.stats.transactions)
      assert.equal(5, store.stats.appends)
      store:close()
    end)

    it("200 concurrent appends inside sched.run share a few transactions", function()
      local store = new_store()
      local results = sched.run(function()
        local threads = {}
        for i = 1, 200 do
          threads[i] = sched.spawn(function()
            return store:append("account#" .. i, 0, { ev("Opened", '{"i":' .. i .. '}') })
          end)
        end
        return sched.wait_all(threads)
      end)
      for i = 1, 200 do
        assert.is_true(results[i][1])
        assert.equal(1, results[i][2])
      end
      assert.equal(200, store.stats.appends)
      assert.is_true(store.stats.transactions <= 5,
        "expected a few transactions, got " .. store.stats.transactions)
      assert.equal(200, store.stats.largest_group)
      for i = 1, 200 do
        local events = store:load("account#" .. i, 0)
        assert.equal(1, #events)
        assert.equal('{"i":' .. i .. '}', events[1].data)
      end
      store:close()
    end)

    it("bounds a group at group_max appends", function()
      local store = new_store{ group_max = 16 }
      sched.run(function()
        local threads = {}
        for i = 1, 100 do
          threads[i] = sched.spawn(function() return assert(store:append("s#" .. i, 0, { ev() })) end)
        end
        for _, r in ipairs(sched.wait_all(threads)) do assert(r[1], r[2]) end
      end)
      assert.equal(100, store.stats.appends)
      assert.equal(7, store.stats.transactions) -- ceil(100 / 16)
      assert.equal(16, store.stats.largest_group)
      store:close()
    end)

    it("a conflict inside a group fails only its own append", function()
      local store = new_store()
      assert(store:append("shared", 0, { ev("First") }))
      local before = store.stats.transactions
      local results = sched.run(function()
        local threads = {}
        for i = 1, 10 do
          threads[#threads + 1] = sched.spawn(function()
            return store:append("own#" .. i, 0, { ev(), ev() })
          end)
          if i == 5 then
            -- two writers of version 2 of the same stream, and a stale one
            threads[#threads + 1] = sched.spawn(function() return store:append("shared", 1, { ev("Win") }) end)
            threads[#threads + 1] = sched.spawn(function() return store:append("shared", 1, { ev("Lose") }) end)
            threads[#threads + 1] = sched.spawn(function() return store:append("shared", 0, { ev("Stale") }) end)
          end
        end
        return sched.wait_all(threads)
      end)
      assert.equal(before + 1, store.stats.transactions) -- one shared transaction
      local ok_count, conflicts = 0, {}
      for _, r in ipairs(results) do
        assert.is_true(r[1])
        if r[2] then ok_count = ok_count + 1 else conflicts[#conflicts + 1] = r[3] end
      end
      assert.equal(11, ok_count)
      assert.equal(2, #conflicts)
      for _, err in ipairs(conflicts) do
        assert.equal("Conflict", err.type)
        assert.equal("shared", err.stream)
      end
      local shared = store:load("shared", 0)
      assert.same({ "First", "Win" }, { shared[1].type, shared[2].type })
      assert.equal(2, #shared)
      for i = 1, 10 do
        assert.equal(2, #store:load("own#" .. i, 0))
      end
      store:close()
    end)

    it("an append after another of the same stream in one group builds on it", function()
      local store = new_store()
      local a, b = sched.run(function()
        local t1 = sched.spawn(function() return store:append("s", 0, { ev("1") }) end)
        local t2 = sched.spawn(function() return store:append("s", 1, { ev("2"), ev("3") }) end)
        local _, r1 = sched.wait(t1)
        local _, r2 = sched.wait(t2)
        return r1, r2
      end)
      assert.equal(1, a)
      assert.equal(3, b)
      assert.equal(1, store.stats.transactions)
      store:close()
    end)

    it("when COMMIT fails, every append of the group gets the error and nothing is written", function()
      local store = new_store()
      local real = store.db
      -- a connection whose COMMIT fails (as with an I/O error or disk full)
      store.db = setmetatable({
        commit = function()
          return nil, setmetatable({ type = "StoreError", message = "disk I/O error" },
            { __tostring = function(e) return e.message end })
        end,
      }, {
        __index = function(_, k)
          return function(_, ...) return real[k](real, ...) end
        end,
      })
      local results = sched.run(function()
        local threads = {}
        for i = 1, 20 do
          threads[i] = sched.spawn(function() return store:append("s#" .. i, 0, { ev() }) end)
        end
        return sched.wait_all(threads)
      end)
      for i = 1, 20 do
        assert.is_true(results[i][1])
        assert.is_nil(results[i][2])
        local err = results[i][3]
        assert.equal("StoreError", err.type)
        assert.equal("s#" .. i, err.stream)
        assert.matches("disk I/O error", err.message)
      end
      store.db = real
      assert.is_false(real:in_transaction())
      assert.same({}, store:read_all(0, 100))
      assert.equal(0, store.stats.appends)
      store:close()
    end)

    it("a store closed while a group gathers fails every append of the group, raising nowhere", function()
      local store = new_store()
      local results = sched.run(function()
        local threads = {}
        for i = 1, 5 do
          threads[i] = sched.spawn(function() return store:append("s#" .. i, 0, { ev() }) end)
        end
        store:close() -- the group's leader has not run its transaction yet
        return sched.wait_all(threads)
      end)
      for i = 1, 5 do
        assert.is_true(results[i][1])
        assert.is_nil(results[i][2])
        assert.equal("StoreError", results[i][3].type)
        assert.matches("group commit failed: .*store is closed", results[i][3].message)
      end
    end)

    it("when another connection holds the write lock beyond the timeout, the group gets Busy", function()
      local store, path = new_store{ busy_timeout_ms = 50 }
      local other = assert(sqlite.open(path))
      assert(other:begin()) -- BEGIN IMMEDIATE: holds the write lock
      local results = sched.run(function()
        local threads = {}
        for i = 1, 5 do
          threads[i] = sched.spawn(function() return store:append("s#" .. i, 0, { ev() }) end)
        end
        return sched.wait_all(threads)
      end)
      for i = 1, 5 do
        assert.is_nil(results[i][2])
        assert.equal("Busy", results[i][3].type)
        assert.truthy(results[i][3].message:find(path, 1, true))
      end
      -- outside a scheduler too
      local v, err = store:append("s#1", 0, { ev() })
      assert.is_nil(v)
      assert.equal("Busy", err.type)
      assert.is_true(err.retryable)
      assert.equal("EBUSY", err.code)
      -- reads do not wait for the writer (WAL)
      assert.same({}, assert(store:load("s#1", 0)))
      assert(other:rollback())
      other:close()
      assert.equal(1, store:append("s#1", 0, { ev() })) -- retryable
      store:close()
    end)
  end)

  describe("several processes", function()
    it("16 processes appending to one stream with retries leave versions 1..1600, no gap, no duplicate", function()
      local path = new_path()
      local fixture = helpers.root .. "/spec/fixtures/sqlite_writer.lua"
      local dir = path:match("^(.*)/")
      local cmd = {}
      for i = 1, 16 do
        cmd[#cmd + 1] = string.format("( %s script %s %s shared 100 >%s 2>&1; echo $? >%s ) &",
          q(helpers.tide_bin), q(fixture), q(path), q(dir .. "/out." .. i), q(dir .. "/rc." .. i))
      end
      cmd[#cmd + 1] = "wait"
      helpers.run(table.concat(cmd, " "))
      for i = 1, 16 do
        local out = helpers.read_file(dir .. "/out." .. i) or ""
        assert.equal("0", (helpers.read_file(dir .. "/rc." .. i) or ""):match("%d+"), "writer " .. i .. ": " .. out)
        assert.matches("^ok appended=100 ", out)
      end
      local store = assert(store_mod.new{ path = path })
      local events = assert(store:load("shared", 0))
      assert.equal(1600, #events)
      for i, e in ipairs(events) do
        assert.equal(i, e.version)
      end
      local all = assert(store:read_all(0, 5000))
      assert.equal(1600, #all)
      store:close()
    end)
  end)
end)
