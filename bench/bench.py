#!/usr/bin/env python3
"""`make bench`: redis-operator and redis-webhook beside their Go
controller-runtime twins (bench/go-twin), measured in the same run.

Operators: one fresh local control plane (tests/ harness, `local-cluster`)
per implementation; webhooks: no control plane, server pinned to one core and
the load generator (oha) to the other. Every figure is the median of several
runs with min and max. Writes bench/results/<timestamp>.json, latest.json and
a PNG, and prints one table. See bench/README.md.
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import report  # noqa: E402
from benchlib.kube import ApiError, Kube  # noqa: E402
from benchlib.procs import Proc, http_ok, wait_quiet, wait_until  # noqa: E402
from benchlib.stats import median, percentile, summary  # noqa: E402

IMPLS = ("ours", "twin")
MANAGED = "app.kubernetes.io/managed-by=redis-operator"
RC_PATH = "/apis/redis.example.com/v1alpha1"

FULL = dict(runs=3, batch=1000, batches=5, nodes=6, rates=[500, 1000, 5000],
            load_seconds=8, peak_seconds=8, connections=32, peak_connections=64,
            settle_timeout=900)
QUICK = dict(runs=2, batch=100, batches=2, nodes=2, rates=[500, 1000, 5000],
             load_seconds=3, peak_seconds=3, connections=32, peak_connections=64,
             settle_timeout=600)
# Both operators read PodMetrics once per interval per RedisCluster; the
# default 15 s would make 5,000 clusters issue 333 aggregated-API reads/s and
# saturate this 2-core control plane. Same value for both.
METRICS_INTERVAL = "120s"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- processes

class Impl:
    """How to run one implementation's binaries."""

    def __init__(self, name, args, tmp):
        self.name, self.args, self.tmp = name, args, tmp

    def operator_argv(self, metrics_port, reconcile_log=None):
        bind = f"127.0.0.1:{metrics_port}"
        common = ["--metrics-bind", bind, "--manage-topology=false",
                  "--metrics-interval", METRICS_INTERVAL, "--concurrency", "8"]
        if self.name == "ours":
            binary = self.args.ours_probe if reconcile_log else self.args.ours_operator
            return [binary] + common, ({"RECONCILE_LOG": reconcile_log} if reconcile_log else {})
        extra = ["--reconcile-log", reconcile_log] if reconcile_log else []
        return [self.args.twin_operator] + common + extra, {}

    def webhook_argv(self, cert_dir, port, metrics_port):
        if self.name == "ours":
            return [self.args.ours_webhook, "serve", "--cert-dir", cert_dir,
                    "--bind", f"127.0.0.1:{port}", "--metrics-bind", f"127.0.0.1:{metrics_port}"]
        return [self.args.twin_webhook, "--cert-dir", cert_dir,
                "--bind", f"127.0.0.1:{port}", "--metrics-bind", f"127.0.0.1:{metrics_port}"]


_seq = 0


def start_operator(impl, kubeconfig, reconcile_log=None):
    global _seq
    _seq += 1
    port = free_port()
    argv, env = impl.operator_argv(port, reconcile_log)
    env = dict(env, KUBECONFIG=kubeconfig)
    p = Proc(f"{impl.name}-operator", argv, os.path.join(impl.tmp, f"{impl.name}-operator-{_seq}.log"), env=env)
    p.readyz = f"http://127.0.0.1:{port}/readyz"
    return p


READYZ_HANGS = {"ours": 0, "twin": 0}


def start_ready(impl, kubeconfig, reconcile_log=None, timeout=60, attempts=4):
    """Starts an operator and waits for /readyz. A start whose /readyz never
    turns ok is counted (`readyz_restarts` in the results), stopped and
    started again, so that one hang does not end the run.
    Returns (process, seconds from exec to ready)."""
    for _ in range(attempts):
        if reconcile_log and os.path.exists(reconcile_log):
            os.remove(reconcile_log)
        p = start_operator(impl, kubeconfig, reconcile_log)
        try:
            wait_until(f"{p.name} /readyz", lambda: http_ok(p.readyz, 1), timeout, 0.02, proc=p)
            return p, time.time() - p.started_at
        except TimeoutError:
            READYZ_HANGS[impl.name] += 1
            log(f"  {p.name}: /readyz not ok after {timeout}s (log {p.log_path}); restarting")
            p.stop()
    raise RuntimeError(f"{impl.name} operator never became ready in {attempts} starts")


