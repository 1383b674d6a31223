-- tide.credentials.files: the shared AWS files, read the way botocore reads
-- them.
--
--   files.load{config_file=, credentials_file=, getenv=} -> shared | nil, err
--   shared.profiles[name]      the config file's [profile NAME] (and [default]),
--                              with the credentials file's [NAME] merged over it
--                              (botocore's full_config: the credentials file wins)
--   shared.config_profiles[name], shared.credentials_profiles[name]: each file alone
--   shared.sso_sessions[name]  [sso-session NAME] of the config file
--   shared.config_file, shared.credentials_file: the paths read
--
-- The INI parsing is tide.core's (core.aws_ini, runtime/core/credentials.c),
-- which wipes the file's text after reading it.
local core = require "tide.core"
local terror = require "tide.error"

local M = {}

local function default_getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end
M.getenv = default_getenv

local function home_path(getenv, name)
  local home = getenv("HOME")
  if not home then return nil end
  return home .. "/.aws/" .. name
end

function M.config_path(opts, getenv)
  getenv = getenv or default_getenv
  return (opts and opts.config_file) or getenv("AWS_CONFIG_FILE") or home_path(getenv, "config")
end

function M.credentials_path(opts, getenv)
  getenv = getenv or default_getenv
  return (opts and opts.credentials_file) or getenv("AWS_SHARED_CREDENTIALS_FILE")
    or home_path(getenv, "credentials")
end

-- ~ at the start of a path is the home directory (as botocore's expanduser)
function M.expand(path, getenv)
  getenv = getenv or default_getenv
  if type(path) == "string" and path:sub(1, 1) == "~" then
    local home = getenv("HOME")
    if home then return home .. path:sub(2) end
  end
  return path
end

local function read(path)
  if not path then return {}, false end
  local t, err = core.aws_ini(path)
  if t == nil then
    return nil, terror.new{ kind = "invalid", type = "ConfigError", message = err }
  end
  if t == false then return {}, false end
  return t, true
end

function M.load(opts)
  opts = opts or {}
  local getenv = opts.getenv or default_getenv
  local cpath, kpath = M.config_path(opts, getenv), M.credentials_path(opts, getenv)
  local config, cerr = read(cpath)
  if not config then return nil, cerr end
  local creds, kerr = read(kpath)
  if not creds then return nil, kerr end
  local shared = {
    config_file = cpath, credentials_file = kpath,
    profiles = {}, config_profiles = {}, credentials_profiles = {}, sso_sessions = {},
  }
  -- [default] and [profile default] both name the default profile; a
  -- "profile " prefixed section wins over a bare one, as in botocore.
  for section, values in pairs(config) do
    local name = section:match("^profile%s+(.-)%s*$")
    if name then
      shared.config_profiles[name] = values
    elseif section:match("^sso%-session%s+") then
      shared.sso_sessions[section:match("^sso%-session%s+(.-)%s*$")] = values
    elseif section == "default" and not config["profile default"] then
      shared.config_profiles.default = values
    end
  end
  for name, values in pairs(creds) do shared.credentials_profiles[name] = values end
  for name, values in pairs(shared.config_profiles) do
    local p = {}
    for k, v in pairs(values) do p[k] = v end
    shared.profiles[name] = p
  end
  for name, values in pairs(shared.credentials_profiles) do
    local p = shared.profiles[name] or {}
    for k, v in pairs(values) do p[k] = v end
    shared.profiles[name] = p
  end
  return shared
end

return M
