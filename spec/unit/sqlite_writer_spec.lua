-- Specs for the embedded store's writer thread (runtime/sqlite/writer.c):
-- inside tide.sched, appends run on a thread of their own, in the group's
-- one transaction, while the Lua thread goes on. What must hold whatever
-- the threads' timing: a conflict fails only its own append; a failed
-- COMMIT fails every member and writes nothing; a read never sees an
-- append that is not committed; closing the store while a group is in
-- flight commits what its leader closed and fails what was still
-- gathering, and leaves no thread behind (the ASan/LSan run checks that).
-- (sqlite_store_spec.lua has the group-commit specs both paths share.)
local helpers = require "helpers"
local store_mod = require "tide.store.sqlite"
local sched = require "tide.sched"

local dirs = {}
local function new_store(opts)
  local dir = helpers.tmpdir()
  dirs[#dirs + 1] = dir
  opts = opts or {}
  opts.path = dir .. "/tide.db"
  opts.writer_thread = true
  local store = assert(store_mod.new(opts))
  assert(store:init())
  return store, opts.path
end

local function ev(type_, data)
  return { type = type_ or "Happened", data = data or "{}", meta = "{}" }
end

teardown(function()
  for _, d in ipairs(dirs) do helpers.run("rm -rf " .. helpers.shell_quote(d)) end
end)

describe("the SQLite store's writer thread", function()
  it("runs a group's appends on the writer thread: a conflict fails only its own, with current_version", function()
    local store = new_store()
    assert.equal(2, store:append("shared", 0, { ev("A"), ev("B") })) -- before any scheduler: synchronous
    local results = sched.run(function()
      local threads = {}
      for i = 1, 30 do
        threads[#threads + 1] = sched.spawn(function() return store:append("own#" .. i, 0, { ev(), ev() }) end)
      end
      threads[#threads + 1] = sched.spawn(function() return store:append("shared", 1, { ev("Stale") }) end)
      return sched.wait_all(threads)
    end)
    assert.truthy(store.fd, "the writer thread was not used")
    for i = 1, 30 do assert.equal(2, results[i][2]) end
    local err = results[31][3]
    assert.equal("Conflict", err.type)
    assert.equal("conflict", err.kind)
    assert.equal(2, err.current_version)
    assert.equal("stream is at version 2, not at the expected 1", err.message)
    assert.equal(31, store.stats.appends) -- the first append too
    assert.equal(1, store.stats.conflicts)
    assert.equal(2, #store:load("shared", 0))
    store:close()
  end)

  it("an append to a stream it saw committed meets another writer's version as the same Conflict", function()
    local store, path = new_store()
    local other = assert(store_mod.new{ path = path })
    local results = sched.run(function()
      local first = { store:append("s", 0, { ev("A") }) } -- expected 0: no version read
      assert.equal(1, store.reached.s)
      assert.equal(2, other:append("s", 1, { ev("B") }))
      local stale1 = { store:append("s", 1, { ev("X") }) }
      local stale2 = { store:append("s", 1, { ev("X"), ev("Y") }) }
      local next_ = { store:append("s", 2, { ev("C") }) }
      return { first, stale1, stale2, next_ }
    end)
    assert.truthy(store.fd, "the writer thread was not used")
    assert.equal(1, results[1][1])
    for i = 2, 3 do
      local err = results[i][2]
      assert.equal("Conflict", err.type)
      assert.equal(2, err.current_version)
      assert.equal("stream is at version 2, not at the expected 1", err.message)
    end
    assert.equal(3, results[4][1])
    local types = {}
    for i, e in ipairs(store:load("s", 0)) do types[i] = e.type end
    assert.same({ "A", "B", "C" }, types)
    other:close()
    store:close()
  end)

  it("when COMMIT fails, every append of the group gets the error and nothing is written", function()
    local store = new_store()
    -- a real failing COMMIT: a deferred foreign key that an insert's
    -- trigger breaks is only checked at COMMIT
    assert(store.db:exec("PRAGMA foreign_keys = ON; CREATE TABLE parent (id INTEGER PRIMARY KEY);"
      .. " CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
      .. " CREATE TRIGGER breaks AFTER INSERT ON events WHEN NEW.stream = 's#3'"
      .. " BEGIN INSERT INTO child VALUES (42); END;"))
    local results = sched.run(function()
      local threads = {}
      for i = 1, 10 do
        threads[i] = sched.spawn(function() return store:append("s#" .. i, 0, { ev() }) end)
      end
      return sched.wait_all(threads)
    end)
    for i = 1, 10 do
      assert.is_nil(results[i][2])
      local err = results[i][3]
      assert.equal("StoreError", err.type)
      assert.equal("s#" .. i, err.stream)
      assert.matches("FOREIGN KEY constraint failed", err.message)
    end
    assert.same({}, store:read_all(0, 100))
    assert.equal(0, store.stats.appends)
    -- the connection is usable again
    assert(store.db:exec("DROP TRIGGER breaks"))
    assert.equal(1, sched.run(function() return store:append("s#3", 0, { ev() }) end))
    store:close()
  end)

  it("a read during a group sees only committed appends, and does not end the group early", function()
    local store = new_store()
    local seen, results = nil, nil
    results = sched.run(function()
      local threads = {}
      for i = 1, 40 do
        threads[i] = sched.spawn(function() return store:append("s#" .. i, 0, { ev("E", '{"i":' .. i .. '}') }) end)
        if i == 20 then
          -- in the same turn, with half the group queued on the writer
          threads[#threads + 1] = sched.spawn(function() seen = assert(store:read_all(0, 1000)); return true end)
        end
      end
      return sched.wait_all(threads)
    end)
    for _, r in ipairs(results) do assert.is_true(r[1]); assert.truthy(r[2], tostring(r[3])) end
    -- read on the second connection: the group was not committed early
    assert.same({}, seen)
    assert.equal(1, store.stats.transactions)
    assert.equal(40, #store:read_all(0, 1000))
    -- inside the caller's own transaction a read sees its own writes
    local db = store.db
    assert(db:begin())
    assert(db:insert_events("mine", 1, { ev("Own") }))
    assert.equal(1, #store:load("mine", 0))
    assert(db:rollback())
    assert.same({}, store:load("mine", 0))
    -- a snapshot through the writer, read back at once
    assert.is_true(sched.run(function() return store:put_snapshot("s#1", 1, '{"n":1}') end))
    assert.equal('{"n":1}', store:get_snapshot("s#1").state)
    store:close()
  end)

  it("closing the store while a closed group is in flight commits it; a gathering one fails", function()
    local store, path = new_store()
    local results = sched.run(function()
      local threads = {}
      for i = 1, 20 do
        threads[i] = sched.spawn(function() return store:append("s#" .. i, 0, { ev() }) end)
      end
      -- runs after the leader closed the group (both wait one turn; the
      -- leader was first)
      threads[#threads + 1] = sched.spawn(function() sched.sleep(0); store:close(); return true end)
      return sched.wait_all(threads)
    end)
    for i = 1, 20 do assert.equal(1, results[i][2], tostring(results[i][3])) end
    local again = assert(store_mod.new{ path = path, writer_thread = true })
    assert.equal(20, #again:read_all(0, 100))
    -- and one still gathering: none of it is reported written
    local gathering = sched.run(function()
      local threads = {}
      for i = 1, 5 do
        threads[i] = sched.spawn(function() return again:append("g#" .. i, 0, { ev() }) end)
      end
      again:close()
      return sched.wait_all(threads)
    end)
    for i = 1, 5 do
      assert.is_nil(gathering[i][2])
      assert.matches("store is closed", gathering[i][3].message)
    end
    local third = assert(store_mod.new{ path = path })
    assert.equal(20, #third:read_all(0, 100))
    third:close()
  end)

  it("an append after a sched.run that failed in the middle of a group completes", function()
    local store = new_store()
    local ok = pcall(sched.run, function()
      for i = 1, 3 do sched.spawn(function() return store:append("x#" .. i, 0, { ev() }) end) end
      error("the run fails while its group gathers")
    end)
    assert.is_false(ok)
    -- the abandoned gatherer never closes its group: the next one does
    local a, b = sched.run(function()
      local t1 = sched.spawn(function() return store:append("y", 0, { ev() }) end)
      local t2 = sched.spawn(function() return store:append("y", 1, { ev() }) end)
      local _, r1 = sched.wait(t1)
      local _, r2 = sched.wait(t2)
      return r1, r2
    end)
    assert.equal(1, a)
    assert.equal(2, b)
    store:close()
  end)

  it("a lone append with nothing else to run commits on the calling thread; appends ready together go to the writer",
    function()
    local store = new_store()
    -- one at a time, as `tide batch --concurrency 1` sends them
    local versions = sched.run(function()
      local out = {}
      for v = 1, 3 do out[v] = store:append("lone", v - 1, { ev("E") }) end
      return out
    end)
    assert.truthy(store.fd, "the writer thread was not started")
    assert.same({ 1, 2, 3 }, versions)
    assert.equal(3, store.stats.groups_here)
    assert.equal(3, store.stats.transactions)
    -- a conflict met on the calling thread is the same Conflict
    local last, err = sched.run(function() return store:append("lone", 1, { ev("X"), ev("Y") }) end)
    assert.is_nil(last)
    assert.equal("Conflict", err.type)
    assert.equal(3, err.current_version)
    assert.equal("stream is at version 3, not at the expected 1", err.message)
    assert.equal(4, store.stats.groups_here)
    -- ten ready in the same turn: one group, on the writer thread
    local results = sched.run(function()
      local threads = {}
      for i = 1, 10 do
        threads[i] = sched.spawn(function() return store:append("many#" .. i, 0, { ev() }) end)
      end
      return sched.wait_all(threads)
    end)
    for i = 1, 10 do assert.equal(1, results[i][2], tostring(results[i][3])) end
    assert.equal(4, store.stats.groups_here)
    assert.equal(5, store.stats.transactions)
    assert.equal(10, store.stats.largest_group)
    local types = {}
    for _, e in ipairs(store:load("lone", 0)) do types[#types + 1] = e.type end
    assert.same({ "E", "E", "E" }, types)
    assert.equal(13, #store:read_all(0, 100))
    store:close()
  end)

  it("groups run here and on the writer thread in turn never leave a waiting thread behind", function()
    -- a group run on the Lua thread collects the outcomes of a group the
    -- writer ended meanwhile: the thread that waited for that one must
    -- still wake (it did not, once: a hang, hence the child and timeout)
    local dir = helpers.tmpdir()
    dirs[#dirs + 1] = dir
    local q = helpers.shell_quote
    local out, status = helpers.run(("cd %s && timeout 120 env LUA_PATH=%s LUA_CPATH=%s luajit %s %s 2000 2>&1")
      :format(q(helpers.root), q(helpers.root .. "/lua/?.lua;" .. helpers.root .. "/lua/?/init.lua;;"),
              q(helpers.root .. "/" .. helpers.build .. "/lua/?.so;;"), "spec/fixtures/writer_rounds.lua",
              q(dir .. "/rounds.db")))
    assert.equal(0, status, out)
    local transactions, here = out:match("^ok (%d+) (%d+)")
    assert.truthy(transactions, out)
    -- both ways were taken
    assert.is_true(tonumber(here) > 0 and tonumber(transactions) > tonumber(here), out)
  end)

  it("is on by default when the process may run on two CPUs or more (its affinity mask)", function()
    local cpus = require("tide.sqlite").cpus()
    assert.is_true(cpus >= 1 and math.floor(cpus) == cpus)
    local dir = helpers.tmpdir()
    dirs[#dirs + 1] = dir
    local default = assert(store_mod.new{ path = dir .. "/d.db" })
    assert.equal(cpus >= 2, default.writer_thread)
    local off = assert(store_mod.new{ path = dir .. "/d.db", writer_thread = false })
    assert.is_false(off.writer_thread)
    default:close()
    off:close()
    -- a process pinned to one CPU sees one
    local out, status = helpers.run("taskset -c 0 env LUA_CPATH="
      .. helpers.shell_quote(helpers.root .. "/" .. helpers.build .. "/lua/?.so;;")
      .. [[ luajit -e 'io.write(require("tide.sqlite").cpus())' 2>&1]])
    assert.equal(0, status, out)
    assert.equal("1", out)
  end)

  it("a store with a writer thread that is never closed is closed by the garbage collector", function()
    local store = new_store()
    sched.run(function() assert(store:append("s", 0, { ev() })) end)
    store = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
  end)
end)
