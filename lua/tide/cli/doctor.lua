-- tide doctor: what tide resolves and can reach.
local C = require "tide.cli.common"

local EXIT, EXIT_OF_KIND = C.EXIT, C.EXIT_OF_KIND
local out, json, fail_usage = C.out, C.json, C.fail_usage

local commands = {}

function commands.doctor(opts, pos)
  if #pos > 0 then return fail_usage("doctor", "unexpected argument '" .. pos[1] .. "'") end
  local doctor = require "tide.doctor"
  local report = doctor.run{ config = opts.config }
  out(opts.json and json(report) or doctor.text(report))
  return report.ok and EXIT.ok or EXIT.store
end

return {
  doctor = { run = commands.doctor, summary = "what tide resolves (config, region, credentials) and can reach",
    options = { { "--json", nil, "one JSON object instead of text" } },
    usage = [[
usage: tide doctor [--config FILE] [--json]

Tells why tide can or cannot reach its data: the config file, the store,
the region and where it came from, the credentials provider that answered
(access key id and expiry, never the secret), the caller identity (STS
GetCallerIdentity; skipped for a local endpoint), and each DynamoDB table
tide needs (present, key schema, stream).

Examples:
  tide doctor
  tide doctor --json | jq '.checks[] | select(.ok == false)'

Output (stdout): one line per check, or with --json one JSON object.

Exit status: 0 when every check passed, else 5.]] },
}
