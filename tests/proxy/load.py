#!/usr/bin/env python3
"""load.py - many watchers, LIST clients and a stuck client against
wcache-proxy, on loopback only, bounded in count and time.

usage: load.py PROXY_HOST:PORT ETCD_URL WATCHERS EVENTS LISTERS

Prints "ok - ..." / "FAIL - ..." lines; exit status 1 on any failure.
"""
import base64, http.client, json, selectors, socket, sys, threading, time

proxy, etcd, nwatch, nev, nlist = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
host, port = proxy.rsplit(":", 1)
port = int(port)
fails = 0


def report(ok, what):
    global fails
    print(("ok - " if ok else "FAIL - ") + what)
    if not ok:
        fails += 1


def etcd_put_many(prefix, n, size):
    u = etcd.split("//", 1)[1]
    h, p = u.rsplit(":", 1)
    c = http.client.HTTPConnection(h, int(p), timeout=30)
    pad = "x" * size
    for i in range(n):
        name = "w%05d" % i
        obj = {"kind": "Pod", "apiVersion": "v1",
               "metadata": {"name": name, "namespace": "load", "labels": {"app": "load"}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running", "pad": pad}}
        body = json.dumps({"key": base64.b64encode((prefix + name).encode()).decode(),
                           "value": base64.b64encode(json.dumps(obj).encode()).decode()})
        c.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit("etcd put: %d" % r.status)
    c.close()


def current_rv():
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/api/v1/namespaces/load/pods?limit=1")
    d = json.loads(c.getresponse().read())
    c.close()
    return d["metadata"]["resourceVersion"]


def open_watch(rv, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect((host, port))
    s.sendall(("GET /api/v1/namespaces/load/pods?watch=true&resourceVersion=%s HTTP/1.1\r\n"
               "Host: x\r\n\r\n" % rv).encode())
    return s


EVENT = b'{"type":'


class Reader(threading.Thread):
    """Reads every healthy watch as it arrives, the way a real client does,
    from before the first write until each has all its events (or the
    guard passes). A reader that only starts after the writes would stall
    its own watches for as long as the writes take, and the proxy would be
    right to cut them off after writeTimeout."""

    def __init__(self, socks, want, guard):
        super().__init__(daemon=True)
        self.socks, self.want, self.guard = socks, want, guard
        self.chunks = [[] for _ in socks]
        self.counts = [0] * len(socks)
        self.tails = [b""] * len(socks)
        self.closed = [False] * len(socks)

    def run(self):
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        deadline = time.time() + self.guard
        left = len(self.socks)
        while left and time.time() < deadline:
            for key, _ in sel.select(timeout=1.0):
                i = key.data
                try:
                    d = key.fileobj.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    d = b""
                if d:
                    self.chunks[i].append(d)
                    # the tail (shorter than EVENT) finds a marker split
                    # across two reads without rescanning the whole body
                    t = self.tails[i] + d
                    self.counts[i] += t.count(EVENT)
                    self.tails[i] = t[-(len(EVENT) - 1):]
                if not d or self.counts[i] >= self.want:
                    self.closed[i] = not d
                    sel.unregister(key.fileobj)
                    left -= 1
        sel.close()

    def body(self, i):
        return b"".join(self.chunks[i])


rv = current_rv()
# the stuck client: a tiny receive buffer, never reads
stuck = open_watch(rv, rcvbuf=4096)
socks = [open_watch(rv) for _ in range(nwatch)]


def open_watchers():
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/metrics")
    m = c.getresponse().read().decode()
    c.close()
    w = [l for l in m.splitlines() if l.startswith("wcache_proxy_watchers ")]
    return int(w[0].split()[1]) if w else -1


def wait_watchers(pred, secs):
    """Poll the proxy's watcher gauge until pred(count) holds or secs pass."""
    deadline = time.time() + secs
    while time.time() < deadline:
        if pred(open_watchers()):
            return True
        time.sleep(0.05)
    return False


# wait until every watch is registered
report(wait_watchers(lambda n: n >= nwatch + 1, 20), "%d watchers open" % (nwatch + 1))
# a guard, not a timing claim: CI hosts vary 3x
reader = Reader(socks, nev, 240)
reader.start()

# LIST clients while events flow
list_ok = [0]
list_bad = []


def lister():
    c = http.client.HTTPConnection(host, port, timeout=30)
    for _ in range(20):
        c.request("GET", "/api/v1/namespaces/load/pods")
        r = c.getresponse()
        body = r.read()
        try:
            d = json.loads(body)
            assert r.status == 200 and d["kind"] == "PodList"
            list_ok[0] += 1
        except Exception as e:  # noqa
            list_bad.append(repr(e)[:200])
    c.close()


th = [threading.Thread(target=lister) for _ in range(nlist)]
for t in th:
    t.start()
t0 = time.time()
etcd_put_many("/registry/pods/load/", nev, 2048)
for t in th:
    t.join()
report(not list_bad and list_ok[0] == 20 * nlist, "%d concurrent LISTs while writing (%s)" % (list_ok[0], list_bad[:1]))

# every healthy watcher gets every event, in order
reader.join()
good = sum(1 for c in reader.counts if c == nev)
dropped = sum(1 for i, c in enumerate(reader.counts) if c < nev and reader.closed[i])
report(good == nwatch, "%d/%d watchers got all %d events (%d ended early by the proxy)"
       % (good, nwatch, nev, dropped))
bufs = [reader.body(i) for i in range(5)]


def dechunk(raw):
    """the body of a chunked HTTP response"""
    body = raw.split(b"\r\n\r\n", 1)[1]
    out = b""
    while body:
        line, rest = body.split(b"\r\n", 1)
        n = int(line.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    return out


names_in_order = all(
    [json.loads(l)["object"]["metadata"]["name"] for l in dechunk(b).split(b"\n") if l] ==
    ["w%05d" % i for i in range(nev)] for b in bufs)
report(names_in_order, "events arrive in revision order")
print("# %d events x %d watchers delivered in %.2f s" % (nev, nwatch, time.time() - t0))

# the stuck client was cut off: its connection ends although it never read.
# Wait for the proxy to drop it (the gauge falls to the readers' count)
# before reading: on a fast machine the others are done before the write
# timeout runs out, and a read now would unblock the stuck one.
cut = wait_watchers(lambda n: n == nwatch, 60)
report(cut, "the proxy ends the stuck watch while the others stay open")
stuck.settimeout(30)
got = 0
closed = False
end = time.time() + 30
try:
    while time.time() < end:
        d = stuck.recv(1 << 20)
        if not d:
            closed = True
            break
        got += len(d)
except (ConnectionResetError, socket.timeout):
    closed = True
report(closed and got < nev * 2048, "a client that stops reading is cut off (read %d bytes before the end)" % got)
for s in socks:
    s.close()
sys.exit(1 if fails else 0)
