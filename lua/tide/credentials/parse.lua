-- tide.credentials.parse: the pure parts of the credentials chain (no I/O,
-- no clock of their own), tested with vectors in spec/unit/credentials_parse_spec.lua.
--
--   parse.iso8601(text) -> unix seconds | nil, message
--   parse.iso8601_format(seconds) -> "YYYY-MM-DDTHH:MM:SSZ"
--   parse.sts(xml) -> {[element] = text} of the answer's leaf elements
--                   | nil, {code=, message=, type=}  (an ErrorResponse or unreadable XML)
--   parse.sts_credentials(xml) -> creds | nil, err   (AssumeRole*, Credentials element)
--   parse.container(json), parse.imds(json), parse.process(json),
--   parse.sso_token(json), parse.sso_role(json) -> creds (or token) | nil, message
--   parse.query(params) -> "Action=...&..." (form encoding, keys sorted)
--   parse.split_command(line) -> argv | nil (the line needs a shell)
--   parse.refresh_times(expiration, fetched_at) -> advisory, mandatory
--   parse.new_creds{...} -> creds (a table whose tostring never shows the secret)
--
-- A creds table: access_key_id, secret_access_key, session_token (or nil),
-- expiration (unix seconds, or nil for credentials that never expire),
-- provider (botocore's name for the method: "env", "assume-role", ...).
-- Messages name fields and files, never a value that could be a secret.
local cjson = require "cjson.safe"

local type, tonumber, tostring, floor, concat, sort, pairs =
  type, tonumber, tostring, math.floor, table.concat, table.sort, pairs

local M = {}

------------------------------------------------------------------------
-- Credentials values

local Creds = {}
Creds.__index = Creds
Creds.__tostring = function(c)
  return "credentials " .. tostring(c.access_key_id) .. " (" .. tostring(c.provider) .. ")"
end
M.Creds = Creds

function M.new_creds(t)
  return setmetatable({
    access_key_id = t.access_key_id, secret_access_key = t.secret_access_key,
    session_token = t.session_token ~= "" and t.session_token or nil,
    expiration = t.expiration, provider = t.provider, account_id = t.account_id,
  }, Creds)
end

------------------------------------------------------------------------
-- Time

-- Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's
-- days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- "2026-12-06T23:10:00Z", "...T23:10:00.123Z", "...T23:10:00+01:00", "...UTC"
function M.iso8601(s)
  if type(s) ~= "string" then return nil, "not a timestamp" end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil, "not an ISO-8601 timestamp" end
  rest = rest:gsub("^%.%d+", "")
  local offset = 0
  if rest == "Z" or rest == "z" or rest == "" or rest == "UTC" or rest == "+00:00" then
    offset = 0
  else
    local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil, "not an ISO-8601 timestamp (zone)" end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "+" and 1 or -1)
  end
  local days = days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec) - offset
end

function M.iso8601_format(t)
  if t == nil then return nil end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(t))
end

-- When to refresh credentials that expire at `expiration` and were fetched
-- at `fetched_at` (both unix seconds). botocore refreshes in the background
-- 15 minutes before expiry (advisory) and blocks 10 minutes before
-- (mandatory); credentials that live less than that (15 s in the rotation
-- spec, 15 min for some roles) scale down: advisory at half of what is
-- left, mandatory at a quarter.
function M.refresh_times(expiration, fetched_at)
  if not expiration then return nil, nil end
  local life = expiration - fetched_at
  local advisory = math.min(15 * 60, life / 2)
  local mandatory = math.min(10 * 60, life / 4)
  return expiration - advisory, expiration - mandatory
end

------------------------------------------------------------------------
-- STS (query protocol): XML answers

