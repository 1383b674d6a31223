-- tide.credentials.providers: each provider of the chain, and STS.
--
-- A provider is function(ctx, profile_name) ->
--   creds                  it answered (a tide.credentials.parse creds table)
--   false, note            it is not configured here; the chain goes on
--   nil, err               it is configured but failed: the chain stops
--                          (as botocore raises), err a tide.error
-- ctx (made by tide.credentials): getenv, shared (tide.credentials.files),
-- profile (name), profile_explicit, region (for STS), http(req) -> resp | nil, err
-- (the host's transport), now() (unix seconds), opts (explicit credentials,
-- sts_endpoint, ...), read_file(path).
--
-- Names are botocore's `method` names, so that a spec can compare the two:
-- explicit, env, assume-role, assume-role-with-web-identity, sso,
-- shared-credentials-file, custom-process, config-file, container-role, iam-role.
local core = require "tide.core"
local terror = require "tide.error"
local parse = require "tide.credentials.parse"
local files = require "tide.credentials.files"

local M = {}

local function cred_error(provider, message, fields)
  local e = { kind = "invalid", type = "CredentialsError", message = provider .. ": " .. message }
  for k, v in pairs(fields or {}) do e[k] = v end
  return terror.new(e)
end
M.cred_error = cred_error

local function net_error(provider, message, cause)
  return terror.new{ kind = "store", type = "CredentialsError", message = provider .. ": " .. message,
                     retryable = true, cause = cause }
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end
M.read_file = read_file

local function is_true(v) return type(v) == "string" and v:lower() == "true" end

------------------------------------------------------------------------
-- Endpoints

local function dns_suffix(region)
  if region and region:match("^cn%-") then return "amazonaws.com.cn" end
  return "amazonaws.com"
end

-- STS: opts.sts_endpoint, AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, the
-- profile's endpoint_url, then the regional endpoint (botocore's default
-- since 1.34 and the other SDKs'; the global sts.amazonaws.com without a region).
function M.sts_endpoint(ctx)
  local e = ctx.opts.sts_endpoint or ctx.getenv("AWS_ENDPOINT_URL_STS") or ctx.getenv("AWS_ENDPOINT_URL")
  if e then return (e:gsub("/+$", "")) end
  local p = ctx.shared and ctx.shared.profiles[ctx.profile]
  if p and p.endpoint_url and p.endpoint_url ~= "" then return (p.endpoint_url:gsub("/+$", "")) end
  if ctx.region then return "https://sts." .. ctx.region .. "." .. dns_suffix(ctx.region) end
  return "https://sts.amazonaws.com"
end

local function sso_endpoint(ctx, region)
  local e = ctx.getenv("AWS_ENDPOINT_URL_SSO") or ctx.getenv("AWS_ENDPOINT_URL")
  if e then return (e:gsub("/+$", "")) end
  return "https://portal.sso." .. region .. "." .. dns_suffix(region)
end

local function host_of(url)
  local scheme, hostport, path = url:match("^(https?)://([^/]+)(.*)$")
  if not scheme then return nil end
  local default = scheme == "https" and ":443$" or ":80$"
  return hostport:gsub(default, ""), path ~= "" and path or "/"
end

------------------------------------------------------------------------
-- STS (query protocol, XML answers)

-- sts_call(ctx, action, params, creds) -> leaves | nil, err
-- Signed with creds when given (AssumeRole, GetCallerIdentity); unsigned
-- without (AssumeRoleWithWebIdentity needs none).
function M.sts_call(ctx, action, params, creds)
  local endpoint = M.sts_endpoint(ctx)
  local host, path = host_of(endpoint)
  if not host then return nil, cred_error("sts", "invalid STS endpoint URL '" .. endpoint .. "'") end
  local body_params = { Action = action, Version = "2011-06-15" }
  for k, v in pairs(params or {}) do body_params[k] = v end
  local body = parse.query(body_params)
  local headers = { ["content-type"] = "application/x-www-form-urlencoded; charset=utf-8" }
  if creds then
    local signed = core.sign({ method = "POST", host = host, path = path, headers = headers, body = body },
      creds, { region = ctx.region or "us-east-1", service = "sts", time = math.floor(ctx.now()) })
    headers.authorization = signed.authorization
    headers["x-amz-date"] = signed["x-amz-date"]
    headers["x-amz-security-token"] = signed["x-amz-security-token"]
  end
  local resp, err = ctx.http{ method = "POST", url = endpoint .. (path == "/" and "/" or ""), headers = headers,
                              body = body, timeout_ms = ctx.opts.sts_timeout_ms or 10000 }
  if not resp then
    return nil, net_error("sts", "STS " .. action .. " at " .. endpoint .. " failed: " .. tostring(err and err.message or err), err)
  end
  local leaves, perr = parse.sts(resp.body)
  if resp.status ~= 200 or not leaves then
    local code = perr and perr.code or ("HTTP" .. resp.status)
    local e = terror.new{
      kind = (resp.status >= 500 or code == "Throttling") and "store" or "invalid",
      type = code, status = resp.status, retryable = resp.status >= 500 or code == "Throttling",
      message = "STS " .. action .. " at " .. endpoint .. ": " .. (perr and perr.message or ""),
    }
    return nil, e
  end
  return leaves, nil, resp.body
