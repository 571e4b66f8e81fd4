"""Snapshot for before/after a load run: the gateway's Prometheus metrics
(gateway.metricsListen; port 0 to skip), the server's RSS and CPU time, and every CPU's
busy time (to see whether anything else ran on the benchmark's cores).

usage: metrics.py METRICS_PORT PID OUT_JSON
"""

import json
import sys

import time

from common import cpu_busy, cpu_seconds, http_get, io_written, proc_status, runq_wait


def main():
    port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    result = {
        "at": time.monotonic(),
        "proc": proc_status(pid),
        "cpu_s": cpu_seconds(pid),
        "runq_wait_s": runq_wait(pid),
        "io_written": io_written(pid),
        "cpus_busy_s": cpu_busy(),
    }
    if port:
        try:
            status, text = http_get(port, "/metrics", timeout=5)
        except OSError as e:
            status, text = 0, str(e)
        values = {}
        if status == 200:
            for line in text.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                name, _, value = line.rpartition(" ")
                try:
                    values[name] = float(value)
                except ValueError:
                    pass
        result["metrics"] = values
    with open(out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
