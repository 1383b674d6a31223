-- The stores every aggregate spec runs against: the embedded SQLite store
-- (a fresh file per call) and DynamoDB on DynamoDB Local (fresh tables per
-- call). `stores.each(fn)` calls fn(kind, open) for each; open() must run
-- inside sched.run and returns a store ready to use plus its description.
local helpers = require "helpers"

local M = {}

M.CREDS = { access_key_id = "tidetest", secret_access_key = "tidetestsecret" }

function M.sqlite_path()
  return helpers.tmpdir() .. "/tide.db"
end

function M.open_sqlite(path)
  local store = assert(require("tide.store.sqlite").new{ path = path or M.sqlite_path() })
  assert(store:init())
  return store, { path = store.path }
end

function M.open_dynamodb(prefix)
  local endpoint = assert(helpers.dynamodb_endpoint(),
    "TIDE_TEST_DYNAMODB_ENDPOINT not set: run the suite with tools/test.sh (make test)")
  local client = assert(require("tide.dynamodb").new{ endpoint = endpoint, region = "us-east-1",
                                                      credentials = M.CREDS, base_delay = 0.005 })
  prefix = prefix or (helpers.unique("agg") .. "_")
  local store = assert(require("tide.store.dynamodb").new{ client = client, table_prefix = prefix })
  assert(store:init())
  return store, { prefix = prefix, endpoint = endpoint }
end

function M.each(fn)
  fn("sqlite", M.open_sqlite)
  fn("dynamodb", M.open_dynamodb)
end

-- A tide.yaml for the CLI: returns its path. desc: the store's (path; or
-- endpoint and prefix), and aggregates (default: the example folder); extra:
-- more top-level YAML lines; section: more lines of the store's section.
function M.write_config(dir, kind, desc, extra, section)
  local lines = { "aggregates: " .. (desc.aggregates or helpers.root .. "/aggregates") }
  if kind == "sqlite" then
    lines[#lines + 1] = "store: sqlite"
    lines[#lines + 1] = "sqlite:"
    lines[#lines + 1] = "  path: " .. desc.path
  else
    lines[#lines + 1] = "store: dynamodb"
    lines[#lines + 1] = "dynamodb:"
    lines[#lines + 1] = "  region: us-east-1"
    lines[#lines + 1] = "  endpoint: " .. desc.endpoint
    lines[#lines + 1] = "  table_prefix: " .. desc.prefix
  end
  for _, l in ipairs(section or {}) do lines[#lines + 1] = "  " .. l end
  for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
  local path = dir .. "/tide.yaml"
  helpers.write_file(path, table.concat(lines, "\n") .. "\n")
  return path
end

-- Environment for CLI child processes: credentials for DynamoDB Local.
M.CLI_ENV = "AWS_ACCESS_KEY_ID=tidetest AWS_SECRET_ACCESS_KEY=tidetestsecret "

-- A folder with a tide.yaml for a fresh store of `kind` (extra: more YAML
-- lines); returns the folder and the store's description.
function M.cli_dir(kind, extra)
  local dir = helpers.tmpdir()
  local desc
  if kind == "sqlite" then
    desc = { path = dir .. "/tide.db" }
  else
    require("tide.sched").run(function() local _, d = M.open_dynamodb(); desc = d end)
  end
  M.write_config(dir, kind, desc, extra)
  return dir, desc
end

-- Runs `tide ARGS` in dir (stdin: optional text); returns output (stdout
-- and stderr, or stdout only with quiet) and the exit status.
function M.tide(dir, args, stdin, quiet)
  local q = helpers.shell_quote
  local cmd = M.CLI_ENV .. q(helpers.tide_bin) .. " " .. args
  if stdin then cmd = "printf '%s' " .. q(stdin) .. " | " .. cmd end
  return helpers.run("cd " .. q(dir) .. " && " .. cmd .. (quiet and " 2>/dev/null" or " 2>&1"))
end

-- Runs `count` `tide batch ARGS < input` processes in dir at once (input: a
-- file name in dir); returns, per process, {out=, err=, rc=}: its stdout,
-- stderr and exit status as text.
function M.batch_processes(dir, count, input, args)
  local q = helpers.shell_quote
  local script = {}
  for p = 1, count do
    script[#script + 1] = ("(%s %s batch %s < %s > out.%d 2> err.%d; echo $? > rc.%d) &")
      :format(M.CLI_ENV, q(helpers.tide_bin), args or "", q(input), p, p, p)
  end
  script[#script + 1] = "wait"
  helpers.run("cd " .. q(dir) .. " || exit 1; " .. table.concat(script, " "))
  local procs = {}
  for p = 1, count do
    procs[p] = { out = helpers.read_file(dir .. "/out." .. p) or "", err = helpers.read_file(dir .. "/err." .. p) or "",
                 rc = ((helpers.read_file(dir .. "/rc." .. p) or "?"):gsub("%s+", "")) }
  end
  return procs
end

-- Checks that the stream `account#id` in dir's store holds versions
-- 1..last, each once, and no command's events twice (each command id in
-- one run of versions).
function M.assert_versions(dir, id, last)
  local versions, commands = {}, {}
  for _, l in ipairs(helpers.lines((M.tide(dir, "events account " .. id, nil, true)))) do
    local ev = require("cjson").decode(l)
    local v = ev.version
    assert(not versions[v], "duplicate version " .. v)
    versions[v] = true
    local c = ev.meta.command_id
    assert(c and (not commands[c] or commands[c] == v - 1), "command " .. tostring(c) .. " again at version " .. v)
    commands[c] = v
  end
  for v = 1, last do assert(versions[v], "missing version " .. v) end
  assert(not versions[last + 1], "a version past " .. last)
end

return M