end

local function session_name(ctx, v)
  return v or ("tide-session-" .. math.floor(ctx.now()))
end

local function assume_role(ctx, source, profile_name, p)
  local params = { RoleArn = p.role_arn, RoleSessionName = session_name(ctx, p.role_session_name) }
  if p.external_id then params.ExternalId = p.external_id end
  if p.duration_seconds then
    local d = tonumber(p.duration_seconds)
    if not d then return nil, cred_error("assume-role", "profile '" .. profile_name .. "': duration_seconds is not a number") end
    params.DurationSeconds = math.floor(d)
  end
  if p.mfa_serial then
    return nil, cred_error("assume-role", "profile '" .. profile_name
      .. "' needs an MFA code (mfa_serial), which a daemon cannot ask for: use a profile without mfa_serial")
  end
  local leaves, err, body = M.sts_call(ctx, "AssumeRole", params, source)
  if not leaves then return nil, terror.wrap(err, "assume-role for profile '" .. profile_name .. "'") end
  local creds, perr = parse.sts_credentials(body, "assume-role")
  if not creds then return nil, cred_error("assume-role", perr.message) end
  return creds
end

------------------------------------------------------------------------
-- The providers

function M.explicit(ctx)
  local c = ctx.opts.credentials
  if not c or (not c.access_key_id and not c.secret_access_key) then return false, "none given" end
  if not c.access_key_id or not c.secret_access_key then
    return nil, cred_error("explicit", (c.access_key_id and "access_key_id" or "secret_access_key")
      .. " given without " .. (c.access_key_id and "secret_access_key" or "access_key_id"))
  end
  return parse.new_creds{ access_key_id = c.access_key_id, secret_access_key = c.secret_access_key,
                          session_token = c.session_token, provider = "explicit" }
end

function M.env(ctx)
  local id, secret = ctx.getenv("AWS_ACCESS_KEY_ID"), ctx.getenv("AWS_SECRET_ACCESS_KEY")
  if not id then return false, "AWS_ACCESS_KEY_ID unset" end
  if not secret then return nil, cred_error("env", "AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY") end
  local exp = ctx.getenv("AWS_CREDENTIAL_EXPIRATION")
  return parse.new_creds{ access_key_id = id, secret_access_key = secret,
                          session_token = ctx.getenv("AWS_SESSION_TOKEN") or ctx.getenv("AWS_SECURITY_TOKEN"),
                          expiration = exp and parse.iso8601(exp) or nil, provider = "env" }
end

local function static_from(values, provider, what)
  local id, secret = values.aws_access_key_id, values.aws_secret_access_key
  if not id or id == "" then return false, what .. " has no aws_access_key_id" end
  if not secret or secret == "" then
    return nil, cred_error(provider, what .. " has aws_access_key_id without aws_secret_access_key")
  end
  return parse.new_creds{ access_key_id = id, secret_access_key = secret,
                          session_token = values.aws_session_token or values.aws_security_token,
                          provider = provider }
end

function M.shared_credentials_file(ctx, profile)
  local values = ctx.shared.credentials_profiles[profile or ctx.profile]
  if not values then return false, "no profile '" .. (profile or ctx.profile) .. "' in " .. tostring(ctx.shared.credentials_file) end
  return static_from(values, "shared-credentials-file", "profile '" .. (profile or ctx.profile) .. "' of " .. ctx.shared.credentials_file)
end

