#!/usr/bin/env python3
"""Sign / validate Twilio webhook requests with Twilio's own helper library.

  twilio_sign.py             stdin {"token", "url", "params"}              -> prints signature
  twilio_sign.py --validate  stdin {"token", "url", "params", "signature"} -> prints true/false

"params" is a list of [name, value] pairs (names may repeat, order irrelevant).
Optional "algorithm": "HMAC_SHA1" (default) or "HMAC_SHA256".

Uses twilio from <repo>/.tools/py (run scripts/install-test-tools first).

Repeated names: twilio.request_validator.RequestValidator.compute_signature
iterates sorted(set(params)) for names and takes values via params.getall(name)
(Flask/werkzeug MultiDict), else params.getlist(name) (Django QueryDict), else
[params[name]] (plain dict: one value per name; a dict of lists would fail).
It then appends name+value for each value in sorted(set(values)), i.e. values of
a repeated name are sorted AND de-duplicated. We hand it a minimal MultiDict
exposing getall(), so the library itself does the sorting/dedup.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".tools", "py"))

from twilio.request_validator import RequestValidator  # noqa: E402


class MultiParams:
    """Minimal read-only MultiDict (getall/getlist) as the validator expects."""

    def __init__(self, pairs):
        self._d = {}
        for name, value in pairs:
            self._d.setdefault(str(name), []).append(str(value))

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __contains__(self, name):
        return name in self._d

    def __getitem__(self, name):
        return self._d[name][0]

    def getall(self, name):
        return list(self._d[name])

    getlist = getall


def main(argv):
    validate = "--validate" in argv[1:]
    unknown = [a for a in argv[1:] if a != "--validate"]
    if unknown:
        sys.stderr.write(f"usage: {argv[0]} [--validate] < request.json\n")
        return 2
    req = json.load(sys.stdin)
    params = req.get("params") or []
    if isinstance(params, dict):  # convenience: {"name": "value" | ["v1", "v2"]}
        params = [(k, x) for k, v in params.items() for x in (v if isinstance(v, list) else [v])]
    mp = MultiParams(params)
    algorithm = req.get("algorithm")
    validator = RequestValidator(req["token"])
    if validate:
        ok = validator.validate(req["url"], mp, req["signature"], algorithm)
        print("true" if ok else "false")
    else:
        print(validator.compute_signature(req["url"], mp, algorithm))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
