-- tide.schema: the small, JSON-ish schemas that aggregates use to validate
-- commands and events before any handler sees them.
--
-- A schema maps field names to a type, either as a string or a table:
--
--   { owner = "string", amount = "integer", note = "string?" }
--   { amount = { type = "integer", min = 1 }, currency = { type = "string", enum = { "EUR", "USD" } } }
--
-- Types: string, number, integer, boolean, table, array, any. A trailing `?`
-- or `optional = true` makes a field optional. Fields a schema does not name
-- are refused, with a "did you mean" hint: a typo never passes silently.
local M = {}

local TYPES = { string = true, number = true, integer = true, boolean = true,
                table = true, array = true, any = true }

local function type_name(v)
  local t = type(v)
  if t == "number" then
    return (v == math.floor(v) and v > -2^53 and v < 2^53) and "integer" or "number"
  end
  if t == "table" then
    local mt = getmetatable(v)
    if mt and mt.__name then return mt.__name end
    return (#v > 0 or next(v) == nil) and "array" or "table"
  end
  return t
end

-- "did you mean": the closest string key of candidates to name, or nil.
local suggest = require("tide.suggest").closest_key
M.suggest = suggest

-- A number as people write it: integers in full (1000000000000, not 1e+12).
local function num_text(x)
  if x == math.floor(x) and math.abs(x) < 2 ^ 63 then return ("%d"):format(x) end
  return tostring(x)
end

-- Normalizes a field spec to {type=, optional=, min=, max=, enum=};
-- returns nil, message for a malformed one (a mistake in the module).
local function normalize(field, spec)
  if type(spec) == "string" then
    local optional = spec:sub(-1) == "?"
    local t = optional and spec:sub(1, -2) or spec
    spec = { type = t, optional = optional }
  elseif type(spec) ~= "table" then
    return nil, ("field '%s': a schema entry is a type name such as \"string\" or a table {type=...}"):format(field)
  end
  if not TYPES[spec.type] then
    return nil, ("field '%s': unknown type %s (use string, number, integer, boolean, table, array or any)")
      :format(field, tostring(spec.type))
  end
  return spec
end

-- Compiles a schema table; returns the compiled schema or nil, message.
function M.compile(schema)
  if type(schema) ~= "table" then
    return nil, "a schema must be a table of field = type"
  end
  local fields = {}
  for field, spec in pairs(schema) do
    if type(field) ~= "string" then
      return nil, "schema field names must be strings"
    end
    local s, err = normalize(field, spec)
    if not s then return nil, err end
    fields[field] = s
  end
  return { fields = fields }
end

local function check_value(field, spec, v)
  local t = type_name(v)
  local want = spec.type
  if want ~= "any" then
    local ok = (t == want) or (want == "number" and t == "integer")
      or (want == "table" and (t == "table" or t == "array"))
      or (want == "number" and t == "tide.number")
    if not ok then
      return ("field '%s' must be %s %s (got %s)"):format(field,
        (want == "integer" or want == "array") and "an" or "a", want, t)
    end
  end
  if spec.min and type(v) == "number" and v < spec.min then
    return ("field '%s' must be at least %s (got %s)"):format(field, num_text(spec.min), num_text(v))
  end
  if spec.max and type(v) == "number" and v > spec.max then
    return ("field '%s' must be at most %s (got %s)"):format(field, num_text(spec.max), num_text(v))
  end
  if spec.enum then
    for _, allowed in ipairs(spec.enum) do
      if v == allowed then return nil end
    end
    return ("field '%s' must be one of %s (got %s)"):format(field, table.concat(spec.enum, ", "), tostring(v))
  end
end

-- The fast check of a compiled schema (with one `skip` set): a function
-- made once, from generated code, that returns true only for a record the
-- full check below accepts, and false when unsure (a field missing or of a
-- wrong type, an unknown field, a value with a metatable): then the full
-- check runs and gives the answer and its message. It has no loop (the
-- fields are unrolled, unknown fields found by counting the keys with
-- table.nkeys), so the JIT compiles it into the caller's trace: a loop
-- over the fields was an "inner loop in root trace" abort, the most
-- frequent of a command's path.
local nkeys_ok, nkeys = pcall(require, "table.nkeys")
local NOSKIP = {}

local function fast_check(compiled, skip)
  if not nkeys_ok then return nil end
  local K, nk = {}, 0
  local function const(v) nk = nk + 1; K[nk] = v; return ("K[%d]"):format(nk) end
  local src = { "local K, nkeys, type, floor, getmetatable = ...\nreturn function(r)\nlocal n, v = 0, nil\n" }
  local function add(s) src[#src + 1] = s end
  local names = {}
  for field in pairs(compiled.fields) do names[#names + 1] = field end
  table.sort(names)
  for _, field in ipairs(names) do
    local spec = compiled.fields[field]
    local want = spec.type
    add(("v = r[%q]\nif v == nil then\n"):format(field))
    add(spec.optional and "" or "return false\n")
    add("else\nn = n + 1\n")
    if want == "string" or want == "boolean" then
      add(("if type(v) ~= %q then return false end\n"):format(want))
    elseif want == "number" then
      add("if type(v) ~= \"number\" then return false end\n")
    elseif want == "integer" then
      add("if type(v) ~= \"number\" or v ~= floor(v) or v <= -2^53 or v >= 2^53 then return false end\n")
    elseif want == "table" then
      add("if type(v) ~= \"table\" or getmetatable(v) ~= nil then return false end\n")
    elseif want == "array" then
      add("if type(v) ~= \"table\" or getmetatable(v) ~= nil or (#v == 0 and nkeys(v) > 0) then return false end\n")
    end -- "any": every value
    if (spec.min and type(spec.min) ~= "number") or (spec.max and type(spec.max) ~= "number")
      or (spec.enum and type(spec.enum) ~= "table") then
      return nil -- the full check says what is wrong
    end
    if spec.min then
      add(("if type(v) == \"number\" and v < %s then return false end\n"):format(const(spec.min)))
    end
    if spec.max then
      add(("if type(v) == \"number\" and v > %s then return false end\n"):format(const(spec.max)))
    end
    if spec.enum then
      local set = {}
      for _, allowed in ipairs(spec.enum) do
        if allowed == allowed then set[allowed] = true end
      end
      add(("if not %s[v] then return false end\n"):format(const(set)))
    end
    add("end\n")
  end
  if skip ~= NOSKIP then
    local extra = {}
    for field, on in pairs(skip) do
      if on and compiled.fields[field] == nil then extra[#extra + 1] = field end
    end
    table.sort(extra, function(a, b) return tostring(a) < tostring(b) end)
    for _, field in ipairs(extra) do
      if type(field) ~= "string" then return nil end
      add(("if r[%q] ~= nil then n = n + 1 end\n"):format(field))
    end
  end
  add("return nkeys(r) == n\nend\n")
  local chunk = assert(load(table.concat(src), "=tide.schema(fast check)"))
  return chunk(K, nkeys, type, math.floor, getmetatable)
end

-- Validates a record (command or event payload) against a compiled schema.
-- `skip` names fields that are not payload (e.g. { type = true, id = true });
-- pass the same table every time (the fast check is made once per skip).
-- Returns true or nil, message naming the field.
function M.validate(compiled, record, skip)
  local fast = compiled.fast
  if not fast then
    fast = setmetatable({}, { __mode = "k" })
    compiled.fast = fast
  end
  local key = skip or NOSKIP
  local check = fast[key]
  if check == nil then
    -- another table with the same names shares the check (made once)
    local names = {}
    if key ~= NOSKIP then
      for k, on in pairs(key) do
        if on then names[#names + 1] = type(k) .. ":" .. tostring(k) end
      end
      table.sort(names)
    end
    local sig = "skip:" .. table.concat(names, "\0")
    check = compiled[sig]
    if check == nil then
      check = fast_check(compiled, key) or false
      compiled[sig] = check
    end
    fast[key] = check
  end
  if check and check(record) then return true end
  return M.full_validate(compiled, record, skip)
end

function M.full_validate(compiled, record, skip)
  -- unknown fields first: a misspelt field is also a missing one, and the
  -- "did you mean" names the fix
  for field in pairs(record) do
    if not compiled.fields[field] and not (skip and skip[field]) then
      local hint = type(field) == "string" and suggest(field, compiled.fields)
      return nil, ("unexpected field '%s'%s"):format(tostring(field),
        hint and (" (did you mean '" .. hint .. "'?)") or "")
    end
  end
  for field, spec in pairs(compiled.fields) do
    local v = record[field]
    if v == nil then
      if not spec.optional then
        return nil, ("missing required field '%s'"):format(field)
      end
    else
      local err = check_value(field, spec, v)
      if err then return nil, err end
    end
  end
  return true
end

return M