function M.config_file(ctx, profile)
  local values = ctx.shared.config_profiles[profile or ctx.profile]
  if not values then return false, "no profile '" .. (profile or ctx.profile) .. "' in " .. tostring(ctx.shared.config_file) end
  return static_from(values, "config-file", "profile '" .. (profile or ctx.profile) .. "' of " .. ctx.shared.config_file)
end

function M.custom_process(ctx, profile)
  profile = profile or ctx.profile
  local p = ctx.shared.profiles[profile]
  local line = p and p.credential_process
  if not line or line == "" then return false, "no credential_process in profile '" .. profile .. "'" end
  local out, err = require("tide.credentials.process").run(line, { timeout = ctx.opts.process_timeout or 60 })
  -- the command line is the user's own configuration, not a secret; its
  -- output is never quoted
  if not out then return nil, cred_error("custom-process", "credential_process of profile '" .. profile .. "' " .. err) end
  local creds, perr = parse.process(out)
  if not creds then return nil, cred_error("custom-process", perr .. " (profile '" .. profile .. "')") end
  return creds
end

-- Web identity: the environment first (EKS IRSA), then the profile.
function M.web_identity(ctx, profile)
  local from_profile = profile ~= nil
  profile = profile or ctx.profile
  local p = ctx.shared.profiles[profile] or {}
  local token_file = (not from_profile and ctx.getenv("AWS_WEB_IDENTITY_TOKEN_FILE")) or p.web_identity_token_file
  if not token_file then return false, "no AWS_WEB_IDENTITY_TOKEN_FILE nor web_identity_token_file" end
  local role_arn = (not from_profile and ctx.getenv("AWS_ROLE_ARN")) or p.role_arn
  if not role_arn then
    return nil, cred_error("assume-role-with-web-identity", "a web identity token file is set but no role ARN (AWS_ROLE_ARN or role_arn)")
  end
  local name = (not from_profile and ctx.getenv("AWS_ROLE_SESSION_NAME")) or p.role_session_name
  token_file = files.expand(token_file, ctx.getenv)
  local token, ferr = read_file(token_file)
  if not token then
    return nil, cred_error("assume-role-with-web-identity", "cannot read the web identity token file: " .. tostring(ferr))
  end
  token = token:gsub("%s+$", "")
  local params = { RoleArn = role_arn, RoleSessionName = session_name(ctx, name), WebIdentityToken = token }
  if p.duration_seconds and tonumber(p.duration_seconds) then params.DurationSeconds = math.floor(tonumber(p.duration_seconds)) end
  local _, err, body = M.sts_call(ctx, "AssumeRoleWithWebIdentity", params, nil)
  if err then return nil, terror.wrap(err, "assume-role-with-web-identity") end
  local creds, perr = parse.sts_credentials(body, "assume-role-with-web-identity")
  if not creds then return nil, cred_error("assume-role-with-web-identity", perr.message) end
  return creds
end

