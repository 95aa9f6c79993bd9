#!/usr/bin/env python3
"""A stand-in for *current* ClickHouse's HTTP interface, backed by chDB (ClickHouse's engine as a
Python library, from PyPI), so the usage exporter's SQL can be checked against today's
ClickHouse as well as Debian's 18.16 — no current ClickHouse server package is available here.

It implements only what the exporter and its tests use: `GET /ping`; `POST /` with the
statement in the body, or with `?query=INSERT ... FORMAT JSONEachRow` plus rows in the body
(gzip `Content-Encoding` honoured; other URL parameters become `SETTINGS`). The HTTP layer is
this script's; the SQL (CREATE DATABASE/TABLE, system.columns, JSONEachRow inserts, SELECTs)
runs in ClickHouse's current engine.

    python3 -m venv /tmp/chdb && /tmp/chdb/bin/pip install chdb
    /tmp/chdb/bin/python gateway/tests/usage_chdb_http.py --port 0 --path /tmp/chdb-data &
    # prints "listening on 127.0.0.1:PORT"
    BUD_TEST_CLICKHOUSE_URL=http://127.0.0.1:PORT cargo test -p bud-gateway --test usage_clickhouse

(The outage test in usage_clickhouse.rs always starts a real clickhouse-server of its own.)
"""

import argparse
import gzip
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from chdb import session as chdb_session

LOCK = threading.Lock()
SESSION = None


def run(sql: str) -> bytes:
    with LOCK:
        result = SESSION.query(sql, "TabSeparated")
    return result.bytes() if hasattr(result, "bytes") else bytes(result)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def answer(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/ping":
            return self.answer(200, b"Ok.\n")
        params = parse_qs(url.query)
        if "query" in params:
            return self.execute(params["query"][0], b"", {})
        return self.answer(404, b"not found\n")

    def do_POST(self):
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        query = params.pop("query", None)
        params.pop("database", None)
        if query is None:
            return self.execute(body.decode(), b"", params)
        return self.execute(query, body, params)

    def execute(self, query: str, data: bytes, settings: dict):
        sql = query.strip()
        if settings:
            clause = " SETTINGS " + ", ".join(f"{k} = {v}" for k, v in settings.items())
            upper = sql.upper()
            at = upper.find(" FORMAT ")
            sql = sql[:at] + clause + sql[at:] if at >= 0 else sql + clause
        if data:
            sql = sql + "\n" + data.decode()
        try:
            self.answer(200, run(sql))
        except Exception as error:  # ClickHouse errors become HTTP 500 with the message, as in ClickHouse
            self.answer(500, f"{error}\n".encode())


def main():
    global SESSION
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", required=True, help="data directory of the chDB session")
    args = parser.parse_args()
    SESSION = chdb_session.Session(args.path)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    print(f"chDB engine {run('SELECT version()').decode().strip()}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
