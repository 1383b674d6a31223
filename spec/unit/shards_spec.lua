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

describe("shards.plan_takes", function()
  local function lease(shard, owner, expires, counter)
    return { shard = shard, owner = owner, expires = expires or 0, counter = counter or 0 }
  end
  local all = function(list)
    local e = {}
    for _, l in ipairs(list) do e[l.shard] = true end
    return e
  end

  it("takes every free shard when alone", function()
    local list = { lease("a"), lease("b"), lease("c") }
    local takes, share = shards.plan_takes{ owner = "w1", now = 1000, leases = list, eligible = all(list) }
    assert.equal(3, share)
    assert.equal(3, #takes)
  end)

  it("takes expired leases up to its fair share, leaves live ones", function()
    local list = { lease("a", "w2", 5000), lease("b", "w2", 5000), lease("c", "w3", 10), lease("d") }
    local takes, share = shards.plan_takes{ owner = "w1", now = 1000, leases = list, eligible = all(list) }
    -- live owners: w1 (itself) and w2; w3's lease expired
    assert.equal(2, share)
    assert.equal(2, #takes)
    assert.same({ "c", "d" }, { takes[1].shard, takes[2].shard })
  end)

  it("steals one lease at a time from an owner above its share", function()
    local list = { lease("a", "w2", 5000), lease("b", "w2", 5000), lease("c", "w2", 5000), lease("d", "w2", 5000) }
    local takes, share = shards.plan_takes{ owner = "w1", now = 1000, leases = list, eligible = all(list) }
    assert.equal(2, share)
    assert.equal(1, #takes)
    assert.is_true(takes[1].steal)
    assert.equal("w2", takes[1].owner)
    -- once balanced (2 and 2), nobody steals
    list = { lease("a", "w2", 5000), lease("b", "w2", 5000), lease("c", "w1", 5000), lease("d", "w1", 5000) }
    takes = shards.plan_takes{ owner = "w1", now = 1000, leases = list, eligible = all(list) }
    assert.equal(0, #takes)
  end)

  it("ignores shards that are not eligible (finished, waiting for a parent)", function()
    local list = { lease("a"), lease("b"), lease("c") }
    local takes = shards.plan_takes{ owner = "w1", now = 0, leases = list, eligible = { b = true } }
    assert.equal(1, #takes)
    assert.equal("b", takes[1].shard)
  end)
end)
