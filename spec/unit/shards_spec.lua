-- The shard lineage logic of DynamoDB Streams (lua/tide/projection/shards.lua),
-- pure: synthetic DescribeStream-shaped shard lists, no server.
local shards = require "tide.projection.shards"

local function shard(id, parent, first, last)
  return { ShardId = id, ParentShardId = parent,
           SequenceNumberRange = { StartingSequenceNumber = first or "100", EndingSequenceNumber = last } }
end

local function index_of(list)
  local idx = {}
  for i, v in ipairs(list) do idx[v] = i end
  return idx
end

describe("shards.tree", function()
  it("orders every parent before its children, whatever the input order", function()
    -- root A (closed) split into B and C (closed); C split into D; E is an
    -- unrelated root; F's parent was trimmed away (not listed).
    local list = {
      shard("shardId-004-D", "shardId-003-C", "400"),
      shard("shardId-002-B", "shardId-001-A", "200"),
      shard("shardId-006-F", "shardId-000-gone", "600"),
      shard("shardId-003-C", "shardId-001-A", "300", "399"),
      shard("shardId-005-E", nil, "500"),
      shard("shardId-001-A", nil, "100", "199"),
    }
    local tree = shards.tree(list)
    assert.equal(6, #tree.order)
    local idx = index_of(tree.order)
    assert.is_true(idx["shardId-001-A"] < idx["shardId-002-B"])
    assert.is_true(idx["shardId-001-A"] < idx["shardId-003-C"])
    assert.is_true(idx["shardId-003-C"] < idx["shardId-004-D"])
    assert.is_true(tree.by_id["shardId-001-A"].closed)
    assert.is_false(tree.by_id["shardId-002-B"].closed)
    assert.same({ "shardId-002-B", "shardId-003-C" }, tree.by_id["shardId-001-A"].children)
    assert.equal("399", tree.by_id["shardId-003-C"].end_seq)
  end)

  it("gives the same order for any permutation of the list", function()
    local base = {
      shard("s1"), shard("s2", "s1"), shard("s3", "s1"), shard("s4", "s2"), shard("s5", "s4"), shard("s6"),
    }
    local want = shards.tree(base).order
    math.randomseed(42)
    for _ = 1, 50 do
      local l = {}
      for i, s in ipairs(base) do l[i] = s end
      for i = #l, 2, -1 do
        local j = math.random(i)
        l[i], l[j] = l[j], l[i]
      end
      assert.same(want, shards.tree(l).order)
    end
  end)

  it("keeps every shard of a (malformed) cycle instead of dropping it", function()
    local tree = shards.tree({ shard("x", "y"), shard("y", "x") })
    assert.equal(2, #tree.order)
  end)

  it("raises on a list that is not DescribeStream's", function()
    assert.has_error(function() shards.tree(nil) end)
    assert.has_error(function() shards.tree({ { ParentShardId = "x" } }) end)
  end)
end)

describe("shards.startable", function()
  local tree = shards.tree({
    shard("p", nil, "1", "9"), shard("c1", "p"), shard("c2", "p"), shard("orphan", "trimmed"), shard("root"),
  })

  it("starts roots and shards whose parent is no longer listed", function()
    local none = function() return false end
    assert.is_true(shards.startable(tree, "p", none))
    assert.is_true(shards.startable(tree, "root", none))
    assert.is_true(shards.startable(tree, "orphan", none))
  end)

  it("starts a child only once its parent's lease says SHARD_END", function()
    assert.is_false(shards.startable(tree, "c1", function() return false end))
    assert.is_true(shards.startable(tree, "c1", function(id) return id == "p" end))
    assert.is_false(shards.startable(tree, "unknown", function() return true end))
  end)
end)

describe("shards.compare_seq", function()
  it("compares long decimal sequence numbers exactly", function()
    assert.equal(-1, shards.compare_seq("000000000000000000001", "000000000000000000002"))
    assert.equal(0, shards.compare_seq("00012", "12"))
    assert.equal(1, shards.compare_seq("100000000000000000000000000000000000001",
                                       "99999999999999999999999999999999999999"))
    -- beyond 2^53 a double would call these equal
    assert.equal(-1, shards.compare_seq("9007199254740992000001", "9007199254740992000002"))
  end)
end)

describe("shards.plan", function()
  local function lease(shard, owner, expired)
    return { shard = shard, owner = owner, expired = expired or false, counter = 0 }
  end
  local all = function(list)
    local e = {}
    for _, l in ipairs(list) do e[l.shard] = true end
    return e
  end

  it("takes every free shard when alone, at most max_takes a round", function()
    local list = { lease("a"), lease("b"), lease("c") }
    local p = shards.plan{ owner = "w1", leases = list, eligible = all(list) }
    assert.equal(3, p.share)
    assert.equal(3, #p.takes)
    p = shards.plan{ owner = "w1", leases = list, eligible = all(list), max_takes = 2 }
    assert.equal(2, #p.takes)
  end)

  it("takes expired leases up to its fair share, leaves live ones", function()
    local list = { lease("a", "w2"), lease("b", "w2"), lease("c", "w3", true), lease("d") }
    local p = shards.plan{ owner = "w1", leases = list, eligible = all(list) }
    -- live owners: w1 (itself) and w2; w3's lease expired
    assert.equal(2, p.share)
    assert.same({ "c", "d" }, { p.takes[1].shard, p.takes[2].shard })
    assert.is_nil(p.steal)
  end)

  it("steals one lease at a time from an owner holding 2 more, never when within 1", function()
    local list = { lease("a", "w2"), lease("b", "w2"), lease("c", "w2"), lease("d", "w2") }
    local p = shards.plan{ owner = "w1", leases = list, eligible = all(list) }
    assert.equal(0, #p.takes)
    assert.equal("w2", p.steal.owner)
    assert.is_nil(shards.plan{ owner = "w1", leases = list, eligible = all(list), may_steal = false }.steal)
    -- 2 against 1 (3 shards, 2 owners): within 1, nobody steals
    list = { lease("a", "w2"), lease("b", "w2"), lease("c", "w1") }
    assert.is_nil(shards.plan{ owner = "w1", leases = list, eligible = all(list), running = { c = true } }.steal)
  end)

  it("ignores shards that are not eligible (finished, waiting for a parent)", function()
    local list = { lease("a"), lease("b"), lease("c") }
    local p = shards.plan{ owner = "w1", leases = list, eligible = { b = true } }
    assert.equal(1, #p.takes)
    assert.equal("b", p.takes[1].shard)
  end)

  -- The property: whatever the joins and leaves (graceful or crashes), the
  -- workers' plans, applied round after round, end with every shard owned
  -- and the counts of live workers within 1, in a bounded number of rounds.
  it("converges under random joins and leaves (64 shards; 0 -> 8 -> 12 -> 5, then random)", function()
    local N = 64
    math.randomseed(20261206)
    local owner, expired = {}, {}        -- shard -> worker; shard -> true when its owner crashed
    local ids = {}
    for i = 1, N do ids[i] = string.format("s%03d", i) end
    local workers, serial = {}, 0
    local function join()
      serial = serial + 1
      workers[#workers + 1] = "w" .. serial
    end
    local function leave(crash)
      local i = math.random(#workers)
      local w = table.remove(workers, i)
      for _, s in ipairs(ids) do
        if owner[s] == w then
          if crash then expired[s] = true else owner[s] = nil end
        end
      end
    end
    local function round()
      local moved = 0
      local order = {}
      for i, w in ipairs(workers) do order[i] = w end
      for i = #order, 2, -1 do local j = math.random(i); order[i], order[j] = order[j], order[i] end
      for _, w in ipairs(order) do
        local list, running = {}, {}
        for _, s in ipairs(ids) do
          list[#list + 1] = { shard = s, owner = owner[s], expired = expired[s] or false, counter = 0 }
          if owner[s] == w and not expired[s] then running[s] = true end
        end
        local p = shards.plan{ owner = w, leases = list, eligible = all(list), running = running,
                               max_takes = 8, may_steal = true }
        for _, l in ipairs(p.takes) do owner[l.shard], expired[l.shard] = w, nil; moved = moved + 1 end
        if p.steal then owner[p.steal.shard] = w; moved = moved + 1 end
      end
      return moved
    end
    local function settle(label)
      local rounds = 0
      repeat rounds = rounds + 1 until round() == 0 or rounds > 200
      assert.is_true(rounds <= 200, label .. ": no convergence")
      if #workers == 0 then return rounds end
      local counts = {}
      for _, w in ipairs(workers) do counts[w] = 0 end
      for _, s in ipairs(ids) do
        assert.is_not_nil(owner[s], label .. ": shard " .. s .. " has no owner")
        assert.is_nil(expired[s], label .. ": shard " .. s .. " left to a dead worker")
        counts[owner[s]] = counts[owner[s]] + 1
      end
      local lo, hi = math.huge, 0
      for _, c in pairs(counts) do lo, hi = math.min(lo, c), math.max(hi, c) end
      assert.is_true(hi - lo <= 1, label .. ": counts from " .. lo .. " to " .. hi)
      return rounds
    end
    for _ = 1, 8 do join() end
    settle("8 workers")
    for _ = 1, 4 do join() end
    settle("12 workers")
    for k = 1, 7 do leave(k % 2 == 0) end
    settle("5 workers")
    local worst = 0
    for step = 1, 60 do
      local r = math.random()
      if #workers == 0 or (r < 0.5 and #workers < 20) then
        for _ = 1, math.random(3) do join() end
      else
        for _ = 1, math.min(#workers, math.random(3)) do leave(math.random() < 0.5) end
      end
      worst = math.max(worst, settle("step " .. step .. " (" .. #workers .. " workers)"))
    end
    assert.is_true(worst <= 64, "took " .. worst .. " rounds")
  end)
end)
