"""An agent that acknowledges every message and does nothing else, so the measured path
is admission (plus the gateway's own processing and delivery), not outbound sends.
Acks are batched: everything readable is read, and one write acks it all.

usage: ack_agent.py SOCKET [MAX_SECONDS]
Prints "agent connected" once connected; on exit (SIGTERM or MAX_SECONDS) prints
"acked N".
"""

import json
import signal
import socket
import sys
import time


def main():
    path = sys.argv[1]
    limit = float(sys.argv[2]) if len(sys.argv) > 2 else 600
    deadline = time.monotonic() + limit
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(200):
        try:
            sock.connect(path)
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit(f"cannot connect to {path}")
    acked = 0

    def stop(*_):
        print(f"acked {acked}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("agent connected", flush=True)
    sock.settimeout(1.0)
    buf = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        lines = buf.split(b"\n")
        buf = lines.pop()
        out = []
        for raw in lines:
            if not raw:
                continue
            line = json.loads(raw)
            if line.get("type") == "message":
                out.append(b'{"type":"ack","id":%s}\n' % json.dumps(line["id"]).encode())
        if out:
            sock.sendall(b"".join(out))
            acked += len(out)
    stop()


if __name__ == "__main__":
    main()
