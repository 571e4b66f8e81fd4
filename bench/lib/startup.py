"""Start-to-ready: time from exec of `smsgate gateway` (pinned to CPU 0) until
GET /healthz on the webhook listener answers 200, over several starts; each start gets
a fresh state dir unless STATE_DIR is given (then the same, e.g. a grown, store is
reopened every time). Also records VmRSS right after ready.

usage: startup.py SMSGATE WORKDIR STANDIN_PORT RUNS OUT_JSON [STATE_DIR]
"""

import json
import os
import signal
import subprocess
import sys
import time

from common import free_port, gateway_config, http_get, median, now_ns, proc_status, write_json


def one(binary, workdir, standin_port, k, state_dir):
    run_dir = os.path.join(workdir, f"start{k}")
    os.makedirs(run_dir, exist_ok=True)
    state = state_dir or os.path.join(run_dir, "state")
    port = free_port()
    cfg = os.path.join(run_dir, "smsgate.json5")
    write_json(cfg, gateway_config(state, port, standin_port))
    with open(os.path.join(run_dir, "gateway.log"), "w") as log:
        t0 = now_ns()
        p = subprocess.Popen(
            ["taskset", "-c", "0", binary, "gateway", "--config", cfg],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, _ = http_get(port, "/healthz", timeout=0.5)
                    if status == 200:
                        ready_ms = (now_ns() - t0) / 1e6
                        break
                except OSError:
                    pass
                if p.poll() is not None:
                    raise SystemExit(f"gateway exited with {p.returncode}; see {log.name}")
                if time.monotonic() > deadline:
                    raise SystemExit("gateway not ready within 30 s")
                time.sleep(0.0002)
            rss = proc_status(p.pid).get("VmRSS")
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return ready_ms, rss


def main():
    binary, workdir, standin_port, runs, out = sys.argv[1:6]
    state_dir = sys.argv[6] if len(sys.argv) > 6 else None
    times, rss = [], []
    for k in range(int(runs)):
        t, r = one(binary, workdir, int(standin_port), k, state_dir)
        times.append(round(t, 2))
        rss.append(r)
    result = {
        "runs": len(times),
        "median_ms": median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "all_ms": times,
        "rss_at_ready_kib": rss,
        "fresh_state": state_dir is None,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