-- Collects the text of every leaf element by its local name (the last one
-- wins): STS answers are shallow and their field names unique.
local function xml_leaves(xml)
  local ok, lxp = pcall(require, "lxp")
  if not ok then return nil, "lua-expat (lxp) is not installed: " .. tostring(lxp) end
  local leaves, stack = {}, {}
  local p = lxp.new{
    StartElement = function(_, name)
      local top = stack[#stack]
      if top then top.parent = true end
      stack[#stack + 1] = { name = name:match("([^:]+)$"), text = {} }
    end,
    CharacterData = function(_, s)
      local top = stack[#stack]
      if top then top.text[#top.text + 1] = s end
    end,
    EndElement = function()
      local top = stack[#stack]
      stack[#stack] = nil
      if not top.parent then leaves[top.name] = concat(top.text) end
    end,
  }
  local okp, perr = p:parse(xml)
  if okp then okp, perr = p:parse() end
  p:close()
  if not okp then return nil, "malformed XML: " .. tostring(perr) end
  return leaves
end

function M.sts(xml)
  if type(xml) ~= "string" or xml == "" then
    return nil, { code = "MalformedResponse", message = "empty STS response" }
  end
  local leaves, err = xml_leaves(xml)
  if not leaves then return nil, { code = "MalformedResponse", message = err } end
  if xml:find("<ErrorResponse", 1, true) or xml:find("<Error>", 1, true) then
    return nil, { code = leaves.Code or "UnknownError", message = leaves.Message or "",
                  type = leaves.Type }
  end
  return leaves
end

function M.sts_credentials(xml, provider)
  local l, err = M.sts(xml)
  if not l then return nil, err end
  if not (l.AccessKeyId and l.SecretAccessKey and l.SessionToken and l.Expiration) then
    return nil, { code = "MalformedResponse", message = "STS answer without Credentials" }
  end
  local exp = M.iso8601(l.Expiration)
  if not exp then return nil, { code = "MalformedResponse", message = "STS Expiration is not a timestamp" } end
  local account = l.Arn and l.Arn:match("^arn:[^:]*:sts::(%d+):")
  return M.new_creds{ access_key_id = l.AccessKeyId, secret_access_key = l.SecretAccessKey,
                      session_token = l.SessionToken, expiration = exp, provider = provider,
                      account_id = account }
end

-- RFC 3986 unreserved characters stay, the rest is %XX (as botocore's
-- query serializer, which SigV4 signs as is).
local function pct(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end
M.percent_encode = pct

function M.query(params)
  local keys = {}
  for k in pairs(params) do keys[#keys + 1] = k end
  sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = pct(k) .. "=" .. pct(params[k]) end
  return concat(parts, "&")
end

------------------------------------------------------------------------
-- JSON answers

local function decode_object(text, what)
  local doc = type(text) == "string" and cjson.decode(text)
  if type(doc) ~= "table" then return nil, what .. " is not a JSON object" end
  return doc
end

local function str(v) return type(v) == "string" and v ~= "" and v or nil end

local function expiry(v, what)
  if v == nil or v == cjson.null then return nil end
  local t = M.iso8601(v)
  if not t then return false, what .. ": Expiration is not an ISO-8601 timestamp" end
  return t
end

-- The container endpoint (ECS, EKS Pod Identity):
-- {"AccessKeyId":..,"SecretAccessKey":..,"Token":..,"Expiration":..}
function M.container(text)
  local d, err = decode_object(text, "the container credentials response")
  if not d then return nil, err end
  if not (str(d.AccessKeyId) and str(d.SecretAccessKey)) then
    return nil, "the container credentials response has no AccessKeyId and SecretAccessKey"
      .. (str(d.message) and (": " .. d.message) or "")
  end
  local exp, eerr = expiry(d.Expiration, "the container credentials response")
  if exp == false then return nil, eerr end
  return M.new_creds{ access_key_id = d.AccessKeyId, secret_access_key = d.SecretAccessKey,
                      session_token = str(d.Token), expiration = exp, provider = "container-role",
                      account_id = str(d.AccountId) }
end

-- EC2 instance metadata: {"Code":"Success","AccessKeyId":..,"Token":..,"Expiration":..}
function M.imds(text)
  local d, err = decode_object(text, "the instance metadata credentials")
  if not d then return nil, err end
  if d.Code ~= nil and d.Code ~= "Success" then
    return nil, "the instance metadata credentials have Code " .. tostring(d.Code)
  end
  if not (str(d.AccessKeyId) and str(d.SecretAccessKey)) then
    return nil, "the instance metadata credentials have no AccessKeyId and SecretAccessKey"
  end
  local exp, eerr = expiry(d.Expiration, "the instance metadata credentials")
  if exp == false then return nil, eerr end
  return M.new_creds{ access_key_id = d.AccessKeyId, secret_access_key = d.SecretAccessKey,
                      session_token = str(d.Token), expiration = exp, provider = "iam-role" }
end

-- credential_process output: {"Version":1,"AccessKeyId":..,"SecretAccessKey":..,
-- "SessionToken":..,"Expiration":..}
function M.process(text)
  local d, err = decode_object(text, "the credential_process output")
  if not d then return nil, err end
  if d.Version ~= 1 then
    return nil, "the credential_process output has Version " .. tostring(d.Version) .. " (only 1 is known)"
  end
  if not str(d.AccessKeyId) then return nil, "the credential_process output has no AccessKeyId" end
  if not str(d.SecretAccessKey) then return nil, "the credential_process output has no SecretAccessKey" end
  local exp, eerr = expiry(d.Expiration, "the credential_process output")
  if exp == false then return nil, eerr end
  return M.new_creds{ access_key_id = d.AccessKeyId, secret_access_key = d.SecretAccessKey,
                      session_token = str(d.SessionToken), expiration = exp,
                      provider = "custom-process", account_id = str(d.AccountId) }
end

-- An SSO token cache file: {"accessToken":..,"expiresAt":..,...}
function M.sso_token(text)
  local d, err = decode_object(text, "the SSO token cache file")
  if not d then return nil, err end
  if not str(d.accessToken) then return nil, "the SSO token cache file has no accessToken" end
  local exp = M.iso8601(d.expiresAt)
  if not exp then return nil, "the SSO token cache file has no valid expiresAt" end
  return { access_token = d.accessToken, expires_at = exp }
end

-- GetRoleCredentials: {"roleCredentials":{"accessKeyId":..,"expiration": ms}}
function M.sso_role(text)
  local d, err = decode_object(text, "the SSO GetRoleCredentials response")
  if not d then return nil, err end
  local r = d.roleCredentials
  if type(r) ~= "table" or not str(r.accessKeyId) or not str(r.secretAccessKey) then
    return nil, "the SSO GetRoleCredentials response has no roleCredentials"
  end
  local exp = tonumber(r.expiration)
  return M.new_creds{ access_key_id = r.accessKeyId, secret_access_key = r.secretAccessKey,
                      session_token = str(r.sessionToken), expiration = exp and exp / 1000,
                      provider = "sso" }
end

------------------------------------------------------------------------
-- credential_process command lines

-- Splits a command line into words as a POSIX shell would for the simple
-- cases: blanks separate words, single and double quotes group, a
-- backslash escapes. Returns nil when the line uses anything else of the
-- shell's ($, `, |, ;, &, <, >, ( ), *, ?, ~ at a word start, globs,
-- newlines): then it must run through /bin/sh -c.
function M.split_command(line)
  if type(line) ~= "string" then return nil end
  local words, cur, have = {}, {}, false
  local i, n = 1, #line
  while i <= n do
    local c = line:sub(i, i)
    if c == " " or c == "\t" then
      if have then words[#words + 1] = concat(cur); cur, have = {}, false end
    elseif c == "'" then
      local j = line:find("'", i + 1, true)
      if not j then return nil end
      cur[#cur + 1] = line:sub(i + 1, j - 1)
      have, i = true, j
    elseif c == '"' then
      local j = i + 1
      local part = {}
      while j <= n and line:sub(j, j) ~= '"' do
        local d = line:sub(j, j)
        if d == "$" or d == "`" then return nil end
        if d == "\\" and j < n and line:sub(j + 1, j + 1):match('[\\"$`]') then
          j = j + 1
          d = line:sub(j, j)
        end
        part[#part + 1] = d
        j = j + 1
      end
      if j > n then return nil end
      cur[#cur + 1] = concat(part)
      have, i = true, j
    elseif c == "\\" then
      if i == n then return nil end
      cur[#cur + 1] = line:sub(i + 1, i + 1)
      have, i = true, i + 1
    elseif c:match("[%$`|;&<>%(%)%*%?%[%]{}\n\r#]") or (c == "~" and not have) then
      return nil
    else
      cur[#cur + 1] = c
      have = true
    end
    i = i + 1
  end
  if have then words[#words + 1] = concat(cur) end
  -- NAME=value before the command is an assignment for the shell
  if #words == 0 or words[1]:find("=", 1, true) then return nil end
  return words
end

return M
