#!/usr/bin/env python3
"""deploy/compose.yaml, the Grafana provisioning, the Prometheus config and the Dockerfile fit
together (no Docker engine here, so this is what can be checked without running them)."""
import json
import re
import sys

import yaml

import deploy_common as dc

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def split_volume(v):
    """'SRC:DST[:MODE]' -> (SRC, DST), where SRC may be ${VAR:-default} (default taken)."""
    m = re.fullmatch(r"\$\{\w+:-([^}]+)\}:([^:]+)(?::\w+)?", v)
    if m:
        return m.group(1), m.group(2)
    parts = v.split(":")
    return parts[0], parts[1]


def main():
    compose = yaml.safe_load((dc.DEPLOY / "compose.yaml").read_text())
    svcs = compose.get("services", {})
    check({"normserved", "prometheus", "grafana"} <= set(svcs), "compose: normserved, prometheus and grafana services required")
    named_volumes = set(compose.get("volumes", {}) or {})
    check(any(split_volume(v)[1] == "/models" for v in svcs.get("normserved", {}).get("volumes", [])),
          "compose: normserved has no /models volume")

    # Every bind mount exists; every named volume is declared.
    for name, s in svcs.items():
        for v in s.get("volumes", []):
            src, dst = split_volume(v)
            if src.startswith("."):
                check((dc.DEPLOY / src).exists(), f"compose: {name} mounts {src}, which does not exist")
            elif not src.startswith("/"):
                check(src in named_volumes, f"compose: {name} uses undeclared volume {src}")

    # normserved: built from the Dockerfile's target, flags and ports agree with the image.
    dockerfile = (dc.ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M | re.I))
    check({"cpu", "cuda"} <= stages, f"Dockerfile: targets cpu and cuda required, found {sorted(stages)}")
    ns = svcs["normserved"]
    target = re.sub(r"\$\{\w+:-([^}]+)\}", r"\1", str(ns.get("build", {}).get("target", "")))
    check(target in stages, f"compose: build target {target} is not a Dockerfile stage")
    check((dc.DEPLOY / ns["build"]["context"] / ns["build"].get("dockerfile", "Dockerfile")).exists(), "compose: build context")
    cmd = ns.get("command", [])
    metrics_port = cmd[cmd.index("--metrics-address") + 1].rsplit(":", 1)[1]
    grpc_port = cmd[cmd.index("--grpc-address") + 1].rsplit(":", 1)[1]
    exposed = set(re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.M)[0].split()) if "EXPOSE" in dockerfile else set()
    check({grpc_port, metrics_port} <= exposed, f"Dockerfile EXPOSE {sorted(exposed)} lacks {grpc_port}/{metrics_port}")
    healthchecks = re.findall(r'HEALTHCHECK[^\n]*\\\n\s*CMD (\[[^\]]*\])', dockerfile)
    check(len(healthchecks) == 2, f"Dockerfile: expected a HEALTHCHECK in both final stages, found {len(healthchecks)}")
    for hc in healthchecks:
        argv = json.loads(hc)
        check(argv[0] == "normserve" and argv[-1] == "health" and argv[argv.index("--server") + 1] == f"127.0.0.1:{grpc_port}",
              f"Dockerfile: HEALTHCHECK {hc} must run `normserve --server 127.0.0.1:{grpc_port} ... health`")
    check(re.search(r"^USER\s+(?!0\b|root\b)", dockerfile, re.M), "Dockerfile: no non-root USER")
    check(ns.get("stop_grace_period"), "compose: normserved has no stop_grace_period")
    check(cmd[cmd.index("--metrics-address") + 1] == f"0.0.0.0:{metrics_port}",
          "compose: --metrics-address must be 0.0.0.0:PORT for Prometheus (the server's default is loopback only)")

    # TLS and tokens: files of compose secrets (/run/secrets/NAME), which live in a directory
    # that git ignores (no key is committed).
    declared = compose.get("secrets", {}) or {}
    used = set(ns.get("secrets", []))

    def secret_file(flag_value, what):
        name = flag_value.removeprefix("/run/secrets/") if flag_value else None
        check(flag_value and flag_value.startswith("/run/secrets/") and name in used and name in declared,
              f"compose: {what} {flag_value} is not a secret of normserved")
        return name

    def flag(argv, name):
        return argv[argv.index(name) + 1] if name in argv else None

    for f in ("--tls-cert", "--tls-key", "--auth-tokens-file"):
        secret_file(flag(cmd, f), f)
    for name, secret in declared.items():
        src = str(secret.get("file", ""))
        check(src.startswith("./secrets/"), f"compose: secret {name} is not a file under deploy/secrets/")
    ignore = (dc.DEPLOY / "secrets" / ".gitignore")
    check(ignore.exists() and "*" in ignore.read_text().split(), "deploy/secrets/.gitignore must ignore every file")

    # The image's HEALTHCHECK speaks plaintext: compose replaces it with one over TLS.
    hc = ns.get("healthcheck", {}).get("test", [])
    check(hc[:2] == ["CMD", "normserve"] and hc[-1:] == ["health"] and flag(hc, "--server") == f"127.0.0.1:{grpc_port}",
          f"compose: normserved healthcheck {hc} must run `normserve --server 127.0.0.1:{grpc_port} ... health`")
    if "--tls-ca" in hc:
        secret_file(flag(hc, "--tls-ca"), "healthcheck --tls-ca")
    else:
        check(False, "compose: normserved healthcheck has no --tls-ca (the server speaks TLS)")
    for port in ns.get("ports", []):
        check(str(port).startswith("127.0.0.1:"), f"compose: port {port} is not bound to loopback")

    # Prometheus scrapes normserved at its metrics port, and loads the rules.
    prom = yaml.safe_load((dc.DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for sc in prom["scrape_configs"] for st in sc.get("static_configs", []) for t in st["targets"]]
    check(f"normserved:{metrics_port}" in targets, f"prometheus.yml: no target normserved:{metrics_port}")
    mounts = {d: s for s, d in map(split_volume, svcs["prometheus"]["volumes"])}
    check(mounts.get("/etc/prometheus") == "./prometheus", "compose: prometheus must mount ./prometheus at /etc/prometheus")

    # Grafana: datasource -> prometheus service; dashboards provider path == mount; uid match.
    ds = yaml.safe_load((dc.DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    check(ds["url"] == "http://prometheus:9090", f"datasource url {ds['url']}")
    prov = yaml.safe_load((dc.DEPLOY / "grafana/provisioning/dashboards/normserve.yml").read_text())["providers"][0]
    gmounts = {d: s for s, d in map(split_volume, svcs["grafana"]["volumes"])}
    check(gmounts.get(prov["options"]["path"]) == "./grafana/dashboards",
          f"grafana: dashboards provider path {prov['options']['path']} is not where ./grafana/dashboards is mounted")
    check(gmounts.get("/etc/grafana/provisioning") == "./grafana/provisioning", "grafana: provisioning not mounted")
    home = svcs["grafana"].get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
    check(home.startswith(prov["options"]["path"]) and (dc.DEPLOY / "grafana/dashboards" / home.rsplit("/", 1)[1]).exists(),
          f"grafana: home dashboard {home} is not provisioned")
    for d in dc.DASHBOARDS:
        var = {v["name"]: v for v in json.loads(d.read_text())["templating"]["list"]}.get("datasource", {})
        check(var.get("current", {}).get("value") == ds["uid"], f"{d.name}: default datasource is not uid {ds['uid']}")

    # .dockerignore keeps build outputs and VCS data out of the context but not the sources.
    ignore = (dc.ROOT / ".dockerignore").read_text().split()
    for must in (".git", "/build*"):
        check(must in ignore, f".dockerignore lacks {must}")
    for keep in ("models", "server", "client", "proto", "scripts"):
        check(keep not in ignore and "/" + keep not in ignore, f".dockerignore drops {keep}/, which the build needs")

    # The GPU override only swaps the device and reserves a GPU.
    gpu = yaml.safe_load((dc.DEPLOY / "compose.gpu.yaml").read_text())["services"]["normserved"]
    gcmd = gpu.get("command", [])
    check("--device" in gcmd and gcmd[gcmd.index("--device") + 1] == "cuda", "compose.gpu.yaml: no --device cuda")
    check([x for x in gcmd if x not in ("--device", "cuda")] == cmd, "compose.gpu.yaml: flags differ from compose.yaml beyond --device")
    devs = gpu.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    check(any("gpu" in d.get("capabilities", []) for d in devs), "compose.gpu.yaml: no GPU reservation")

    for e in errors:
        print("FAIL:", e)
    print(f"compose: services {', '.join(svcs)}; Dockerfile targets {', '.join(sorted(stages))}; "
          f"scrape target normserved:{metrics_port}; {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
