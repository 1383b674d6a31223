#!/usr/bin/env python3
"""What DynamoDB Local's CPU per item does when its writes come from
several clients at once, measured with botocore (an independent client):
the other ceiling the nginx hot-accounts benchmark runs into.

  bench/dynamodb_local_concurrency.py ENDPOINT PID [ITEMS [PER [CLIENTS...]]]

ENDPOINT: DynamoDB Local's URL; PID: its java process (CPU time from
/proc/PID/stat). On one table shaped as tide's events table, with a stream
(NEW_IMAGE, as `tide init` makes it), ITEMS items (default 4000) are
written in TransactWriteItems of PER conditional Puts (default 8, about
what a write of the nginx hot-accounts run carries), by 1, 2 and 4 client
processes at once (CLIENTS), each on partition keys of its own and one
request at a time, as nginx workers holding different streams' turns do.
Each count runs twice, in the order 1 2 4 4 2 1, so that the stream
records piling up in the server (which make every later item cost it
more: bench/dynamodb_local_ceiling.py) weigh on every count alike. Prints
items/s and DynamoDB Local's CPU per item for each run.
"""
import multiprocessing
import os
import sys
import time

from dynamodb_local import COND, client, cpu_seconds, events_table, item

endpoint, pid = sys.argv[1], sys.argv[2]
items = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
per = int(sys.argv[4]) if len(sys.argv) > 4 else 8
counts = [int(c) for c in sys.argv[5:]] or [1, 2, 4]


def writer(args):
    """One client process: n items on its own stream, per items a request."""
    table, stream, n, start_at = args
    c = client(endpoint)
    while time.time() < start_at:  # all clients begin together
        time.sleep(0.001)
    v = 0
    while v < n:
        k = min(per, n - v)
        c.transact_write_items(TransactItems=[
            {"Put": dict(TableName=table, Item=item(stream, v + i, k if i == k else None), **COND)}
            for i in range(1, k + 1)])
        v += k
    return n


def main():
    c = client(endpoint)
    name = events_table(c, "concurrency_%d_%d" % (os.getpid(), int(time.time())), True)
    print("DynamoDB Local's CPU per item by clients writing at once (botocore; %d items a run, TransactWriteItems"
          " of %d, table with a stream, each client on streams of its own, one request at a time):" % (items, per))
    print("  %-8s %-5s %10s %14s" % ("clients", "run", "items/s", "CPU ms/item"))
    order = counts + counts[::-1]
    seen = {}
    with multiprocessing.Pool(max(counts)) as pool:
        pool.map(writer, [(name, "warm#%d" % i, items // 10, 0) for i in range(max(counts))])  # JVM warm-up
        for r, n in enumerate(order):
            seen[n] = seen.get(n, 0) + 1
            share = items // n
            jobs = [(name, "run%d#%d" % (r, i), share, time.time() + 0.2) for i in range(n)]
            c0, t0 = cpu_seconds(pid), time.time() + 0.2
            done = sum(pool.map(writer, jobs))
            wall, cpu = time.time() - t0, cpu_seconds(pid) - c0
            print("  %-8d %-5d %10.0f %14.3f" % (n, seen[n], done / wall, cpu * 1000 / done))
    c.delete_table(TableName=name)


if __name__ == "__main__":
    main()
