-- tide.http.conf - renders the example site's nginx.conf
-- (examples/nginx/nginx.conf) from a tide.yaml; tools/nginx.sh runs it.
--
--   conf.render(template, vars) -> text | nil, err
--     {{name}} is replaced by vars.name (a missing name is an error);
--     {{#name}}...{{/name}} is kept when vars.name is truthy, {{^name}}...{{/name}}
--     when it is not.
--   conf.site_vars(cfg, opts) -> vars | nil, err
--     cfg: a loaded tide.yaml (tide.config); opts: {prefix=, listen=, workers=,
--     root=, config=, max_body=, log_level=}
--   conf.main() -> exit status: reads TIDE_NGINX_* from the environment
--     (see tools/nginx.sh), writes the rendered file, prints the store kind.
local M = {}

local LOCATION = "/_tide/dynamodb"
M.LOCATION = LOCATION

function M.render(template, vars)
  local err
  local function section(inverted, name, body)
    local v = vars[name]
    local keep = v ~= nil and v ~= false and v ~= ""
    if inverted then keep = not keep end
    return keep and body or ""
  end
  local text, n = template, 1
  while n > 0 do -- nested blocks: each pass settles the outermost ones
    text, n = text:gsub("{{([#^])([%w_]+)}}\n?(.-){{/%2}}\n?", function(kind, name, body)
      return section(kind == "^", name, body)
    end)
  end
  text = text:gsub("{{([%w_]+)}}", function(name)
    local v = vars[name]
    if v == nil then
      err = err or ("the template uses {{" .. name .. "}}, which has no value")
      return ""
    end
    return tostring(v)
  end)
  if err then return nil, err end
  if text:find("{{", 1, true) then return nil, "the template has an unclosed or malformed {{...}}" end
  return text
end

local function lua_string(s)
  return (("%q"):format(s):gsub("\\\n", "\\n"))
end

-- nginx time: milliseconds as "1500ms"
local function ms(n) return ("%dms"):format(n) end

function M.site_vars(cfg, opts)
  local root = opts.root
  local v = {
    prefix = opts.prefix,
    listen = opts.listen,
    workers = opts.workers or "auto",
    log_level = opts.log_level or (cfg.log and cfg.log.level == "debug" and "info") or "notice",
    max_body = opts.max_body or "1m",
    lua_path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua",
    lua_cpath = root .. "/build/lua/?.so",
    store = cfg.store,
    access_log = opts.access_log or "off",
    user = opts.user,
    modules = opts.modules or "/usr/share/nginx/modules",
  }
  -- Debian loads the Lua module dynamically; OpenResty has it built in
  local f = io.open(v.modules .. "/ngx_http_lua_module.so", "rb")
  if f then f:close() end
  v.load_modules = f ~= nil
  local routes = {}
  v.cred_upstreams, v.cred_locations, v.cred_vars = "", "", ""
  if cfg.store == "dynamodb" then
    local d = cfg.dynamodb
    -- the endpoint exactly as the DynamoDB client resolves it (config, then the AWS environment)
    local client, err = require("tide.dynamodb").new{ region = d.region, endpoint = d.endpoint,
                                                      profile = d.profile, transport = {} }
    if not client then return nil, tostring(err) end
    local ep = client.endpoint
    local scheme, host, port = ep.base:match("^(https?)://([^/:]+):?(%d*)$")
    if not scheme then
      local h = ep.base:match("^https?://%[(.-)%]")
      if not h then return nil, "cannot use the DynamoDB endpoint " .. ep.base .. " in nginx" end
      return nil, "IPv6 literal endpoints are not supported by the nginx site yet: " .. ep.base
    end
    if port == "" then port = scheme == "https" and "443" or "80" end
    v.dynamodb = true
    v.https = scheme == "https"
    v.ddb_scheme = scheme
    v.ddb_server = host .. ":" .. port
    v.ddb_tls_name = host
    v.ddb_keepalive = math.min(d.max_connections or 512, 1024)
    v.ddb_timeout = ms(d.timeout_ms or 30000)
    v.ddb_connect_timeout = ms(math.min(d.timeout_ms or 30000, 5000))
    v.ddb_verify = d.verify_tls == false and "off" or "on"
    v.ddb_ca = d.ca_bundle or "/etc/ssl/certs/ca-certificates.crt"
    v.ddb_endpoint = ep.base
    v.ddb_location = LOCATION
    routes[ep.base] = LOCATION
    -- the endpoints the credentials chain may call (tide.credentials.nginx)
    local cred = require("tide.credentials.nginx").site{ profile = d.profile, region = client.region }
    v.cred_upstreams, v.cred_locations, v.cred_vars = cred.upstreams, cred.locations, cred.vars
    for base, r in pairs(cred.routes) do
      r.location = routes[base] -- DynamoDB's, when the same server answers both
      routes[base] = r
    end
  end
  local args = { "config = " .. lua_string(opts.config) }
  local r = {}
  for base, loc in pairs(routes) do
    if type(loc) == "table" then
      r[#r + 1] = ("[%s] = { location = %s, credentials = %s }"):format(lua_string(base),
        loc.location and lua_string(loc.location) or "nil", lua_string(loc.credentials))
    else
      r[#r + 1] = ("[%s] = %s"):format(lua_string(base), lua_string(loc))
    end
  end
  table.sort(r)
  args[#args + 1] = "routes = { " .. table.concat(r, ", ") .. " }"
  v.init_args = "{ " .. table.concat(args, ", ") .. " }"
  return v
end

local function env(name, default)
  local s = os.getenv(name)
  if s == nil or s == "" then return default end
  return s
end

function M.main()
  local config = require "tide.config"
  local cfg_path = env("TIDE_NGINX_CONFIG")
  local cfg, err = config.load{ file = cfg_path }
  if not cfg then
    io.stderr:write("tide nginx: ", tostring(err), "\n")
    return 2
  end
  local tpl_path = env("TIDE_NGINX_TEMPLATE")
  local f, ferr = io.open(tpl_path, "rb")
  if not f then
    io.stderr:write("tide nginx: cannot read the template: ", tostring(ferr), "\n")
    return 2
  end
  local template = f:read("*a")
  f:close()
  local vars, verr = M.site_vars(cfg, {
    prefix = env("TIDE_NGINX_PREFIX"), listen = env("TIDE_NGINX_LISTEN"),
    workers = env("TIDE_NGINX_WORKERS"), root = env("TIDE_NGINX_ROOT"), config = cfg_path,
    max_body = env("TIDE_NGINX_MAX_BODY"), log_level = env("TIDE_NGINX_LOG_LEVEL"),
    access_log = env("TIDE_NGINX_ACCESS_LOG"), user = env("TIDE_NGINX_USER"),
    modules = env("TIDE_NGINX_MODULES"),
  })
  if not vars then
    io.stderr:write("tide nginx: ", tostring(verr), "\n")
    return 2
  end
  local text, rerr = M.render(template, vars)
  if not text then
    io.stderr:write("tide nginx: ", tpl_path, ": ", rerr, "\n")
    return 2
  end
  local out = assert(io.open(env("TIDE_NGINX_OUT"), "wb"))
  out:write(text)
  out:close()
  io.stdout:write(cfg.store, vars.ddb_endpoint and (" " .. vars.ddb_endpoint) or "", "\n")
  return 0
end

return M
