// Client CPU per request of the AWS SDK for JavaScript v3
// (@aws-sdk/client-dynamodb), the reference figure bench/client_cpu.lua is
// compared with. Same requests, same item, same concurrency.
//
//   NODE_PATH=.deps/node_modules node bench/client_cpu_sdk.js ENDPOINT TABLE OP [CONCURRENCY N WARMUP ROUNDS]
//     OP = PutItem | GetItem | setup (creates TABLE when absent and writes
//          the KEYS items GetItem reads)
//
// Prints one JSON line. CPU is process.cpuUsage() (user + sys of the whole
// process, every thread: V8, GC, libuv) taken around the measured loop only:
// start-up, client construction and the warm-up requests are excluded; with
// ROUNDS > 1 it measures ROUNDS windows of N requests and reports the median.
//
// Client: DynamoDBClient + PutItemCommand/GetItemCommand (not the
// DocumentClient: @aws-sdk/lib-dynamodb is not among .deps' packages). The
// item is turned into AttributeValues by marshalItem() (bench/sdk_attribute_values.js) on every
// request and GetItem's result is turned back by unmarshalItem(), so both
// clients do the same work (plain values in and out); these two functions
// are cheaper than lib-dynamodb's, which errs in the SDK's favour.
"use strict";
// The SDK warns once about Node < 22; that notice is noise in a benchmark.
if (!process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED) process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
const http = require("http");
const { DynamoDBClient, PutItemCommand, GetItemCommand, CreateTableCommand,
        DescribeTableCommand } = require("@aws-sdk/client-dynamodb");
const { NodeHttpHandler } = require("@smithy/node-http-handler");

const [endpoint, table, op, concArg, nArg, warmArg, roundsArg] = process.argv.slice(2);
if (!endpoint || !table || !op) {
  console.error("usage: client_cpu_sdk.js ENDPOINT TABLE PutItem|GetItem|setup [CONCURRENCY N WARMUP ROUNDS]");
  process.exit(2);
}
const concurrency = Number(concArg || 1);
const N = Number(nArg || 2000);
const rounds = Number(roundsArg || 1);

// Must match bench/client_cpu.lua.
const KEYS = 1000;
const PAYLOAD = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".repeat(15).slice(0, 900);
function key(i) { return "bench#" + String(i % KEYS).padStart(6, "0"); }
function item(i) {
  return {
    pk: key(i), seq: i, kind: "bench-item", active: true,
    created_at: "2024-05-01T12:00:00Z",
    meta: { source: "client_cpu", version: 3 },
    payload: PAYLOAD,
  };
}

const { marshalItem, unmarshalItem } = require("./sdk_attribute_values");

const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(concurrency, 1) });
const client = new DynamoDBClient({
  endpoint, region: "us-east-1",
  credentials: { accessKeyId: "tidebench", secretAccessKey: "tidebenchsecret" },
  requestHandler: new NodeHttpHandler({ httpAgent: agent }),
});

let errors = 0, firstError = null, itemsRead = 0;
async function one(i) {
  try {
    if (op === "PutItem") {
      await client.send(new PutItemCommand({ TableName: table, Item: marshalItem(item(i)) }));
    } else {
      const out = await client.send(new GetItemCommand({ TableName: table, Key: marshalItem({ pk: key(i) }) }));
      if (out.Item) { unmarshalItem(out.Item); itemsRead++; }
    }
  } catch (e) {
    errors++;
    if (!firstError) firstError = e;
  }
}

// n requests spread over `concurrency` workers pulling from one counter.
async function loop(start, n) {
  let next = start;
  const end = start + n;
  async function worker() {
    while (next < end) await one(next++);
  }
  const ws = [];
  for (let w = 0; w < concurrency; w++) ws.push(worker());
  await Promise.all(ws);
}

async function setup() {
  try {
    await client.send(new CreateTableCommand({
      TableName: table, BillingMode: "PAY_PER_REQUEST",
      AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "S" }],
      KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }],
    }));
  } catch (e) {
    if (e.name !== "ResourceInUseException") throw e;
  }
  for (let t = 0; ; t++) {
    const d = await client.send(new DescribeTableCommand({ TableName: table }));
    if (d.Table.TableStatus === "ACTIVE") break;
    if (t > 300) throw new Error("table " + table + " not ACTIVE after 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  let next = 0;
  async function writer() {
    while (next < KEYS) {
      const i = next++;
      await client.send(new PutItemCommand({ TableName: table, Item: marshalItem(item(i)) }));
    }
  }
  await Promise.all(Array.from({ length: 16 }, writer));
  console.log(JSON.stringify({ client: "aws-sdk-js-v3", op: "setup", table, keys: KEYS }));
}

async function main() {
  if (op === "setup") return setup();
  if (op !== "PutItem" && op !== "GetItem") throw new Error("OP must be PutItem, GetItem or setup");
  // Warm-up: opens the connections, JIT-compiles the SDK's paths.
  const warm = Number(warmArg || 3000);
  await loop(0, warm);
  if (errors) throw new Error("warm-up failed: " + (firstError && (firstError.name + ": " + firstError.message)));
  const bodyBytes = Buffer.byteLength(JSON.stringify(
    op === "PutItem" ? { TableName: table, Item: marshalItem(item(0)) } : { TableName: table, Key: marshalItem({ pk: key(0) }) }));

  // `rounds` measured windows of N requests; the median one (by CPU per
  // request) is reported, as bench/client_cpu.lua does.
  const windows = [];
  let start = warm;
  for (let r = 0; r < rounds; r++) {
    itemsRead = 0;
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await loop(start, N);
    const t1 = process.hrtime.bigint();
    const c1 = process.cpuUsage(c0);
    start += N;
    windows.push({ wall: Number(t1 - t0) / 1e9, user: c1.user / 1e6, sys: c1.system / 1e6,
                   us: (c1.user + c1.system) / N, itemsRead });
  }
  const med = [...windows].sort((x, y) => x.us - y.us)[Math.floor((rounds - 1) / 2)];
  const out = {
    client: "aws-sdk-js-v3", sdk_version: require("@aws-sdk/client-dynamodb/package.json").version,
    node: process.version, op, concurrency, requests: N, rounds, errors,
    items_read: op === "GetItem" ? med.itemsRead : undefined,
    request_body_bytes: bodyBytes,
    wall_s: +med.wall.toFixed(4), cpu_user_s: +med.user.toFixed(4), cpu_sys_s: +med.sys.toFixed(4),
    cpu_us_per_req: +med.us.toFixed(2), req_per_s: +(N / med.wall).toFixed(1),
    cpu_us_per_req_rounds: windows.map((w) => +w.us.toFixed(1)),
  };
  console.log(JSON.stringify(out));
  if (errors) console.error("client_cpu_sdk: " + errors + " errors; first: " + firstError.name + ": " + firstError.message);
}

main().then(() => { agent.destroy(); client.destroy(); }, (e) => {
  console.error("client_cpu_sdk: " + (e.stack || e));
  agent.destroy(); client.destroy();
  process.exit(1);
});
