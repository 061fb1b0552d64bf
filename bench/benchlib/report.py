"""The side-by-side table (text and JSON rows) and the PNG plot."""

from .stats import summary


def _sizes(doc):
    c = doc["config"]
    return c["batch"], c["batch"] * c["batches"]


def _get(d, *path):
    for k in path:
        if d is None:
            return None
        d = d.get(k) if isinstance(d, dict) else None
    return d


def rows(doc):
    """One dict per table row: measure, unit, ours, twin (median/min/max),
    ratio of the medians (ours / twin), target and pass (None when no target)."""
    res = doc["results"]
    small, large = _sizes(doc)
    out = []

    def row(measure, unit, pick, target=None, check=None, nd=1):
        ours, twin = summary(pick("ours"), unit), summary(pick("twin"), unit)
        ratio = (ours["median"] / twin["median"]
                 if ours["median"] is not None and twin["median"] not in (None, 0) else None)
        passed = check(ours, twin, ratio) if check and ours["median"] is not None else None
        out.append({"measure": measure, "unit": unit, "ours": ours, "twin": twin, "ratio": ratio,
                    "target": target, "pass": passed, "digits": nd})

    def one(name, *path):
        v = _get(res[name], *path)
        return [] if v is None else [v]

    row("binary size, operator (stripped)", "MiB", lambda n: one(n, "binary_mib", "operator"))
    row("binary size, webhook (stripped)", "MiB", lambda n: one(n, "binary_mib", "webhook"))

    def op(n, *path):
        return _get(res[n], "operator", *path) or []
    row("operator RSS, idle (0 RedisClusters)", "MiB", lambda n: op(n, "rss_by_size", "0"))
    row(f"operator RSS, {small:,} RedisClusters", "MiB", lambda n: op(n, "rss_by_size", str(small)))
    row(f"operator RSS, {large:,} RedisClusters", "MiB", lambda n: op(n, "rss_by_size", str(large)),
        target="ratio <= 0.15", check=lambda o, t, r: r is not None and r <= 0.15)
    row(f"operator RSS, process that created the first {small:,}", "MiB",
        lambda n: [c["rss_after_mib"] for c in op(n, "create")[:1]])
    row(f"operator RSS, process that created the last {small:,} ({large:,} in all)", "MiB",
        lambda n: [c["rss_after_mib"] for c in op(n, "create")[-1:]])
    row("time from start to first reconcile", "ms", lambda n: op(n, "first_reconcile_ms"), nd=0)
    labels = {"noop": "no-op (no API call)", "read": "read-only (PodMetrics GET)", "write": "writing"}
    for key in ("noop", "read", "write"):
        for q in ("p50", "p99"):
            target = check = None
            if key == "noop" and q == "p99":
                target, check = "ours <= 1 ms", (lambda o, t, r: o["median"] <= 1.0)
            row(f"reconcile {q}, {labels[key]}, {small:,} RCs", "ms",
                lambda n, key=key, q=q: [run[key][q] for run in op(n, "reconciles") if run[key][q] is not None],
                target=target, check=check, nd=3)
    for q, what in (("busy_p50", "inside its polls only"), ("busy_p99", "inside its polls only"),
                    ("cpu_p50", "CPU time only"), ("cpu_p99", "CPU time only"),
                    ("wait_p50", "queued before it (not in the above)"),
                    ("wait_p99", "queued before it (not in the above)"),
                    ("total_p50", "with kube-runtime's requeue handoff"),
                    ("total_p99", "with kube-runtime's requeue handoff")):
        row(f"reconcile {q[-3:]}, no-op, {what}, ours, {small:,} RCs", "ms",
            lambda n, q=q: [run["noop"][q] for run in op(n, "reconciles") if run["noop"].get(q) is not None],
            nd=3)
    for q in ("p50", "p99"):
        row(f"reconcile {q}, no-op, {large:,} RCs (1 run)", "ms",
            lambda n, q=q: [run["noop"][q] for run in op(n, "reconciles_large") if run["noop"][q] is not None],
            nd=3)
    row(f"{small:,} new RedisClusters -> children + status", "s",
        lambda n: [c["seconds"] for c in op(n, "create")])
    row(f"operator CPU over those runs", "CPU-s", lambda n: [c["cpu_seconds"] for c in op(n, "create")], nd=2)

    def wh(n, *path):
        return _get(res[n], "webhook", *path) or []
    for rate in doc["config"]["rates"]:
        for field, label in (("rps", "achieved"), ("p50_ms", "p50"), ("p99_ms", "p99")):
            unit = "req/s" if field == "rps" else "ms"
            row(f"webhook @{rate:,}/s: {label}", unit,
                lambda n, rate=rate, field=field: [x[field] for x in wh(n, "rates", str(rate))],
                nd=0 if field == "rps" else 3)
    row("webhook peak throughput", "req/s", lambda n: [x["rps"] for x in wh(n, "peak")],
        target="ratio >= 2", check=lambda o, t, r: r is not None and r >= 2.0, nd=0)
    row("webhook p99 at peak", "ms", lambda n: [x["p99_ms"] for x in wh(n, "peak")], nd=3)
    row("webhook RSS, idle", "MiB", lambda n: wh(n, "idle_rss"))
    row("webhook RSS, under load (max)", "MiB", lambda n: wh(n, "load_rss"),
        target="ratio <= 0.3", check=lambda o, t, r: r is not None and r <= 0.3)
    slots = doc.get("slots")
    if slots:
        # Not the Go twin (it has no topology): Redis's own redis-cli.
        row(f"slot migration 3 -> 4 shards, {slots['keys']:,} keys (twin column: redis-cli rebalance)",
            "keys/s", lambda n: slots["ours_keys_per_s" if n == "ours" else "baseline_keys_per_s"], nd=0)
    return out