# ------------------------------------------------------------ control plane

class ControlPlane:
    def __init__(self, args, nodes, tmp, tag):
        self.out = os.path.join(tmp, f"kubeconfig-{tag}.path")
        env = {"CLUSTER_TOOLS_BIN": args.tools_bin}
        self.proc = Proc(f"local-cluster-{tag}",
                         [args.local_cluster, "--nodes", str(nodes), "--kubeconfig-out", self.out],
                         os.path.join(tmp, f"local-cluster-{tag}.log"), env=env)
        wait_until("the local control plane", lambda: os.path.exists(self.out), 300, 0.5, proc=self.proc)
        self.kubeconfig = open(self.out).read().strip()
        self.kube = Kube(self.kubeconfig)
        self.kubectl = os.path.join(args.tools_bin, "kubectl")

    def apply_file(self, path):
        subprocess.run([self.kubectl, f"--kubeconfig={self.kubeconfig}", "apply", "-f", path],
                       check=True, capture_output=True, timeout=120)

    def stop(self):
        # local-cluster tears everything down on SIGINT.
        self.proc.stop(sig=signal.SIGINT, timeout=60)


def install_crd(cp, crd):
    cp.apply_file(crd)

    def established():
        o = cp.kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/redisclusters.redis.example.com")
        # Right after creation the status (and its conditions) can be null.
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in (o.get("status") or {}).get("conditions") or [])
    wait_until("CRD established", established, 60, 0.2)
    # Discovery of the new group can lag behind Established.
    wait_until("RedisCluster API served", lambda: _served(cp.kube), 60, 0.2)


def _served(kube):
    try:
        kube.get(f"{RC_PATH}/redisclusters?limit=1")
        return True
    except ApiError:
        return False


def redis_cluster(name, ns):
    return {
        "apiVersion": "redis.example.com/v1alpha1", "kind": "RedisCluster",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 1, "shard_count": 1, "scaling_threshold": 70.0,
                 "scale_down_stabilization_seconds": 300, "scale_up_cooldown_seconds": 60,
                 "autoscaling_paused": False, "image": "redis:7.2",
                 # 10m: kwok nodes offer 32 CPUs and 1,000 pods each, so
                 # 5,000 pods fit on 6 nodes (with 100m only 320 per node).
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
    }


def create_clusters(kube, ns, n):
    kube.ensure_namespace(ns)
    # A new namespace's default ServiceAccount is not needed: pods are made by
    # the StatefulSet controller with the default SA created asynchronously,
    # and kwok does not check it. Create the RedisClusters on 8 connections.

    def one(i):
        try:
            kube.create(f"{RC_PATH}/namespaces/{ns}/redisclusters", redis_cluster(f"rc-{i:05d}", ns))
        except ApiError as e:
            if e.status != 409:
                raise
    kube.parallel(one, range(n))


