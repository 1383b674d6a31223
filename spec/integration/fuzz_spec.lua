-- A bounded-time fuzz of tide's untrusted inputs (issue 15): random bytes,
-- random JSON and random NDJSON at `tide exec`, `tide batch` and the nginx
-- routes, on the embedded store. Every run must end (no hang: each process
-- runs under `timeout`), exit with one of tide's statuses (no crash),
-- print only strict JSON lines (one per batch line), and leave a store
-- with nothing partial; the projections then catch up with all of it.
--
--   TIDE_FUZZ_SECONDS  time for each of the three targets (default 8)
--   TIDE_FUZZ_SEED     the seed (default: the clock; printed, to replay a failure)
--
-- The counts go to stderr: "fuzz: seed=... exec=... batch_runs=... ...".
local helpers = require "helpers"
local stores = require "stores"
local U = require "untrusted"
local clock = require "tide.clock"

local q = helpers.shell_quote
local ROOT = helpers.root
local SECONDS = tonumber(os.getenv("TIDE_FUZZ_SECONDS") or "") or 8
local SEED = tonumber(os.getenv("TIDE_FUZZ_SEED") or "") or os.time()

local random = math.random

------------------------------------------------------------------------
-- Generators

local function bytes(n, lo, hi)
  local t = {}
  for i = 1, n do t[i] = string.char(random(lo or 0, hi or 255)) end
  return table.concat(t)
end

local STRINGS = { "", "a", "account", "Open", "Deposit", "\\u0000", "\\ud800", "\\uDFFF", "\\u00e9", "é",
                  "\240\159\152\128", "\\\"", "#", "/", "%2F", "%FF", "\255\254", "\192\128", "\237\160\128" }
local NUMBERS = { "0", "-0", "1", "-1", "5", "1e400", "1e-400", "9007199254740993", "100000000000000000000",
                  "0.5", "1E3", "007", "0x10", "+5", "5.", "NaN", "Infinity", "-Infinity", ".5", "1e", "--1" }