-- IAM Identity Center: the cached token of `aws sso login`, then GetRoleCredentials.
function M.sso(ctx, profile)
  profile = profile or ctx.profile
  local p = ctx.shared.profiles[profile]
  if not p or not (p.sso_session or p.sso_start_url or p.sso_account_id or p.sso_role_name) then
    return false, "no sso_* settings in profile '" .. profile .. "'"
  end
  local start_url, region, cache_key = p.sso_start_url, p.sso_region, nil
  if p.sso_session then
    local s = ctx.shared.sso_sessions[p.sso_session]
    if not s then
      return nil, cred_error("sso", "profile '" .. profile .. "' names sso_session '" .. p.sso_session
        .. "', which has no [sso-session " .. p.sso_session .. "] section in " .. tostring(ctx.shared.config_file))
    end
    start_url, region, cache_key = s.sso_start_url, s.sso_region, p.sso_session
  else
    cache_key = start_url
  end
  local missing = {}
  for k, v in pairs{ sso_start_url = start_url or false, sso_region = region or false,
                     sso_account_id = p.sso_account_id or false, sso_role_name = p.sso_role_name or false } do
    if not v then missing[#missing + 1] = k end
  end
  if #missing > 0 then
    table.sort(missing)
    return nil, cred_error("sso", "profile '" .. profile .. "' is missing " .. table.concat(missing, ", "))
  end
  local home = ctx.getenv("HOME") or ""
  local cache_dir = ctx.opts.sso_cache_dir or (home .. "/.aws/sso/cache")
  local path = cache_dir .. "/" .. core.sha1_hex(cache_key) .. ".json"
  local login = "run `aws sso login --profile " .. profile .. "`"
  local text = read_file(path)
  if not text then return nil, cred_error("sso", "no SSO token cached for profile '" .. profile .. "' (" .. path .. "): " .. login) end
  local token, terr = parse.sso_token(text)
  if not token then return nil, cred_error("sso", terr .. " (" .. path .. "): " .. login) end
  if token.expires_at <= ctx.now() then
    return nil, cred_error("sso", "the SSO token of profile '" .. profile .. "' expired at "
      .. parse.iso8601_format(token.expires_at) .. ": " .. login)
  end
  local endpoint = sso_endpoint(ctx, region)
  local url = endpoint .. "/federation/credentials?account_id=" .. parse.percent_encode(p.sso_account_id)
    .. "&role_name=" .. parse.percent_encode(p.sso_role_name)
  local resp, err = ctx.http{ method = "GET", url = url, headers = { ["x-amz-sso_bearer_token"] = token.access_token },
                              timeout_ms = 10000 }
  if not resp then return nil, net_error("sso", "GetRoleCredentials at " .. endpoint .. " failed: " .. tostring(err and err.message or err), err) end
  if resp.status == 401 or resp.status == 403 then
    return nil, cred_error("sso", "the SSO token of profile '" .. profile .. "' was refused (HTTP " .. resp.status .. "): " .. login)
  end
  if resp.status ~= 200 then return nil, net_error("sso", "GetRoleCredentials at " .. endpoint .. ": HTTP " .. resp.status) end
  local creds, perr = parse.sso_role(resp.body)
  if not creds then return nil, net_error("sso", perr) end
  creds.account_id = p.sso_account_id
  return creds
end

-- Hosts a container credentials FULL_URI may name over plain HTTP: loopback
-- and the ECS / EKS Pod Identity link-local addresses (as botocore).
local ALLOWED_HTTP_HOSTS = {
  ["localhost"] = true, ["169.254.170.2"] = true, ["169.254.170.23"] = true,
  ["[fd00:ec2::23]"] = true, ["[::1]"] = true,
}

function M.container_allowed(url)
  local scheme, authority = url:match("^(https?)://([^/?#]+)")
  if not scheme then return false, "is not an http(s) URL" end
  local host = authority:match("^(%[.-%])") or authority:match("^([^:]+)")
  if scheme == "https" then return true end
  local h = host:lower()
  if ALLOWED_HTTP_HOSTS[h] or h:match("^127%.%d+%.%d+%.%d+$") then return true end
  return false, "names host " .. host .. " over plain HTTP (only loopback, 169.254.170.2, 169.254.170.23 and fd00:ec2::23 are allowed)"
end

function M.container(ctx)
  local rel, full = ctx.getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"), ctx.getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI")
  local url
  if rel then
    url = "http://169.254.170.2" .. rel
  elseif full then
    local ok, why = M.container_allowed(full)
    if not ok then return nil, cred_error("container-role", "AWS_CONTAINER_CREDENTIALS_FULL_URI " .. why) end
    url = full
  else
    return false, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI unset"
  end
  local headers = {}
  local token_file = ctx.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
  -- the token goes with either variable, as botocore sends it
  if token_file then
    local t, ferr = read_file(token_file)
    if not t then return nil, cred_error("container-role", "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: " .. tostring(ferr)) end
    headers.authorization = t:gsub("%s+$", "")
  elseif ctx.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN") then
    headers.authorization = ctx.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")
  end
  local last
  for attempt = 1, 3 do
    local resp, err = ctx.http{ method = "GET", url = url, headers = headers, timeout_ms = ctx.opts.container_timeout_ms or 2000 }
    if resp and resp.status == 200 then
      local creds, perr = parse.container(resp.body)
      if not creds then return nil, net_error("container-role", perr) end
      return creds
    end
    -- the URL may carry a query but never a secret; the token is a header
    last = resp and ("HTTP " .. resp.status) or tostring(err and err.message or err)
    if resp and resp.status >= 400 and resp.status < 500 then break end
    if attempt < 3 then ctx.sleep(0.1 * attempt) end
  end
  return nil, net_error("container-role", "the container credentials endpoint " .. url:match("^https?://[^/]+") .. " answered " .. last)
end

