-- tide.cache: an LRU map bounded by an estimate of its values' bytes.
--
-- The repository keeps each hot stream's state here, so a command on a hot
-- aggregate does not replay its events. Values are treated as immutable.
local M = {}

local Cache = {}
Cache.__index = Cache

-- cache.new(max_bytes) -> cache
function M.new(max_bytes)
  local head = {}
  head.prev, head.next = head, head
  return setmetatable({ max_bytes = max_bytes or 64 * 1024 * 1024, bytes = 0, count = 0,
                        map = {}, head = head, hits = 0, misses = 0, evictions = 0 }, Cache)
end

-- A rough size of a Lua value in bytes: enough to bound memory, cheap to
-- compute (one walk, no allocation).
local function estimate(v, depth)
  local t = type(v)
  if t == "string" then return 24 + #v end
  if t ~= "table" then return 16 end
  depth = (depth or 0) + 1
  if depth > 64 then return 0 end
  local n = 56
  for k, x in pairs(v) do n = n + 16 + estimate(k, depth) + estimate(x, depth) end
  return n
end
M.estimate = estimate

local function unlink(node)
  node.prev.next, node.next.prev = node.next, node.prev
end

local function push_front(self, node)
  local head = self.head
  node.next, node.prev = head.next, head
  head.next.prev = node
  head.next = node
end

function Cache:get(key)
  local node = self.map[key]
  if not node then
    self.misses = self.misses + 1
    return nil
  end
  self.hits = self.hits + 1
  unlink(node)
  push_front(self, node)
  return node.value
end

-- cache:put(key, value [, bytes]): bytes defaults to an estimate.
function Cache:put(key, value, bytes)
  bytes = bytes or estimate(value)
  local node = self.map[key]
  if node and bytes <= self.max_bytes then
    -- a new value for a key it has (a stream's record after each write):
    -- the node is kept, moved to the front
    unlink(node)
    push_front(self, node)
    self.bytes = self.bytes - node.bytes + bytes
    node.value, node.bytes = value, bytes
  else
    self:drop(key)
    if bytes > self.max_bytes then return end -- never evict everything for one value
    node = { key = key, value = value, bytes = bytes }
    self.map[key] = node
    push_front(self, node)
    self.bytes = self.bytes + bytes
    self.count = self.count + 1
  end
  while self.bytes > self.max_bytes do
    local last = self.head.prev
    self:drop(last.key)
    self.evictions = self.evictions + 1
  end
end

function Cache:drop(key)
  local node = self.map[key]
  if not node then return end
  unlink(node)
  self.map[key] = nil
  self.bytes = self.bytes - node.bytes
  self.count = self.count - 1
end

return M
