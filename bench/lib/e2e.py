"""End-to-end latencies, one message at a time (no load), measured with CLOCK_MONOTONIC:

- webhook POST written -> its 200 read back           (admission incl. fsync)
- webhook POST written -> the agent socket has the message line
- agent reply written  -> the Twilio stand-in received the send (its log)

This script is the only agent on the socket while it runs. Each round posts a new
signed webhook over one keep-alive connection, waits for both the 200 and the message
line, then replies and waits for the `sent` line before the next round.

usage: e2e.py GATEWAY_PORT AGENT_SOCKET STANDIN_LOG COUNT OUT_JSON
"""

import json
import select
import socket
import sys
import time

from common import PATH, from_for, median, now_ns, percentile, sid_for, signed_form


def read_http_response(sock, buf):
    """Reads one HTTP/1.1 response with Content-Length; returns (status, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("gateway closed the connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for h in lines[1:]:
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("gateway closed the connection")
        rest += chunk
    return status, rest[length:]


class Agent:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for _ in range(200):
            try:
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"cannot connect to {path}")
        self.buf = b""

    def line(self, deadline):
        """The next JSON line, or raises TimeoutError."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line from the gateway")
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("agent socket closed")
                self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\n")
        return json.loads(raw)

    def say(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")


def main():
    port, agent_path, standin_log, count, out = sys.argv[1:6]
    port, count = int(port), int(count)
    agent = Agent(agent_path)
    http = socket.create_connection(("127.0.0.1", port), timeout=10)
    http.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    to_200, to_agent, reply_sent = [], [], {}
    hbuf = b""
    run_tag = f"e2e{time.time_ns()}"
    for i in range(count + 5):  # the first 5 warm up and are not counted
        sid, sender = sid_for(i, run_tag), from_for(9_000_000 + i)
        body, sig = signed_form(sid, sender, f"e2e {i}")
        req = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {sig}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
        deadline = time.monotonic() + 10
        t0 = now_ns()
        http.sendall(req)
        t_200 = t_agent = None
        msg = None
        while t_200 is None or t_agent is None:
            wait = []
            if t_200 is None:
                wait.append(http)
            if t_agent is None:
                wait.append(agent.sock)
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"round {i}: timed out (200: {t_200}, agent: {t_agent})")
            r, _, _ = select.select(wait, [], [], left)
            now = now_ns()
            if agent.sock in r:
                chunk = agent.sock.recv(1 << 20)
                if not chunk:
                    raise SystemExit("agent socket closed")
                agent.buf += chunk
                while b"\n" in agent.buf:
                    raw, _, agent.buf = agent.buf.partition(b"\n")
                    line = json.loads(raw)
                    if line.get("type") == "message" and line.get("id") == sid:
                        t_agent, msg = now, line
            if http in r:
                t_200 = now
                status, hbuf = read_http_response(http, hbuf)
                if status != 200:
                    raise SystemExit(f"webhook answered {status}")
        # Reply; the stand-in logs when it gets the send; wait for `sent`.
        text = f"bench reply {run_tag} {i}"
        t_reply = now_ns()
        agent.say({"type": "reply", "id": msg["id"], "text": text})
        while True:
            line = agent.line(time.monotonic() + 10)
            if line.get("type") == "sent" and line.get("id") == msg["id"]:
                break
            if line.get("type") == "error":
                raise SystemExit(f"reply failed: {line}")
        if i >= 5:
            to_200.append((t_200 - t0) / 1e6)
            to_agent.append((t_agent - t0) / 1e6)
            reply_sent[text] = t_reply
    # Match the stand-in's receive times to the replies.
    to_standin = []
    with open(standin_log) as f:
        for row in f:
            at, _, body = row.rstrip("\n").split("\t", 2)
            if body in reply_sent:
                to_standin.append((int(at) - reply_sent[body]) / 1e6)
    if len(to_standin) != len(reply_sent):
        raise SystemExit(f"the stand-in saw {len(to_standin)} of {len(reply_sent)} replies")

    def stats(xs):
        return {
            "n": len(xs),
            "median_ms": round(median(xs), 3),
            "p90_ms": round(percentile(xs, 90), 3),
            "p99_ms": round(percentile(xs, 99), 3),
            "min_ms": round(min(xs), 3),
        }

    result = {
        "webhook_to_200": stats(to_200),
        "webhook_to_agent": stats(to_agent),
        "reply_to_standin": stats(to_standin),
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
