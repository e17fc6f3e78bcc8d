#!/usr/bin/env python3
"""Every Grafana dashboard in deploy/grafana/dashboards is valid JSON with a sound structure,
and the normserve dashboard has the panels and variables issue 6 asks for."""
import json
import sys

import deploy_common as dc

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def panels_of(dash):
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out += p.get("panels", [])
    return out


def main():
    check(dc.DASHBOARDS, "no dashboard in deploy/grafana/dashboards")
    uids = set()
    total = 0
    for path in dc.DASHBOARDS:
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            check(False, f"{path.name}: not valid JSON: {e}")
            continue
        n = path.name
        check(dash.get("uid") and dash["uid"] not in uids, f"{n}: missing or duplicate uid")
        uids.add(dash.get("uid"))
        check(dash.get("title"), f"{n}: no title")
        check(isinstance(dash.get("schemaVersion"), int), f"{n}: no schemaVersion")
        variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
        panels = panels_of(dash)
        total += len(panels)
        ids = [p.get("id") for p in panels]
        check(len(ids) == len(set(ids)) and None not in ids, f"{n}: panel ids missing or not unique")
        cells = {}
        for p in panels:
            t = p.get("title", "?")
            gp = p.get("gridPos", {})
            if not check(all(k in gp for k in "hwxy"), f"{n}: panel {t}: no gridPos"):
                continue
            check(gp["x"] >= 0 and gp["x"] + gp["w"] <= 24, f"{n}: panel {t}: outside the 24-column grid")
            for x in range(gp["x"], gp["x"] + gp["w"]):
                for y in range(gp["y"], gp["y"] + gp["h"]):
                    check((x, y) not in cells, f"{n}: panels {cells.get((x, y))} and {t} overlap")
                    cells[(x, y)] = t
            if p.get("type") == "row":
                continue
            check(p.get("datasource", {}).get("uid") == "${datasource}", f"{n}: panel {t}: datasource is not the ${{datasource}} variable")
            targets = p.get("targets", [])
            check(targets, f"{n}: panel {t}: no queries")
            refs = [x.get("refId") for x in targets]
            check(len(refs) == len(set(refs)), f"{n}: panel {t}: duplicate refIds")
            for x in targets:
                check(x.get("expr"), f"{n}: panel {t}: empty query {x.get('refId')}")
            check(p.get("description"), f"{n}: panel {t}: no description")

        if dash.get("uid") == "normserve-overview":
            check({"datasource", "model", "norm"} <= set(variables), f"{n}: variables model, norm and datasource required")
            exprs = " ".join(x.get("expr", "") for p in panels for x in p.get("targets", []))
            # The panel list, by the metric each one shows.
            for what, needle in [
                ("request rate by status code", "sum by (code) (rate(normserve_requests_total"),
                ("latency per norm variant", "sum by (norm, le) (rate(normserve_request_duration_seconds_bucket"),
                ("norm-layer time per variant", "normserve_norm_duration_seconds_bucket"),
                ("queue time", "normserve_queue_duration_seconds_bucket"),
                ("batch size distribution", "normserve_batch_size_bucket"),
                ("tokens/s", "rate(normserve_tokens_total"),
                ("model readiness", "normserve_model_ready"),
                ("model reloads", "normserve_model_load_duration_seconds_count"),
            ]:
                check(needle in exprs, f"{n}: no panel for {what} ({needle})")
            head = [p for p in panels if p.get("type") != "row"][0]
            check("norm variant" in head.get("title", ""), f"{n}: the first panel is not the per-norm latency headline")
            for v in ("model", "norm"):
                var = variables.get(v, {})
                check(var.get("multi") and var.get("includeAll") and var.get("allValue") == ".*",
                      f"{n}: variable {v} must be multi-value with All = .*")
    for e in errors:
        print("FAIL:", e)
    print(f"dashboards: {len(dc.DASHBOARDS)} valid JSON, {total} panels, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
