#!/usr/bin/env python3
"""Live end-to-end check of deploy/prometheus against a running normserved.

Starts normserved and a real Prometheus (Debian's `prometheus`) on 127.0.0.1 with free ports;
Prometheus scrapes the server every second and evaluates deploy/prometheus/rules every second.
Sends requests through the `normserve` CLI, then asks Prometheus's HTTP API for the per-norm
latency series and the recording rules' results. Every wait is bounded; both processes are
stopped on exit.

    e2e_prometheus.py --normserved BIN --cli BIN --repository DIR [--results FILE]

Each check prints one line `PASS|FAIL|SKIP <name>: <detail>` (also appended to --results)."""
import argparse
import json
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

import deploy_common as dc

# The bundled models and one request each (DESIGN.md section 8's CLI).
REQUESTS = {
    "deen": ["translate", "--model", "deen", "Guten Morgen"],
    "enlm": ["score", "--model", "enlm", "hello world"],
}
# Seed 3 continues "the house" with several tokens, so that the inter-token latency has samples.
GENERATE = ["generate", "--model", "enlm", "--max-new-tokens", "4", "--seed", "3", "the house"]
BROKEN = "e2e_broken"  # a model whose config.json does not parse
# Variant group "e2e_shadowed": a copy of enlm and, as its shadow, another copy, so that the
# shadow-traffic metrics have samples (README "Shadow traffic").
SHADOWED = "e2e_shadowed"
SHADOW_REQUESTS = [["score", "--model", SHADOWED, "hello world"],
                   ["generate", "--model", SHADOWED, "--max-new-tokens", "4", "--seed", "3",
                    "the house"]]
LATENCY_RULES = [f"model_norm:normserve_request_duration_seconds:{q}_5m" for q in ("p50", "p95", "p99", "mean")]


