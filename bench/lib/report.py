"""Collects what bench/run left in WORKDIR into one JSON document (OUT_JSON) and prints
the summary table (Markdown) with the targets checked.

usage: report.py WORKDIR OUT_JSON
"""

import datetime
import json
import os
import platform
import re
import sys

MIB = 1024


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def tagged_json(path, tag):
    """The JSON after TAG on the first line starting with it."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(tag):
                    return json.loads(line[len(tag):])
    except (OSError, ValueError):
        pass
    return None


def wrk_json(path):
    return tagged_json(path, "BENCHJSON ")


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "")
        if hasattr(platform, "freedesktop_os_release")
        else "",
    }


PARAMS = {}


def params_server_cpu():
    return PARAMS.get("server_cpu", 0)


def run_stats(d, c):
    w = wrk_json(os.path.join(d, f"wrk-c{c}.txt"))
    if w is None:
        return None
    before = load(os.path.join(d, f"before-c{c}.json"), {})
    after = load(os.path.join(d, f"after-c{c}.json"), {})
    quiet = load(os.path.join(d, f"quiet-c{c}.json"), {})
    errors = w["non200"] + sum(w["socket_errors"].values())
    out = {
        "conns": c,
        "requests": w["requests"],
        "rps": round(w["rps"], 1),
        "p50_ms": w["latency_us"]["p50"] / 1000,
        "p90_ms": w["latency_us"]["p90"] / 1000,
        "p99_ms": w["latency_us"]["p99"] / 1000,
        "max_ms": w["latency_us"]["max"] / 1000,
        "errors": errors,
        "non200": w["non200"],
        "statuses": w["statuses"],
        "socket_errors": w["socket_errors"],
        "wrapped": w["wrapped"],
        "quiet_before": quiet,
    }
    if before and after:
        dt = after["at"] - before["at"]
        server = after["cpu_s"] - before["cpu_s"]
        cpus = {
            k: round(100 * (after["cpus_busy_s"][k] - before["cpus_busy_s"][k]) / dt, 1)
            for k in after["cpus_busy_s"]
        }
        out["server_cpu_pct"] = round(100 * server / dt, 1)
        # CPU time per answered request: robust against other load on the machine
        # (waiting for the CPU costs no CPU time), unlike req/s.
        if w["requests"]:
            out["server_cpu_us_per_req"] = round(1e6 * server / w["requests"], 1)
        if "runq_wait_s" in after and "runq_wait_s" in before:
            out["server_runq_wait_pct"] = round(
                100 * (after["runq_wait_s"] - before["runq_wait_s"]) / dt, 1
            )
        out["cpu_busy_pct"] = cpus
        # Load on the server's CPU that was not the server: other processes (the
        # benchmark's helpers run on the other CPU). Near 0 on a quiet machine.
        key = "cpu%s" % params_server_cpu()
        if key in cpus:
            out["other_load_on_server_cpu_pct"] = round(max(0.0, cpus[key] - out["server_cpu_pct"]), 1)
        mb, ma = before.get("metrics") or {}, after.get("metrics") or {}
        if ma:
            ok = ma.get('smsgate_webhooks_total{status="200"}', 0) - mb.get(
                'smsgate_webhooks_total{status="200"}', 0
            )
            flushes = ma.get("smsgate_store_flush_seconds_count", 0) - mb.get(
                "smsgate_store_flush_seconds_count", 0
            )
            flush_s = ma.get("smsgate_store_flush_seconds_sum", 0) - mb.get(
                "smsgate_store_flush_seconds_sum", 0
            )
            out["gateway_200s"] = int(ok)
            out["wrk_200s"] = w["requests"] - w["non200"]
            # wrk stops counting at the deadline; up to `conns` answers come after.
            out["counts_consistent"] = 0 <= ok - out["wrk_200s"] <= c
            out["flushes"] = int(flushes)
            if ok and after.get("io_written") is not None and before.get("io_written") is not None:
                out["disk_bytes_per_webhook"] = round((after["io_written"] - before["io_written"]) / ok)
            if flushes:
                out["webhooks_per_flush"] = round(ok / flushes, 2)
            # The floor server counts its flushes but does not time them.
            if flushes and "smsgate_store_flush_seconds_sum" in ma:
                out["flush_ms_avg"] = round(1000 * flush_s / flushes, 3)
                out["flush_busy_pct"] = round(100 * flush_s / dt, 1)
    return out


def scenario(work, name, conns):
    d = os.path.join(work, name)
    if not os.path.isdir(d):
        return None
    idle = load(os.path.join(d, "idle.json"), {})
    final = load(os.path.join(d, "final.json"), {})
    s = {
        "idle_rss_kib": (idle.get("proc") or {}).get("VmRSS"),
        "peak_rss_kib": (final.get("proc") or {}).get("VmHWM"),
        "rss_after_load_kib": (final.get("proc") or {}).get("VmRSS"),
        "runs": {},
    }
    for c in conns:
        r = run_stats(d, c)
        if r:
            s["runs"][str(c)] = r
    for extra in ("e2e", "drain", "prefill"):
        v = load(os.path.join(d, f"{extra}.json"))
        if v is not None:
            s[extra] = v
    ol = {}
    for fn in sorted(os.listdir(d)):
        m = re.fullmatch(r"openloop-(\d+)\.txt", fn)
        if m:
            v = tagged_json(os.path.join(d, fn), "OPENLOOP ")
            if v is not None:
                ol[m.group(1)] = v
    if ol:
        s["open_loop"] = dict(sorted(ol.items(), key=lambda kv: int(kv[0])))
    try:
        with open(os.path.join(d, "agent.out")) as f:
            m = re.search(r"acked (\d+)", f.read())
            if m:
                s["agent_acked"] = int(m.group(1))
    except OSError:
        pass
    return s


def fmt(v, spec="{:.0f}"):
    return "–" if v is None else spec.format(v)


def main():
    work, out_path = sys.argv[1], sys.argv[2]
    params = load(os.path.join(work, "params.json"), {})
    PARAMS.update(params)
    conns = [int(c) for c in str(params.get("conns", "16 64")).split()]
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "bench/run",
        "machine": machine(),
        "params": params,
        "fsync": load(os.path.join(work, "fsync.json")),
        "startup": load(os.path.join(work, "startup.json")),
        "startup_grown": load(os.path.join(work, "startup-grown.json")),
        "scenarios": {n: scenario(work, n, conns) for n in ("bare", "floor", "smsgate", "grown")},
    }
    sc = res["scenarios"]

    def rps(name, c):
        try:
            return sc[name]["runs"][str(c)]["rps"]
        except (KeyError, TypeError):
            return None

    res["ratio_smsgate_to_bare"] = {
        str(c): round(rps("smsgate", c) / rps("bare", c), 4)
        for c in conns
        if rps("smsgate", c) and rps("bare", c)
    }
    res["ratio_grown_to_empty"] = {
        str(c): round(rps("grown", c) / rps("smsgate", c), 4)
        for c in conns
        if rps("grown", c) and rps("smsgate", c)
    }

    # ---- targets ---------------------------------------------------------------
    targets = []

    def target(name, ok, value):
        targets.append({"target": name, "met": ok, "value": value})

    def cpu(name, c):
        try:
            return sc[name]["runs"][str(c)]["server_cpu_us_per_req"]
        except (KeyError, TypeError):
            return None

    # Issue 10's targets: CPU per signed, fsynced webhook against bare hyper's CPU per
    # request (robust against other load: waiting costs no CPU time).
    res["cpu_ratio_smsgate_to_bare"] = {
        str(c): round(cpu("smsgate", c) / cpu("bare", c), 2)
        for c in conns
        if cpu("smsgate", c) and cpu("bare", c)
    }
    # The floor (examples/sled_floor.rs: bare hyper plus one webhook's sled work, none of
    # smsgate's own) against bare hyper: what sled and hyper alone cost, in the same run.
    res["cpu_ratio_floor_to_bare"] = {
        str(c): round(cpu("floor", c) / cpu("bare", c), 2)
        for c in conns
        if cpu("floor", c) and cpu("bare", c)
    }
    for c in conns:
        r = res["cpu_ratio_smsgate_to_bare"].get(str(c))
        target(f"CPU per webhook <= 6x bare hyper's per request at {c} conns",
               None if r is None else r <= 6, None if r is None else f"{r:.1f}x")
    for c in conns:
        r = res["cpu_ratio_floor_to_bare"].get(str(c))
        if r is not None:
            target(f"floor (bare hyper + sled writer, no smsgate): CPU per webhook vs bare hyper at {c} conns",
                   None, f"{r:.1f}x")
    # Issue 26: smsgate's own part, CPU per webhook against the floor's, same run.
    res["cpu_ratio_smsgate_to_floor"] = {
        str(c): round(cpu("smsgate", c) / cpu("floor", c), 3)
        for c in conns
        if cpu("smsgate", c) and cpu("floor", c)
    }
    r = res["cpu_ratio_smsgate_to_floor"].get("64")
    if r is not None:
        target("own cost: CPU per webhook <= 1.3x the floor's at 64 conns", r <= 1.3, f"{r:.2f}x")
    # Issue 26: open loop (examples/open_loop.rs), latency from each scheduled send.
    ol = (sc.get("smsgate") or {}).get("open_loop") or {}
    res["open_loop_max_rate_p99_10ms"] = None
    for rate, v in ol.items():
        w, a = v["webhook_to_200"], v.get("webhook_to_agent") or {}
        lost = v["sent"] - v["answered_200"]
        for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
            w[k] = 1e9 if w.get(k) is None else w[k]   # NaN (nothing answered) is null
        ok = w["p99_ms"] <= 10 and lost == 0
        if ok:
            res["open_loop_max_rate_p99_10ms"] = max(res["open_loop_max_rate_p99_10ms"] or 0, int(rate))
        if rate == "1000":
            target("open loop 1,000/s: webhook -> 200 p99 <= 10 ms", ok, f"{w['p99_ms']:.2f} ms ({lost} not 200)")
            target("open loop 1,000/s: webhook -> 200 p99.9 <= 25 ms", w["p999_ms"] <= 25, f"{w['p999_ms']:.2f} ms")
            if a.get("n"):
                target("open loop 1,000/s: webhook -> agent p99 <= 15 ms", a["p99_ms"] <= 15,
                       f"{a['p99_ms']:.2f} ms ({a['n']} of {v['sent'] - v['warmup_requests']} seen)")
    if len(ol) > 1:
        target("open loop: highest rate with webhook -> 200 p99 <= 10 ms", None,
               f"{res['open_loop_max_rate_p99_10ms']} /s of {', '.join(ol)} tried")
    try:
        run64 = sc["smsgate"]["runs"]["64"]
        target("p99 <= 10 ms at 64 conns", run64["p99_ms"] <= 10, f"{run64['p99_ms']:.2f} ms")
        wpf = run64.get("webhooks_per_flush")
        target(">= 16 webhooks per fsync at 64 conns", None if wpf is None else wpf >= 16,
               None if wpf is None else f"{wpf:.1f}")
    except (KeyError, TypeError):
        pass
    sm = sc.get("smsgate") or {}
    if sm.get("idle_rss_kib"):
        v = sm["idle_rss_kib"] / MIB
        target("idle RSS (empty store)", None, f"{v:.1f} MiB")
    gr = sc.get("grown") or {}
    if gr.get("idle_rss_kib"):
        v = gr["idle_rss_kib"] / MIB
        target("idle RSS <= 30 MiB (grown store)", v <= 30, f"{v:.1f} MiB")
    if res["startup"]:
        v = res["startup"]["median_ms"]
        target("start to serving <= 50 ms (empty store)", v <= 50, f"{v:.1f} ms median of {res['startup']['runs']}")
    if res["startup_grown"]:
        v = res["startup_grown"]["median_ms"]
        target("start to serving <= 50 ms (grown store)", v <= 50, f"{v:.1f} ms median of {res['startup_grown']['runs']}")
    e2e = sm.get("e2e") or {}
    if e2e:
        v = e2e["webhook_to_agent"]["median_ms"]
        target("webhook -> agent median < 2 ms", v < 2, f"{v:.2f} ms")
        v = e2e["reply_to_standin"]["median_ms"]
        target("agent reply -> stand-in median < 2 ms", v < 2, f"{v:.2f} ms")
    for c in conns:
        r = res["ratio_grown_to_empty"].get(str(c))
        if r is not None:
            target(f"grown state within 10% of empty at {c} conns", r >= 0.90, f"{100 * r:.1f}%")
    res["targets"] = targets

    with open(out_path, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")

    # ---- the table ---------------------------------------------------------------
    p = print
    p("| scenario | conns | req/s | p50 | p99 | errors | req/s vs bare | server CPU | CPU per request | other load on server CPU | webhooks per fsync | disk written per webhook |")
    p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    label = {"bare": "bare hyper", "floor": "floor: bare hyper + sled writer only",
             "smsgate": "smsgate (empty store)",
             "grown": "smsgate, grown store ({:,} SIDs, {:,} senders)".format(
                 int(params.get("prefill_sids", 0)), int(params.get("prefill_senders", 0)))}
    for name in ("bare", "floor", "smsgate", "grown"):
        s = sc.get(name)
        if not s:
            continue
        for c in conns:
            r = s["runs"].get(str(c))
            if not r:
                continue
            ratio = ""
            if name in ("smsgate", "floor") and rps("bare", c):
                ratio = fmt(r["rps"] / rps("bare", c), "{:.1%}")
            elif name == "grown":
                g = res["ratio_grown_to_empty"].get(str(c))
                ratio = f"({fmt(g, '{:.0%}')} of empty)"
            err = str(r["errors"]) + (f" ({r['wrapped']}× wrapped)" if r["wrapped"] and name != "bare" else "")
            p(f"| {label[name]} | {c} | {r['rps']:.0f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms "
              f"| {err} | {ratio} | {fmt(r.get('server_cpu_pct'), '{:.0f}%')} "
              f"| {fmt(r.get('server_cpu_us_per_req'), '{:.0f} µs')} "
              f"| {fmt(r.get('other_load_on_server_cpu_pct'), '{:.0f}%')} "
              f"| {fmt(r.get('webhooks_per_flush'), '{:.1f}')} "
              f"| {fmt(r.get('disk_bytes_per_webhook'), '{:,.0f} B')} |")
    p()
    p("| measure | bare hyper | smsgate | smsgate, grown store |")
    p("| --- | ---: | ---: | ---: |")

    def mib(s, k):
        return fmt((s or {}).get(k) and (s or {}).get(k) / MIB, "{:.1f} MiB")

    p(f"| RSS idle (VmRSS after start) | {mib(sc.get('bare'), 'idle_rss_kib')} | "
      f"{mib(sm, 'idle_rss_kib')} | {mib(sc.get('grown'), 'idle_rss_kib')} |")
    p(f"| RSS peak (VmHWM after load) | {mib(sc.get('bare'), 'peak_rss_kib')} | "
      f"{mib(sm, 'peak_rss_kib')} | {mib(sc.get('grown'), 'peak_rss_kib')} |")
    st, sg = res["startup"] or {}, res["startup_grown"] or {}
    p(f"| start to serving (median) | | {fmt(st.get('median_ms'), '{:.1f} ms')} "
      f"({st.get('runs', 0)} starts) | {fmt(sg.get('median_ms'), '{:.0f} ms')} ({sg.get('runs', 0)} starts) |")
    if e2e:
        for k, name in (("webhook_to_200", "webhook POST → 200 (median, p99)"),
                        ("webhook_to_agent", "webhook POST → agent has it (median, p99)"),
                        ("reply_to_standin", "agent reply → stand-in has the send (median, p99)")):
            p(f"| {name} | | {e2e[k]['median_ms']:.2f} ms, {e2e[k]['p99_ms']:.2f} ms | |")
    fs = res["fsync"] or {}
    if fs:
        p(f"| raw 4 KiB write+fsync on the state disk (median, p99) | | "
          f"{fs['write4k_fsync']['median_ms']:.2f} ms, {fs['write4k_fsync']['p99_ms']:.2f} ms | |")
    if ol:
        p()
        p("| open loop (64 conns) | sent | 200s | achieved | → 200 p50 | p99 | p99.9 | max | → agent p50 | p99 | p99.9 |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for rate, v in ol.items():
            w, a = v["webhook_to_200"], v.get("webhook_to_agent") or {}
            p(f"| {int(rate):,} /s | {v['sent']} | {v['answered_200']} | {v['achieved_rps']:.0f} /s "
              f"| {w['p50_ms']:.2f} ms | {w['p99_ms']:.2f} ms | {w['p999_ms']:.2f} ms | {w['max_ms']:.1f} ms "
              f"| {fmt(a.get('p50_ms'), '{:.2f} ms')} | {fmt(a.get('p99_ms'), '{:.2f} ms')} "
              f"| {fmt(a.get('p999_ms'), '{:.2f} ms')} |")
    p()
    p("| target | met | value |")
    p("| --- | --- | --- |")
    for t in targets:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        p(f"| {t['target']} | {met} | {t['value']} |")
    noisy = [
        f"{n} c{c}: waited {r['quiet_before'].get('waited_s')} s, CPUs {r['quiet_before'].get('busy_pct')}"
        for n, s in sc.items() if s
        for c, r in s["runs"].items()
        if r.get("quiet_before") and not r["quiet_before"].get("quiet", True)
    ]
    mismatched = [
        f"{n} c{c}: wrk saw {r['wrk_200s']} 200s, the gateway counted {r['gateway_200s']}"
        for n, s in sc.items() if s
        for c, r in s["runs"].items()
        if r.get("counts_consistent") is False
    ]
    if mismatched:
        p()
        p("Warning: wrk's and the gateway's counts of 200s disagree:")
        for m in mismatched:
            p(f"- {m}")
    if noisy:
        p()
        p("Warning: the machine was not idle before these runs (other processes busy):")
        for n in noisy:
            p(f"- {n}")
    p()
    floor = res["cpu_ratio_floor_to_bare"]
    if floor:
        c = str(max(int(k) for k in floor))
        p(f"floor-per-webhook-ratio: {floor[c]:.1f} (bare hyper + sled with a group-commit writer, no smsgate)")
    own = res["cpu_ratio_smsgate_to_floor"]
    if own:
        c = "64" if "64" in own else str(max(int(k) for k in own))
        p(f"own-cost-ratio: {own[c]:.2f}")
    if "1000" in ol:
        p(f"open-loop-p99-ms: {ol['1000']['webhook_to_200']['p99_ms']:.1f}")
    if len(ol) > 1:
        p(f"open-loop-max-rate: {res['open_loop_max_rate_p99_10ms']}")
    p(f"raw numbers: {out_path}")
    ratios = res["cpu_ratio_smsgate_to_bare"]
    if ratios:
        c = str(max(int(k) for k in ratios))
        p(f"cpu-per-webhook-ratio: {ratios[c]:.1f}")


if __name__ == "__main__":
    main()
