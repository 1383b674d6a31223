// The baseline for tide's Streams projection bench: the balances projection
// written as a plain Node consumer with the AWS SDK v3
// (@aws-sdk/client-dynamodb-streams + @aws-sdk/client-dynamodb), same logic
// as projections/balances.lua: per GetRecords batch, read the touched
// balance items with BatchGetItem, apply the events in order (skipping
// versions already applied), write the items back with BatchWriteItem
// (25 per request, UnprocessedItems retried), several requests in flight.
//
//   NODE_PATH=.deps/node_modules node bench/projection_streams_sdk.js ENDPOINT EVENTS_TABLE TARGET_TABLE EXPECTED_RECORDS [MODE]
//
// Reads every shard from TRIM_HORIZON until EXPECTED_RECORDS records were
// handled, then prints one JSON line: records, wall seconds, CPU (user+sys of
// this process, process.cpuUsage) per record, over the consuming loop only.
//
// MODE "minimal" (the default) keeps nothing but the balance items, and
// skips an event by the item's version. MODE "checkpointed" also does the
// writes that tide's runner does for its guarantees, in the same order: it
// decodes each event's meta, reads the position of each stream the first
// time it sees it (BatchGetItem) and skips the versions at or below it,
// writes the items, then the position of every stream of the batch
// (BatchWriteItem into TARGET_TABLE_positions), then the shard's checkpoint
// (a PutItem conditioned on the lease counter into TARGET_TABLE_leases).
"use strict";
const { DynamoDBStreamsClient, DescribeStreamCommand, GetShardIteratorCommand, GetRecordsCommand } =
  require("@aws-sdk/client-dynamodb-streams");
const { DynamoDBClient, DescribeTableCommand, CreateTableCommand, BatchGetItemCommand, BatchWriteItemCommand,
        PutItemCommand } = require("@aws-sdk/client-dynamodb");
const { NodeHttpHandler } = require("@smithy/node-http-handler");
const http = require("http");

const [endpoint, eventsTable, targetTable, expectedArg, modeArg] = process.argv.slice(2);
const expected = Number(expectedArg);
const mode = modeArg || "minimal";
if (mode !== "minimal" && mode !== "checkpointed") throw new Error("MODE must be minimal or checkpointed");
const positionsTable = targetTable + "_positions", leasesTable = targetTable + "_leases";
const PROJECTION = "balances";
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

async function ensureTable(name, hash, range) {
  try {
    await db.send(new DescribeTableCommand({ TableName: name }));
  } catch (e) {
    const attrs = [{ AttributeName: hash, AttributeType: "S" }], keys = [{ AttributeName: hash, KeyType: "HASH" }];
    if (range) {
      attrs.push({ AttributeName: range, AttributeType: "S" });
      keys.push({ AttributeName: range, KeyType: "RANGE" });
    }
    await db.send(new CreateTableCommand({ TableName: name, BillingMode: "PAY_PER_REQUEST",
      AttributeDefinitions: attrs, KeySchema: keys }));
  }
}

async function ensureTables() {
  await ensureTable(targetTable, "id");
  if (mode === "checkpointed") {
    await ensureTable(positionsTable, "projection", "stream");
    await ensureTable(leasesTable, "projection", "shard");
  }
}

// keyOf(item) -> the map key of a returned item; keys: DynamoDB keys.
async function batchGet(table, keysList, keyOf) {
  const out = new Map();
  for (let i = 0; i < keysList.length; i += 100) {
    let keys = keysList.slice(i, i + 100);
    while (keys.length) {
      const r = await db.send(new BatchGetItemCommand({ RequestItems: { [table]: { Keys: keys, ConsistentRead: true } } }));
      for (const item of r.Responses[table] || []) { const v = av({ M: item }); out.set(keyOf(v), v); }
      keys = (r.UnprocessedKeys && r.UnprocessedKeys[table] && r.UnprocessedKeys[table].Keys) || [];
    }
  }
  return out;
}

