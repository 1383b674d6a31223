-- tide skip-parent: an operator's decision about a shard (DynamoDB Streams).
local C = require "tide.cli.common"

local EXIT = C.EXIT
local out, json, fail_usage, open_app = C.out, C.json, C.fail_usage, C.open_app

local function skip_parent(opts, pos)
  if #pos ~= 1 then return fail_usage("skip-parent", "needs SHARD_ID") end
  local app, err = open_app(opts)
  if not app then return C.fail("skip-parent", opts, err, nil, EXIT.usage) end
  if app.cfg.store ~= "dynamodb" then
    app.store:close()
    return fail_usage("skip-parent", "the embedded store has no shards (store: " .. tostring(app.cfg.store) .. ")")
  end
  local leases = require("tide.projection.leases").new{ client = app.store.client, table_prefix = app.store.prefix,
                                                         group = "*", owner = "operator" }
  local ok, derr = leases:decide(pos[1], "skip-parent")
  app.store:close()
  if not ok then
    return C.fail("skip-parent", opts, derr, nil, derr.type == "NotFound" and EXIT.not_found or EXIT.store)
  end
  out(json{ ok = true, shard = pos[1], decision = "skip-parent" })
  return EXIT.ok
end

return {
  ["skip-parent"] = { run = skip_parent,
    summary = "start a shard whose parent never ended (an operator's decision): tide skip-parent SHARD_ID",
    usage = [[
usage: tide skip-parent [--config FILE] SHARD_ID

DynamoDB only. Records the operator's decision in the lease of SHARD_ID
(lease group "*", the shards of `tide run`): start this shard although its
parent never reached SHARD_END (tide status shows such a parent as
"rebuild needed", or a child as "waiting for parent"). Without it a child
is never read before its parent's end. Records the parent left unread are
not applied: run `tide replay NAME` when they matter.

Examples:
  tide status                      # a shard "waiting for parent"
  tide skip-parent shardId-00000001700000000000-abcdef01

Output (stdout): {"ok":true,"shard":"...","decision":"skip-parent"}. An
error: one line on stderr.

Exit status: 0 recorded; 2 usage or the embedded store; 5 store failure;
6 SHARD_ID has no lease.]] },
}
