#!/usr/bin/env python3
"""What DynamoDB Local itself can write, measured with botocore (an
independent client): the ceiling the hot-stream benchmark runs into.

  bench/dynamodb_local_ceiling.py ENDPOINT PID [ITEMS [--warm-only]]

ENDPOINT: DynamoDB Local's URL; PID: its java process (CPU time from
/proc/PID/stat). For a table shaped as tide's events table (stream,
version; a Deposited event's attributes and ~300 bytes of metadata), with
and without a stream (NEW_IMAGE, as `tide init` makes it), it writes ITEMS
items (default 2000) on one partition key: one conditional PutItem at a
time, then TransactWriteItems of 25 and 99 conditional Puts (99: tide's
largest batch). Each table is warmed with a tenth of the items first (the
JVM compiles as it goes). Prints items/s (wall, one client, one request
at a time) and DynamoDB Local's CPU per item; last, one line
"CEILING no_stream=N with_stream=N": each table's best items/s.

Why: DynamoDB Local's transactions cost it CPU per item, and on a table
with a stream every item costs far more, growing with all the stream
records the server has written in its life (deleting the tables does not
bring it back: 0.5 ms an item in a fresh server, 35-44 ms after some tens
of thousands). So on this machine a batched hot stream is bounded by
DynamoDB Local, not by the client. AWS keeps stream records outside the
write path and bills a transaction per item, not per CPU-millisecond.
"""
import os
import sys
import time

from dynamodb_local import COND, client as new_client, cpu_seconds, events_table, item

endpoint, pid = sys.argv[1], sys.argv[2]
items = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
# --warm-only: the rows without a stream, nothing printed: warms the JVM of a
# fresh server (its JIT) without leaving stream records behind
warm_only = "--warm-only" in sys.argv[4:]
client = new_client(endpoint)


def write(table, stream, start, n, per):
    """n items from version start+1, per items a request; -> next version."""
    v = start
    while v < start + n:
        k = min(per, start + n - v)
        if per == 1:
            client.put_item(TableName=table, Item=item(stream, v + 1, 1), ReturnConsumedCapacity="TOTAL", **COND)
        else:
            client.transact_write_items(ReturnConsumedCapacity="TOTAL", TransactItems=[
                {"Put": dict(TableName=table, Item=item(stream, v + i, k if i == k else None), **COND)}
                for i in range(1, k + 1)])
        v += k
    return v


best = {}  # table kind -> the highest items/s of its rows
stamp = "%d_%d" % (os.getpid(), int(time.time()))
out = (lambda *a: None) if warm_only else print
out("DynamoDB Local's own ceiling (botocore, one request at a time, %d items on one partition key per row;"
      " CPU of DynamoDB Local's java process):" % items)
out("  %-14s %-22s %10s %14s" % ("table", "writes", "items/s", "CPU ms/item"))
for with_stream in (False,) if warm_only else (False, True):
    name = events_table(client, "ceiling_%s_%s" % ("stream" if with_stream else "plain", stamp), with_stream)
    for per in (1, 25, 99):
        stream = "account#p%d" % per
        v = write(name, stream, 0, max(per, items // 10), per)  # warm-up
        c0, t0 = cpu_seconds(pid), time.time()
        write(name, stream, v, items, per)
        wall, cpu = time.time() - t0, cpu_seconds(pid) - c0
        kind = "with_stream" if with_stream else "no_stream"
        best[kind] = max(best.get(kind, 0), items / wall)
        what = "PutItem, one at a time" if per == 1 else "TransactWriteItems x %d" % per
        out("  %-14s %-22s %10.0f %14.3f" % ("with stream" if with_stream else "no stream", what,
                                             items / wall, cpu * 1000 / items))
    client.delete_table(TableName=name)
# for bench/hot_streams.sh: one line it reads
if not warm_only:
    print("CEILING no_stream=%.0f with_stream=%.0f" % (best["no_stream"], best["with_stream"]))
