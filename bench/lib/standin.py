"""A tiny stand-in for Twilio's REST API: answers every POST with 201 and a message
JSON, and appends "MONOTONIC_NS<TAB>PATH<TAB>Body" per request to LOG (the clock is
CLOCK_MONOTONIC, shared with the other benchmark processes).

usage: standin.py PORT LOG
Prints "standin ready" once listening. Stops on SIGTERM.
"""

import http.server
import itertools
import json
import signal
import sys
import urllib.parse

from common import now_ns

counter = itertools.count(1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        at = now_ns()
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        form = urllib.parse.parse_qs(raw.decode(errors="replace"))
        body = (form.get("Body") or [""])[0].replace("\t", " ").replace("\n", " ")
        LOG.write(f"{at}\t{self.path}\t{body}\n")
        LOG.flush()
        reply = json.dumps(
            {"sid": "SM%032x" % next(counter), "status": "queued", "num_segments": "1"}
        ).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST

    def log_message(self, *args):
        pass


def main():
    global LOG
    port, log = int(sys.argv[1]), sys.argv[2]
    LOG = open(log, "a")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("standin ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