def _cell(s, nd):
    if s["median"] is None:
        return "-"
    if len(s["samples"]) == 1 or s["min"] == s["max"]:
        return f"{s['median']:.{nd}f}"
    return f"{s['median']:.{nd}f} [{s['min']:.{nd}f}-{s['max']:.{nd}f}]"


def text(doc):
    rs = doc["table"]
    m = doc["machine"]
    head = (f"redis-operator vs Go controller-runtime twin  ({'QUICK run' if doc['quick'] else 'full run'}, "
            f"{doc['started_at']}, {m['cores']} x {m['cpu_model']}, {m['memory_gib']} GiB, "
            f"took {doc['duration_seconds'] / 60:.0f} min)\n"
            "median [min-max] over runs; ratio = ours / twin (medians)")
    table = [("measure", "unit", "ours", "Go twin", "ratio", "target")]
    for r in rs:
        verdict = ""
        if r["target"]:
            verdict = f"{r['target']}: " + ("PASS" if r["pass"] else ("FAIL" if r["pass"] is False else "n/a"))
        table.append((r["measure"], r["unit"], _cell(r["ours"], r["digits"]), _cell(r["twin"], r["digits"]),
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", verdict))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [head, ""]
    for k, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i in (0, 1, 5) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(doc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = doc["results"]
    colors = {"ours": "#b7410e", "twin": "#00add8"}
    labels = {"ours": "redis-operator (Rust)", "twin": "Go twin (controller-runtime)"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in ("ours", "twin"):
        by_size = _get(res[name], "operator", "rss_by_size") or {}
        xs = sorted(int(k) for k in by_size if by_size[k])
        if xs:
            s = [summary(by_size[str(x)], "MiB") for x in xs]
            med = [v["median"] for v in s]
            err = [[v["median"] - v["min"] for v in s], [v["max"] - v["median"] for v in s]]
            a.errorbar(xs, med, yerr=err, marker="o", capsize=3, color=colors[name], label=labels[name])
    a.set_xlabel("RedisClusters (each with StatefulSet, 2 Services, ConfigMap, PDB, pod)")
    a.set_ylabel("operator RSS (MiB)")
    a.set_title("Operator memory vs resources in cache")
    a.set_ylim(bottom=0)
    a.grid(alpha=0.3)
    a.legend()
    for name in ("ours", "twin"):
        rates = _get(res[name], "webhook", "rates") or {}
        xs = sorted(int(k) for k in rates if rates[k])
        for q, style in (("p50_ms", "-"), ("p99_ms", "--")):
            ys = [summary([x[q] for x in rates[str(r)]], "ms")["median"] for r in xs]
            if xs:
                b.plot(xs, ys, style, marker="o", color=colors[name], label=f"{labels[name]} {q[:3]}")
        peak = _get(res[name], "webhook", "peak") or []
        if peak:
            ps = summary([x["rps"] for x in peak], "req/s")
            pl = summary([x["p99_ms"] for x in peak], "ms")
            b.plot([ps["median"]], [pl["median"]], marker="*", markersize=14, linestyle="none",
                   color=colors[name], label=f"{labels[name]} peak ({ps['median']:.0f}/s, p99)")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("offered load (AdmissionReviews/s, TLS, keep-alive)")
    b.set_ylabel("latency (ms)")
    b.set_title("Webhook /mutate latency vs rate")
    b.grid(alpha=0.3, which="both")
    b.legend(fontsize=7)
    m = doc["machine"]
    fig.suptitle(f"{'QUICK ' if doc['quick'] else ''}run {doc['started_at']} on {m['cores']} x {m['cpu_model']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
