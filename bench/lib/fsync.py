"""Raw fsync latency of the disk the state dir is on: append 4 KiB and fsync (then the
same with fdatasync), ROUNDS times each. Group commit can never acknowledge a webhook
faster than one of these, and one fsync at a time bounds batches per second.

usage: fsync.py DIR ROUNDS OUT_JSON
"""

import json
import os
import sys
import time

from common import median, percentile


def loop(path, rounds, sync):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = os.urandom(4096)
    out = []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            os.write(fd, block)
            sync(fd)
            out.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    return {
        "median_ms": round(median(out), 3),
        "p99_ms": round(percentile(out, 99), 3),
        "min_ms": round(min(out), 3),
        "per_second_at_median": round(1000 / median(out)),
    }


def main():
    d, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(d, exist_ok=True)
    result = {
        "rounds": rounds,
        "write4k_fsync": loop(os.path.join(d, "fsync.test"), rounds, os.fsync),
        "write4k_fdatasync": loop(os.path.join(d, "fdatasync.test"), rounds, os.fdatasync),
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
