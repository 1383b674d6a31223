// Whole commands with the AWS SDK for JavaScript v3 (@aws-sdk/client-dynamodb):
// the reference bench/command_path_dynamodb.sh compares `tide batch` with.
//
//   NODE_PATH=.deps/node_modules node bench/command_path_sdk.js ENDPOINT TABLE_PREFIX MODE < commands.ndjson > results.ndjson
//     MODE = cached  the requests tide's repository makes: the first command of
//                    a stream reads its snapshot (GetItem) and its events (Query,
//                    every page), folds them and keeps the state in memory;
//                    every command then decides on that state and appends with
//                    one conditional PutItem (a conflict drops the state and
//                    loads again)
//          query     no state kept: every command Queries the stream's events
//                    (every page), folds them, decides and appends (PutItem)
//
// Input and output are tide batch's: one {"aggregate","id","command"} per
// line; one result line per command, in input order, shaped as tide's
// ({"ok":true,"stream","version","events":[{"data","meta","type","version"}]}).
// Commands of one stream run in input order, different streams concurrently
// (64 accounts: up to 64 commands in flight), on one client whose keep-alive
// http.Agent has as many sockets as there are streams in flight.
//
// Tables: tide's (`tide init` made them): <prefix>events (stream S, version N;
// type, data = AttributeValue JSON text, meta = JSON text) and
// <prefix>snapshots; written exactly as tide's store writes them. The domain
// is aggregates/account.lua's (Open, Deposit, Withdraw, Close), written again
// here in JavaScript, with its schema checks.
//
// At the end, one JSON line on stderr: commands, failures and the requests
// sent, by operation. The CPU is measured from outside (GNU time), as for
// tide, so both figures cover the same: the whole process.
"use strict";
if (!process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED) process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
const http = require("http");
const crypto = require("crypto");
const { DynamoDBClient, PutItemCommand, GetItemCommand, QueryCommand } = require("@aws-sdk/client-dynamodb");
const { NodeHttpHandler } = require("@smithy/node-http-handler");

const [endpoint, prefix, mode] = process.argv.slice(2);
if (!endpoint || prefix === undefined || (mode !== "cached" && mode !== "query")) {
  console.error("usage: command_path_sdk.js ENDPOINT TABLE_PREFIX cached|query < commands.ndjson");
  process.exit(2);
}
const EVENTS = prefix + "events", SNAPSHOTS = prefix + "snapshots";
const MAX_ATTEMPTS = 10, RECENT_COMMANDS = 128, SNAPSHOT_EVERY = 100, ITEM_BYTES = 400 * 1024;
const HANDLER = "81e4cc46af1ac9db"; // stands for tide's module version hash (same length)

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const client = new DynamoDBClient({
  endpoint, region: "us-east-1",
  credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID || "tidebench",
                 secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY || "tidebenchsecret" },
  requestHandler: new NodeHttpHandler({ httpAgent: agent }),
});
const sent = {};
async function send(op, command) {
  sent[op] = (sent[op] || 0) + 1;
  return client.send(command);
}

// ---- AttributeValues (tide stores data and state as AttributeValue JSON text)

const { marshal, unmarshal } = require("./sdk_attribute_values");

// ---- the account aggregate (aggregates/account.lua)

const SCHEMAS = {
  Open: { owner: "string" }, Deposit: { amount: "amount" }, Withdraw: { amount: "amount" }, Close: {},
};
function checkCommand(cmd) {
  const schema = SCHEMAS[cmd.type];
  if (!schema) return "unknown command '" + cmd.type + "'";
  for (const [field, kind] of Object.entries(schema)) {
    const v = cmd[field];
    if (kind === "string" && typeof v !== "string") return field + " must be a string";
    if (kind === "amount" && !(Number.isInteger(v) && v >= 1)) return field + " must be an integer >= 1";
  }
  for (const k of Object.keys(cmd)) if (k !== "type" && k !== "id" && !(k in schema)) return "unknown field '" + k + "'";
  return null;
}
const initialState = () => ({ balance: 0, status: "new" });
function mustBeOpen(s) {
  if (s.status === "new") return "account is not open";
  if (s.status === "closed") return "account is closed";
  return null;
}
const decide = {
  Open: (s, c) => s.status === "open" ? [null, "account is already open"] : s.status === "closed" ? [null, "account is closed"]
    : c.owner === "" ? [null, "owner must not be empty"] : [{ type: "Opened", owner: c.owner }],
  Deposit: (s, c) => { const e = mustBeOpen(s); return e ? [null, e] : [{ type: "Deposited", amount: c.amount }]; },
  Withdraw: (s, c) => {
    const e = mustBeOpen(s);
    if (e) return [null, e];
    if (c.amount > s.balance) return [null, `insufficient funds: balance ${s.balance}, withdrawal ${c.amount}`];
    return [{ type: "Withdrawn", amount: c.amount }];
  },
  Close: (s) => { const e = mustBeOpen(s); return e ? [null, e] : [{ type: "Closed" }]; },
};
const apply = {
  Opened: (s, e) => { s.owner = e.owner; s.status = "open"; return s; },
  Deposited: (s, e) => { s.balance += e.amount; return s; },
  Withdrawn: (s, e) => { s.balance -= e.amount; return s; },
  Closed: (s) => { s.status = "closed"; return s; },
};