def children_progress(kube, ns, n):
    """(done, detail): every RedisCluster has a status for its generation and
    all its children (StatefulSet, 2 Services, ConfigMap, PDB) exist."""
    rcs = kube.list(f"{RC_PATH}/namespaces/{ns}/redisclusters")
    with_status = sum(1 for o in rcs
                      if (o.get("status") or {}).get("observed_generation") == o["metadata"].get("generation"))
    counts = {}
    for kind, path in (("sts", f"/apis/apps/v1/namespaces/{ns}/statefulsets"),
                       ("svc", f"/api/v1/namespaces/{ns}/services"),
                       ("cm", f"/api/v1/namespaces/{ns}/configmaps"),
                       ("pdb", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets")):
        counts[kind] = len(kube.list_meta(path, MANAGED))
    done = (len(rcs) == n and with_status == n and counts["sts"] == n and counts["svc"] == 2 * n
            and counts["cm"] == n and counts["pdb"] == n)
    return done, dict(counts, rcs=len(rcs), status=with_status)


def all_ready(kube, ns, n):
    rcs = kube.list(f"{RC_PATH}/namespaces/{ns}/redisclusters")
    ready = sum(1 for o in rcs if (o.get("status") or {}).get("phase") == "Ready")
    return ready == n, ready


# ---------------------------------------------------------------- operators

def reconcile_lines(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]
    except (OSError, ValueError):
        return []


def wait_reconciles(path, at_least, proc, quiet=2.0, timeout=300):
    """Waits until the log has `at_least` lines and no new line for `quiet` s."""
    deadline = time.time() + timeout
    last_n, last_change = -1, time.time()
    while time.time() < deadline:
        proc.check()
        n = len(reconcile_lines(path))
        if n != last_n:
            last_n, last_change = n, time.time()
        elif n >= at_least and time.time() - last_change >= quiet:
            return n
        time.sleep(0.25)
    log(f"  warning: {path}: {last_n} reconciles, wanted {at_least} (timed out)")
    return last_n


def measure_idle(impl, cp, runs):
    rss, ready = [], []
    for _ in range(runs):
        p, t = start_ready(impl, cp.kubeconfig, timeout=20)
        try:
            ready.append(t)
            wait_quiet(p, window=2.0, timeout=30)
            rss.append(p.rss_mib())
        finally:
            p.stop()
    return rss, ready


def measure_first_reconcile(impl, cp, runs):
    ns = "bench-first"
    create_clusters(cp.kube, ns, 1)
    out = []
    for r in range(runs):
        trace = os.path.join(impl.tmp, f"{impl.name}-first-{r}.jsonl")
        p = start_operator(impl, cp.kubeconfig, reconcile_log=trace)
        try:
            wait_until("first reconcile", lambda: reconcile_lines(trace), 120, 0.01, proc=p)
            first = min(line["start_us"] for line in reconcile_lines(trace)) / 1e6
            out.append((first - p.started_at) * 1000)
        finally:
            p.stop()
    cp.kube.delete(f"/api/v1/namespaces/{ns}")
    return out


def measure_rss_at(impl, cp, runs):
    """Fresh process per run: caches filled from the API, initial reconciles
    done (CPU quiet), then VmRSS."""
    rss, quiet_ok = [], []
    for _ in range(runs):
        p, _ = start_ready(impl, cp.kubeconfig)
        try:
            quiet_ok.append(wait_quiet(p, window=3.0, max_cpu_frac=0.05, timeout=180))
            rss.append(p.rss_mib())
        finally:
            p.stop()
    return rss, quiet_ok


def measure_reconciles(impl, cp, ns, n, runs, writes=True):
    """Per-reconcile durations from the instrumented builds, by what the
    reconcile did: no API call (no-op), GETs only (PodMetrics read), or any
    write. Triggers: operator start (every cluster once), an annotation on
    every StatefulSet (no-op), deleting every ConfigMap (re-applied) and a
    spec change on every RedisCluster (status write)."""
    kube = cp.kube
    sts_names = [o["metadata"]["name"] for o in kube.list_meta(f"/apis/apps/v1/namespaces/{ns}/statefulsets", MANAGED)]
    rc_names = [o["metadata"]["name"] for o in kube.list_meta(f"{RC_PATH}/namespaces/{ns}/redisclusters")]
    per_run = []
    for r in range(runs):
        trace = os.path.join(impl.tmp, f"{impl.name}-reconciles-{ns}-{r}.jsonl")
        p, _ = start_ready(impl, cp.kubeconfig, reconcile_log=trace)
        try:
            seen = wait_reconciles(trace, n, p)
            kube.parallel(lambda s: kube.merge_patch(
                f"/apis/apps/v1/namespaces/{ns}/statefulsets/{s}",
                {"metadata": {"annotations": {"bench.redis.example.com/touch": f"{uuid.uuid4()}"}}}), sts_names)
            seen = wait_reconciles(trace, seen + len(sts_names), p)
            if writes:
                kube.delete(f"/api/v1/namespaces/{ns}/configmaps?" + urllib.parse.urlencode({"labelSelector": MANAGED}))
                seen = wait_reconciles(trace, seen + len(rc_names), p)
                threshold = 60.0 + r
                kube.parallel(lambda c: kube.merge_patch(
                    f"{RC_PATH}/namespaces/{ns}/redisclusters/{c}", {"spec": {"scaling_threshold": threshold}}),
                    rc_names)
                wait_reconciles(trace, seen + len(rc_names), p)
        finally:
            p.stop()
        per_run.append(classify(reconcile_lines(trace)))
    return per_run


def classify(lines):
    """Percentiles of the wall-clock duration of the reconcile function
    (entry to return) by group; for ours also of the CPU time its polls used
    (`cpu_us`, the probe's thread CPU clock), which tells work from time
    spent descheduled, of the wall time inside those polls (`busy_us`), of
    the wait in kube-runtime's queue before it ran (`wait_us`) and of the
    whole run of kube-runtime's future, requeue handoff included
    (`total_us`)."""
    groups = {"noop": [], "read": [], "write": []}
    extra = {f: {k: [] for k in groups} for f in ("busy", "cpu", "wait", "total")}
    for line in lines:
        key = "write" if line["writes"] else ("read" if line["reads"] else "noop")
        groups[key].append(line["dur_us"] / 1000)
        for field, values in extra.items():
            if f"{field}_us" in line:
                values[key].append(line[f"{field}_us"] / 1000)
    out = {}
    for k, v in groups.items():
        out[k] = {"count": len(v), "p50": percentile(v, 50) if v else None,
                  "p99": percentile(v, 99) if v else None}
        for field, values in extra.items():
            if values[k]:
                out[k][f"{field}_p50"] = percentile(values[k], 50)
                out[k][f"{field}_p99"] = percentile(values[k], 99)
    return out


def operator_phase(impl, args, cfg):
    res = {"rss_by_size": {}, "create": [], "quiet": {}}
    log(f"{impl.name}: starting a control plane with {cfg['nodes']} kwok nodes")
    cp = ControlPlane(args, cfg["nodes"], impl.tmp, impl.name)
    try:
        install_crd(cp, args.crd)
        log(f"{impl.name}: idle RSS ({cfg['runs']} runs)")
        rss, ready = measure_idle(impl, cp, cfg["runs"])
        res["rss_by_size"]["0"] = rss
        res["time_to_ready_s"] = ready
        log(f"{impl.name}:   {fmt_list(rss)} MiB; ready after {fmt_list(ready)} s")
        log(f"{impl.name}: time to first reconcile ({cfg['runs']} runs)")
        res["first_reconcile_ms"] = measure_first_reconcile(impl, cp, cfg["runs"])
        log(f"{impl.name}:   {fmt_list(res['first_reconcile_ms'])} ms")
        n = cfg["batch"]
        for b in range(cfg["batches"]):
            ns = f"bench-{b}"
            p, _ = start_ready(impl, cp.kubeconfig)
            try:
                wait_quiet(p, window=3.0, timeout=180)
                log(f"{impl.name}: creating {n} RedisClusters in {ns} ({b * n} exist)")
                cpu0, t0 = p.cpu_seconds(), time.time()
                create_clusters(cp.kube, ns, n)
                t_created = time.time()
                wait_until(f"{n} RedisClusters with children and status",
                           lambda: children_progress(cp.kube, ns, n)[0], 1800, 0.5, proc=p)
                t1, cpu1 = time.time(), p.cpu_seconds()
                res["create"].append({"existing": b * n, "seconds": t1 - t0, "create_seconds": t_created - t0,
                                      "cpu_seconds": cpu1 - cpu0, "rss_after_mib": p.rss_mib(),
                                      "hwm_mib": p.hwm_mib()})
                log(f"{impl.name}:   all children and status after {t1 - t0:.1f}s, "
                    f"{cpu1 - cpu0:.2f} CPU-s, RSS {p.rss_mib():.1f} MiB")
                # The StatefulSet controller then makes the pods (at its own
                # client rate limit); the operator keeps running and marks
                # the clusters Ready.
                t_settle = time.time()
                ok = True
                try:
                    wait_until(f"{n} RedisClusters Ready", lambda: all_ready(cp.kube, ns, n)[0],
                               cfg["settle_timeout"], 2.0, proc=p)
                except TimeoutError:
                    ok = False
                    log(f"{impl.name}:   warning: only {all_ready(cp.kube, ns, n)[1]} of {n} Ready")
                res["create"][-1]["settle_seconds"] = time.time() - t_settle
                res["create"][-1]["all_ready"] = ok
                log(f"{impl.name}:   pods settled after {time.time() - t_settle:.0f}s more")
            finally:
                p.stop()
            size = (b + 1) * n
            # Full runs at the sizes in the table, one run in between (the plot).
            runs = cfg["runs"] if b in (0, cfg["batches"] - 1) else 1
            log(f"{impl.name}: RSS with {size} RedisClusters ({runs} runs)")
            rss, quiet = measure_rss_at(impl, cp, runs)
            res["rss_by_size"][str(size)] = rss
            res["quiet"][str(size)] = quiet
            log(f"{impl.name}:   {fmt_list(rss)} MiB")
            if b == 0:
                log(f"{impl.name}: reconcile durations with {n} RedisClusters ({cfg['runs']} runs)")
                res["reconciles"] = measure_reconciles(impl, cp, ns, n, cfg["runs"])
                for run in res["reconciles"]:
                    log(f"{impl.name}:   " + ", ".join(
                        f"{k}: n={v['count']} p50={fmt(v['p50'])} p99={fmt(v['p99'])} ms" for k, v in run.items()))
        # No-op reconciles again with every cluster in the caches: whether a
        # reconcile's cost grows with the number of clusters.
        log(f"{impl.name}: no-op reconcile durations with {n * cfg['batches']} RedisClusters (1 run)")
        res["reconciles_large"] = measure_reconciles(impl, cp, f"bench-{cfg['batches'] - 1}", n, 1, writes=False)
        for run in res["reconciles_large"]:
            log(f"{impl.name}:   " + ", ".join(
                f"{k}: n={v['count']} p50={fmt(v['p50'])} p99={fmt(v['p99'])} ms" for k, v in run.items()))
    finally:
        cp.stop()
    return res


# ----------------------------------------------------------------- webhooks

MUTATE_BODY = {
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "redis.example.com", "version": "v1alpha1", "kind": "RedisCluster"},
        "resource": {"group": "redis.example.com", "version": "v1alpha1", "resource": "redisclusters"},
        "requestKind": {"group": "redis.example.com", "version": "v1alpha1", "kind": "RedisCluster"},
        "requestResource": {"group": "redis.example.com", "version": "v1alpha1", "resource": "redisclusters"},
        "name": "demo", "namespace": "team-a", "operation": "CREATE",
        "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]},
        "object": {"apiVersion": "redis.example.com/v1alpha1", "kind": "RedisCluster",
                   "metadata": {"name": "demo", "namespace": "team-a"},
                   "spec": {"replicas": 3, "shard_count": 3}},
        "oldObject": None, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    },
}


