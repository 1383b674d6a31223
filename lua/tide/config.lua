-- tide.config: tide's configuration (tide.yaml), for the CLI and for nginx's
-- init_by_lua. Reference: docs/configuration.md.
--
--   local cfg, err = config.load{ file = "--config value or nil" }
--   local cfg, err = config.from_table({ store = "sqlite" }, "test")
--
-- Both return a plain table with every default filled in, or nil and a
-- tide.error { kind = "invalid", type = "ConfigError", message =
-- "tide.yaml:4: ...", source =, line =, key = } whose tostring is the
-- message. Wrong argument types are programmer errors and raise.
local core = require "tide.core"
local terror = require "tide.error"

local M = {}

local KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024

-- The schema, in the order of docs/configuration.md. A section holds keys;
-- a key has a kind (string, path, url, enum, integer, boolean, size) and
-- a default (nil: left unset, e.g. dynamodb.region, which then comes from
-- the AWS environment when the DynamoDB client starts).
local SCHEMA = {
  { name = "store", kind = "enum", values = { "sqlite", "dynamodb" }, default = "sqlite" },
  { name = "sqlite", section = {
    { name = "path", kind = "path", default = "./tide.db", sqlite = true },
    { name = "busy_timeout_ms", kind = "integer", min = 0, default = 10000 },
    { name = "synchronous", kind = "enum", values = { "normal", "full" }, default = "normal" },
    { name = "writer_thread", kind = "boolean" },
  } },
  { name = "dynamodb", section = {
    { name = "region", kind = "string" },
    { name = "endpoint", kind = "url" },
    { name = "table_prefix", kind = "string", empty = true, pattern = "^[%w_%.%-]*$",
      pattern_msg = "may hold only letters, digits, '_', '-' and '.' (DynamoDB table names)",
      default = "tide_" },
    { name = "max_attempts", kind = "integer", min = 1, default = 8 },
    { name = "max_connections", kind = "integer", min = 1, default = 512 },
    { name = "gather_us", kind = "integer", min = 0, default = 1000 },
    { name = "timeout_ms", kind = "integer", min = 1, default = 30000 },
    { name = "ca_bundle", kind = "path" },
    { name = "verify_tls", kind = "boolean", default = true },
    { name = "profile", kind = "string" },
  } },
  { name = "streams", section = {
    { name = "lease_ms", kind = "integer", min = 100, default = 10000 },
    { name = "poll_ms", kind = "integer", min = 1, default = 200 },
    { name = "max_poll_ms", kind = "integer", min = 1, default = 1000 },
    { name = "describe_ms", kind = "integer", min = 100, default = 30000 },
    { name = "steal_ms", kind = "integer", min = 100 },
    { name = "batch_limit", kind = "integer", min = 1, max = 1000, default = 1000 },
  } },
  { name = "aggregates", kind = "path", default = "./aggregates" },
  { name = "projections", kind = "path", default = "./projections" },
  { name = "cache", section = {
    { name = "max_bytes", kind = "size", default = 64 * MiB },
  } },
  { name = "commands", section = {
    { name = "max_attempts", kind = "integer", min = 1, default = 20 },
    { name = "batching", kind = "boolean", default = true },
    { name = "max_line_bytes", kind = "size", min = 1, default = 1 * MiB },
  } },
  { name = "snapshots", section = {
    { name = "every", kind = "integer", min = 0, default = 100 },
  } },
  { name = "log", section = {
    { name = "level", kind = "enum", values = { "debug", "info", "warn", "error" }, default = "info" },
    { name = "format", kind = "enum", values = { "text", "json" }, default = "text" },
  } },
  { name = "metrics", section = {
    { name = "listen", kind = "string" },
  } },
  { name = "kafka", section = {
    { name = "brokers", kind = "string" },
    { name = "client_id", kind = "string" },
    { name = "sasl", section = {
      { name = "mechanism", kind = "enum", values = { "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512" } },
      { name = "username", kind = "string" },
      { name = "password", kind = "secret" },
    } },
    { name = "ssl", section = {
      { name = "enabled", kind = "boolean" },
      { name = "ca", kind = "path" },
    } },
    { name = "properties", kind = "map" },
    { name = "wait_ms", kind = "integer", min = 100, default = 30000 },
  } },
  { name = "lua", section = {
    { name = "gc_pause", kind = "integer", min = 100, max = 10000, default = 400 },
    -- (hotexit: LuaJIT counts exits in a byte and stops at 255: from 253 up
    -- it never tried the side trace at the end of a pairs loop in the
    -- sandbox's set-up, an exit Debian 12's LuaJIT does not get past without
    -- one, and the process looped for ever)
    { name = "jit_hotloop", kind = "integer", min = 1, max = 10000, default = 1000 },
    { name = "jit_hotexit", kind = "integer", min = 1, max = 200, default = 100 },
    { name = "handler_budget_ms", kind = "integer", min = 0, default = 1000 },
    { name = "sandbox_aggregates", kind = "boolean", default = true },
    { name = "sandbox_projections", kind = "boolean", default = true },
  } },
}
M.schema = SCHEMA

