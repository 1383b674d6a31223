// Reference figure for bench/sigv4.lua: @smithy/signature-v4 (the signer of
// AWS SDK for JavaScript v3) signing the same 1 KB DynamoDB PutItem request,
// same headers, body, credentials and session token, the same number of times.
//
//   NODE_PATH=.deps/node_modules node bench/sigv4_smithy.js [ops]
//
// Two SHA-256 back ends: node:crypto behind the interface of @smithy/hash-node
// (what the SDK uses under Node; hash-node itself is not installed here, so a
// ten-line equivalent is below), and @aws-crypto/sha256-js (pure JavaScript).
"use strict";
const { SignatureV4 } = require("@smithy/signature-v4");
const { Sha256: Sha256Js } = require("@aws-crypto/sha256-js");
const crypto = require("node:crypto");

const OPS = Number(process.argv[2]) || 200000;

// Same contract as @smithy/hash-node's Hash: HMAC when given a secret.
class NodeSha256 {
  constructor(secret) {
    this.h = secret !== undefined ? crypto.createHmac("sha256", toBuf(secret)) : crypto.createHash("sha256");
  }
  update(data) { this.h.update(toBuf(data)); }
  digest() { return Promise.resolve(new Uint8Array(this.h.digest())); }
}
function toBuf(d) {
  if (typeof d === "string") return Buffer.from(d, "utf8");
  if (ArrayBuffer.isView(d)) return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  return Buffer.from(d);
}

// The body of bench/sigv4.lua, byte for byte.
const payload = `{"owner":"alice","amount":125,"note":"${"x".repeat(650)}"}`.replace(/"/g, '\\"');
const BODY = '{"TableName":"tide_events","Item":{"stream":{"S":"account#4f9c2a7e-1b3d-4c5e-8f70-123456789abc"},' +
  '"version":{"N":"42"},"type":{"S":"Deposited"},"payload":{"S":"' + payload + '"},' +
  '"meta":{"M":{"command_id":{"S":"cmd-0001"},"ts":{"N":"1700000000"}}}},' +
  '"ConditionExpression":"attribute_not_exists(#v)","ExpressionAttributeNames":{"#v":"version"}}';
const TOKEN = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
const CREDS = {
  accessKeyId: "AKIDEXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
  sessionToken: TOKEN,
};
const DATE = new Date(1700000000 * 1000);

function request() {
  return {
    method: "POST", protocol: "https:", hostname: "dynamodb.us-east-1.amazonaws.com", path: "/",
    query: {},
    headers: {
      host: "dynamodb.us-east-1.amazonaws.com",
      "content-type": "application/x-amz-json-1.0",
      "x-amz-target": "DynamoDB_20120810.PutItem",
    },
    body: BODY,
  };
}

async function bench(name, n, sha256) {
  // applyChecksum false: no x-amz-content-sha256 header, as DynamoDB and
  // core.sign's defaults, so both sign the same canonical request.
  const signer = new SignatureV4({ credentials: CREDS, region: "us-east-1", service: "dynamodb", sha256,
                                   applyChecksum: false });
  const warm = Math.min(n, 10000);
  for (let i = 0; i < warm; i++) await signer.sign(request(), { signingDate: DATE });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await signer.sign(request(), { signingDate: DATE });
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  console.log(`${name}: ${us.toFixed(3)} us/op (${n} ops)`);
  const signed = await signer.sign(request(), { signingDate: DATE });
  return signed.headers.authorization;
}

(async () => {
  console.log(`# node ${process.version}, @smithy/signature-v4 ${require("@smithy/signature-v4/package.json").version}, ` +
    `body ${Buffer.byteLength(BODY)} bytes, session token ${TOKEN.length} bytes, wall time, after a warm-up, one request in flight`);
  const auth = await bench("smithy.sign 1KB PutItem (node:crypto, as @smithy/hash-node)", OPS, NodeSha256);
  await bench("smithy.sign 1KB PutItem (@aws-crypto/sha256-js)", Math.max(1, Math.floor(OPS / 4)), Sha256Js);
  // bench/sigv4.lua prints the same line: equal signatures cross-check both.
  console.log(`# authorization: ${auth}`);
})();
