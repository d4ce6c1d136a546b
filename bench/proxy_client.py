#!/usr/bin/env python3
"""proxy_client.py - helpers of bench/proxy.sh (loopback only, bounded).

  load ETCD_URL FILE          put the "KEY<TAB>JSON" lines of FILE into etcd,
                              128 puts per transaction
  watchers PROXY ETCD_URL W N open W watches on the proxy, then write N
                              changes to etcd at full speed; print deliveries/s
                              and the p50/p99 latency from the etcd put's
                              answer to each delivery
"""
import asyncio, base64, http.client, json, sys, time


def etcd_conn(url):
    h, p = url.split("//", 1)[1].rsplit(":", 1)
    return http.client.HTTPConnection(h, int(p), timeout=60)


def load(url, path):
    c = etcd_conn(url)
    ops = []

    def flush():
        if not ops:
            return
        c.request("POST", "/v3/kv/txn", json.dumps({"success": ops}), {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit("etcd txn: %d" % r.status)
        ops.clear()

    n = 0
    with open(path, "rb") as f:
        for line in f:
            if b"\t" not in line:
                continue
            k, v = line.rstrip(b"\n").split(b"\t", 1)
            ops.append({"requestPut": {"key": base64.b64encode(k).decode(), "value": base64.b64encode(v).decode()}})
            n += 1
            if len(ops) == 128:
                flush()
    flush()
    print("loaded %d objects" % n)


async def watchers(proxy, etcd, w, n):
    host, port = proxy.rsplit(":", 1)
    recv = []  # (seq, time)
    ready = 0

    async def one():
        nonlocal ready
        r, wr = await asyncio.open_connection(host, int(port))
        wr.write(b"GET /api/v1/namespaces/bench/pods?watch=true&resourceVersion=%s HTTP/1.1\r\nHost: x\r\n\r\n" % start_rv.encode())
        await wr.drain()
        ready += 1
        got = 0
        buf = b""
        while got < n:
            d = await r.read(1 << 16)
            if not d:
                break
            t = time.time()
            buf += d
            while True:
                i = buf.find(b'"seq":"')
                if i < 0:
                    break
                j = buf.index(b'"', i + 7)
                recv.append((int(buf[i + 7:j]), t))
                got += 1
                buf = buf[j:]
            buf = buf[-64:]
        wr.close()

    c = etcd_conn(etcd)
    c.request("POST", "/v3/kv/range", json.dumps({"key": base64.b64encode(b"/").decode()}))
    start_rv = str(json.loads(c.getresponse().read())["header"]["revision"])
    tasks = [asyncio.create_task(one()) for _ in range(w)]
    while ready < w:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # let the last requests register
    sent = {}
    loop = asyncio.get_running_loop()

    def writer():
        for s in range(n):
            obj = {"kind": "Pod", "apiVersion": "v1",
                   "metadata": {"name": "p%d" % (s % 50), "namespace": "bench", "annotations": {"seq": str(s)}}}
            c.request("POST", "/v3/kv/put", json.dumps({"key": base64.b64encode(b"/registry/pods/bench/p%d" % (s % 50)).decode(),
                                                       "value": base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode()}))
            c.getresponse().read()
            sent[s] = time.time()

    t0 = time.time()
    await loop.run_in_executor(None, writer)
    await asyncio.wait(tasks, timeout=120)
    t1 = max(t for _, t in recv) if recv else time.time()
    lat = sorted(max(0.0, t - sent[s]) for s, t in recv if s in sent)
    print("watchers=%d events=%d deliveries=%d seconds=%.2f deliveries_per_s=%.0f p50_ms=%.1f p99_ms=%.1f"
          % (w, n, len(recv), t1 - t0, len(recv) / (t1 - t0), lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3))


if sys.argv[1] == "load":
    load(sys.argv[2], sys.argv[3])
else:
    asyncio.run(watchers(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
