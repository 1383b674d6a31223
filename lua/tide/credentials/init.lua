-- tide.credentials: the AWS credentials chain, kept fresh.
--
--   local credentials = require "tide.credentials"
--   local src = credentials.new{
--     profile = "prod",                 -- else AWS_DEFAULT_PROFILE, AWS_PROFILE, "default"
--     credentials = {access_key_id=, secret_access_key=, session_token=},  -- explicit
--     region = "eu-west-1",             -- for STS (else the region chain, without IMDS)
--     transport = t,                    -- the host's: t:request, t.sleep, t.spawn, t.now
--     log = logger, sts_endpoint = url, config_file =, credentials_file =,
--     shared = ngx.shared.DICT,         -- nginx: one refresh for every worker
--   }
--   local creds, err = src:get()        -- current credentials (refreshed as needed)
--   src:expired(access_key_id)          -- the service refused them: refresh (once per key)
--   local creds, report = src:resolve() -- walk the chain now; report.tried lists
--                                       -- {provider=, note=} of each provider passed over
--   credentials.region(opts) -> region, source | nil, err
--
-- The chain, in botocore's order (see docs/credentials.md): explicit,
-- env, assume-role, assume-role-with-web-identity, sso,
-- shared-credentials-file, custom-process, config-file, container-role,
-- iam-role. A profile given in the configuration (opts.profile) skips the
-- environment's keys, as botocore does for Session(profile=...).
--
-- Refreshing: credentials with an expiration are refreshed in the
-- background from `advisory` on (tide.credentials.parse.refresh_times):
-- get() starts one refresh in a thread of the host (transport.spawn) and
-- returns the current credentials at once, so requests in flight never
-- wait. A failed refresh is retried with capped backoff while the current
-- credentials stay in use; from `mandatory` on (close to the expiry) get()
-- waits for a refresh. Concurrent callers share one refresh. With
-- opts.shared (an ngx.shared dict), the credentials live in the dict and
-- one worker refreshes for all (a lock in the dict); the others read them.
--
-- Nothing secret is logged or put into an error: key ids and expiries only.
local core = require "tide.core"
local cjson = require "cjson.safe"
local terror = require "tide.error"
local clock = require "tide.clock"
local parse = require "tide.credentials.parse"
local files = require "tide.credentials.files"
local providers = require "tide.credentials.providers"
local metrics = require "tide.metrics"

local M = {}
M.parse, M.files, M.providers = parse, files, providers

local function default_getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