// ---- records: a stream's state, version and recent command ids

function remember(rec, id, first, last) {
  if (!id) return;
  const c = rec.commands.get(id);
  if (c) { c[0] = Math.min(c[0], first); c[1] = Math.max(c[1], last); return; }
  rec.commands.set(id, [first, last]);
  rec.order.push(id);
  if (rec.order.length > RECENT_COMMANDS) rec.commands.delete(rec.order.shift());
}

async function queryEvents(stream, after) {
  const items = [];
  let start;
  do {
    const page = await send("Query", new QueryCommand({
      TableName: EVENTS,
      KeyConditionExpression: "#s = :s AND #v > :v",
      ExpressionAttributeNames: { "#s": "stream", "#v": "version", "#t": "type", "#d": "data", "#m": "meta" },
      ExpressionAttributeValues: { ":s": { S: stream }, ":v": { N: String(after) } },
      ProjectionExpression: "#v, #t, #d, #m",
      ConsistentRead: true,
      ExclusiveStartKey: start,
    }));
    for (const it of page.Items || []) items.push(it);
    start = page.LastEvaluatedKey;
  } while (start);
  return items;
}

async function loadRecord(stream, withSnapshot) {
  const rec = { version: 0, state: null, commands: new Map(), order: [] };
  if (withSnapshot) {
    const snap = await send("GetItem", new GetItemCommand({ TableName: SNAPSHOTS, Key: { stream: { S: stream } }, ConsistentRead: true }));
    if (snap.Item) {
      const meta = JSON.parse(snap.Item.meta.S);
      rec.state = unmarshal(JSON.parse(snap.Item.state.S));
      rec.version = Number(snap.Item.version.N);
      for (const c of meta.commands || []) remember(rec, c[0], c[1], c[2]);
    }
  }
  let state = rec.state || initialState();
  for (const it of await queryEvents(stream, rec.version)) {
    const version = Number(it.version.N);
    if (version !== rec.version + 1) throw new Error(`stream ${stream} has a gap: version ${version} follows ${rec.version}`);
    const data = unmarshal(JSON.parse(it.data.S));
    const meta = JSON.parse(it.meta.S);
    const type = it.type.S;
    state = apply[type](state, { ...data, type });
    rec.version = version;
    remember(rec, meta.command_id, version, version);
  }
  rec.state = state;
  return rec;
}

const cache = new Map();

async function maybeSnapshot(stream, old, rec) {
  if (Math.floor(old / SNAPSHOT_EVERY) === Math.floor(rec.version / SNAPSHOT_EVERY)) return;
  const commands = rec.order.map((id) => [id, ...rec.commands.get(id)]);
  const meta = JSON.stringify({ commands, handler: HANDLER, snapshot_version: 1 });
  try {
    await send("PutItem", new PutItemCommand({
      TableName: SNAPSHOTS,
      Item: { stream: { S: stream }, version: { N: String(rec.version) }, state: { S: JSON.stringify(marshal(rec.state)) },
              meta: { S: meta } },
      ConditionExpression: "attribute_not_exists(#s) OR #v < :v",
      ExpressionAttributeNames: { "#s": "stream", "#v": "version" },
      ExpressionAttributeValues: { ":v": { N: String(rec.version) } },
    }));
  } catch (e) {
    if (e.name !== "ConditionalCheckFailedException") throw e;
  }
}

const fail = (kind, message, stream, command) => ({ ok: false, error: { command, kind, message, stream } });

