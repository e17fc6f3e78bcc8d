#!/usr/bin/env python3
"""Every metric name that deploy/ uses (dashboards, rules, prometheus-adapter, HPA) is one that
normserved really exports, judged by a live scrape of its /metrics.

    check_metrics.py --scrape http://127.0.0.1:9464/metrics   (or a saved scrape file)

A name passes when the scrape has it (histograms by family: x_bucket/x_sum/x_count of a
histogram x), or when its family is listed in deploy/metrics-pending.txt (metrics planned in
DESIGN.md section 6 that have not landed yet). The check prints which names are pending and
which pending names the server already exports (delete those lines), and fails only for names
that are neither exported nor pending. Without --scrape it only lists the names."""
import argparse
import pathlib
import re
import sys
import urllib.request

import yaml

import deploy_common as dc


def parse_scrape(text):
    families, samples = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                families[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
            if m:
                samples.add(m.group(1))
    return families, samples


def exported(name, families, samples):
    if name in samples:
        return True
    fam = dc.family_of(name)
    if fam != name and families.get(fam) in ("histogram", "summary"):
        return True
    # A counter/gauge family declared but without samples yet still counts as exported.
    return families.get(name) in ("counter", "gauge", "untyped")


def hpa_metric_names():
    """Per-pod metric names the HPA asks prometheus-adapter for, and the adapter's outputs."""
    hpa = yaml.safe_load((dc.DEPLOY / "k8s" / "base" / "hpa.yaml").read_text())
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    served = {r["name"]["as"] for r in dc.adapter_rules()}
    return wanted, served


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrape", help="URL of normserved's /metrics, or a file with a saved scrape")
    args = ap.parse_args()

    exprs, _ = dc.all_exprs()
    used = {}
    for where, e in exprs:
        for n in dc.metric_names(e):
            if ":" not in n:
                used.setdefault(n, []).append(where)
    pending = set(dc.read_pending())

    failed = 0
    wanted, served = hpa_metric_names()
    for n in sorted(wanted - served):
        failed += 1
        print(f"FAIL: the HPA scales on {n}, which no prometheus-adapter rule serves")

    if not args.scrape:
        print("metric names used in deploy/ (no live scrape given, not compared):")
        for n in sorted(used):
            print(f"  {n}{'  (pending)' if dc.family_of(n) in pending or n in pending else ''}")
        return 1 if failed else 0

    if re.match(r"https?://", args.scrape):
        with urllib.request.urlopen(args.scrape, timeout=10) as r:
            text = r.read().decode()
    else:
        text = pathlib.Path(args.scrape).read_text()
    families, samples = parse_scrape(text)
    if not samples:
        print(f"FAIL: the scrape of {args.scrape} has no samples")
        return 1

    ok, pend, missing = [], [], []
    for n in sorted(used):
        if exported(n, families, samples):
            ok.append(n)
        elif n in pending or dc.family_of(n) in pending:
            pend.append(n)
        else:
            missing.append(n)
    landed = sorted(p for p in pending
                    if p in families or p in samples or any(dc.family_of(s) == p for s in samples))

    print(f"exported ({len(ok)}): {', '.join(ok)}")
    if pend:
        print(f"not exported yet, allowed by deploy/metrics-pending.txt ({len(pend)}): {', '.join(pend)}")
    for p in landed:
        print(f"NOTE: {p} is exported now: delete it from deploy/metrics-pending.txt")
    for n in missing:
        failed += 1
        print(f"FAIL: {n} is neither exported by normserved nor pending; used by: {used[n][0]}")
    print(f"metrics: {len(used)} names used, {len(ok)} exported, {len(pend)} pending, "
          f"{len(missing)} missing")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
