// The baseline for tide's Streams projection bench: the balances projection
// written as a plain Node consumer with the AWS SDK v3
// (@aws-sdk/client-dynamodb-streams + @aws-sdk/client-dynamodb), same logic
// as projections/balances.lua: per GetRecords batch, read the touched
// balance items with BatchGetItem, apply the events in order (skipping
// versions already applied), write the items back with BatchWriteItem
// (25 per request, UnprocessedItems retried), several requests in flight.
//
//   NODE_PATH=.deps/node_modules node bench/projection_streams_sdk.js ENDPOINT EVENTS_TABLE TARGET_TABLE EXPECTED_RECORDS
//
// Reads every shard from TRIM_HORIZON until EXPECTED_RECORDS records were
// handled, then prints one JSON line: records, wall seconds, CPU (user+sys of
// this process, process.cpuUsage) per record, over the consuming loop only.
"use strict";
const { DynamoDBStreamsClient, DescribeStreamCommand, GetShardIteratorCommand, GetRecordsCommand } =
  require("@aws-sdk/client-dynamodb-streams");
const { DynamoDBClient, DescribeTableCommand, CreateTableCommand, BatchGetItemCommand, BatchWriteItemCommand } =
  require("@aws-sdk/client-dynamodb");
const { NodeHttpHandler } = require("@smithy/node-http-handler");
const http = require("http");

const [endpoint, eventsTable, targetTable, expectedArg] = process.argv.slice(2);
const expected = Number(expectedArg);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const common = {
  endpoint, region: "us-east-1",
  credentials: { accessKeyId: "tidebench", secretAccessKey: "tidebench" },
  requestHandler: new NodeHttpHandler({ httpAgent: agent }),
};
const streams = new DynamoDBStreamsClient(common);
const db = new DynamoDBClient(common);

// DynamoDB JSON (AttributeValue) to plain JS, enough for the account events.
function av(v) {
  if (v.S !== undefined) return v.S;
  if (v.N !== undefined) return Number(v.N);
  if (v.BOOL !== undefined) return v.BOOL;
  if (v.NULL) return null;
  if (v.M) { const o = {}; for (const k in v.M) o[k] = av(v.M[k]); return o; }
  if (v.L) return v.L.map(av);
  return undefined;
}
const toAv = (x) => typeof x === "number" ? { N: String(x) } : { S: String(x) };

async function ensureTarget() {
  try {
    await db.send(new DescribeTableCommand({ TableName: targetTable }));
  } catch (e) {
    await db.send(new CreateTableCommand({
      TableName: targetTable, BillingMode: "PAY_PER_REQUEST",
      AttributeDefinitions: [{ AttributeName: "id", AttributeType: "S" }],
      KeySchema: [{ AttributeName: "id", KeyType: "HASH" }],
    }));
  }
}

async function batchGet(ids) {
  const out = new Map();
  for (let i = 0; i < ids.length; i += 100) {
    let keys = ids.slice(i, i + 100).map((id) => ({ id: { S: id } }));
    while (keys.length) {
      const r = await db.send(new BatchGetItemCommand({ RequestItems: { [targetTable]: { Keys: keys, ConsistentRead: true } } }));
      for (const item of r.Responses[targetTable] || []) out.set(item.id.S, av({ M: item }));
      keys = (r.UnprocessedKeys && r.UnprocessedKeys[targetTable] && r.UnprocessedKeys[targetTable].Keys) || [];
    }
  }
  return out;
}

async function batchWrite(items) {
  const chunks = [];
  for (let i = 0; i < items.length; i += 25) chunks.push(items.slice(i, i + 25));
  await Promise.all(chunks.map(async (chunk) => {
    let reqs = chunk.map((it) => ({ PutRequest: { Item: Object.fromEntries(Object.entries(it).map(([k, v]) => [k, toAv(v)])) } }));
    while (reqs.length) {
      const r = await db.send(new BatchWriteItemCommand({ RequestItems: { [targetTable]: reqs } }));
      reqs = (r.UnprocessedItems && r.UnprocessedItems[targetTable]) || [];
    }
  }));
}

function apply(item, ev) {
  switch (ev.type) {
    case "Opened": return { id: ev.id, owner: ev.data.owner, balance: 0, status: "open", version: ev.version };
    case "Deposited": item.balance += ev.data.amount; break;
    case "Withdrawn": item.balance -= ev.data.amount; break;
    case "Closed": item.status = "closed"; break;
    default: return item;
  }
  item.version = ev.version;
  return item;
}

async function handle(records) {
  const events = [];
  for (const r of records) {
    const img = r.dynamodb && r.dynamodb.NewImage;
    if (!img || r.eventName !== "INSERT") continue;
    const stream = img.stream.S;
    const [aggregate, id] = [stream.slice(0, stream.indexOf("#")), stream.slice(stream.indexOf("#") + 1)];
    if (aggregate !== "account") continue;
    events.push({ id, version: Number(img.version.N), type: img.type.S, data: av(JSON.parse(img.data.S)) });
  }
  if (!events.length) return;
  const ids = [...new Set(events.map((e) => e.id))];
  const items = await batchGet(ids);
  const dirty = new Map();
  for (const ev of events) {
    const cur = items.get(ev.id);
    if (cur && cur.version >= ev.version) continue; // already applied
    const next = apply(cur, ev);
    if (next) { items.set(ev.id, next); dirty.set(ev.id, next); }
  }
  await batchWrite([...dirty.values()]);
}

async function main() {
  await ensureTarget();
  const t = await db.send(new DescribeTableCommand({ TableName: eventsTable }));
  const arn = t.Table.LatestStreamArn;
  const shards = [];
  let start;
  do {
    const d = await streams.send(new DescribeStreamCommand({ StreamArn: arn, ExclusiveStartShardId: start }));
    shards.push(...d.StreamDescription.Shards);
    start = d.StreamDescription.LastEvaluatedShardId;
  } while (start);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let handled = 0;
  // Parents first: DynamoDB Local lists shards in creation order.
  for (const shard of shards) {
    let it = (await streams.send(new GetShardIteratorCommand({ StreamArn: arn, ShardId: shard.ShardId, ShardIteratorType: "TRIM_HORIZON" }))).ShardIterator;
    let idle = 0;
    while (it && handled < expected) {
      const r = await streams.send(new GetRecordsCommand({ ShardIterator: it, Limit: 1000 }));
      handled += r.Records.length;
      await handle(r.Records);
      it = r.NextShardIterator;
      if (r.Records.length === 0 && ++idle > 3) break; // an open shard with nothing more: next shard
    }
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const us = (cpu.user + cpu.system);
  console.log(JSON.stringify({ client: "aws-sdk-js-v3", records: handled, wall_s: wall,
    records_per_s: handled / wall, cpu_us_per_record: us / Math.max(handled, 1) }));
  agent.destroy();
}

main().catch((e) => { console.error("projection_streams_sdk: " + (e && e.stack || e)); process.exit(1); });
