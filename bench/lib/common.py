"""Shared bits of the benchmark helpers: the benchmark account, Twilio's webhook
signature, request bodies shaped like Twilio's, small process/proc helpers."""

import base64
import hashlib
import hmac
import json
import os
import socket
import time
import urllib.parse

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "bench-auth-token-0123456789abcdef"
NUMBER = "+15550001111"
PUBLIC_URL = "https://sms.example.test/webhooks/sms"
PATH = "/webhooks/sms"


def now_ns():
    """CLOCK_MONOTONIC: the same clock in every process on the machine."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def sign(token, url, params):
    """Twilio: Base64(HMAC-SHA1(token, url + concat(sorted name+value)))."""
    data = url + "".join(k + v for k, v in sorted(params))
    mac = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def sid_for(i, tag="bench"):
    """34 characters like Twilio's (SM + 32): distinct per (tag, i)."""
    h = hashlib.md5(f"{tag}:{i}".encode()).hexdigest()
    return "SM" + h


def from_for(i):
    """A distinct E.164 sender per request (never one of the prefilled approved ones)."""
    return "+1556%07d" % (i % 10_000_000)


def inbound_params(sid, sender, body):
    """The fields Twilio posts for an inbound SMS (same order Twilio uses)."""
    return [
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ToCity", "SAN FRANCISCO"),
        ("FromZip", "94105"),
        ("SmsSid", sid),
        ("FromState", "CA"),
        ("SmsStatus", "received"),
        ("FromCity", "SAN FRANCISCO"),
        ("Body", body),
        ("FromCountry", "US"),
        ("To", NUMBER),
        ("ToZip", "94105"),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", sender),
        ("ApiVersion", "2010-04-01"),
    ]


def signed_form(sid, sender, body):
    """(x-www-form-urlencoded body, X-Twilio-Signature)."""
    params = inbound_params(sid, sender, body)
    return urllib.parse.urlencode(params), sign(TOKEN, PUBLIC_URL, params)


def gateway_config(state_dir, port, standin_port, metrics_port=None, level="info"):
    gw = {
        "listen": f"127.0.0.1:{port}",
        "stateDir": str(state_dir),
        "log": {"level": level},
    }
    if metrics_port:
        gw["metricsListen"] = f"127.0.0.1:{metrics_port}"
    return {
        "gateway": gw,
        "channels": {
            "sms": {
                "accountSid": ACCOUNT_SID,
                "authToken": TOKEN,
                "fromNumber": NUMBER,
                "publicWebhookUrl": PUBLIC_URL,
                "apiBaseUrl": f"http://127.0.0.1:{standin_port}",
                "dmPolicy": "open",
                "allowFrom": ["*"],
                # The benchmark measures the pipeline, not the guardrails: the 200
                # end-to-end replies would pass the default 200/h, and one sender's
                # sequential messages the default 30/min.
                "outboundLimits": {"perHour": 0, "perDay": 0, "perRecipientPerHour": 0},
                "inboundLimits": {"perSenderPerMinute": 0},
            }
        },
    }


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_status(pid):
    """VmRSS and VmHWM in KiB from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def io_written(pid):
    """Bytes the process caused to be written to storage (/proc/PID/io write_bytes),
    None where the kernel does not account it."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "write_bytes":
                    return int(v)
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """utime + stime of a process (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def runq_wait(pid):
    """Seconds the process's threads spent runnable but waiting for a CPU (schedstat):
    on a pinned server, mostly other processes holding its CPU."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def cpu_busy():
    """Busy seconds per CPU since boot, from /proc/stat (everything but idle, iowait)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v]
                out[name] = (sum(v[:8]) - v[3] - v[4]) / ticks
    return out


def http_get(port, path, timeout=1.0):
    """Minimal GET on a fresh connection: (status, body) or raises OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body.decode(errors="replace")


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]