local function jstring()
  local r = random(4)
  if r == 1 then return '"' .. STRINGS[random(#STRINGS)] .. '"' end
  if r == 2 then return '"' .. bytes(random(0, 12), 32, 126):gsub('[\\"]', "x") .. '"' end
  if r == 3 then return '"' .. bytes(random(0, 6)) .. '"' end
  return '"' .. ("x"):rep(random(0, 3000)) .. '"'
end

local function jvalue(depth)
  local r = random(depth > 3 and 4 or 7)
  if r == 1 then return jstring() end
  if r == 2 then return NUMBERS[random(#NUMBERS)] end
  if r == 3 then return ({ "true", "false", "null" })[random(3)] end
  if r == 4 then return tostring(random(-1000000, 1000000)) end
  if r == 5 then
    local t = {}
    for i = 1, random(0, 4) do t[i] = jvalue(depth + 1) end
    return "[" .. table.concat(t, ",") .. "]"
  end
  local t = {}
  for i = 1, random(0, 5) do t[i] = jstring() .. ":" .. jvalue(depth + 1) end
  return "{" .. table.concat(t, ",") .. "}"
end

local AGGREGATES = { "account", "account", "account", "nosuch", "acc\255", "", "account#x" }
local TYPES = { "Open", "Deposit", "Withdraw", "Close", "Fly", "" }

-- A command object's text: mostly meaningful, with random fields and values.
local function command()
  local fields = { '"type":"' .. TYPES[random(#TYPES)] .. '"' }
  if random(2) == 1 then fields[#fields + 1] = '"owner":' .. (random(3) == 1 and jvalue(2) or '"o' .. random(9) .. '"') end
  if random(2) == 1 then fields[#fields + 1] = '"amount":' .. (random(3) == 1 and jvalue(2) or tostring(random(1, 100))) end
  if random(4) == 1 then fields[#fields + 1] = '"id":' .. (random(2) == 1 and jstring() or '"c' .. random(50) .. '"') end
  if random(5) == 1 then fields[#fields + 1] = jstring() .. ":" .. jvalue(1) end
  return "{" .. table.concat(fields, ",") .. "}"
end

local function id()
  local r = random(6)
  if r == 1 then return bytes(random(1, 8)) end
  if r == 2 then return STRINGS[random(#STRINGS)] end
  return "f" .. random(40)
end

-- Flips, inserts, deletes or truncates a few bytes of text.
local function mutate(text)
  for _ = 1, random(1, 3) do
    local n = #text
    local at = random(1, math.max(1, n))
    local r = random(4)
    if r == 1 then text = text:sub(1, at - 1) .. bytes(1) .. text:sub(at + 1)
    elseif r == 2 then text = text:sub(1, at) .. bytes(random(1, 4)) .. text:sub(at + 1)
    elseif r == 3 then text = text:sub(1, at - 1) .. text:sub(at + 2)
    else text = text:sub(1, at) end
  end
  return text
end

local function ndjson_line()
  local r = random(10)
  local line
  if r <= 5 then
    line = '{"aggregate":"' .. AGGREGATES[random(#AGGREGATES)] .. '","id":"' .. id():gsub('[\\"%z\1-\31]', "_")
      .. '","command":' .. command() .. "}"
  elseif r <= 7 then
    line = jvalue(0)
  elseif r == 8 then
    line = bytes(random(0, 200))
  else
    line = mutate('{"aggregate":"account","id":"m' .. random(20) .. '","command":' .. command() .. "}")
  end
  return (line:gsub("\n", " "))
end

------------------------------------------------------------------------

local EXIT_OK = { [0] = true, true, true, true, true, true, true } -- 0..6

local function project()
  local dir = helpers.tmpdir()
  os.execute("mkdir -p " .. q(dir .. "/aggregates"))
  helpers.write_file(dir .. "/aggregates/account.lua", assert(helpers.read_file(ROOT .. "/aggregates/account.lua")))
  local desc = { path = dir .. "/tide.db", aggregates = dir .. "/aggregates" }
  local config = stores.write_config(dir, "sqlite", desc, { "projections: " .. ROOT .. "/projections",
    "commands:", "  max_line_bytes: 65536" })
  assert(select(2, stores.tide(dir, "init")) == 0)
  return dir, desc, config
end

describe("fuzz (" .. SECONDS .. " s per target, seed " .. SEED .. ")", function()
  local dir, desc, config, url
  local counts = { exec = 0, batch_runs = 0, batch_lines = 0, http = 0, output_lines = 0 }
  setup(function()
    math.randomseed(SEED)
    dir, desc, config = project()
  end)
  teardown(function()
    U.stop_site(dir)
    io.stderr:write(("\nfuzz: seed=%d exec=%d batch_runs=%d batch_lines=%d http=%d output_lines=%d commands_stored=%s\n")
      :format(SEED, counts.exec, counts.batch_runs, counts.batch_lines, counts.http, counts.output_lines,
              tostring(counts.stored)))
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  local function run(args, stdin_file)
    local cmd = ("cd %s && %stimeout -s KILL 60 %s %s%s 2>/dev/null"):format(q(dir), stores.CLI_ENV,
      q(helpers.tide_bin), args, stdin_file and (" < " .. q(stdin_file)) or "")
    local out, status = helpers.run(cmd)
    assert(status ~= 137, "killed after 60 s (a hang): " .. args:sub(1, 300))
    assert(EXIT_OK[status], "exit status " .. tostring(status) .. " (a crash?): " .. args:sub(1, 300))
    local ls = U.lines(out)
    for _, l in ipairs(ls) do U.json(l, "output of tide " .. args:sub(1, 200)) end
    counts.output_lines = counts.output_lines + #ls
    return ls, status
  end

  it("tide exec: random aggregates, ids and command texts", function()
    local stop = clock.mono() + SECONDS
    while clock.mono() < stop do
      local text = random(3) == 1 and mutate(command()) or (random(4) == 1 and bytes(random(0, 60)) or command())
      local agg = AGGREGATES[random(#AGGREGATES)]
      local args = "exec " .. q((agg:gsub("%z", ""))) .. " " .. q((id():gsub("%z", ""))) .. " " .. q((text:gsub("%z", "")))
      local ls = run(args)
      assert(#ls == 1, "exec prints one line: " .. args)
      counts.exec = counts.exec + 1
    end
  end)

  it("tide batch: random NDJSON, bytes and NUL, one JSON result per line", function()
    local stop = clock.mono() + SECONDS
    local file = dir .. "/fuzz.ndjson"
    while clock.mono() < stop do
      local n = random(1, 200)
      local t = {}
      for i = 1, n do t[i] = ndjson_line() end
      if random(10) == 1 then t[random(n)] = ("y"):rep(70000) end -- over max_line_bytes
      -- every line ends with a newline: an empty last line is a line too
      -- (without it, a file ending in "\n" has one line less than t)
      local text = table.concat(t, "\n") .. "\n"
      helpers.write_file(file, text)
      local ls = run("batch --concurrency " .. random(1, 64), file)
      assert(#ls == n, ("batch printed %d lines for %d"):format(#ls, n))
      counts.batch_runs = counts.batch_runs + 1
      counts.batch_lines = counts.batch_lines + n
    end
  end)

  it("the nginx routes: random methods, paths and bodies", function()
    url = U.start_site(dir, config)
    local METHODS = { "GET", "POST", "POST", "POST", "PUT", "DELETE", "HEAD" }
    local function seg()
      local r = random(5)
      if r == 1 then return (bytes(random(1, 6)):gsub(".", function(c) return ("%%%02X"):format(c:byte()) end)) end
      if r == 2 then return "account" end
      return "n" .. random(30)
    end
    local stop = clock.mono() + SECONDS
    while clock.mono() < stop do
      local method = METHODS[random(#METHODS)]
      local r = random(6)
      local path
      if r <= 3 then path = "/aggregates/" .. (random(4) == 1 and seg() or "account") .. "/" .. seg()
      elseif r == 4 then path = "/read/" .. (random(2) == 1 and "balances" or seg()) .. "/" .. seg()
      elseif r == 5 then path = "/health"
      else path = "/" .. seg() .. "/" .. seg() end
      local body
      if method == "POST" or method == "PUT" then
        local b = random(4)
        body = b == 1 and bytes(random(0, 300)) or b == 2 and mutate(command()) or b == 3 and jvalue(0) or command()
      end
      local status, raw = U.http(method, url .. path, body)
      assert(status, "no answer (" .. tostring(raw) .. ") to " .. method .. " " .. path)
      assert(status < 500 or status == 500 or status == 503, "status " .. status)
      if method ~= "HEAD" and raw ~= "" then U.json(raw, method .. " " .. path) end
      counts.http = counts.http + 1
    end
    U.stop_site(dir)
  end)

  it("left nothing partial in the store, and the projections take all of it", function()
    counts.stored = U.check_store("sqlite", desc)
    for _, p in ipairs{ "balances", "owners" } do
      local out, status = stores.tide(dir, "project " .. p .. " --until-caught-up", nil, true)
      assert.equal(0, status, out)
    end
  end)
end)
