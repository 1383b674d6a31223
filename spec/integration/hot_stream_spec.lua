-- Hot streams, on both stores: many writer processes on one stream (every
-- command succeeds, the stream has no gap), a conflict answered by a
-- catch-up (only the new events are read), and commands waiting on one
-- stream decided in one batch and written together, with every result and
-- every event the same as when the commands run one at a time.
local helpers = require "helpers"
local stores = require "stores"
local cjson = require "cjson"
local sched = require "tide.sched"
local aggregate = require "tide.aggregate"
local repository = require "tide.repository"

-- many events on tables with streams: a DynamoDB Local of this file's own
helpers.private_dynamodb()

local q = helpers.shell_quote
local tide = stores.tide

local lines = helpers.lines

-- An aggregate whose commands accept, reject, raise (after spoiling the
-- state it was given), return several events or none.
local TALLY = [[
local tally = {}
tally.initial = { value = 0, ops = 0 }
tally.commands = {
  Add = function(s, c) return { type = "Added", n = c.n } end,
  Take = function(s, c)
    if s.value < c.n then return nil, "only " .. s.value .. " left, " .. c.n .. " asked" end
    return { type = "Taken", n = c.n }
  end,
  Boom = function(s, c) s.value = -1000000; error("boom " .. c.n) end,
  Triple = function(s, c)
    return { { type = "Added", n = c.n }, { type = "Added", n = c.n + 1 }, { type = "Added", n = c.n + 2 } }
  end,
  Nothing = function() return {} end,
}
tally.events = {
  Added = function(s, e) s.value = s.value + e.n; s.ops = s.ops + 1; return s end,
  Taken = function(s, e) s.value = s.value - e.n; s.ops = s.ops + 1; return s end,
}
return tally
]]