-- IMDSv2: PUT a session token, then the role and its credentials. Version
-- 1 (no token) is never used: a host that refuses the token is reported.
local function imds_base(ctx)
  local e = ctx.getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
  if not e then
    local p = ctx.shared and ctx.shared.profiles[ctx.profile]
    e = p and p.ec2_metadata_service_endpoint
  end
  if not e then
    local mode = ctx.getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
    e = (mode and mode:lower() == "ipv6") and "http://[fd00:ec2::254]" or "http://169.254.169.254"
  end
  return (e:gsub("/+$", ""))
end
M.imds_base = imds_base

local function imds_settings(ctx)
  local timeout = tonumber(ctx.getenv("AWS_METADATA_SERVICE_TIMEOUT")
    or (ctx.shared and ctx.shared.profiles[ctx.profile] or {}).metadata_service_timeout) or 1
  local attempts = tonumber(ctx.getenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS")
    or (ctx.shared and ctx.shared.profiles[ctx.profile] or {}).metadata_service_num_attempts) or 1
  return timeout, math.max(1, math.floor(attempts))
end

-- imds_get(ctx, path) -> body | nil, message (the token fetched once per call)
function M.imds_get(ctx, paths)
  local base = imds_base(ctx)
  local timeout, attempts = imds_settings(ctx)
  local last
  for attempt = 1, attempts do
    local resp, err = ctx.http{ method = "PUT", url = base .. "/latest/api/token",
      headers = { ["x-aws-ec2-metadata-token-ttl-seconds"] = "21600" }, timeout_ms = timeout * 1000 }
    if resp and resp.status == 200 and resp.body ~= "" then
      local token = resp.body
      local results = {}
      local ok = true
      for i, path in ipairs(paths) do
        local p = type(path) == "function" and path(results) or path
        local r, gerr = ctx.http{ method = "GET", url = base .. p,
          headers = { ["x-aws-ec2-metadata-token"] = token }, timeout_ms = timeout * 1000 }
        if not r or r.status ~= 200 then
          last = base .. p .. ": " .. (r and ("HTTP " .. r.status) or tostring(gerr and gerr.message or gerr))
          ok = false
          break
        end
        results[i] = r.body
      end
      if ok then return results end
    else
      last = base .. "/latest/api/token: " .. (resp and ("HTTP " .. resp.status .. " (IMDSv2 token refused)")
        or tostring(err and err.message or err))
    end
    if attempt < attempts then ctx.sleep(0.05) end
  end
  return nil, last
end

function M.iam_role(ctx)
  if is_true(ctx.getenv("AWS_EC2_METADATA_DISABLED")) then return false, "AWS_EC2_METADATA_DISABLED=true" end
  local results, err = M.imds_get(ctx, {
    "/latest/meta-data/iam/security-credentials/",
    function(r) return "/latest/meta-data/iam/security-credentials/" .. (r[1]:match("^%s*([^\r\n]+)") or "") end,
  })
  if not results then
    -- as botocore: no instance metadata means this is no EC2 instance
    return false, "instance metadata unreachable: " .. tostring(err)
  end
  local creds, perr = parse.imds(results[2])
  if not creds then return nil, net_error("iam-role", perr) end
  return creds
end

------------------------------------------------------------------------
-- assume-role from the profile, with source profiles and credential_source

local function has_static(p) return p.aws_access_key_id ~= nil and p.aws_secret_access_key ~= nil end
local function is_assume_role(p) return p and p.role_arn ~= nil and p.web_identity_token_file == nil end

local CREDENTIAL_SOURCES = {
  Environment = function(ctx) return M.env(ctx) end,
  Ec2InstanceMetadata = function(ctx) return M.iam_role(ctx) end,
  EcsContainer = function(ctx) return M.container(ctx) end,
}

local resolve_role

-- The credentials a source profile gives (botocore's order for a source
-- profile: assume-role, web identity, sso, static keys, credential_process).
local function source_profile_creds(ctx, name, parent, visited)
  local p = ctx.shared.profiles[name]
  if not p then
    return nil, cred_error("assume-role", "profile '" .. parent .. "' names source_profile '" .. name
      .. "', which does not exist")
  end
  if is_assume_role(p) and not (name == parent and has_static(p)) then
    return resolve_role(ctx, name, visited)
  end
  if p.web_identity_token_file then return M.web_identity(ctx, name) end
  if p.sso_session or p.sso_start_url then return M.sso(ctx, name) end
  if has_static(p) then
    local c = static_from(p, "assume-role", "profile '" .. name .. "'")
    if c then return c end
  end
  if p.credential_process then return M.custom_process(ctx, name) end
  return nil, cred_error("assume-role", "source_profile '" .. name .. "' (of profile '" .. parent
    .. "') has no credentials: aws_access_key_id, role_arn, web_identity_token_file, sso_* or credential_process")
