#!/usr/bin/env python3
"""Prometheus remote_write 1.0 load driver for bench/ingestd-vs-victoriametrics.sh.

  gen  --series S --samples N --per-request K --out FILE
       builds N samples over S series (labels: __name__, job, instance, device, i), K samples
       per request as Prometheus batches them (a block of series, several samples each, in
       time order per series), encodes each WriteRequest protobuf by hand (the message is four
       fields deep) and snappy-compresses it with Debian's python3-snappy. FILE holds the
       bodies, each prefixed by its length (4 bytes, big-endian) and sample count (4 bytes).
  post --port P --file FILE --connections C
       sends every body with POST /api/v1/write (Content-Encoding: snappy,
       X-Prometheus-Remote-Write-Version: 0.1.0) over C keep-alive connections, as fast as
       they are answered; every answer must be 2xx. Prints one JSON line: requests, samples,
       seconds from the first request until the last answer.

Bounded: every request times out after --timeout seconds (then exit 1).
"""

import argparse
import http.client
import json
import struct
import sys
import threading
import time

import snappy


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload):  # length-delimited field
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def label(name, value):
    return field(1, name.encode()) + field(2, value.encode())


def sample(value, ts_ms):
    return b"\x09" + struct.pack("<d", value) + b"\x10" + varint(ts_ms)


def gen(series, samples, per_request, out):
    per_series = max(1, samples // series)
    # Each request carries `block` series with `step` consecutive samples each.
    step = max(1, min(per_series, per_request // min(series, per_request)))
    block = max(1, per_request // step)
    start_ms = (int(time.time()) - per_series - 3600) * 1000
    label_sets = [
        b"".join(field(1, label(k, v)) for k, v in (
            ("__name__", f"bench_metric_{i % 20}"),
            ("device", f"dev{i % 200:03d}"),
            ("i", str(i)),
            ("instance", f"10.0.{i % 250}.{i % 7}:9100"),
            ("job", "bench"),
        ))
        for i in range(series)
    ]
    total = 0
    with open(out, "wb") as f:
        j = 0
        while j < per_series and total < samples:
            n = min(step, per_series - j)
            for b0 in range(0, series, block):
                ts = []
                for i in range(b0, min(series, b0 + block)):
                    pts = b"".join(field(2, sample(float(i * 1000 + j + k), start_ms + (j + k) * 1000))
                                   for k in range(n))
                    ts.append(field(1, label_sets[i] + pts))
                body = snappy.compress(b"".join(ts))
                count = len(ts) * n
                f.write(struct.pack(">II", len(body), count) + body)
                total += count
            j += n
    print(json.dumps({"samples": total, "series": series, "samples_per_request": step * block}))


def load(path):
    bodies = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        size, count = struct.unpack_from(">II", data, pos)
        pos += 8
        bodies.append((data[pos:pos + size], count))
        pos += size
    return bodies


def post(args):
    bodies = load(args.file)
    nxt = iter(range(len(bodies)))
    lock = threading.Lock()
    errors = []
    headers = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.timeout)
        try:
            while not errors:
                with lock:
                    k = next(nxt, None)
                if k is None:
                    return
                conn.request("POST", "/api/v1/write", body=bodies[k][0], headers=headers)
                r = conn.getresponse()
                text = r.read()
                if not 200 <= r.status < 300:
                    errors.append(f"request {k}: HTTP {r.status}: {text[:200]!r}")
        except OSError as e:
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.monotonic()
    if errors:
        print("remote_write: " + "; ".join(errors[:3]), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({
        "requests": len(bodies),
        "samples": sum(c for _, c in bodies),
        "seconds": t1 - t0,
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--series", type=int, required=True)
    g.add_argument("--samples", type=int, required=True)
    g.add_argument("--per-request", type=int, default=2000)
    g.add_argument("--out", required=True)
    s = sub.add_parser("post")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--file", required=True)
    s.add_argument("--connections", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60)
    args = p.parse_args()
    if args.cmd == "gen":
        if not (1 <= args.series <= 1_000_000 and 1 <= args.samples <= 50_000_000
                and 1 <= args.per_request <= 100_000):
            p.error("--series 1..1000000, --samples 1..50000000, --per-request 1..100000")
        gen(args.series, args.samples, args.per_request, args.out)
    else:
        if not 1 <= args.connections <= 256:
            p.error("--connections must be between 1 and 256")
        post(args)


if __name__ == "__main__":
    main()