def https_post(port, path, body, cafile):
    import http.client
    ctx = ssl.create_default_context(cafile=cafile)
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    tls = c.sock.version()
    c.close()
    return r.status, json.loads(data), tls


def check_webhook_answer(name, port, cafile):
    """Both implementations must answer the benchmark request the same way."""
    status, review, tls = https_post(port, "/mutate", json.dumps(MUTATE_BODY).encode(), cafile)
    resp = review.get("response", {})
    if status != 200 or not resp.get("allowed") or resp.get("uid") != MUTATE_BODY["request"]["uid"]:
        raise RuntimeError(f"{name}: unexpected /mutate answer: {status} {review}")
    patch = resp.get("patch")
    import base64
    ops = json.loads(base64.b64decode(patch)) if isinstance(patch, str) else json.loads(bytes(patch))
    return sorted(op["path"] for op in ops), tls


def oha(args, url, body_file, cafile, seconds, connections, rate=None):
    argv = ["taskset", "-c", "0", args.oha, "--no-tui", "--output-format", "json",
            "-z", f"{seconds}s", "-c", str(connections), "-w",
            "-m", "POST", "-T", "application/json", "-D", body_file, "--cacert", cafile]
    if rate:
        argv += ["-q", str(rate), "--latency-correction"]
    argv.append(url)
    before = os.times()
    out = subprocess.run(argv, check=True, capture_output=True, timeout=seconds + 60)
    after = os.times()
    r = json.loads(out.stdout)
    codes = r.get("statusCodeDistribution", {})
    return {
        "rps": r["metrics"]["requests_per_sec"],
        "p50_ms": r["metrics"]["latency_ms"]["p50"],
        "p99_ms": r["metrics"]["latency_ms"]["p99"],
        "success_rate": r["summary"]["successRate"],
        "non_200": sum(v for k, v in codes.items() if k != "200"),
        "errors": r.get("errorDistribution", {}),
        "loadgen_cpu_s": (after.children_user + after.children_system) - (before.children_user + before.children_system),
    }


