#!/usr/bin/env python3
"""Every PromQL expression in deploy/ parses, and every recording-rule name it uses is defined.

Expressions come from the Grafana dashboards (panel targets and query variables, with
Grafana's variables substituted), the Prometheus rules and the prometheus-adapter rules. They
are written into one temporary rule file as recording rules and handed to `promtool check
rules`, which parses each with Prometheus's own parser."""
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

import deploy_common as dc


def main():
    exprs, records = dc.all_exprs()
    rules = [{"record": f"deploy_check:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    failed = 0
    parse_failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "exprs.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "deploy_check", "rules": rules}]},
                                       sort_keys=False, width=1 << 20))
        r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            failed += 1
            print(r.stdout + r.stderr)
            # Name the offending expressions (promtool reports the record name).
            bad = sorted({int(m) for m in re.findall(r"deploy_check:expr_(\d+)", r.stdout + r.stderr)})
            for i in bad:
                print(f"  expr_{i}: {exprs[i][0]}:\n    {exprs[i][1]}")
            parse_failures = max(len(bad), 1)

    used = {}
    for where, e in exprs:
        for n in dc.metric_names(e):
            used.setdefault(n, []).append(where)
    undefined = sorted(n for n in used if ":" in n and n not in records)
    for n in undefined:
        failed += 1
        print(f"recording rule {n} is used but not defined in deploy/prometheus/rules: {used[n][0]}")

    n_dash = sum(1 for w, _ in exprs if w.endswith("json") or ".json:" in w)
    n_rules = sum(1 for w, _ in exprs if ".yml:" in w)
    n_adapter = sum(1 for w, _ in exprs if w.startswith(dc.ADAPTER_CONFIG.name))
    print(f"promql: {len(exprs)} expressions, {parse_failures} do not parse ({n_dash} dashboard, {n_rules} rules, "
          f"{n_adapter} prometheus-adapter); {len([n for n in used if ':' in n])} recording-rule "
          f"references, {len(undefined)} undefined; metric names used: "
          f"{len([n for n in used if ':' not in n])}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
