#!/usr/bin/env python3
"""Syslog-over-TCP driver for bench/ingestd-vs-rsyslog.sh.

  gen  --count N --out FILE
       writes N RFC 5424 messages with octet-counting framing (RFC 6587), varied hosts,
       apps, severities, structured data and text, each with a unique sequence number.
  send --port P --file FILE --connections C --count-url URL | --count-file PATH
       opens C TCP connections to 127.0.0.1:P, sends the file's messages over them (split at
       message boundaries, each connection one contiguous share), then polls what the receiver
       has stored until N more are there: ingestd's counter of committed records
       (--count-url, the sum of every `rookery_ingestd_stored_records_total` sample) or the
       line count of rsyslog's output file (--count-file). Prints one JSON line: messages,
       seconds from the first byte sent until all were stored, send seconds, bytes.

Bounded: gives up after --timeout seconds (exit 1, saying how many arrived).
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
import urllib.request

WORDS = (
    "link up down interface eth0 eth1 bond0 sshd accepted publickey for admin from "
    "disk usage above threshold temperature sensor fan speed config reloaded by operator "
    "session opened closed timeout retry backup completed failed ok"
).split()


def gen(count, out):
    with open(out, "wb") as f:
        for i in range(count):
            host = f"dev{i % 200:03d}.site{i % 7}"
            app = ("sshd", "kernel", "cron", "nginx", "probe", "ntpd")[i % 6]
            pri = (16 + i % 8) * 8 + (i % 8)  # local0..local7, every severity
            ts = f"2026-11-23T10:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}Z"
            text = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(12))
            msg = (
                f'<{pri}>1 {ts} {host} {app} {1000 + i % 5000} ID{i % 17} '
                f'[bench@32473 seq="{i}" run="r1"] {text} seq={i}'
            ).encode()
            f.write(b"%d " % len(msg) + msg)


def split(data, parts):
    """Byte offsets that cut `data` (octet-counted frames) into `parts` contiguous shares."""
    offsets = [0]
    pos = 0
    n = 0
    starts = []
    while pos < len(data):
        sp = data.index(b" ", pos)
        starts.append(pos)
        pos = sp + 1 + int(data[pos:sp])
        n += 1
    for k in range(1, parts):
        offsets.append(starts[k * n // parts])
    offsets.append(len(data))
    return n, [(offsets[k], offsets[k + 1]) for k in range(parts)]


def counter_url(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if line.startswith("rookery_ingestd_stored_records_total"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)


def counter_file(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def send(args):
    with open(args.file, "rb") as f:
        data = f.read()
    n, shares = split(data, args.connections)
    count = (lambda: counter_url(args.count_url)) if args.count_url else (
        lambda: counter_file(args.count_file))
    base = count()
    socks = []
    for _ in shares:
        s = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    errors = []
    sent_at = {}

    def push(k, s, lo, hi):
        try:
            view = memoryview(data)[lo:hi]
            while view:
                m = s.send(view[: 1 << 16])
                view = view[m:]
            sent_at[k] = time.monotonic()
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(f"connection {k}: {e}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=push, args=(k, s, lo, hi))
               for k, (s, (lo, hi)) in enumerate(zip(socks, shares))]
    for t in threads:
        t.start()
    deadline = t0 + args.timeout
    got = 0
    while True:
        got = count() - base
        if got >= n:
            break
        if errors or time.monotonic() > deadline:
            for t in threads:
                t.join(1)
            print(f"syslog_tcp: {got} of {n} messages stored after {time.monotonic() - t0:.1f}s"
                  f"{'; ' + '; '.join(errors) if errors else ''}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.02)
    t1 = time.monotonic()
    for t in threads:
        t.join()
    for s in socks:
        s.close()
    print(json.dumps({
        "messages": n,
        "stored": got,
        "seconds": t1 - t0,
        "send_seconds": max(sent_at.values()) - t0,
        "bytes": len(data),
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--out", required=True)
    s = sub.add_parser("send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--file", required=True)
    s.add_argument("--connections", type=int, default=1)
    s.add_argument("--timeout", type=float, default=300)
    w = s.add_mutually_exclusive_group(required=True)
    w.add_argument("--count-url")
    w.add_argument("--count-file")
    args = p.parse_args()
    if args.cmd == "gen":
        if not 1 <= args.count <= 10_000_000:
            p.error("--count must be between 1 and 10000000")
        gen(args.count, args.out)
    else:
        if not 1 <= args.connections <= 256:
            p.error("--connections must be between 1 and 256")
        send(args)


if __name__ == "__main__":
    os.umask(0o077)
    main()