------------------------------------------------------------------------
-- Errors

-- A tide.error of kind "invalid", type "ConfigError", located in its file:
-- tostring(err) (and `..`) give the message, which begins with "file:line:".
local function config_error(source, line, key, msg)
  local where = line and (source .. ":" .. line) or source
  return terror.new{ kind = "invalid", type = "ConfigError", message = where .. ": " .. msg, source = source,
                     line = line, key = key, retryable = false }
end
M.ConfigError = terror.Error

function M.is_error(v)
  return terror.is(v, "invalid") and v.type == "ConfigError"
end

------------------------------------------------------------------------
-- Helpers

local function getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

local function is_null(v)
  return v == nil or v == core.null
end

-- Decoded YAML marks its sequences (core.is_list); a table given to
-- from_table is taken for a list when it has a [1].
local function is_list(v, decoded)
  return core.is_list(v) or (not decoded and rawget(v, 1) ~= nil)
end

local function type_name(v, decoded)
  if v == core.null then return "null" end
  local t = type(v)
  if t == "table" then return is_list(v, decoded) and "a list" or "a mapping" end
  return "a " .. t
end

local function quote(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

local closest = require("tide.suggest").closest

-- Every key path of the schema ("store", "sqlite.path", ...).
local function all_paths()
  local out = {}
  for _, spec in ipairs(SCHEMA) do
    if spec.section then
      for _, s in ipairs(spec.section) do out[#out + 1] = spec.name .. "." .. s.name end
    else
      out[#out + 1] = spec.name
    end
  end
  return out
end

local function suggestion(prefix, key, level)
  local full = prefix .. key
  for _, p in ipairs(all_paths()) do
    if p == full and prefix == "" then
      local s, k = p:match("^([^.]+)%.(.+)$")
      return " (write it nested: '" .. s .. ":' with '" .. k .. ":' under it)"
    end
  end
  local names = {}
  for _, spec in ipairs(level) do names[#names + 1] = spec.name end
  local c = closest(key, names)
  if c then return " (did you mean '" .. prefix .. c .. "'?)" end
  -- A key of another section, or a typo of one: "region" -> dynamodb.region.
  local leaves = {}
  for _, p in ipairs(all_paths()) do
    if p ~= full and (p:match("[^.]+$") == key or closest(key, { p:match("[^.]+$") })) then
      leaves[#leaves + 1] = p
    end
  end
  if #leaves == 1 then return " (did you mean '" .. leaves[1] .. "'?)" end
  return ""
end

local function dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == "" then return "/" end
  return d or ""
end

-- Resolves a relative path against the config file's directory.
local function resolve_path(p, base, spec)
  if spec.sqlite and (p == ":memory:" or p:sub(1, 5) == "file:") then return p end
  if p:sub(1, 1) == "/" or base == nil or base == "" then return p end
  if base == "/" then base = "" end
  return base .. "/" .. (p:gsub("^%./", ""))
end

local function parse_size(s)
  local num, unit = s:match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
  if not num then return nil end
  local mult = ({ [""] = 1, b = 1, k = KiB, kb = KiB, kib = KiB, m = MiB, mb = MiB, mib = MiB,
                  g = GiB, gb = GiB, gib = GiB })[unit:lower()]
  if not mult then return nil end
  return math.floor(tonumber(num) * mult)
end

------------------------------------------------------------------------
-- Validation

-- ctx: { source =, lines =, base = }
local function line_of(ctx, path)
  local lines = ctx.lines
  if not lines then return nil end
  while path do
    if lines[path] then return lines[path] end
    path = path:match("^(.*)[.[][^.[]*$")
  end
  return nil
end

local function check_value(ctx, spec, path, v)
  local function bad(msg)
    return nil, config_error(ctx.source, line_of(ctx, path), path, path .. " " .. msg)
  end
  local function want(what)
    return bad("must be " .. what .. " (got " .. type_name(v, ctx.lines ~= nil) .. ")")
  end
  local kind = spec.kind
  if kind == "string" or kind == "path" or kind == "url" or kind == "enum" then
    if type(v) ~= "string" then
      if kind == "enum" then
        local vals = {}
        for i, x in ipairs(spec.values) do vals[i] = quote(x) end
        return want("one of " .. table.concat(vals, ", "))
      end
      return want(kind == "url" and "a URL string" or "a string")
    end
    if v == "" and not spec.empty then return bad("must not be empty") end
    if kind == "enum" then
      for _, x in ipairs(spec.values) do
        if v == x then return v end
      end
      local vals = {}
      for i, x in ipairs(spec.values) do vals[i] = quote(x) end
      local c = closest(v, spec.values)
      return bad("must be one of " .. table.concat(vals, ", ") .. " (got " .. quote(v) .. ")"
                 .. (c and (": did you mean " .. quote(c) .. "?") or ""))
    end
    if kind == "url" and not v:match("^https?://[^/]+") then
      return bad("must be an http:// or https:// URL (got " .. quote(v) .. ")")
    end
    if spec.pattern and not v:match(spec.pattern) then
      return bad(spec.pattern_msg .. " (got " .. quote(v) .. ")")
    end
    if kind == "path" then return resolve_path(v, ctx.base, spec) end
    return v
  elseif kind == "boolean" then
    if type(v) ~= "boolean" then return want("true or false") end
    return v
  elseif kind == "secret" then
    -- a reference, never the secret itself: tide.yaml is read by many and
    -- lands in repositories; the value is read when it is used
    if type(v) ~= "string" or not (v:match("^env:[%a_][%w_]*$") or v:match("^file:.")) then
      return bad("must say where the secret is: \"env:VARIABLE\" or \"file:/path/to/file\" "
                 .. "(the secret itself never goes in the configuration)")
    end
    local file = v:match("^file:(.+)$")
    if file then return "file:" .. resolve_path(file, ctx.base, spec) end
    return v
  elseif kind == "map" then
    if type(v) ~= "table" or is_list(v, ctx.lines ~= nil) then return want("a mapping of names to values") end
    local out = {}
    for k, x in pairs(v) do
      if type(k) ~= "string" then return bad("keys must be names") end
      if type(x) == "boolean" then x = tostring(x)
      elseif type(x) == "number" then x = (x == math.floor(x)) and string.format("%.0f", x) or tostring(x) end
      if type(x) ~= "string" then
        return nil, config_error(ctx.source, line_of(ctx, path), path, path .. "." .. k
          .. " must be a string, a number or true/false (got " .. type_name(x, ctx.lines ~= nil) .. ")")
      end
      out[k] = x
    end
    return out
  elseif kind == "integer" then
    if type(v) ~= "number" then return want("an integer") end
    if v ~= v or v == math.huge or v == -math.huge or v ~= math.floor(v) then
      return bad("must be an integer (got " .. tostring(v) .. ")")
    end
    if spec.min and v < spec.min then
      return bad("must be at least " .. spec.min .. " (got " .. string.format("%.0f", v) .. ")")
    end
    if spec.max and v > spec.max then
      return bad("must be at most " .. spec.max .. " (got " .. string.format("%.0f", v) .. ")")
    end
    return v
  elseif kind == "size" then
    local n = v
    if type(v) == "string" then
      n = parse_size(v)
      if not n then
        return bad("must be a number of bytes or a size such as \"64MB\" (got " .. quote(v) .. ")")
      end
    elseif type(v) ~= "number" then
      return want("a number of bytes or a size such as \"64MB\"")
    end
    if n ~= n or n == math.huge or n < 0 or n ~= math.floor(n) then
      return bad("must be a whole number of bytes, 0 or more (got " .. tostring(v) .. ")")
    end
    return n
  end
  error("config: unknown kind " .. tostring(kind))
end

-- The keys of t in document order (by line, then name), so the first
-- error reported is the first one in the file.
local function ordered_keys(ctx, t, prefix)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local la = line_of(ctx, prefix .. tostring(a)) or math.huge
    local lb = line_of(ctx, prefix .. tostring(b)) or math.huge
    if la ~= lb then return la < lb end
    return tostring(a) < tostring(b)
  end)
  return keys
end

-- Checks mapping t against the specs of one level; fills out.
local function check_level(ctx, t, level, prefix, out)
  local by_name = {}
  for _, spec in ipairs(level) do by_name[spec.name] = spec end
  for _, k in ipairs(ordered_keys(ctx, t, prefix)) do
    local path = prefix .. tostring(k)
    local spec = type(k) == "string" and by_name[k]
    if not spec then
      return nil, config_error(ctx.source, line_of(ctx, path), path,
                               "unknown key '" .. path .. "'" .. suggestion(prefix, tostring(k), level))
    end
    local v = t[k]
    if spec.section then
      if not is_null(v) then
        if type(v) ~= "table" or is_list(v, ctx.lines ~= nil) then
          return nil, config_error(ctx.source, line_of(ctx, path), path,
                                   path .. " must be a mapping (got " .. type_name(v, ctx.lines ~= nil) .. ")")
        end
        local ok, err = check_level(ctx, v, spec.section, path .. ".", out[k])
        if not ok then return nil, err end
      end
    elseif not is_null(v) then
      local value, err = check_value(ctx, spec, path, v)
      if value == nil then return nil, err end
      out[k] = value
      ctx.set[path] = true
    end
  end
  return true
end

local function defaults(ctx, level)
  local cfg = {}
  for _, spec in ipairs(level or SCHEMA) do
    if spec.section then
      cfg[spec.name] = defaults(ctx, spec.section)
    elseif spec.default ~= nil then
      cfg[spec.name] = spec.kind == "path" and resolve_path(spec.default, ctx.base, spec) or spec.default
    end
  end
  return cfg
end

-- The key paths each configuration set itself (not a default), apart
-- from the plain table config.load returns: cfg -> {["log.format"] = true, ...}.
local set_by_document = setmetatable({}, { __mode = "k" })

local function build(t, ctx)
  local cfg = defaults(ctx)
  ctx.set = {}
  local ok, err = check_level(ctx, t, SCHEMA, "", cfg)
  if not ok then return nil, err end
  if cfg.store == "dynamodb" then
    local d = cfg.dynamodb
    -- The DynamoDB client resolves these itself when they are nil; here we
    -- only make sure that it will find a region (an endpoint alone is
    -- enough: a local endpoint signs with a placeholder region). The last
    -- source, instance metadata, is asked by the client (tide.credentials.region),
    -- so only AWS_EC2_METADATA_DISABLED=true makes its absence certain here.
    if not d.region and not d.endpoint and not getenv("AWS_ENDPOINT_URL_DYNAMODB")
       and not getenv("AWS_ENDPOINT_URL") and not require("tide.credentials").region{ profile = d.profile }
       and (getenv("AWS_EC2_METADATA_DISABLED") or ""):lower() == "true" then
      return nil, config_error(ctx.source, line_of(ctx, "store"), "store",
        "store is \"dynamodb\" but no AWS region is set: set dynamodb.region (or AWS_REGION, "
        .. "AWS_DEFAULT_REGION, a profile's region) or dynamodb.endpoint")
    end
  end
  cfg.source = ctx.source
  set_by_document[cfg] = ctx.set
  return cfg
end

------------------------------------------------------------------------
-- API

-- config.from_table(t [, source [, opts]]) -> cfg | nil, err
-- Validates t (a table as decoded from YAML) and fills in the defaults.
-- source names it in errors (default "table"); opts.lines maps key paths
-- to line numbers (as core.yaml_decode returns them); opts.base is the
-- directory relative paths are resolved against (default: none, they stay
-- relative to the working directory).
function M.from_table(t, source, opts)
  if type(t) ~= "table" then error("config.from_table: t must be a table", 2) end
  if source ~= nil and type(source) ~= "string" then
    error("config.from_table: source must be a string or nil", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("config.from_table: opts must be a table or nil", 2) end
  opts = opts or {}
  source = source or "table"
  local ctx = { source = source, lines = opts.lines, base = opts.base }
  if is_list(t) then
    return nil, config_error(source, nil, nil, "the configuration must be a mapping of keys (got a list)")
  end
  return build(t, ctx)
end

-- config.is_set(cfg, "log.format") -> true when the configuration cfg was
-- built from set that key itself, false when it holds the default.
function M.is_set(cfg, path)
  local set = set_by_document[cfg]
  return set ~= nil and set[path] == true
end

local function read_file(path, named_by)
  local how = named_by and (" (named by " .. named_by .. ")") or ""
  local f, err = io.open(path, "rb")
  if not f then
    local reason = err or "cannot open"
    if reason:sub(1, #path + 2) == path .. ": " then reason = reason:sub(#path + 3) end
    return nil, config_error(path, nil, nil, "cannot read the configuration file" .. how .. ": " .. reason)
  end
  local text, rerr = f:read("*a")
  f:close()
  if not text then
    return nil, config_error(path, nil, nil, "cannot read the configuration file" .. how .. ": "
                             .. tostring(rerr))
  end
  return text
end

-- config.load{ file = } -> cfg | nil, err
-- Lookup: opts.file (the CLI's --config value), else $TIDE_CONFIG, else
-- ./tide.yaml if it exists, else the defaults (cfg.source == "defaults").
-- opts.args_file is accepted as another name for opts.file.
function M.load(opts)
  if opts ~= nil and type(opts) ~= "table" then error("config.load: opts must be a table or nil", 2) end
  opts = opts or {}
  local file, named_by = opts.file, "--config"
  if file == nil then file = opts.args_file end
  if file ~= nil and type(file) ~= "string" then error("config.load: opts.file must be a string or nil", 2) end
  if file == "" then error("config.load: opts.file must not be empty", 2) end
  if file == nil then
    file, named_by = getenv("TIDE_CONFIG"), "TIDE_CONFIG"
  end
  if file == nil then
    named_by = nil
    local f, _, code = io.open("tide.yaml", "rb")
    if f then
      f:close()
      file = "tide.yaml"
    elseif code == 2 then -- ENOENT: no config file, the defaults
      return build({}, { source = "defaults" })
    else
      file = "tide.yaml"  -- exists but unreadable: read_file says why
    end
  end

  local text, err = read_file(file, named_by)
  if not text then return nil, err end
  local value, lines = core.yaml_decode(text, file)
  if value == nil then
    local line = tonumber(lines:match("^.-:(%d+):%d+: "))
    local e = config_error(file, line, nil, "")
    e.message = lines -- already "file:line:column: problem"
    return nil, e
  end
  local ctx = { source = file, lines = lines, base = dirname(file) }
  if value == core.null then value = {} end -- an empty file (or only comments): the defaults
  if type(value) ~= "table" or is_list(value, true) then
    return nil, config_error(file, nil, nil,
                             "the configuration must be a mapping of keys (got " .. type_name(value, true) .. ")")
  end
  return build(value, ctx)
end

return M
