#!/usr/bin/env python3
"""Fixed-rate HTTP GET driver for the benchmarks: plays Prometheus scraping a blackbox-style
/probe endpoint. Sends `rate` requests per second for `seconds`, over `conns` keep-alive
connections, cycling through `count` targets; prints one JSON line with what happened.

Only the server's CPU is measured by the caller; this process's own cost is not counted.
"""

import argparse
import asyncio
import json
import time


async def worker(host, port, paths, queue, stats):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            i = await queue.get()
            if i is None:
                return
            path = paths[i % len(paths)]
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            chunked = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
                elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            body = b""
            if chunked:
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    chunk = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    body += chunk[:-2]
            else:
                body = await reader.readexactly(length)
            code = status_line.split(b" ")[1] if status_line else b"000"
            if code == b"200" and b"probe_success 1" in body:
                stats["ok"] += 1
            else:
                stats["failed"] += 1
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path-template", required=True, help="with {i} for the target number")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--conns", type=int, default=64)
    a = ap.parse_args()
    paths = [a.path_template.format(i=i) for i in range(a.count)]
    stats = {"ok": 0, "failed": 0, "late": 0}
    queue = asyncio.Queue(maxsize=a.conns * 4)
    workers = [
        asyncio.create_task(worker(a.host, a.port, paths, queue, stats)) for _ in range(a.conns)
    ]
    start = time.monotonic()
    total = int(a.rate * a.seconds)
    for i in range(total):
        due = start + i / a.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1.0:
            stats["late"] += 1
        await queue.put(i)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    stats["sent"] = total
    stats["elapsed"] = round(time.monotonic() - start, 3)
    print(json.dumps(stats))


asyncio.run(main())
