#!/usr/bin/env python3
"""A loopback OTLP/HTTP sink for the load benchmark: answers 200 to every POST /v1/traces and
counts the export requests and bytes (printed at exit), so the gateway's span export runs
against a collector that keeps up. Usage: otlp_sink.py PORT"""
import http.server
import signal
import sys

stats = {"posts": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        stats["posts"] += 1
        stats["bytes"] += length
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def bye(*_):
    print(f"otlp sink: {stats['posts']} export requests, {stats['bytes']} bytes", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, bye)
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
try:
    server.serve_forever()
except KeyboardInterrupt:
    bye()
