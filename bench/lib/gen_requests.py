"""Pre-generates N distinct signed inbound webhooks for wrk (bench/requests.lua).

Every request differs in MessageSid (and its SmsSid/SmsMessageSid aliases), From and
so X-Twilio-Signature; everything else is identical, so the requests are written as
one raw HTTP request template with @SIG@, @SID@ and @FROM@ markers (TEMPLATE) plus one
line "SIG SID FROM" per request (LINES). Lengths are fixed, so Content-Length is too.

usage: gen_requests.py TEMPLATE LINES N [TAG]
"""

import base64
import hashlib
import hmac
import sys
import time

from common import (
    PATH,
    PUBLIC_URL,
    TOKEN,
    from_for,
    inbound_params,
    sid_for,
    sign,
    signed_form,
)

BODY = "Hello from the benchmark, is the agent there?"


def main():
    template_path, lines_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tag = sys.argv[4] if len(sys.argv) > 4 else "bench"
    started = time.monotonic()
    sid0, from0 = sid_for(0, tag), from_for(0)
    body0, _ = signed_form(sid0, from0, BODY)
    marked = body0.replace(sid0, "@SID@").replace(from0.replace("+", "%2B"), "@FROM@")
    assert marked.count("@SID@") == 3 and marked.count("@FROM@") == 1, marked
    head = (
        f"POST {PATH} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "User-Agent: TwilioProxy/1.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Accept: */*\r\n"
        "X-Twilio-Signature: @SIG@\r\n"
        f"Content-Length: {len(body0)}\r\n"
        "\r\n"
    )
    with open(template_path, "w", newline="") as f:
        f.write(head + marked)
    # The signed string is the URL plus sorted name+value pairs; only the SID (three
    # fields) and From change, so format it from a template instead of re-encoding.
    params = inbound_params("\x00SID\x00", "\x00FROM\x00", BODY)
    data = PUBLIC_URL + "".join(k + v for k, v in sorted(params))
    data = data.replace("{", "{{").replace("}", "}}")
    data = data.replace("\x00SID\x00", "{sid}").replace("\x00FROM\x00", "{frm}")
    key = TOKEN.encode()
    assert sign(TOKEN, PUBLIC_URL, inbound_params(sid0, from0, BODY)) == base64.b64encode(
        hmac.new(key, data.format(sid=sid0, frm=from0).encode(), hashlib.sha1).digest()
    ).decode()
    with open(lines_path, "w") as f:
        out = []
        for i in range(n):
            sid, sender = sid_for(i, tag), from_for(i)
            mac = hmac.new(key, data.format(sid=sid, frm=sender).encode(), hashlib.sha1)
            sig = base64.b64encode(mac.digest()).decode()
            out.append(f"{sig} {sid} %2B{sender[1:]}\n")
            if len(out) >= 10000:
                f.write("".join(out))
                out = []
        f.write("".join(out))
    print(
        f"generated {n} signed requests ({len(body0)}-byte bodies) in "
        f"{time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
