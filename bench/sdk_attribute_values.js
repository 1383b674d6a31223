// The AttributeValue marshalling the AWS SDK benchmarks do by hand (plain
// JavaScript values <-> DynamoDB JSON), shared by bench/client_cpu_sdk.js
// and bench/command_path_sdk.js. Cheaper than @aws-sdk/lib-dynamodb's,
// which errs in the SDK's favour.
"use strict";

function marshal(v) {
  switch (typeof v) {
    case "string": return { S: v };
    case "number": return { N: String(v) };
    case "boolean": return { BOOL: v };
    case "object": {
      if (v === null) return { NULL: true };
      if (Array.isArray(v)) return { L: v.map(marshal) };
      const m = {};
      for (const k of Object.keys(v)) if (v[k] !== undefined) m[k] = marshal(v[k]);
      return { M: m };
    }
  }
  throw new Error("cannot marshal " + typeof v);
}
function marshalItem(obj) { return marshal(obj).M; }
function unmarshal(av) {
  if (av.S !== undefined) return av.S;
  if (av.N !== undefined) return Number(av.N);
  if (av.BOOL !== undefined) return av.BOOL;
  if (av.NULL !== undefined) return null;
  if (av.L !== undefined) return av.L.map(unmarshal);
  if (av.M !== undefined) return unmarshalItem(av.M);
  throw new Error("cannot unmarshal " + JSON.stringify(av));
}
function unmarshalItem(m) {
  const o = {};
  for (const k of Object.keys(m)) o[k] = unmarshal(m[k]);
  return o;
}

module.exports = { marshal, marshalItem, unmarshal, unmarshalItem };
