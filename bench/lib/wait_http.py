"""Waits until GET PATH on 127.0.0.1:PORT answers (any status); exits 1 after TIMEOUT s.

usage: wait_http.py PORT PATH TIMEOUT
"""

import sys
import time

from common import http_get


def main():
    port, path, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_get(port, path, timeout=1)
            return
        except OSError:
            time.sleep(0.005)
    sys.exit(f"nothing answered on 127.0.0.1:{port}{path} within {timeout} s")


if __name__ == "__main__":
    main()