async function batchWrite(table, items) {
  const chunks = [];
  for (let i = 0; i < items.length; i += 25) chunks.push(items.slice(i, i + 25));
  await Promise.all(chunks.map(async (chunk) => {
    let reqs = chunk.map((it) => ({ PutRequest: { Item: Object.fromEntries(Object.entries(it).map(([k, v]) => [k, toAv(v)])) } }));
    while (reqs.length) {
      const r = await db.send(new BatchWriteItemCommand({ RequestItems: { [table]: reqs } }));
      reqs = (r.UnprocessedItems && r.UnprocessedItems[table]) || [];
    }
  }));
}

// The checkpointed mode's state: stream -> last applied version, and the
// lease of the shard being read.
const positions = new Map();
const lease = { counter: 0 };

async function takeLease(shardId) {
  lease.shard = shardId;
  lease.counter = 1;
  await db.send(new PutItemCommand({ TableName: leasesTable, Item: {
    projection: { S: PROJECTION }, shard: { S: shardId }, owner: { S: "node" }, counter: { N: "1" },
    expires: { N: String(Date.now() + 10000) } } }));
}

async function checkpoint(seq) {
  await db.send(new PutItemCommand({ TableName: leasesTable, Item: {
    projection: { S: PROJECTION }, shard: { S: lease.shard }, owner: { S: "node" },
    counter: { N: String(lease.counter + 1) }, expires: { N: String(Date.now() + 10000) }, checkpoint: { S: seq } },
    ConditionExpression: "#c = :c", ExpressionAttributeNames: { "#c": "counter" },
    ExpressionAttributeValues: { ":c": { N: String(lease.counter) } } }));
  lease.counter += 1;
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
    const ev = { stream, id, version: Number(img.version.N), type: img.type.S, data: av(JSON.parse(img.data.S)) };
    if (mode === "checkpointed" && img.meta) ev.meta = JSON.parse(img.meta.S);
    events.push(ev);
  }
  const checkpointed = mode === "checkpointed";
  if (!events.length) {
    if (checkpointed && records.length) await checkpoint(records[records.length - 1].dynamodb.SequenceNumber);
    return;
  }
  if (checkpointed) {
    const unseen = [...new Set(events.map((e) => e.stream))].filter((st) => !positions.has(st));
    const got = await batchGet(positionsTable, unseen.map((st) => ({ projection: { S: PROJECTION }, stream: { S: st } })),
                               (p) => p.stream);
    for (const st of unseen) positions.set(st, got.has(st) ? got.get(st).version : 0);
  }
  const ids = [...new Set(events.map((e) => e.id))];
  const items = await batchGet(targetTable, ids.map((id) => ({ id: { S: id } })), (it) => it.id);
  const dirty = new Map(), moved = new Map();
  for (const ev of events) {
    const cur = items.get(ev.id);
    if (checkpointed ? ev.version <= positions.get(ev.stream) : (cur && cur.version >= ev.version)) continue; // applied
    const next = apply(cur, ev);
    if (next) { items.set(ev.id, next); dirty.set(ev.id, next); }
    if (checkpointed) { positions.set(ev.stream, ev.version); moved.set(ev.stream, ev.version); }
  }
  await batchWrite(targetTable, [...dirty.values()]);
  if (checkpointed) {
    await batchWrite(positionsTable, [...moved].map(([st, v]) => ({ projection: PROJECTION, stream: st, version: v })));
    await checkpoint(records[records.length - 1].dynamodb.SequenceNumber);
  }
}

async function main() {
  await ensureTables();
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
    if (mode === "checkpointed") await takeLease(shard.ShardId);
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
  console.log(JSON.stringify({ client: "aws-sdk-js-v3", mode, records: handled, wall_s: wall,
    records_per_s: handled / wall, cpu_us_per_record: us / Math.max(handled, 1) }));
  agent.destroy();
}

main().catch((e) => { console.error("projection_streams_sdk: " + (e && e.stack || e)); process.exit(1); });