local function profile_of(opts, getenv)
  if opts.profile then return opts.profile, true end
  -- botocore reads AWS_DEFAULT_PROFILE first (its list of the variable's names)
  return getenv("AWS_DEFAULT_PROFILE") or getenv("AWS_PROFILE") or "default", false
end

local function nolog() end

-- The transport of the tide process, made on first use (nginx passes its own).
local function host_transport(opts)
  if opts.transport then return opts.transport end
  local ok, mod = pcall(require, "tide.transport.engine")
  if not ok then return nil end
  return mod.new{}
end

-- A context for the providers (see tide.credentials.providers).
local function make_ctx(self)
  local shared, ferr = files.load{ config_file = self.opts.config_file, credentials_file = self.opts.credentials_file,
                                   getenv = self.getenv }
  if not shared then return nil, ferr end
  local ctx = {
    getenv = self.getenv, shared = shared, profile = self.profile, profile_explicit = self.profile_explicit,
    opts = self.opts, now = self.wall,
  }
  local t = self.transport
  ctx.http = function(req)
    if not t then return nil, { kind = "other", message = "no HTTP transport in this host" } end
    return t:request(req)
  end
  ctx.sleep = function(s) if t then t.sleep(s) end end
  if not ctx.opts.region then
    local r = providers.region(ctx)
    ctx.region = r
  else
    ctx.region = ctx.opts.region
  end
  return ctx
end

local Source = {}
Source.__index = Source
Source.__tostring = function(s) return "tide.credentials source (profile " .. tostring(s.profile) .. ")" end

function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("credentials.new: opts must be a table", 2) end
  local self = setmetatable({}, Source)
  self.opts = opts
  self.getenv = opts.getenv or default_getenv
  self.profile, self.profile_explicit = profile_of(opts, self.getenv)
  self.log = opts.log or nolog
  -- seconds with a fraction: refresh windows of short-lived credentials
  -- are a few seconds long
  self.wall = opts.now or function() return clock.wall_ms() / 1000 end
  self.transport = host_transport(opts)
  self.shared = opts.shared
  self.failures = 0
  self.next_try = 0
  self.refreshes = 0
  metrics.credentials_source(self)
  return self
end

-- Walks the chain: creds, report | nil, err (err.tried as report.tried)
function Source:resolve(only)
  local ctx, cerr = make_ctx(self)
  if not ctx then return nil, cerr end
  local tried = {}
  if self.profile ~= "default" and not ctx.shared.profiles[self.profile] and not only then
    -- botocore: ProfileNotFound, whatever the environment holds
    return nil, terror.new{ kind = "invalid", type = "CredentialsError",
      message = "profile '" .. self.profile .. "' not found in " .. tostring(ctx.shared.config_file)
        .. " or " .. tostring(ctx.shared.credentials_file) }
  end
  for _, p in ipairs(providers.CHAIN) do
    if (not only or only == p.name) and not (p.name == "env" and self.profile_explicit) then
      local creds, err = p.fn(ctx)
      if creds then
        creds.fetched_at = self.wall()
        return creds, { provider = p.name, tried = tried, profile = self.profile, region = ctx.region }
      end
      if creds == nil then
        err.tried = tried
        return nil, err
      end
      tried[#tried + 1] = { provider = p.name, note = err }
    end
  end
  local notes = {}
  for i, t in ipairs(tried) do notes[i] = t.provider .. " (" .. t.note .. ")" end
  local e = terror.new{ kind = "invalid", type = "CredentialsError",
    message = "no AWS credentials found for profile '" .. self.profile .. "'; tried " .. table.concat(notes, "; ") }
  e.tried = tried
  return nil, e
end

-- Network providers, and whether the configuration points at each: what
-- get_local leaves to the first request.
local function configured(name, ctx)
  local p = ctx.shared.profiles[ctx.profile] or {}
  if name == "assume-role" then return p.role_arn ~= nil and p.web_identity_token_file == nil end
  if name == "assume-role-with-web-identity" then
    return ctx.getenv("AWS_WEB_IDENTITY_TOKEN_FILE") ~= nil or p.web_identity_token_file ~= nil
  end
  if name == "sso" then return p.sso_session ~= nil or p.sso_start_url ~= nil end
  if name == "container-role" then
    return ctx.getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") ~= nil
      or ctx.getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI") ~= nil
  end
  if name == "iam-role" then return true end
end
local NETWORK = { ["assume-role"] = true, ["assume-role-with-web-identity"] = true, sso = true,
                  ["container-role"] = true, ["iam-role"] = true }

-- get_local() -> creds | false (a network provider answers: fetched on the
-- first get() that may do I/O) | nil, err. For hosts where the first
-- resolution happens where no request can be made (nginx's init_worker).
function Source:get_local()
  local ctx, cerr = make_ctx(self)
  if not ctx then return nil, cerr end
  for _, p in ipairs(providers.CHAIN) do
    if not (p.name == "env" and self.profile_explicit) then
      if NETWORK[p.name] then
        if configured(p.name, ctx) then return false end
      else
        local creds, err = p.fn(ctx)
        if creds then
          creds.fetched_at = self.wall()
          self.provider = p.name
          self:install(creds)
          return creds
        end
        if creds == nil then return nil, err end
      end
    end
  end
  return false
end

------------------------------------------------------------------------
-- Refreshing

-- The shared dict's copy: {v=version, creds=...} as JSON (nginx only).
local function shared_read(dict)
  local text = dict:get("tide_credentials")
  if not text then return nil end
  local d = cjson.decode(text)
  if type(d) ~= "table" or type(d.access_key_id) ~= "string" then return nil end
  local c = parse.new_creds(d)
  c.fetched_at = d.fetched_at
  return c
end

local function shared_write(dict, creds)
  local text = cjson.encode{
    access_key_id = creds.access_key_id, secret_access_key = creds.secret_access_key,
    session_token = creds.session_token, expiration = creds.expiration, provider = creds.provider,
    fetched_at = creds.fetched_at, account_id = creds.account_id,
  }
  dict:set("tide_credentials", text)
end

local function times(creds)
  if not creds or not creds.expiration then return math.huge, math.huge end
  return parse.refresh_times(creds.expiration, creds.fetched_at or creds.expiration - 3600)
end

-- One refresh: re-run the provider that answered (or the whole chain).
-- Returns creds | nil, err; installs them (and in the dict).
function Source:fetch()
  local only = self.creds and self.creds.provider ~= "explicit" and self.provider or nil
  -- a bug in a provider must not leave `refreshing` set for ever
  local ok, creds, report = pcall(self.resolve, self, only)
  if not ok then
    return nil, terror.new{ kind = "internal", type = "LuaError", message = "credentials: " .. tostring(creds) }
  end
  if creds and report then self.provider = report.provider end
  metrics.credentials_fetch(creds and report and report.provider or self.provider, creds ~= nil)
  return creds, report
end

function Source:install(creds)
  local old = self.creds
  self.creds = creds
  self.refreshes = self.refreshes + 1
  self.failures, self.next_try = 0, 0
  if self.shared then shared_write(self.shared, creds) end
  if not old or old.access_key_id ~= creds.access_key_id or old.expiration ~= creds.expiration then
    -- the first resolution at debug (every CLI command makes one), refreshes at info
    self.log(old and "info" or "debug", "AWS credentials " .. (old and "refreshed" or "resolved"), {
      provider = creds.provider, access_key_id = creds.access_key_id,
      expiration = parse.iso8601_format(creds.expiration) or "never",
    })
  end
end

function Source:failed(err)
  self.failures = self.failures + 1
  local wait = core.backoff(self.failures - 1, 1, 60, math.random())
  if self.creds and self.creds.expiration then
    -- retry several times before the current credentials run out
    wait = math.min(wait, math.max(0.2, (self.creds.expiration - self.wall()) / 4))
  end
  self.next_try = self.wall() + wait
  self.log("warn", "AWS credentials refresh failed; retrying", {
    provider = self.provider, attempt = self.failures, retry_in_s = math.floor(wait * 1000) / 1000,
    error = tostring(err),
  })
end

-- Runs one refresh unless one is running (then waits for it when `wait`).
-- With a shared dict, only the holder of the dict's lock fetches.
function Source:refresh(wait)
  if self.refreshing then
    if not wait then return self.creds end
    local t = self.transport
    while self.refreshing do t.sleep(0.005) end
    if self.creds and self.wall() < (self.creds.expiration or math.huge) then return self.creds end
    return nil, self.last_error
  end
  self.refreshing = true
  local dict = self.shared
  local creds, err
  if dict then
    -- another worker may have refreshed already
    local c = shared_read(dict)
    local advisory = times(c)
    if c and (not self.creds or c.access_key_id ~= self.creds.access_key_id) and self.wall() < advisory
       and not (self.expired_key and c.access_key_id == self.expired_key) then
      self.creds = c
      self.provider = c.provider
      self.refreshing = false
      return c
    end
    local got = dict:add("tide_credentials_lock", true, 30)
    if not got then
      -- a worker is fetching: wait for its answer when we must, else go on
      self.refreshing = false
      if not wait then return self.creds end
      local t = self.transport
      local deadline = self.wall() + 35
      while self.wall() < deadline do
        t.sleep(0.02)
        c = shared_read(dict)
        if c and (not self.creds or c.access_key_id ~= self.creds.access_key_id or
                  (c.expiration or 0) > (self.creds.expiration or 0)) then
          self.creds = c
          self.provider = c.provider
          return c
        end
        if not dict:get("tide_credentials_lock") then break end
      end
      if self.creds and self.wall() < (self.creds.expiration or math.huge) then return self.creds end
      return self:refresh(true)
    end
    creds, err = self:fetch()
    if creds then self:install(creds) end
    dict:delete("tide_credentials_lock")
  else
    creds, err = self:fetch()
    if creds then self:install(creds) end
  end
  self.refreshing = false
  self.expired_key = nil
  if not creds then
    self.last_error = err
    -- with credentials still in use, a failed refresh is retried with
    -- backoff (logged); without any, the caller gets the error itself
    if self.creds then self:failed(err) end
    return nil, err
  end
  return creds
end

-- get() -> creds | nil, err
function Source:get()
  local creds = self.creds
  if not creds and self.shared then
    creds = shared_read(self.shared)
    if creds then self.creds, self.provider = creds, creds.provider end
  end
  if not creds then return self:refresh(true) end
  if not creds.expiration then return creds end
  local now = self.wall()
  local advisory, mandatory = times(creds)
  if now < advisory then return creds end
  if self.shared and not self.refreshing then
    -- another worker may hold newer ones
    local c = shared_read(self.shared)
    if c and c.access_key_id ~= creds.access_key_id and (c.expiration or 0) > creds.expiration then
      self.creds, self.provider = c, c.provider
      return self:get()
    end
  end
  if now >= mandatory then
    local c, err = self:refresh(true)
    if c then return c end
    if now < creds.expiration then return creds end
    return nil, err
  end
  if not self.refreshing and now >= self.next_try and self.transport then
    self.transport.spawn(function() self:refresh(false) end)
  end
  return creds
end

-- The service refused access_key_id as expired (ExpiredTokenException) or
-- unknown (UnrecognizedClientException): refresh now unless the current
-- credentials are already others. Returns the credentials to retry with.
function Source:expired(access_key_id)
  if self.creds and access_key_id and self.creds.access_key_id ~= access_key_id then
    return self.creds
  end
  if self.shared then
    local c = shared_read(self.shared)
    if c and c.access_key_id ~= access_key_id then
      self.creds, self.provider = c, c.provider
      return c
    end
  end
  self.expired_key = access_key_id
  self.log("info", "AWS credentials refused by the service; refreshing", { access_key_id = access_key_id })
  local c, err = self:refresh(true)
  if c and c.access_key_id == access_key_id and self.refreshing == false then
    -- the provider gave the same key again: nothing better to retry with
    return c
  end
  return c, err
end

------------------------------------------------------------------------
-- Region

-- credentials.region{profile=, region=, transport=, imds=true|false} -> region, source | nil, err
function M.region(opts)
  opts = opts or {}
  local getenv = opts.getenv or default_getenv
  local shared, ferr = files.load{ config_file = opts.config_file, getenv = getenv,
                                   credentials_file = opts.credentials_file }
  if not shared then return nil, ferr end
  local t = opts.imds and host_transport(opts)
  local ctx = {
    getenv = getenv, shared = shared, profile = (profile_of(opts, getenv)), opts = opts, now = clock.wall_s,
    http = function(req)
      if not t then return nil, { kind = "other", message = "no HTTP transport" } end
      return t:request(req)
    end,
    sleep = function(s) if t then t.sleep(s) end end,
  }
  return providers.region(ctx, { imds = opts.imds and t ~= nil })
end

-- credentials.caller_identity(source) -> {Account=, Arn=, UserId=} | nil, err
function M.caller_identity(src)
  local creds, err = src:get()
  if not creds then return nil, err end
  local ctx, cerr = make_ctx(src)
  if not ctx then return nil, cerr end
  local leaves, serr = providers.sts_call(ctx, "GetCallerIdentity", {}, creds)
  if not leaves then return nil, serr end
  return { Account = leaves.Account, Arn = leaves.Arn, UserId = leaves.UserId }, providers.sts_endpoint(ctx)
end

function M.sts_endpoint(src)
  local ctx = make_ctx(src)
  return ctx and providers.sts_endpoint(ctx)
end

return M
