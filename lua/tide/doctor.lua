-- tide.doctor: why tide can or cannot reach its data (`tide doctor`).
--
--   local report = require("tide.doctor").run{ config = path_or_nil }
--   report = {
--     ok = bool, config = path | "defaults" | nil, store = "dynamodb" | "sqlite",
--     endpoint = url, region = "...", region_source = "...",
--     credentials = {provider=, access_key_id=, expiration = ISO-8601 | nil,
--                    profile=, tried = {{provider=, note=}}, error=},
--     caller_identity = {account=, arn=, user_id=} | {skipped = note} | {error = msg},
--     checks = {{name=, ok=bool, message=}, ...},
--   }
--   doctor.text(report) -> the human-readable report
--
-- Runs inside the tide process's scheduler. Each step is reported even
-- when an earlier one failed (credentials are resolved even when DynamoDB
-- cannot be reached). Nothing secret is put into the report: the access
-- key id and the expiry, never the secret or the session token.
local terror = require "tide.error"
local credentials = require "tide.credentials"

local M = {}

local function add(report, name, ok, message)
  report.checks[#report.checks + 1] = { name = name, ok = ok and true or false, message = message }
  if not ok then report.ok = false end
end

local function msg(err)
  if type(err) == "table" then
    local m = tostring(err)
    return m
  end
  return tostring(err)
end

local function is_local(url)
  local host = url and url:match("^https?://%[?([^/%]:]+)")
  return host ~= nil and (host == "localhost" or host:match("^127%.") ~= nil or host == "::1")
end

local function keys_text(keys)
  local parts = {}
  for _, k in ipairs(keys or {}) do parts[#parts + 1] = tostring(k.AttributeName) .. " " .. tostring(k.KeyType) end
  return table.concat(parts, ", ")
end

local function same_keys(got, want)
  if type(got) ~= "table" or #got ~= #want then return false end
  for _, w in ipairs(want) do
    local found = false
    for _, g in ipairs(got) do
      if g.AttributeName == w[1] and g.KeyType == w[2] then found = true end
    end
    if not found then return false end
  end
  return true
end

-- One table: present, key schema, stream (when `stream`).
local function check_table(report, client, name, want, stream)
  local res, err = client:describe_table{ TableName = name }
  if not res then
    if type(err) == "table" and err.type == "ResourceNotFoundException" then
      add(report, "table " .. name, false, "missing: run `tide init`")
    else
      add(report, "table " .. name, false, "cannot describe it: " .. msg(err))
    end
    return
  end
  local t = res.Table
  local want_text = {}
  for i, w in ipairs(want) do want_text[i] = w[1] .. " " .. w[2] end
  if not same_keys(t.KeySchema, want) then
    add(report, "table " .. name, false, "key schema is " .. keys_text(t.KeySchema) .. "; tide needs "
      .. table.concat(want_text, ", "))
    return
  end
  local note = "present (" .. tostring(t.TableStatus) .. "), key schema " .. table.concat(want_text, ", ")
  if stream then
    local s = t.StreamSpecification
    if not (s and s.StreamEnabled) then
      add(report, "table " .. name, false, note .. "; its stream is disabled (projections need one with NEW_IMAGE): run `tide init`")
      return
    end
    if s.StreamViewType ~= "NEW_IMAGE" and s.StreamViewType ~= "NEW_AND_OLD_IMAGES" then
      add(report, "table " .. name, false, note .. "; its stream has view type " .. tostring(s.StreamViewType)
        .. " (projections need NEW_IMAGE or NEW_AND_OLD_IMAGES)")
      return
    end
    note = note .. ", stream " .. s.StreamViewType
  end
  add(report, "table " .. name, true, note)
end

local function check_credentials(report, src)
  local creds, info = src:resolve()
  local c = { profile = src.profile }
  report.credentials = c
  if not creds then
    c.error = msg(info)
    c.tried = info and info.tried
    add(report, "credentials", false, c.error)
    return nil
  end
  c.provider, c.access_key_id = info.provider, creds.access_key_id
  c.expiration = credentials.parse.iso8601_format(creds.expiration)
  c.tried = info.tried
  src:install(creds)
  src.provider = info.provider
  add(report, "credentials", true, "from " .. info.provider .. ", key " .. creds.access_key_id
    .. (c.expiration and (", expires " .. c.expiration) or ", no expiry"))
  return creds
end

local function check_identity(report, src, endpoint)
  local explicit_sts = os.getenv("AWS_ENDPOINT_URL_STS") or os.getenv("AWS_ENDPOINT_URL")
  if explicit_sts == "" then explicit_sts = nil end
  if is_local(endpoint) and not explicit_sts then
    report.caller_identity = { skipped = "the DynamoDB endpoint is local (" .. endpoint
      .. "); STS is not asked (set AWS_ENDPOINT_URL_STS to ask one)" }
    return
  end
  local id, where = credentials.caller_identity(src)
  if not id then
    report.caller_identity = { error = msg(where) }
    add(report, "caller identity", false, "STS GetCallerIdentity failed: " .. msg(where))
    return
  end
  report.caller_identity = { account = id.Account, arn = id.Arn, user_id = id.UserId, sts_endpoint = where }
  add(report, "caller identity", true, tostring(id.Arn) .. " (STS " .. tostring(where) .. ")")
end

function M.run(opts)
  opts = opts or {}
  local report = { ok = true, checks = {} }
  local config = require "tide.config"
  local cfg, cerr = config.load{ file = opts.config }
  if not cfg then
    report.config = opts.config
    add(report, "config", false, msg(cerr))
  else
    report.config = cfg.source
    add(report, "config", true, cfg.source == "defaults" and "no tide.yaml: the defaults" or ("loaded " .. tostring(cfg.source)))
  end
  report.store = cfg and cfg.store or nil

  if cfg and cfg.store ~= "dynamodb" then
    local app, aerr = require("tide").open{ cfg = cfg, log = function() end }
    add(report, "store", app ~= nil, app and ("SQLite at " .. tostring(cfg.sqlite.path)) or msg(aerr))
    if app then app.store:close() end
    return report
  end

  -- DynamoDB (or no config at all: still tell what the AWS side resolves to)
  local d = cfg and cfg.dynamodb or {}
  local getenv = function(n) local v = os.getenv(n); if v == "" then return nil end; return v end
  local endpoint = d.endpoint or getenv("AWS_ENDPOINT_URL_DYNAMODB") or getenv("AWS_ENDPOINT_URL")
  local region, source
  if d.region then
    region, source = d.region, "configuration (dynamodb.region)"
  else
    local rerr
    region, rerr = credentials.region{ profile = d.profile, imds = not is_local(endpoint) }
    if region then
      source = rerr
    elseif endpoint then
      region, source = "us-east-1", "placeholder for the endpoint " .. endpoint .. " (no region set)"
    else
      add(report, "region", false, msg(rerr))
    end
  end
  report.region, report.region_source = region, source
  if region then add(report, "region", true, region .. " (" .. tostring(source) .. ")") end
  report.endpoint = endpoint or (region and ("https://dynamodb." .. region .. ".amazonaws.com"))

  local src = credentials.new{ profile = d.profile, region = region, log = function() end }
  local creds = check_credentials(report, src)
  if creds and region then check_identity(report, src, report.endpoint) end
  if not cfg or not region then return report end

  local app, aerr = require("tide").open{ cfg = cfg, log = function() end }
  if not app then
    add(report, "store", false, msg(aerr))
    return report
  end
  local client = app.store.client
  if creds then client.credential_source = src end
  local reach, rerr = client:list_tables{ Limit = 1 }
  if not reach then
    add(report, "DynamoDB reachable", false, report.endpoint .. ": " .. msg(rerr))
    return report
  end
  add(report, "DynamoDB reachable", true, report.endpoint)
  local store = app.store
  local has_projections = #app.projections:names() > 0
  check_table(report, client, store.events_table, { { "stream", "HASH" }, { "version", "RANGE" } }, has_projections)
  check_table(report, client, store.snapshots_table, { { "stream", "HASH" } })
  if has_projections then
    local backend = require("tide.projection.host").backend(app)
    if backend.positions_table then
      check_table(report, client, backend.positions_table, { { "projection", "HASH" }, { "stream", "RANGE" } })
    end
    local seen = {}
    for _, name in ipairs(app.projections:names()) do
      local p = app.projections:get(name)
      if p and backend.register then
        backend:register(p)
        for _, t in ipairs(p:table_names()) do
          local s = backend.specs and backend.specs[t]
          if s and not seen[s.table] then
            seen[s.table] = true
            check_table(report, client, s.table, { { s.key, "HASH" } })
          end
        end
      end
    end
  end
  return report
end

-- The human-readable report.
function M.text(r)
  local lines = { "tide doctor" }
  local function line(k, v) lines[#lines + 1] = ("  %-12s %s"):format(k, v) end
  line("config", tostring(r.config or "(not loaded)"))
  if r.store then line("store", r.store .. (r.endpoint and (" at " .. r.endpoint) or "")) end
  if r.region then line("region", r.region .. " (" .. tostring(r.region_source) .. ")") end
  local c = r.credentials
  if c then
    if c.provider then
      line("credentials", c.provider .. ", key " .. c.access_key_id .. ", "
        .. (c.expiration and ("expires " .. c.expiration) or "no expiry") .. " (profile " .. tostring(c.profile) .. ")")
    else
      line("credentials", "none (profile " .. tostring(c.profile) .. ")")
    end
    for _, t in ipairs(c.tried or {}) do line("", "passed over " .. t.provider .. ": " .. t.note) end
  end
  local id = r.caller_identity
  if id then
    if id.arn then line("identity", id.arn .. " (account " .. tostring(id.account) .. ")")
    elseif id.skipped then line("identity", "not checked: " .. id.skipped)
    else line("identity", "unknown: " .. tostring(id.error)) end
  end
  lines[#lines + 1] = "checks"
  local failed = 0
  for _, ch in ipairs(r.checks) do
    if not ch.ok then failed = failed + 1 end
    lines[#lines + 1] = ("  %-4s %s: %s"):format(ch.ok and "ok" or "FAIL", ch.name, ch.message or "")
  end
  lines[#lines + 1] = ("%d checks, %d failed"):format(#r.checks, failed)
  return table.concat(lines, "\n")
end

M.error = terror
return M
