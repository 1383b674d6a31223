-- tide.cli.read_list: `tide read MODEL` with no KEY (or with --limit,
-- --after, --prefix): the items of a read model, one JSON line each.
-- tide.cli hands `tide read` over to it when it is called that way.
local look = require "tide.cli.look"
local host = require "tide.projection.host"

local M = {}

M.summary = "list a read model's items: tide read MODEL [--limit N] [--after KEY] [--prefix P]"

M.usage = [[
usage: tide read [--config FILE] MODEL KEY
       tide read [--config FILE] MODEL [--limit N] [--after KEY] [--prefix PREFIX]

With KEY: prints that item as JSON (exit status 6 when it is absent).
Without KEY: prints the model's items, one JSON object per line, at most
--limit (default 100); when more remain, a last line on stderr says how to
go on:  tide read: more items: --after 'KEY'
  --after KEY      items after KEY (the last key printed: pages through)
  --prefix PREFIX  only the keys starting with PREFIX (SQLite only)
On SQLite the items come in key order (bytes). On DynamoDB a listing is a
Scan of the read model's table in its own (hash) order, billed for every
item read (0.5 RCU per 4 KB); a key prefix cannot be looked up there (the
key is a partition key) and is refused rather than scanned.
Examples:
  tide read balances --limit 10
  tide read balances --after acc-0042 --limit 10
  tide read owners --prefix "Al"
Exit status: 0 ok, 2 bad usage or unknown model, 5 store failure.]]

M.options = { limit = "value", after = "value", prefix = "value" }

-- true when `tide read ARGS` is a listing
function M.wants(args)
  local positional = 0
  for i = 1, #args do
    local a = args[i]
    if a == "--limit" or a == "--after" or a == "--prefix" or a:match("^%-%-limit=")
        or a:match("^%-%-after=") or a:match("^%-%-prefix=") then
      return true
    end
    if a == "-h" or a == "--help" then return true end
    if a:sub(1, 1) ~= "-" then positional = positional + 1 end
    if a == "--config" then positional = positional - 1 end
  end
  return positional == 1
end

function M.main(args)
  local opts, pos = look.parse(args, M.options)
  if not opts then return look.fail("read", pos, look.EXIT.usage, M.usage) end
  if opts.help then look.out(M.usage); return look.EXIT.ok end
  if #pos ~= 1 then return look.fail("read", "needs MODEL (and no KEY when listing)", look.EXIT.usage, M.usage) end
  local limit, lerr = look.count(opts.limit or "100", "--limit")
  if not limit then return look.fail("read", lerr, look.EXIT.usage) end
  local app, err = look.open(opts)
  if not app then return look.fail("read", err, look.exit_of(err)) end
  local items, more = host.list(app, pos[1], { limit = limit, after = opts.after, prefix = opts.prefix })
  if not items then
    app.store:close()
    return look.fail("read", more.message, look.exit_of(more))
  end
  local key = host.find_model(app, pos[1]).tables[pos[1]].key
  for _, item in ipairs(items) do look.out(look.json(item)) end
  look.flush()
  app.store:close()
  if more and items[#items] then
    io.stderr:write("tide read: more items: --after '", tostring(items[#items][key]), "'\n")
  end
  return look.EXIT.ok
end

return M