end

function resolve_role(ctx, name, visited)
  local p = ctx.shared.profiles[name]
  visited[#visited + 1] = name
  if p.source_profile and p.credential_source then
    return nil, cred_error("assume-role", "profile '" .. name .. "' has both source_profile and credential_source; keep one")
  end
  local source, err
  if p.credential_source then
    local f = CREDENTIAL_SOURCES[p.credential_source]
    if not f then
      return nil, cred_error("assume-role", "profile '" .. name .. "': credential_source '" .. p.credential_source
        .. "' is not one of Environment, Ec2InstanceMetadata, EcsContainer")
    end
    source, err = f(ctx)
    if source == false then
      return nil, cred_error("assume-role", "profile '" .. name .. "': credential_source " .. p.credential_source
        .. " gave no credentials (" .. tostring(err) .. ")")
    end
  elseif p.source_profile then
    local src = p.source_profile
    for _, v in ipairs(visited) do
      if v == src and not (src == name and has_static(p)) then
        local chain = {}
        for i, n in ipairs(visited) do chain[i] = n end
        chain[#chain + 1] = src
        return nil, cred_error("assume-role", "the source_profile chain loops: " .. table.concat(chain, " -> "))
      end
    end
    source, err = source_profile_creds(ctx, src, name, visited)
  else
    return nil, cred_error("assume-role", "profile '" .. name .. "' has role_arn but neither source_profile nor credential_source")
  end
  if not source then return nil, err end
  return assume_role(ctx, source, name, p)
end

function M.assume_role(ctx)
  local p = ctx.shared.profiles[ctx.profile]
  if not is_assume_role(p) then return false, "no role_arn in profile '" .. ctx.profile .. "'" end
  return resolve_role(ctx, ctx.profile, {})
end

------------------------------------------------------------------------
-- The chain, in botocore's order

M.CHAIN = {
  { name = "explicit", fn = M.explicit },
  { name = "env", fn = M.env },
  { name = "assume-role", fn = M.assume_role },
  { name = "assume-role-with-web-identity", fn = function(ctx) return M.web_identity(ctx) end },
  { name = "sso", fn = function(ctx) return M.sso(ctx) end },
  { name = "shared-credentials-file", fn = function(ctx) return M.shared_credentials_file(ctx) end },
  { name = "custom-process", fn = function(ctx) return M.custom_process(ctx) end },
  { name = "config-file", fn = function(ctx) return M.config_file(ctx) end },
  { name = "container-role", fn = M.container },
  { name = "iam-role", fn = M.iam_role },
}
M.BY_NAME = {}
for _, p in ipairs(M.CHAIN) do M.BY_NAME[p.name] = p.fn end

------------------------------------------------------------------------
-- Region: AWS_REGION, AWS_DEFAULT_REGION, the profile, then IMDS

-- region(ctx, {imds = bool}) -> region, source | nil, err
function M.region(ctx, opts)
  if ctx.opts.region then return ctx.opts.region, "configuration" end
  for _, v in ipairs{ "AWS_REGION", "AWS_DEFAULT_REGION" } do
    local r = ctx.getenv(v)
    if r then return r, v end
  end
  local p = ctx.shared and ctx.shared.profiles[ctx.profile]
  if p and p.region and p.region ~= "" then
    return p.region, "profile '" .. ctx.profile .. "' of " .. tostring(ctx.shared.config_file)
  end
  if opts and opts.imds and not is_true(ctx.getenv("AWS_EC2_METADATA_DISABLED")) then
    local results, err = M.imds_get(ctx, { "/latest/meta-data/placement/region" })
    if results and results[1]:match("^[%w%-]+$") then return results[1], "instance metadata" end
    return nil, cred_error("region", "not set (AWS_REGION, AWS_DEFAULT_REGION, the profile's region) and instance metadata gave none: " .. tostring(err))
  end
  return nil, cred_error("region", "not set: set AWS_REGION, AWS_DEFAULT_REGION or the profile's region")
end

return M
