#!/usr/bin/env python3
"""gateway.py - a counting loopback gateway in front of etcd's JSON gateway.

usage: gateway.py ETCD_URL LOGFILE
Listens on 127.0.0.1 (a free port, printed as GATEWAY=http://127.0.0.1:PORT),
forwards every request to ETCD_URL and streams the answer back (watches
included), and appends one JSON line per request to LOGFILE:
{"path": ..., "key": ..., "range_end": ..., "count_only": ..., "limit": ...}
(keys decoded from base64), so that a test can count the range reads that
reached etcd.
"""
import base64, http.client, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

target = sys.argv[1].split("//", 1)[1]
thost, tport = target.rsplit(":", 1)
logf = open(sys.argv[2], "a", buffering=1)
lock = threading.Lock()


def dec(v):
    try:
        return base64.b64decode(v).decode("utf-8", "replace")
    except Exception:  # noqa
        return None


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # close-delimited answers: streams pass through

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"path": self.path}
        try:
            j = json.loads(body) if body else {}
            for k in ("key", "range_end"):
                if k in j:
                    rec[k] = dec(j[k])
            rec["count_only"] = bool(j.get("count_only"))
            rec["limit"] = int(j.get("limit", 0))
            if "create_request" in j:
                rec["watch_key"] = dec(j["create_request"].get("key", ""))
                rec["start_revision"] = int(j["create_request"].get("start_revision", 0))
        except Exception:  # noqa
            pass
        with lock:
            logf.write(json.dumps(rec) + "\n")
        c = http.client.HTTPConnection(thost, int(tport), timeout=3600)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        c.request("POST", self.path, body, hdrs)
        r = c.getresponse()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            while True:
                d = r.read1(65536)
                if not d:
                    break
                self.wfile.write(d)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        c.close()

    do_GET = do_POST


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print("GATEWAY=http://127.0.0.1:%d" % srv.server_address[1], flush=True)
srv.serve_forever()
