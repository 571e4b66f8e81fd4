"""Waits (at most MAX_WAIT s) until both benchmark CPUs are nearly idle over a 1 s
window, so a load run does not start while something else (a compiler, say) is busy.
Prints JSON: how long it waited and the last window's busy percentage per CPU.

usage: quiet.py MAX_WAIT [THRESHOLD_PERCENT]
"""

import json
import sys
import time

from common import cpu_busy


def main():
    max_wait = float(sys.argv[1])
    threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 15
    started = time.monotonic()
    while True:
        a = cpu_busy()
        t = time.monotonic()
        time.sleep(1)
        b = cpu_busy()
        dt = time.monotonic() - t
        busy = {k: round(100 * (b[k] - a[k]) / dt, 1) for k in b}
        waited = time.monotonic() - started
        if max(busy.values()) < threshold or waited >= max_wait:
            print(json.dumps({"waited_s": round(waited, 1), "busy_pct": busy,
                              "quiet": max(busy.values()) < threshold}))
            return


if __name__ == "__main__":
    main()
