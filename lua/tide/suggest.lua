-- tide.suggest: "did you mean" for every name a user can mistype
-- (configuration keys, aggregates, commands, fields).
local M = {}

-- Levenshtein distance, case-insensitive.
local function distance(a, b)
  a, b = a:lower(), b:lower()
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, #b do
      local cost = (ca == b:byte(j)) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end
M.distance = distance

-- The closest of names (a list) to word, if it is close enough to be a
-- likely typo; else nil.
function M.closest(word, names)
  local best, best_d
  for _, n in ipairs(names) do
    local d = distance(word, n)
    if not best_d or d < best_d then best, best_d = n, d end
  end
  if best and best_d <= math.max(2, math.floor(#word / 3)) then return best end
  -- "warning" -> "warn", "dynamo" -> "dynamodb"
  for _, n in ipairs(names) do
    local short, long = n, word
    if #short > #long then short, long = long, short end
    if #short >= 3 and long:lower():sub(1, #short) == short:lower() then return n end
  end
  return nil
end

-- The same over the string keys of a table, in a stable order.
function M.closest_key(word, tbl)
  local names = {}
  for k in pairs(tbl) do
    if type(k) == "string" then names[#names + 1] = k end
  end
  table.sort(names)
  return M.closest(word, names)
end

return M
