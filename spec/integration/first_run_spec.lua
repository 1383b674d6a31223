-- The first `make` on a fresh machine: the deps step must run before
-- anything reads pkg-config, and a package still missing must stop the
-- build with one line naming it, never a linker error.
--
-- A fresh machine is simulated with stand-ins on PATH: a pkg-config that
-- knows no package until the deps step has run (then it asks the real one),
-- a deps step that only records itself, and a compiler that records its
-- command line and writes its output file. The real Makefile drives them.
local helpers = require "helpers"

local q = helpers.shell_quote

local function fake_machine(deps_installs)
  local dir = helpers.tmpdir()
  helpers.run("mkdir -p " .. q(dir .. "/bin"))
  helpers.write_file(dir .. "/bin/pkg-config", ([[#!/bin/sh
echo "pkg-config $*" >> %s/log
[ -f %s/installed ] || exit 1
exec /usr/bin/pkg-config "$@"
]]):format(dir, dir))
  helpers.write_file(dir .. "/deps", ([[#!/bin/sh
echo "deps $1" >> %s/log
%s
]]):format(dir, deps_installs and ("touch " .. dir .. "/installed") or ":"))
  helpers.write_file(dir .. "/bin/cc", ([[#!/bin/sh
echo "cc $*" >> %s/log
while [ $# -gt 0 ]; do
  if [ "$1" = -o ]; then mkdir -p "$(dirname "$2")"; : > "$2"; fi
  shift
done
]]):format(dir))
  helpers.run("chmod +x " .. q(dir .. "/bin/pkg-config") .. " " .. q(dir .. "/deps") .. " " .. q(dir .. "/bin/cc"))
  return dir
end

local function make(dir, target)
  return helpers.run("cd " .. q(helpers.root) .. " && env -u LD_PRELOAD -u MAKEFLAGS -u MFLAGS PATH=" .. q(dir .. "/bin") .. ":\"$PATH\" make -j2 "
    .. target .. " BUILD=" .. q(dir .. "/build") .. " DEPS=" .. q(dir .. "/deps") .. " CC=" .. q(dir .. "/bin/cc") .. " 2>&1")
end

local function log_lines(dir)
  local t = {}
  for l in (helpers.read_file(dir .. "/log") or ""):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("the first make on a machine without the packages", function()
  it("installs before it reads pkg-config, and links with every library", function()
    local dir = fake_machine(true)
    local out, status = make(dir, "all")
    assert.equal(0, status, out)
    local log = log_lines(dir)
    assert.equal("deps build", log[1], table.concat(log, "\n"))
    local pc, links = 0, {}
    for i, l in ipairs(log) do
      if l:match("^deps ") then assert.equal(1, i, "the deps step ran again after the build began") end
      if l:match("^pkg%-config ") then pc = pc + 1 end
      if l:match("^cc .* %-o %S+/tide ") or l:match("^cc %-shared") then links[#links + 1] = l end
    end
    assert.is_true(pc > 0, "pkg-config was never asked")
    assert.equal(4, #links, table.concat(log, "\n"))
    local cli = ""
    for _, l in ipairs(links) do if l:match("%-o %S+/tide ") then cli = l end end
    for _, lib in ipairs{ "%-lluajit", "%-lcurl", "%-lyajl", "%-lyaml", "%-lsqlite3", "%-lcrypto", "%-lnettle" } do
      assert.matches(lib, cli)
    end
    os.execute("rm -rf " .. q(dir))
  end)

  it("names a package that is still missing after the deps step, before compiling anything", function()
    local dir = fake_machine(false)
    local out, status = make(dir, "all")
    assert.is_not.equal(0, status)
    assert.matches("tide needs the development files of: luajit libcurl yajl yaml%-0%.1 sqlite3 openssl nettle", out)
    assert.is_nil(out:find("undefined reference", 1, true), out)
    for _, l in ipairs(log_lines(dir)) do
      assert.is_nil(l:match("^cc "), "compiled without its packages: " .. l)
    end
    os.execute("rm -rf " .. q(dir))
  end)
end)