async function execute(name, id, command) {
  if (name !== "account") return fail("invalid", "unknown aggregate '" + name + "'");
  const stream = name + "#" + id;
  const bad = checkCommand(command);
  if (bad) return fail("invalid", bad, stream, command.type);
  const commandId = command.id || crypto.randomBytes(16).toString("hex");
  const cmd = { ...command };
  delete cmd.id;
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    let rec = mode === "cached" ? cache.get(stream) : undefined;
    if (!rec) {
      rec = await loadRecord(stream, mode === "cached");
      if (mode === "cached") cache.set(stream, rec);
    }
    const span = rec.commands.get(commandId);
    if (span) {
      const events = (await queryEvents(stream, span[0] - 1)).filter((it) => Number(it.version.N) <= span[1]).map((it) => ({
        data: unmarshal(JSON.parse(it.data.S)), meta: JSON.parse(it.meta.S), type: it.type.S, version: Number(it.version.N) }));
      return { ok: true, stream, version: span[1], events, duplicate: true };
    }
    const now = Date.now();
    const [event, rejection] = decide[cmd.type](rec.state, cmd);
    if (!event) return fail("rejected", rejection, stream, cmd.type);
    const state = apply[event.type]({ ...rec.state }, event);
    const data = { ...event };
    delete data.type;
    const version = rec.version + 1;
    const meta = { command: cmd.type, command_id: commandId, correlation_id: commandId, count: 1, handler: HANDLER,
                   index: 1, schema: 1, timestamp: now };
    const dataText = JSON.stringify(marshal(data)), metaText = JSON.stringify(meta);
    const bytes = 6 + Buffer.byteLength(stream) + 7 + String(version).length + 4 + event.type.length + 4 +
      Buffer.byteLength(dataText) + 4 + Buffer.byteLength(metaText);
    if (bytes > ITEM_BYTES) return fail("event_too_large", `event 1 (${event.type}) would be ${bytes} bytes stored`, stream, cmd.type);
    try {
      await send("PutItem", new PutItemCommand({
        TableName: EVENTS,
        Item: { stream: { S: stream }, version: { N: String(version) }, type: { S: event.type },
                data: { S: dataText }, meta: { S: metaText } },
        ConditionExpression: "attribute_not_exists(#v)",
        ExpressionAttributeNames: { "#v": "version" },
      }));
    } catch (e) {
      if (e.name !== "ConditionalCheckFailedException") return fail("store", e.name + ": " + e.message, stream, cmd.type);
      cache.delete(stream); // someone else appended first: load again, decide again
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(50, 2 ** attempt)));
      continue;
    }
    const next = { version, state, commands: rec.commands, order: rec.order };
    remember(next, commandId, version, version);
    if (mode === "cached") {
      cache.set(stream, next);
      await maybeSnapshot(stream, rec.version, next);
    }
    return { ok: true, stream, version, events: [{ data, meta, type: event.type, version }] };
  }
  return fail("conflict", `gave up after ${MAX_ATTEMPTS} attempts: the stream kept changing`, stream, cmd.type);
}

// ---- batch: tide batch's order and output

async function main() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const lines = Buffer.concat(chunks).toString("utf8").split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const results = new Array(lines.length);
  let nextOut = 0, failures = 0;
  function emit(i, result) {
    results[i] = JSON.stringify(result);
    if (!result.ok) failures++;
    if (i !== nextOut) return;
    let out = "";
    while (nextOut < lines.length && results[nextOut] !== undefined) {
      out += results[nextOut] + "\n";
      results[nextOut++] = null;
    }
    process.stdout.write(out);
  }
  const tails = new Map(); // stream -> promise of its latest command
  const all = lines.map((text, i) => {
    let req;
    try { req = JSON.parse(text); } catch (e) { emit(i, fail("invalid", "line " + (i + 1) + ": " + e.message)); return null; }
    const key = req.aggregate + "#" + req.id;
    const run = (tails.get(key) || Promise.resolve()).then(() => execute(req.aggregate, req.id, req.command))
      .catch((e) => fail("handler_error", String(e && e.stack || e)))
      .then((result) => emit(i, result));
    tails.set(key, run);
    return run;
  });
  await Promise.all(all);
  console.error(JSON.stringify({ client: "aws-sdk-js-v3", mode, commands: lines.length, failures, requests: sent }));
  return failures;
}

main().then((failures) => {
  agent.destroy(); client.destroy();
  process.exitCode = failures ? 1 : 0;
}, (e) => {
  console.error("command_path_sdk: " + (e.stack || e));
  agent.destroy(); client.destroy();
  process.exit(1);
});