class RssSampler:
    """Samples a process's VmRSS every 100 ms on a thread; keeps the maximum."""

    def __init__(self, proc):
        import threading
        self.proc, self.max, self.stop_flag = proc, 0.0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_flag:
            try:
                self.max = max(self.max, self.proc.rss_mib())
            except (OSError, KeyError):
                return
            time.sleep(0.1)

    def stop(self):
        self.stop_flag = True
        self.t.join()
        return self.max


def webhook_phase(impls, args, cfg, tmp):
    certs = os.path.join(tmp, "certs")
    subprocess.run([args.ours_webhook, "certs", "generate", "--out", certs, "--san", "127.0.0.1"],
                   check=True, capture_output=True)
    cafile = os.path.join(certs, "ca.crt")
    body_file = os.path.join(tmp, "mutate-review.json")
    with open(body_file, "w") as f:
        json.dump(MUTATE_BODY, f)
    res = {i.name: {"idle_rss": [], "load_rss": [], "peak": [], "rates": {str(r): [] for r in cfg["rates"]}}
           for i in impls}
    answers = {}
    for rep in range(cfg["runs"]):
        order = impls if rep % 2 == 0 else list(reversed(impls))
        for impl in order:
            port, mport = free_port(), free_port()
            p = Proc(f"{impl.name}-webhook", impl.webhook_argv(certs, port, mport),
                     os.path.join(tmp, f"{impl.name}-webhook-{rep}.log"), cpus="1")
            try:
                wait_until(f"{impl.name} webhook ready", lambda: http_ok(f"http://127.0.0.1:{mport}/readyz", 1),
                           30, 0.05, proc=p)
                answers[impl.name] = check_webhook_answer(impl.name, port, cafile)
                time.sleep(0.5)
                r = res[impl.name]
                r["idle_rss"].append(p.rss_mib())
                url = f"https://127.0.0.1:{port}/mutate"
                sampler = RssSampler(p)
                oha(args, url, body_file, cafile, 2, cfg["connections"])  # warm-up
                for rate in cfg["rates"]:
                    out = oha(args, url, body_file, cafile, cfg["load_seconds"], cfg["connections"], rate)
                    r["rates"][str(rate)].append(out)
                    log(f"webhook {impl.name} @{rate}/s: {out['rps']:.0f}/s p50 {out['p50_ms']:.2f} ms "
                        f"p99 {out['p99_ms']:.2f} ms, non-200 {out['non_200']}")
                out = oha(args, url, body_file, cafile, cfg["peak_seconds"], cfg["peak_connections"])
                r["peak"].append(out)
                r["load_rss"].append(sampler.stop())
                log(f"webhook {impl.name} peak: {out['rps']:.0f}/s p50 {out['p50_ms']:.2f} ms "
                    f"p99 {out['p99_ms']:.2f} ms; oha used {out['loadgen_cpu_s'] / cfg['peak_seconds']:.2f} "
                    f"cores; max RSS {r['load_rss'][-1]:.1f} MiB")
                p.check()
            finally:
                p.stop()
    if answers.get("ours", (None,))[0] != answers.get("twin", (None,))[0]:
        raise RuntimeError(f"the webhooks disagree on the defaulting patch: {answers}")
    for name, (paths, tls) in answers.items():
        res[name]["patch_paths"], res[name]["tls_version"] = paths, tls
    return res


