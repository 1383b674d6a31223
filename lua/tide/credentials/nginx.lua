-- tide.credentials.nginx: what the nginx site needs for the credentials
-- chain. nginx has no HTTP client for Lua besides subrequests, so each
-- endpoint the chain may call (the container endpoint, IMDS, STS, the SSO
-- portal) gets an internal location proxying to it, rendered into the
-- site's nginx.conf by tide.http.conf; tide.transport.ngx sends the
-- chain's requests there (routes marked `credentials`).
--
--   nginx.site{profile=, region=, getenv=} -> {
--     routes = {[base URL] = {credentials = location}},
--     upstreams = "nginx text", locations = "nginx text", vars = "nginx text",
--   }
--
-- Only endpoints the configuration points at are rendered (nginx resolves
-- an upstream's host name when it loads the file): the container endpoint
-- when its variables are set, IMDS unless AWS_EC2_METADATA_DISABLED, STS
-- when a role is assumed (role_arn in the profile or a web identity), the
-- SSO portal when the profile uses SSO. The credentials themselves are kept
-- in the shared dict `tide_credentials` (lua_shared_dict), so one worker
-- refreshes them for all (tide.credentials, opts.shared).
local files = require "tide.credentials.files"
local providers = require "tide.credentials.providers"

local M = {}

M.DICT = "tide_credentials"

local function base_of(url)
  return url and url:match("^(https?://[^/?#]+)")
end

local function getenv_default(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

function M.endpoints(opts)
  local getenv = opts.getenv or getenv_default
  local shared = files.load{ getenv = getenv } or { profiles = {}, sso_sessions = {} }
  local profile = opts.profile or getenv("AWS_DEFAULT_PROFILE") or getenv("AWS_PROFILE") or "default"
  local ctx = { getenv = getenv, shared = shared, profile = profile, opts = { region = opts.region },
                region = opts.region }
  if not ctx.region then ctx.region = providers.region(ctx) end
  local list, seen = {}, {}
  local function add(url)
    local b = base_of(url)
    if b and not seen[b] then seen[b] = true; list[#list + 1] = b end
  end
  if getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") then add("http://169.254.170.2")
  elseif getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI") then add(getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI")) end
  local disabled = (getenv("AWS_EC2_METADATA_DISABLED") or ""):lower() == "true"
  if not disabled then add(providers.imds_base(ctx)) end
  -- a role to assume anywhere along the profile's source_profile chain
  local assume, sso = getenv("AWS_WEB_IDENTITY_TOKEN_FILE") ~= nil, false
  local name, hops = profile, 0
  while name and shared.profiles[name] and hops < 10 do
    local p = shared.profiles[name]
    if p.role_arn or p.web_identity_token_file then assume = true end
    if p.sso_session or p.sso_start_url then
      sso = true
      local s = p.sso_session and shared.sso_sessions[p.sso_session] or p
      if s.sso_region then
        add(getenv("AWS_ENDPOINT_URL_SSO") or getenv("AWS_ENDPOINT_URL")
          or ("https://portal.sso." .. s.sso_region .. ".amazonaws.com"))
      end
    end
    name = p.source_profile ~= name and p.source_profile or nil
    hops = hops + 1
  end
  if assume then add(providers.sts_endpoint(ctx)) end
  return list, sso
end

local VARS = { "tide_c_host", "tide_c_path", "tide_c_authorization", "tide_c_content_type", "tide_c_amz_date",
               "tide_c_amz_security_token", "tide_c_imds_token", "tide_c_imds_ttl", "tide_c_sso_token" }

function M.site(opts)
  local bases = M.endpoints(opts)
  local routes, ups, locs = {}, {}, {}
  for i, base in ipairs(bases) do
    local scheme, hostport = base:match("^(https?)://(.+)$")
    local host = hostport:match("^(%[.-%])") or hostport:match("^([^:]+)")
    local port = hostport:match(":(%d+)$") or (scheme == "https" and "443" or "80")
    local name = "tide_credentials_" .. i
    local loc = "/_tide/credentials/" .. i
    routes[base] = { credentials = loc }
    ups[#ups + 1] = ("  # the credentials chain: %s\n  upstream %s {\n    server %s:%s;\n    keepalive 4;\n  }")
      :format(base, name, host, port)
    local l = {
      "    location = " .. loc .. " {",
      "      internal;",
      "      proxy_pass " .. scheme .. "://" .. name .. "$tide_c_path;",
      "      proxy_http_version 1.1;",
      "      proxy_pass_request_headers off;",
      '      proxy_set_header Connection "";',
      "      proxy_set_header Host $tide_c_host;",
      "      proxy_set_header Authorization $tide_c_authorization;",
      "      proxy_set_header Content-Type $tide_c_content_type;",
      "      proxy_set_header X-Amz-Date $tide_c_amz_date;",
      "      proxy_set_header X-Amz-Security-Token $tide_c_amz_security_token;",
      "      proxy_set_header X-aws-ec2-metadata-token $tide_c_imds_token;",
      "      proxy_set_header X-aws-ec2-metadata-token-ttl-seconds $tide_c_imds_ttl;",
      "      proxy_set_header x-amz-sso_bearer_token $tide_c_sso_token;",
      "      proxy_next_upstream off;",
      "      proxy_connect_timeout 2s;",
      "      proxy_read_timeout 10s;",
      "      proxy_buffering on;",
      "      proxy_max_temp_file_size 0;",
    }
    if scheme == "https" then
      l[#l + 1] = "      proxy_ssl_server_name on;"
      l[#l + 1] = "      proxy_ssl_name " .. host .. ";"
      l[#l + 1] = "      proxy_ssl_verify on;"
      l[#l + 1] = "      proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;"
    end
    l[#l + 1] = "    }"
    locs[#locs + 1] = table.concat(l, "\n")
  end
  local vars = {}
  if #bases > 0 then
    for _, v in ipairs(VARS) do vars[#vars + 1] = '      set $' .. v .. ' "";' end
  end
  return { routes = routes, upstreams = table.concat(ups, "\n"), locations = table.concat(locs, "\n"),
           vars = table.concat(vars, "\n") }
end

return M