class E2E:
    def __init__(self, args):
        self.args = args
        self.procs = []
        self.results = []
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="normserve-deploy-e2e-"))

    # ---- reporting -------------------------------------------------------------------------
    def report(self, status, name, detail=""):
        line = f"{status} {name}" + (f": {detail}" if detail else "")
        print(line, flush=True)
        self.results.append(line)
        if self.args.results:
            with open(self.args.results, "a") as f:
                f.write(line + "\n")
        return status == "PASS"

    # ---- processes -------------------------------------------------------------------------
    def start(self, name, cmd):
        log = open(self.tmp / f"{name}.log", "w")
        print(f"  starting {name}: {' '.join(map(str, cmd))}", flush=True)
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append((name, p))
        return p

    def log_tail(self, name, n=30):
        path = self.tmp / f"{name}.log"
        if not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()[-n:]
        return "\n".join("    | " + l for l in lines)

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 15
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs = []

    # ---- helpers ---------------------------------------------------------------------------
    @staticmethod
    def free_port():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def cli(self, *argv, timeout=60):
        cmd = [self.args.cli, "--server", f"127.0.0.1:{self.grpc_port}", *argv]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            return r.returncode, (r.stdout + r.stderr).strip()
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout}s"
        except OSError as e:
            return 126, f"cannot run {self.args.cli}: {e}"

    def http_get(self, url, timeout=5):
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()

    def prom(self, path, **params):
        url = f"http://127.0.0.1:{self.prom_port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return json.loads(self.http_get(url))

    def query(self, q):
        try:
            d = self.prom("/api/v1/query", query=q)
        except Exception:  # noqa: BLE001 - the caller's bounded wait reports what was missing
            return []
        return d.get("data", {}).get("result", []) if d.get("status") == "success" else []

    @staticmethod
    def finite(sample):
        try:
            return math.isfinite(float(sample["value"][1]))
        except (KeyError, ValueError, TypeError):
            return False

    # ---- the test --------------------------------------------------------------------------
    def run(self):
        a = self.args
        repo = pathlib.Path(a.repository).resolve()
        models = [m for m in REQUESTS if (repo / m).is_dir()]
        for m in REQUESTS:
            if m not in models:
                self.report("SKIP", f"requests to {m}", f"{repo} has no model {m}")
        if not models:
            return self.report("FAIL", "model repository", f"none of {sorted(REQUESTS)} in {repo}")

        # The server gets copies of the repository's models (a linked model directory is
        # refused: README, Security) plus one broken model, so that a
        # load failure is counted (normserve_model_load_failures_total appears only then) and
        # NormserveModelLoadFailed must fire for it and for nothing else.
        if a.broken_model:
            served_repo = self.tmp / "repository"
            served_repo.mkdir()
            for entry in sorted(repo.iterdir()):
                if entry.is_dir() and not entry.name.startswith("."):
                    shutil.copytree(entry, served_repo / entry.name)
            (served_repo / BROKEN / "1").mkdir(parents=True)
            (served_repo / BROKEN / "1" / "config.json").write_text("{ this is not JSON\n")
            if (repo / "enlm").is_dir():
                for member, extra in (("e2e_primary", {}),
                                      ("e2e_shadow", {"shadow": {"fraction": 1.0}})):
                    shutil.copytree(repo / "enlm", served_repo / member)
                    (served_repo / member / "model.json").write_text(
                        json.dumps({"group": SHADOWED, **extra}))
        else:
            served_repo = repo

        # 1. normserved on loopback.
        self.grpc_port, self.metrics_port, self.prom_port = self.free_port(), self.free_port(), self.free_port()
        server = self.start("normserved", [a.normserved, "--model-repository", str(served_repo),
                                           "--grpc-address", f"127.0.0.1:{self.grpc_port}",
                                           "--metrics-address", f"127.0.0.1:{self.metrics_port}"])
        deadline, healthy, out = time.time() + a.startup_timeout, False, ""
        while time.time() < deadline and server.poll() is None:
            rc, out = self.cli("health", timeout=10)
            if rc == 0:
                healthy = True
                break
            time.sleep(0.5)
        if not self.report("PASS" if healthy else "FAIL", "normserved starts and `normserve health` exits 0",
                           f"127.0.0.1:{self.grpc_port}" if healthy else
                           f"exit {server.poll()}, last health output: {out}\n{self.log_tail('normserved')}"):
            return False

        # 2. Prometheus with the project's rules, 1 s scrape and evaluation.
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in dc.RULE_FILES],
            "scrape_configs": [{"job_name": "normserve", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"127.0.0.1:{self.metrics_port}"]}]}],
        }
        cfg_path = self.tmp / "prometheus.yml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        r = subprocess.run(["promtool", "check", "config", str(cfg_path)], capture_output=True, text=True, timeout=60)
        self.report("PASS" if r.returncode == 0 else "FAIL", "promtool check config (e2e config with deploy rules)",
                    next((l.strip() for l in r.stdout.splitlines() if "valid" in l), "ok")
                    if r.returncode == 0 else r.stdout + r.stderr)
        prom = self.start("prometheus", ["prometheus", f"--config.file={cfg_path}",
                                         f"--storage.tsdb.path={self.tmp / 'data'}",
                                         f"--web.listen-address=127.0.0.1:{self.prom_port}",
                                         "--storage.tsdb.retention.time=1h"])
        deadline, ready = time.time() + 30, False
        while time.time() < deadline and prom.poll() is None:
            try:
                self.http_get(f"http://127.0.0.1:{self.prom_port}/-/ready", timeout=2)
                ready = True
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        if not self.report("PASS" if ready else "FAIL", "prometheus starts on loopback",
                           f"127.0.0.1:{self.prom_port}" if ready else self.log_tail("prometheus")):
            return False

        deadline, up = time.time() + 30, []
        while time.time() < deadline:
            up = self.query('up{job="normserve"} == 1')
            if up:
                break
            time.sleep(0.5)
        if not self.report("PASS" if up else "FAIL", "prometheus scrapes normserved's /metrics",
                           "" if up else "up{job=\"normserve\"} never became 1"):
            return False

        # 3. Requests through the CLI (a first round creates the series).
        def send_round():
            outs = {}
            for m in models:
                outs[" ".join(REQUESTS[m])] = self.cli(*REQUESTS[m])
            if "enlm" in models:  # the Generate metrics (time to first token, between tokens)
                outs[" ".join(GENERATE)] = self.cli(*GENERATE)
            if "enlm" in models and a.broken_model:  # copies for the shadow member
                for request in SHADOW_REQUESTS:
                    outs[" ".join(request)] = self.cli(*request)
            return outs

        outs = send_round()
        ok = all(rc == 0 for rc, _ in outs.values())
        self.report("PASS" if ok else "FAIL", "CLI requests succeed",
                    "; ".join(f"{cmd} -> exit {rc}: {o[:120]!r}" for cmd, (rc, o) in outs.items()))
        if not ok:
            return False

        # 4. Metric names used by deploy/ against this live scrape.
        time.sleep(1.5)
        send_round()
        scrape = self.tmp / "metrics.txt"
        scrape.write_text(self.http_get(f"http://127.0.0.1:{self.metrics_port}/metrics"))
        r = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("check_metrics.py")),
                            "--scrape", str(scrape)], capture_output=True, text=True, timeout=60)
        print("\n".join("    " + l for l in (r.stdout + r.stderr).strip().splitlines()))
        last = (r.stdout.strip().splitlines() or ["no output"])[-1]
        self.report("PASS" if r.returncode == 0 else "FAIL",
                    "metric names in dashboards/rules/adapter are exported or pending", last)
        families = {l.split()[2] for l in scrape.read_text().splitlines() if l.startswith("# TYPE ")}

        # 5. Poll Prometheus for the per-norm latency series and the recording rules, sending a
        #    request round every ~2 s so that rates stay non-zero. Bounded by --timeout.
        checks = {
            "per-norm latency series (histogram_quantile by model, norm)":
                "histogram_quantile(0.95, sum by (model, norm, le) (rate(normserve_request_duration_seconds_bucket[1m])))",
        }
        for rule in LATENCY_RULES:
            checks[f"recording rule {rule}"] = rule
        checks["recording rule model_norm_code:normserve_requests:rate5m{code=\"OK\"}"] = \
            'model_norm_code:normserve_requests:rate5m{code="OK"}'
        optional = {
            "normserve_queue_duration_seconds": [f"model:normserve_queue_duration_seconds:{q}_5m"
                                                 for q in ("p50", "p95", "p99", "mean")],
        }
        for fam, rules in optional.items():
            for rule in rules:
                if fam in families:
                    checks[f"recording rule {rule}"] = rule
                else:
                    self.report("SKIP", f"recording rule {rule}", f"{fam} is not exported yet (deploy/metrics-pending.txt)")

        def satisfied(result):
            got = {s["metric"].get("model") for s in result if self.finite(s) and s["metric"].get("norm", "x")}
            return set(models) <= got

        deadline = time.time() + a.timeout
        last_round = time.time()
        seen = {}
        while time.time() < deadline:
            for name, q in checks.items():
                if name not in seen or not satisfied(seen[name]):
                    seen[name] = self.query(q)
            if all(satisfied(v) for v in seen.values()):
                break
            if time.time() - last_round > 2:
                send_round()
                last_round = time.time()
            time.sleep(0.5)
        for name, q in checks.items():
            res = seen.get(name, [])
            detail = ", ".join(f"{{model={s['metric'].get('model')}, norm={s['metric'].get('norm')}}} "
                               f"= {float(s['value'][1]):.4g}" for s in res)
            if satisfied(res):
                self.report("PASS", name, detail)
            else:
                hint = ""
                if 'code="OK"' in q:
                    codes = sorted({s["metric"].get("code") for s in
                                    self.query("count by (code) (normserve_requests_total)")})
                    hint = (f"; code label values scraped: {codes} (the rules and the dashboard "
                            "expect gRPC status names: OK, INTERNAL, RESOURCE_EXHAUSTED...)")
                self.report("FAIL", name, f"no finite series for every model of {models} within "
                                          f"{a.timeout:.0f}s; query `{q}` returned: {detail or 'nothing'}{hint}")

        # 6. The latency series carry the norm of the model that served them.
        ready = {s["metric"].get("model"): s["metric"].get("norm")
                 for s in self.query("normserve_model_ready == 1")}
        lat = {s["metric"].get("model"): s["metric"].get("norm")
               for s in seen.get(f"recording rule {LATENCY_RULES[1]}", [])}
        mism = {m: (ready.get(m), lat.get(m)) for m in models if ready.get(m) != lat.get(m)}
        self.report("PASS" if not mism else "FAIL", "latency series' norm label = the ready model's norm label",
                    ", ".join(f"{m}: {n}" for m, n in lat.items()) if not mism else f"ready vs latency: {mism}")

        # 7. Every rule of deploy/prometheus/rules evaluates without error against real series.
        deadline, bad, unknown, groups = time.time() + 15, [], [], []
        while time.time() < deadline:
            groups = self.prom("/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") == "err"]
            unknown = [r["name"] for r in rules if r.get("health") not in ("ok", "err")]
            if not unknown:
                break
            time.sleep(0.5)
        n_rules = sum(len(g["rules"]) for g in groups)
        expected = sum(len(g["rules"]) for f in dc.RULE_FILES for g in yaml.safe_load(f.read_text())["groups"])
        self.report("PASS" if not bad and not unknown and n_rules == expected else "FAIL",
                    "all recording and alerting rules load and evaluate without error",
                    f"{n_rules}/{expected} rules in {len(groups)} groups, errors: {bad or 'none'}, "
                    f"not yet evaluated: {unknown or 'none'}")

        # 8. Alerts against real series: the broken model raises NormserveModelLoadFailed (no
        #    `for`, so it fires at once); the served models raise none of the alerts that say
        #    the server is broken.
        deadline, alerts, load_failed = time.time() + 15, [], []
        while time.time() < deadline:
            alerts = self.prom("/api/v1/alerts")["data"]["alerts"]
            load_failed = sorted(al["labels"].get("model") for al in alerts
                                 if al["labels"]["alertname"] == "NormserveModelLoadFailed"
                                 and al["state"] == "firing")
            if not a.broken_model or load_failed:
                break
            time.sleep(0.5)
        if a.broken_model:
            self.report("PASS" if load_failed == [BROKEN] else "FAIL",
                        f"NormserveModelLoadFailed fires for the broken model {BROKEN} only",
                        f"firing for: {load_failed or 'nothing'}")
        active = [f"{al['labels']['alertname']} {al['labels'].get('model', '')} ({al['state']})" for al in alerts
                  if al["labels"]["alertname"] in ("NormserveNoReadyModel", "NormserveHighErrorRatio")
                  or (al["labels"]["alertname"] == "NormserveModelLoadFailed" and al["labels"].get("model") != BROKEN)]
        self.report("PASS" if not active else "FAIL",
                    "no NoReadyModel/HighErrorRatio alert and no load-failure alert for the served models",
                    ", ".join(active) if active else f"{len(alerts)} alerts active in total")
        if server.poll() is not None:
            self.report("FAIL", "normserved still running", f"exited with {server.poll()}\n{self.log_tail('normserved')}")
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--normserved", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--repository", required=True)
    ap.add_argument("--results", help="append PASS/FAIL/SKIP lines here")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for the series")
    ap.add_argument("--startup-timeout", type=float, default=90, help="seconds to wait for SERVING")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, TSDB)")
    ap.add_argument("--no-broken-model", dest="broken_model", action="store_false",
                    help=f"serve the repository as it is, without the extra unloadable model {BROKEN}")
    args = ap.parse_args()
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            print(f"FAIL e2e: {tool} not on PATH (Debian package prometheus)")
            return 1
    e = E2E(args)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        e.run()
    finally:
        e.stop_all()
        if args.keep:
            print(f"  logs and data kept in {e.tmp}")
        else:
            shutil.rmtree(e.tmp, ignore_errors=True)
    failed = [r for r in e.results if r.startswith("FAIL")]
    return 1 if failed or not e.results else 0


if __name__ == "__main__":
    sys.exit(main())