# ------------------------------------------------------------------ machine

def cmd_out(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine(args):
    cpu = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem_kib = None
    go_mod = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "go-twin", "go.mod")).read()
    cargo_lock = open(os.path.join(args.repo, "Cargo.lock")).read()

    def lock_version(name):
        m = re.search(rf'name = "{re.escape(name)}"\nversion = "([^"]+)"', cargo_lock)
        return m.group(1) if m else None

    def go_version(mod):
        m = re.search(rf"{re.escape(mod)} (v\S+)", go_mod)
        return m.group(1) if m else None
    versions = open(os.path.join(args.repo, "tests", "cluster", "versions.env")).read()
    kube_version = re.search(r"KUBERNETES_VERSION=(\S+)", versions)
    return {
        "cpu_model": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(), "os": cmd_out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "loadavg_at_start": os.getloadavg(),
        "versions": {
            "rustc": cmd_out(["rustc", "--version"]), "go": cmd_out(["go", "version"]),
            "python": platform.python_version(), "oha": cmd_out([args.oha, "--version"]),
            "kube (kube-rs)": lock_version("kube"), "k8s-openapi": lock_version("k8s-openapi"),
            "axum": lock_version("axum"), "rustls": lock_version("rustls"),
            "controller-runtime": go_version("sigs.k8s.io/controller-runtime"),
            "client-go": go_version("k8s.io/client-go"),
            "kubernetes (control plane)": kube_version.group(1) if kube_version else None,
            "git commit": cmd_out(["git", "-C", args.repo, "rev-parse", "--short", "HEAD"]),
            "git dirty": bool(cmd_out(["git", "-C", args.repo, "status", "--porcelain", "--", ".", ":!bench"])),
        },
    }