-- 400 lines on 3 streams, from a fixed seed: every kind of command, some
-- with command ids, some of those sent twice (a duplicate inside a batch).
local function mixed_commands()
  math.randomseed(20261206)
  local out, ids = {}, {}
  local kinds = { "Add", "Add", "Add", "Take", "Take", "Boom", "Triple", "Nothing" }
  for i = 1, 400 do
    local ctype = kinds[math.random(#kinds)]
    local cmd = { type = ctype, n = ctype == "Take" and math.random(1, 150) or math.random(1, 20) }
    local stream_no = i % 3
    local r = math.random()
    if r < 0.1 and #ids > 0 then
      -- the same command again, with its id, on its stream
      local again = ids[math.random(#ids)]
      cmd, stream_no = again.cmd, again.stream_no
    elseif r < 0.25 then
      cmd.id = "cmd-" .. i
      ids[#ids + 1] = { cmd = cmd, stream_no = stream_no }
    end
    out[#out + 1] = cjson.encode{ aggregate = "tally", id = "t" .. stream_no, command = cmd }
  end
  return table.concat(out, "\n") .. "\n"
end

-- A result line without what differs between two runs of the same
-- commands (generated command ids, timestamps, handler tracebacks).
local function normalized(line)
  local r = cjson.decode(line)
  if not r.ok then
    local msg = r.error.message
    if r.error.kind == "handler_error" then msg = msg:match("boom %d+") or msg end
    return cjson.encode{ kind = r.error.kind, message = msg }
  end
  local events = {}
  for i, e in ipairs(r.events) do
    events[i] = { version = e.version, type = e.type, data = e.data, index = e.meta.index, count = e.meta.count,
                  command = e.meta.command }
  end
  return cjson.encode{ stream = r.stream, version = r.version, duplicate = r.duplicate or false, events = events }
end

local function stream_events(dir, id)
  local out = {}
  for _, l in ipairs(lines((tide(dir, "events tally " .. id, nil, true)))) do
    local e = cjson.decode(l)
    out[#out + 1] = cjson.encode{ version = e.version, type = e.type, data = e.data, index = e.meta.index }
  end
  return out
end

local function stats_of(text)
  for _, l in ipairs(lines(text)) do
    local ok, v = pcall(cjson.decode, l)
    if ok and type(v) == "table" and v.stats then return v.stats end
  end
end

stores.each(function(kind)
  describe("a hot stream on the " .. kind .. " store", function()
    it("takes 8 writer processes x 100 deposits on one account: all succeed, no gap", function()
      local dir = stores.cli_dir(kind)
      finally(function() os.execute("rm -rf " .. q(dir)) end)
      assert.equal(0, select(2, tide(dir, "exec account hot '{\"type\":\"Open\",\"owner\":\"ada\"}'")))
      local batch = {}
      for i = 1, 100 do
        batch[i] = cjson.encode{ aggregate = "account", id = "hot", command = { type = "Deposit", amount = i } }
      end
      helpers.write_file(dir .. "/deposits.ndjson", table.concat(batch, "\n") .. "\n")
      local ok_count, conflicts, unread = 0, 0, 0
      for _, proc in ipairs(stores.batch_processes(dir, 8, "deposits.ndjson", "--stats")) do
        assert.equal("0", proc.rc, proc.out .. proc.err)
        for _, l in ipairs(lines(proc.out)) do
          if cjson.decode(l).ok then ok_count = ok_count + 1 end
        end
        local st = assert(stats_of(proc.err))
        assert.equal(100, st.outcomes.ok)
        if kind == "dynamodb" then
          assert.is_true(st.dynamodb.requests_total > 0)
          assert.is_true(st.dynamodb.write_units > 0)
          conflicts = conflicts + st.conflicts
          unread = unread + st.catch_ups - st.catch_up_reads
        end
      end
      assert.equal(800, ok_count)
      if kind == "dynamodb" and conflicts > 20 then
        -- catch-ups from the refused writes' answers alone (the stream's
        -- end seen, or the other writer's whole append: a guess)
        assert.is_true(unread > 0, ("%d conflicts, every catch-up read"):format(conflicts))
      end
      local st = cjson.decode((tide(dir, "state account hot")))
      assert.equal(8 * 5050, st.state.balance)
      assert.equal(801, st.version)
      stores.assert_versions(dir, "hot", 801)
    end)

    it("decides a batch on one stream as a sequential run does: accepted, rejected, raising, duplicate", function()
      local input = mixed_commands()
      local function run_in(extra, args)
        local dir = stores.cli_dir(kind, extra)
        os.execute("mkdir -p " .. q(dir .. "/aggregates"))
        helpers.write_file(dir .. "/aggregates/tally.lua", TALLY)
        helpers.write_file(dir .. "/commands.ndjson", input)
        local cfg = helpers.read_file(dir .. "/tide.yaml"):gsub("aggregates: [^\n]+", "aggregates: " .. dir .. "/aggregates")
        helpers.write_file(dir .. "/tide.yaml", cfg)
        local out = helpers.run("cd " .. q(dir) .. " && " .. stores.CLI_ENV .. q(helpers.tide_bin) .. " batch "
                                .. args .. " < commands.ndjson 2> stats.txt")
        return dir, lines(out), stats_of(helpers.read_file(dir .. "/stats.txt"))
      end
      local bdir, batched, bstats = run_in(nil, "--stats")
      local sdir, sequential, sstats = run_in({ "commands:", "  batching: false" }, "--concurrency 1 --stats")
      finally(function() os.execute("rm -rf " .. q(bdir) .. " " .. q(sdir)) end)
      assert.equal(400, #batched)
      assert.equal(400, #sequential)
      local seen = {}
      for i = 1, 400 do
        local b, s = normalized(batched[i]), normalized(sequential[i])
        assert.equal(s, b, "line " .. i)
        local r = cjson.decode(batched[i])
        seen[r.ok and (r.duplicate and "duplicate" or "ok") or r.error.kind] = true
      end
      for _, k in ipairs{ "ok", "rejected", "handler_error", "duplicate" } do
        assert.is_true(seen[k], "no " .. k .. " result among the 400")
      end
      for t = 0, 2 do
        assert.same(stream_events(sdir, "t" .. t), stream_events(bdir, "t" .. t))
      end
      -- the batched run shared writes; the sequential one wrote once per command with events
      assert.is_true(bstats.writes < sstats.writes / 2, ("writes: batched %d, sequential %d"):format(
        bstats.writes, sstats.writes))
    end)

    it("answers a conflict with a catch-up: only the new events are read, the record is kept", function()
      local open = kind == "sqlite" and stores.open_sqlite or stores.open_dynamodb
      local reg = aggregate.registry(helpers.root .. "/aggregates")
      sched.run(function()
        local store, desc = open()
        local other_store = kind == "sqlite" and stores.open_sqlite(desc.path) or open(desc.prefix)
        local mine = repository.new{ store = store, registry = reg }
        local theirs = repository.new{ store = other_store, registry = reg }
        assert(mine:execute("account", "c1", { type = "Open", owner = "ada" }))
        assert(mine:execute("account", "c1", { type = "Deposit", amount = 5 }))
        assert.equal(1, mine.stats.loads)
        for i = 1, 3 do assert(theirs:execute("account", "c1", { type = "Deposit", amount = i })) end
        local res = assert(mine:execute("account", "c1", { type = "Deposit", amount = 100 }))
        assert.equal(6, res.version)
        -- DynamoDB: the refused PutItem shows theirs at version 3, the end
        -- of its append, taken as all that was missed (a guess); the next
        -- write is refused too, and that catch-up reads (versions 4, 5)
        local lost = kind == "dynamodb" and 2 or 1
        assert.equal(lost, mine.stats.conflicts)
        assert.equal(lost, mine.stats.catch_ups)
        assert.equal(1, mine.stats.catch_up_reads)
        assert.equal(1, mine.stats.loads) -- no reload from the snapshot
        assert.equal(111, assert(mine:state("account", "c1")).state.balance)
        -- a command id written by the other process is found by the catch-up
        assert(theirs:execute("account", "c1", { type = "Deposit", amount = 7, id = "dup-1" }))
        local dup = assert(mine:execute("account", "c1", { type = "Deposit", amount = 7, id = "dup-1" }))
        assert.is_true(dup.duplicate)
        assert.equal(7, dup.version)
        store:close()
        other_store:close()
      end)
    end)

    if kind == "dynamodb" then
      it("catches up from the refused write's answer when it shows where the stream ends: no read", function()
        local reg = aggregate.registry(helpers.root .. "/aggregates")
        reg:add(assert(aggregate.from_source("tally", TALLY, "tally.lua")))
        sched.run(function()
          local store, desc = stores.open_dynamodb()
          local other_store = stores.open_dynamodb(desc.prefix)
          local mine = repository.new{ store = store, registry = reg }
          local theirs = repository.new{ store = other_store, registry = reg }
          assert(mine:execute("tally", "x", { type = "Add", n = 1 }))
          assert(theirs:execute("tally", "x", { type = "Add", n = 10 }))
          local queries = store.client.usage.requests.Query or 0
          -- 3 events at versions 2..4: the transaction's Put of version 2
          -- finds theirs, the Put of version 3 finds nothing
          local res = assert(mine:execute("tally", "x", { type = "Triple", n = 100 }))
          assert.equal(5, res.version)
          assert.equal(1, mine.stats.catch_ups)
          assert.equal(queries, store.client.usage.requests.Query or 0)
          assert.equal(1 + 10 + 100 + 101 + 102, assert(mine:state("tally", "x")).state.value)
          -- a refused PutItem shows one event; when it is the last of its
          -- append (theirs wrote one event), it is taken as all that was
          -- missed: no read, one request for the conflict
          assert(theirs:execute("tally", "x", { type = "Add", n = 1 }))
          queries = store.client.usage.requests.Query or 0
          res = assert(mine:execute("tally", "x", { type = "Add", n = 1 }))
          assert.equal(7, res.version)
          assert.equal(2, mine.stats.catch_ups)
          assert.equal(1, mine.stats.guessed_catch_ups)
          assert.equal(0, mine.stats.catch_up_reads)
          assert.equal(queries, store.client.usage.requests.Query or 0)
          -- a wrong guess (theirs wrote three appends): the next write is
          -- refused too, and that catch-up reads all that was missed
          for _ = 1, 3 do assert(theirs:execute("tally", "x", { type = "Add", n = 1 })) end
          res = assert(mine:execute("tally", "x", { type = "Add", n = 1 }))
          assert.equal(11, res.version)
          assert.equal(4, mine.stats.catch_ups)
          assert.equal(2, mine.stats.guessed_catch_ups)
          assert.equal(1, mine.stats.catch_up_reads)
          assert.equal(queries + 1, store.client.usage.requests.Query or 0)
          -- the one event shown is not the last of its append: read past it
          assert(theirs:execute("tally", "x", { type = "Triple", n = 1 }))
          res = assert(mine:execute("tally", "x", { type = "Add", n = 1 }))
          assert.equal(15, res.version)
          assert.equal(5, mine.stats.catch_ups)
          assert.equal(2, mine.stats.catch_up_reads)
          assert.equal(queries + 2, store.client.usage.requests.Query or 0)
          local value = 1 + 10 + 100 + 101 + 102 + 2 + 4 + 6 + 1
          assert.equal(value, assert(mine:state("tally", "x")).state.value)
          -- a transaction that finds two or more events and nothing free
          -- takes them as all it missed: no read, and the next write wins
          assert(theirs:execute("tally", "x", { type = "Triple", n = 1 }))
          queries = store.client.usage.requests.Query or 0
          res = assert(mine:execute("tally", "x", { type = "Triple", n = 10 }))
          assert.equal(21, res.version)
          assert.equal(6, mine.stats.catch_ups)
          assert.equal(queries, store.client.usage.requests.Query or 0)
          value = value + 6 + 33
          assert.equal(value, assert(mine:state("tally", "x")).state.value)
          -- found events that do not connect to the cached version (the
          -- one after it is missing): read from the cached version
          local agg = reg:get("tally")
          local rec = mine.cache:get("tally#x")
          assert.equal(21, rec.version)
          assert(theirs:execute("tally", "x", { type = "Add", n = 1 }))
          assert(theirs:execute("tally", "x", { type = "Add", n = 1000 }))
          local later = assert(store:load("tally#x", 22))
          assert.equal(23, later[1].version)
          later[1].last = 1
          queries = store.client.usage.requests.Query or 0
          local caught, guessed = mine:catch_up(agg, "tally#x", rec, { found = later, found_all = true }, true)
          assert.equal(queries + 1, store.client.usage.requests.Query or 0)
          assert.is_false(guessed)
          assert.equal(23, caught.version)
          assert.equal(value + 1001, caught.state.value)
          store:close()
          other_store:close()
        end)
      end)

      it("reads the snapshots of loads that start together in one request", function()
        local reg = aggregate.registry(helpers.root .. "/aggregates")
        reg:add(assert(aggregate.from_source("tally", TALLY, "tally.lua")))
        sched.run(function()
          local store, desc = stores.open_dynamodb()
          local other_store = stores.open_dynamodb(desc.prefix)
          -- t1 and t2 with a snapshot at version 2 (t1 an event past it), t3..t5 without
          local theirs = repository.new{ store = other_store, registry = reg, snapshot_every = 2 }
          for i = 1, 5 do
            assert(theirs:execute("tally", "t" .. i, { type = "Add", n = i }))
            if i <= 2 then assert(theirs:execute("tally", "t" .. i, { type = "Add", n = 10 })) end
          end
          assert(theirs:execute("tally", "t1", { type = "Add", n = 1000 }))
          assert.equal(2, theirs.stats.snapshots)
          local mine = repository.new{ store = store, registry = reg }
          local used = store.client.usage.requests
          local gets, batches = used.GetItem or 0, used.BatchGetItem or 0
          local threads = {}
          for i = 1, 5 do
            threads[i] = sched.spawn(function() return mine:execute("tally", "t" .. i, { type = "Add", n = 100 }) end)
          end
          local want = { 1111, 112, 103, 104, 105 }
          for i = 1, 5 do
            local ok, res = sched.wait(threads[i])
            assert.is_true(ok)
            assert.equal(want[i], assert(res).version and mine.cache:get("tally#t" .. i).state.value)
          end
          assert.equal(gets, used.GetItem or 0)
          assert.equal(batches + 1, used.BatchGetItem)
          assert.equal(4, mine.stats.snapshot_reads_shared)
          -- one load alone reads its snapshot as before
          assert.equal(1111, assert(mine:state("tally", "t1")).state.value)
          assert.equal(gets + 1, used.GetItem)
          -- credentials that may not BatchGetItem (an older IAM policy):
          -- one GetItem per stream, from then on
          local real = store.client
          local denied = 0
          store.client = setmetatable({ batch_get = function()
            denied = denied + 1
            return nil, { type = "AccessDeniedException", message = "not authorized to perform BatchGetItem" }
          end }, { __index = real })
          for _ = 1, 2 do
            local snaps = assert(store:get_snapshots({ "tally#t1", "tally#t2", "tally#t3" }))
            assert.equal(2, snaps["tally#t1"].version)
            assert.equal(2, snaps["tally#t2"].version)
            assert.is_false(snaps["tally#t3"])
          end
          assert.equal(1, denied)
          assert.equal(gets + 7, used.GetItem)
          store.client = real
          store:close()
          other_store:close()
        end)
      end)
    end
  end)
end)
