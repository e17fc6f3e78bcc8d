"""Shared helpers for the deploy/ checks: find every PromQL expression in deploy/ and the metric
names it uses. Used by check_promql.py, check_metrics.py and e2e_prometheus.py."""
import json
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ADAPTER_CONFIG = DEPLOY / "k8s" / "prometheus-adapter" / "adapter-config.yaml"
PENDING_FILE = DEPLOY / "metrics-pending.txt"

# Grafana's variables replaced by values that keep the expression valid PromQL.
GRAFANA_VARS = [
    ("$__rate_interval", "5m"), ("${__rate_interval}", "5m"),
    ("$__interval", "1m"), ("${__interval}", "1m"),
    ("$__range", "1h"), ("${__range}", "1h"),
]


def substitute_grafana(expr, variables):
    for k, v in GRAFANA_VARS:
        expr = expr.replace(k, v)
    # Template variables (multi-value, "All" = .*) only ever appear inside =~ matchers.
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${%s}" % name, ".*").replace("$" + name, ".*")
    return expr


def substitute_adapter(expr, series):
    return (expr.replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", 'namespace="normserve",pod=~"normserve-.*"')
                .replace("<<.GroupBy>>", "pod"))


def dashboard_exprs(path):
    """(where, expr) for every panel target and every query variable of one dashboard."""
    dash = json.loads(pathlib.Path(path).read_text())
    variables = [v["name"] for v in dash.get("templating", {}).get("list", [])]
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f'{path.name}: panel "{p.get("title")}" {t.get("refId")}',
                                substitute_grafana(t["expr"], variables)))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q or "")
        if m:
            q = m.group(1)
        elif re.fullmatch(r"\s*label_values\(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*", q or ""):
            continue  # label_values(label): no expression
        out.append((f'{path.name}: variable "{v["name"]}"', substitute_grafana(q, variables)))
    return out


def rule_exprs():
    """(where, expr) for every rule, and the set of recorded names."""
    out, records = [], set()
    for f in RULE_FILES:
        for g in yaml.safe_load(f.read_text())["groups"]:
            for r in g["rules"]:
                name = r.get("record") or r.get("alert")
                out.append((f"{f.name}: {g['name']}/{name}", r["expr"]))
                if "record" in r:
                    records.add(r["record"])
    return out, records


def adapter_rules():
    cm = yaml.safe_load(ADAPTER_CONFIG.read_text())
    return yaml.safe_load(cm["data"]["config.yaml"])["rules"]


def adapter_exprs():
    out = []
    for i, r in enumerate(adapter_rules()):
        out.append((f"{ADAPTER_CONFIG.name}: rule {i} seriesQuery", r["seriesQuery"]))
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
        out.append((f"{ADAPTER_CONFIG.name}: rule {i} metricsQuery",
                    substitute_adapter(r["metricsQuery"], series)))
    return out


def all_exprs():
    rules, records = rule_exprs()
    exprs = list(rules)
    for d in DASHBOARDS:
        exprs += dashboard_exprs(d)
    exprs += adapter_exprs()
    return exprs, records


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(\s*\()?")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")


def metric_names(expr):
    """Metric names (normserve_*) and recording-rule names (with a colon) used by an expression."""
    e = _STRING.sub('""', expr)
    e = _GROUPING.sub(" ", e)
    e = _MATCHERS.sub(" ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    names = set()
    for m in _IDENT.finditer(e):
        name, call = m.group(1), m.group(2)
        if call:
            continue  # a function
        if name.startswith("normserve_") or ":" in name:
            names.add(name)
    return names


def family_of(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_pending():
    names = []
    for line in PENDING_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names