def stripped_size_mib(path, tmp):
    out = os.path.join(tmp, os.path.basename(path) + ".stripped")
    subprocess.run(["strip", "-o", out, path], check=True)
    return os.path.getsize(out) / 1024 / 1024


# --------------------------------------------------------------------- main

def fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def fmt_list(xs):
    return ", ".join(fmt(x) for x in xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in ("repo", "tools-bin", "local-cluster", "crd", "ours-operator", "ours-probe", "ours-webhook",
              "twin-operator", "twin-webhook", "oha", "results"):
        ap.add_argument(f"--{a}", required=True)
    ap.add_argument("--slots", help="JSON written by slot-bench (make bench-slots), folded into the results")
    ap.add_argument("--quick", action="store_true", help="small sizes and fewer runs, for development")
    ap.add_argument("--only", choices=["operator", "webhook"], help="run one half only")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else FULL)

    started = time.time()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    tmp = os.path.join(args.results, "tmp", stamp)
    os.makedirs(tmp, exist_ok=True)
    impls = [Impl(n, args, tmp) for n in IMPLS]
    log(f"{'quick' if args.quick else 'full'} run; scratch files in {tmp}")

    results = {i.name: {} for i in impls}
    for impl in impls:
        results[impl.name]["binary_mib"] = {
            "operator": stripped_size_mib(args.ours_operator if impl.name == "ours" else args.twin_operator, tmp),
            "webhook": stripped_size_mib(args.ours_webhook if impl.name == "ours" else args.twin_webhook, tmp),
        }
    if args.only in (None, "webhook"):
        log("webhooks: server on CPU 1, oha on CPU 0")
        for name, r in webhook_phase(impls, args, cfg, tmp).items():
            results[name]["webhook"] = r
    if args.only in (None, "operator"):
        for impl in impls:
            results[impl.name]["operator"] = operator_phase(impl, args, cfg)

    doc = {
        "schema": 1, "started_at": stamp, "duration_seconds": round(time.time() - started),
        "quick": args.quick, "config": dict(cfg, metrics_interval=METRICS_INTERVAL, concurrency=8),
        "machine": machine(args), "results": results,
        "readyz_restarts": READYZ_HANGS,
    }
    if args.slots and os.path.exists(args.slots):
        with open(args.slots) as f:
            doc["slots"] = json.load(f)
        doc["slots"]["measured_at"] = dt.datetime.fromtimestamp(
            os.path.getmtime(args.slots), dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    doc["table"] = report.rows(doc)
    # Quick runs are for development: they stay with the scratch files. A
    # run of one half is kept under its own name and replaces no full run.
    partial = args.quick or args.only is not None
    name = f"{stamp}-{args.only}" if args.only and not args.quick else stamp
    path = os.path.join(tmp if args.quick else args.results, f"{name}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    png = path[:-len(".json")] + ".png"
    report.plot(doc, png)
    if not partial:
        shutil.copyfile(path, os.path.join(args.results, "latest.json"))
        shutil.copyfile(png, os.path.join(args.results, "latest.png"))
    print()
    print(report.text(doc))
    print(f"\nwrote {path} and {png}" + ("" if partial else " (and latest.json, latest.png)"))
    print(f"make bench took {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
