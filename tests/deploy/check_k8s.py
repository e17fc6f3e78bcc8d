#!/usr/bin/env python3
"""Checks of the rendered Kubernetes manifests that schemas cannot express.

    check_k8s.py BASE.yaml GPU.yaml      (output of `kubectl kustomize` for base and overlay)

kubernetes-validate checks each object against the Kubernetes schemas; this checks how the
objects fit together (selectors, ports, probes, drain timing, security) and the
ServiceMonitor, for which no schema ships offline."""
import os
import re
import subprocess
import sys

import yaml

import deploy_common as dc

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def by_kind(docs, kind):
    return [d for d in docs if d and d.get("kind") == kind]


def one(docs, kind):
    objs = by_kind(docs, kind)
    check(len(objs) == 1, f"expected one {kind}, found {len(objs)}")
    return objs[0] if objs else {}


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def arg_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def check_render(name, docs, gpu):
    p = f"{name}: "
    dep = one(docs, "Deployment")
    cms = {c["metadata"]["name"]: c for c in by_kind(docs, "ConfigMap")}
    pod = dep.get("spec", {}).get("template", {})
    pod_labels = pod.get("metadata", {}).get("labels", {})
    spec = pod.get("spec", {})
    check(matches(dep["spec"]["selector"]["matchLabels"], pod_labels), p + "Deployment selector does not match its pods")
    ctr = spec["containers"][0]

    # Flags come from the generated ConfigMap and reach the command line.
    env = {}
    for ref in ctr.get("envFrom", []):
        cm_name = ref.get("configMapRef", {}).get("name")
        if check(cm_name in cms, p + f"envFrom names ConfigMap {cm_name}, which is not rendered"):
            env.update(cms[cm_name]["data"])
    args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), "<unset " + m.group(1) + ">"), a)
            for a in ctr.get("args", [])]
    for a in args:
        check("<unset" not in a, p + f"argument {a}: variable not in the ConfigMap")
    check(arg_value(args, "--model-repository") == "/models", p + "--model-repository is not /models")
    grpc_port = int(arg_value(args, "--grpc-address").rsplit(":", 1)[1])
    metrics_port = int(arg_value(args, "--metrics-address").rsplit(":", 1)[1])
    ports = {pt["name"]: pt["containerPort"] for pt in ctr["ports"]}
    check(ports.get("grpc") == grpc_port, p + "containerPort grpc differs from --grpc-address")
    check(ports.get("metrics") == metrics_port, p + "containerPort metrics differs from --metrics-address")
    check(arg_value(args, "--device") == ("cuda" if gpu else "cpu"), p + "wrong --device")

    # TLS on the gRPC port and bearer tokens, from Secret volumes (no key is committed, so no
    # Secret is rendered); the metrics port bound to every interface on purpose (the server's
    # default is loopback only), guarded by the NetworkPolicy below.
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    secret_mounts = {m["mountPath"]: vols.get(m["name"], {}).get("secret", {}).get("secretName")
                     for m in ctr.get("volumeMounts", []) if m.get("readOnly") is True}

    def secret_of(path):
        """The Secret a file path lies in (its directory is a read-only Secret mount), or None."""
        return secret_mounts.get(path.rsplit("/", 1)[0]) if path else None

    check(not by_kind(docs, "Secret"), p + "a Secret is rendered: keys and tokens must not be committed")
    tls_secret = secret_of(arg_value(args, "--tls-cert"))
    check(tls_secret is not None, p + "--tls-cert is not a file of a read-only Secret volume")
    check(secret_of(arg_value(args, "--tls-key")) == tls_secret, p + "--tls-key is not in the --tls-cert Secret")
    check(secret_of(arg_value(args, "--auth-tokens-file")) is not None,
          p + "--auth-tokens-file is not a file of a read-only Secret volume")
    check(arg_value(args, "--metrics-address") == f"0.0.0.0:{metrics_port}",
          p + "--metrics-address must be given as 0.0.0.0:PORT (the server's default is loopback only)")

    # Probes: native gRPC probes cannot do TLS, so each runs `normserve health` on loopback,
    # trusting a CA from the TLS Secret.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        pr = ctr.get(probe, {})
        argv = pr.get("exec", {}).get("command", [])
        if not check(argv[:1] == ["normserve"] and argv[-1:] == ["health"],
                     p + f"{probe} is not an exec probe running `normserve ... health`"):
            continue
        check(arg_value(argv, "--server") == f"127.0.0.1:{grpc_port}", p + f"{probe}: --server is not 127.0.0.1:{grpc_port}")
        check(secret_of(arg_value(argv, "--tls-ca")) == tls_secret, p + f"{probe}: --tls-ca is not in the TLS Secret")
        timeout = float(arg_value(argv, "--timeout") or 60)
        check(timeout < pr.get("timeoutSeconds", 1), p + f"{probe}: client --timeout {timeout} s is not below timeoutSeconds")

    # Drain: grace period > preStop sleep + server drain time.
    pre = ctr.get("lifecycle", {}).get("preStop", {})
    cmd = pre.get("exec", {}).get("command", [])
    sleep = int(cmd[-1]) if cmd and cmd[0].endswith("sleep") else pre.get("sleep", {}).get("seconds", 0)
    check(sleep > 0, p + "no preStop delay")
    drain = int(arg_value(args, "--shutdown-grace-secs") or 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace > sleep + drain, p + f"terminationGracePeriodSeconds {grace} <= preStop {sleep} + drain {drain}")

    # Security.
    psc, csc = spec.get("securityContext", {}), ctr.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, p + "pod may run as root")
    check(csc.get("readOnlyRootFilesystem") is True, p + "root filesystem is writable")
    check(csc.get("allowPrivilegeEscalation") is False, p + "privilege escalation allowed")
    check("ALL" in csc.get("capabilities", {}).get("drop", []), p + "capabilities not dropped")

    # Resources; GPUs only in the overlay.
    res = ctr.get("resources", {})
    check(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"), p + "no cpu/memory requests")
    has_gpu = "nvidia.com/gpu" in res.get("limits", {})
    check(has_gpu == gpu, p + ("nvidia.com/gpu limit missing" if gpu else "nvidia.com/gpu in the CPU base"))

    # Models from the PVC, mounted read-only at /models.
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
    m = mounts.get("/models")
    if check(m is not None, p + "nothing mounted at /models"):
        check(m.get("readOnly") is True, p + "/models is not read-only")
        claim = vols[m["name"]].get("persistentVolumeClaim", {}).get("claimName")
        pvcs = [c["metadata"]["name"] for c in by_kind(docs, "PersistentVolumeClaim")]
        check(claim in pvcs, p + f"/models claim {claim} is not rendered")

    # Services: a headless gRPC one and a metrics one, both selecting the pods.
    svcs = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    g = svcs.get("normserve-grpc")
    if check(g is not None, p + "no normserve-grpc Service"):
        check(g["spec"].get("clusterIP") == "None", p + "normserve-grpc is not headless")
        check(matches(g["spec"]["selector"], pod_labels), p + "normserve-grpc selects no pod")
        check(any(pt.get("targetPort") in ("grpc", grpc_port) and pt["port"] == grpc_port for pt in g["spec"]["ports"]),
              p + "normserve-grpc port")
    ms = svcs.get("normserve-metrics")
    if check(ms is not None, p + "no normserve-metrics Service"):
        check(matches(ms["spec"]["selector"], pod_labels), p + "normserve-metrics selects no pod")
        # ServiceMonitor (a CRD, no schema offline): selects this Service, names its port.
        sm = one(docs, "ServiceMonitor")
        if sm:
            check(sm.get("apiVersion") == "monitoring.coreos.com/v1", p + "ServiceMonitor apiVersion")
            sel = sm["spec"]["selector"]["matchLabels"]
            check(matches(sel, ms["metadata"]["labels"]), p + "ServiceMonitor does not select normserve-metrics")
            check(not matches(sel, g["metadata"]["labels"]) if g else True,
                  p + "ServiceMonitor also selects the gRPC Service (double scrape)")
            port_names = {pt["name"] for pt in ms["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                check(ep.get("port") in port_names, p + f"ServiceMonitor endpoint port {ep.get('port')} not on the Service")
                check(ep.get("path", "/metrics") == "/metrics", p + "ServiceMonitor path")
            check(set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel",
                                      "targetLabels", "podTargetLabels", "sampleLimit"},
                  p + f"ServiceMonitor spec has unexpected fields {sorted(sm['spec'])}")

    # HPA: scales this Deployment on per-pod metrics that prometheus-adapter serves.
    hpa = one(docs, "HorizontalPodAutoscaler")
    if hpa:
        ref = hpa["spec"]["scaleTargetRef"]
        check(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"], p + "HPA target")
        served = {r["name"]["as"] for r in dc.adapter_rules()}
        for mtr in hpa["spec"]["metrics"]:
            check(mtr["type"] == "Pods", p + "HPA metric is not a per-pod metric")
            if mtr["type"] == "Pods":
                check(mtr["pods"]["metric"]["name"] in served, p + f"HPA metric {mtr['pods']['metric']['name']} not served by the adapter")
        check(hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], p + "HPA min > max")
        check("replicas" not in dep["spec"], p + "Deployment sets replicas while an HPA owns them")

    # NetworkPolicy: gRPC open, the metrics port only from selected namespaces.
    np = one(docs, "NetworkPolicy")
    if np:
        check(matches(np["spec"]["podSelector"]["matchLabels"], pod_labels), p + "NetworkPolicy selects no pod")
        check(np["spec"].get("policyTypes") == ["Ingress"], p + "NetworkPolicy policyTypes")
        for rule in np["spec"].get("ingress", []):
            rule_ports = {ports.get(pt["port"], pt["port"]) for pt in rule.get("ports", [])}
            check(rule_ports, p + "NetworkPolicy rule without ports admits every port")
            if metrics_port in rule_ports:
                sources = rule.get("from", [])
                check(sources and all("namespaceSelector" in f and "ipBlock" not in f for f in sources),
                      p + "NetworkPolicy admits the metrics port from outside selected namespaces")
        admitted = {ports.get(pt["port"], pt["port"]) for r in np["spec"].get("ingress", []) for pt in r.get("ports", [])}
        check({grpc_port, metrics_port} <= admitted, p + "NetworkPolicy blocks the gRPC or metrics port")

    pdb = one(docs, "PodDisruptionBudget")
    if pdb:
        check(matches(pdb["spec"]["selector"]["matchLabels"], pod_labels), p + "PDB selects no pod")
        if hpa and "minAvailable" in pdb["spec"]:
            check(int(pdb["spec"]["minAvailable"]) < hpa["spec"]["minReplicas"], p + "PDB blocks every eviction at minReplicas")

    # Everything namespaced lands in one namespace.
    nss = {d["metadata"].get("namespace") for d in docs if d and d["kind"] != "Namespace"}
    check(len(nss) == 1 and None not in nss, p + f"objects spread over namespaces {nss}")
    return {"objects": len([d for d in docs if d]), "args": args}


def main():
    base = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    gpu = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
    rb = check_render("base", base, gpu=False)
    rg = check_render("gpu", gpu, gpu=True)
    # The adapter rules' queries are PromQL (parsed by check_promql.py); here their shape.
    for r in dc.adapter_rules():
        check({"namespace", "pod"} <= set(r["resources"]["overrides"]), f"adapter rule {r['name']['as']}: no namespace/pod mapping")
        check("<<.LabelMatchers>>" in r["metricsQuery"] and "<<.GroupBy>>" in r["metricsQuery"],
              f"adapter rule {r['name']['as']}: metricsQuery ignores the HPA's pod selection")
    # deploy/k8s/prometheusrule.sh wraps exactly the rule files' groups for the Operator.
    out = subprocess.run(["bash", str(dc.DEPLOY / "k8s" / "prometheusrule.sh")], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "RULE_LABELS": "release: test"})
    if check(out.returncode == 0, f"prometheusrule.sh failed: {out.stderr}"):
        pr = yaml.safe_load(out.stdout)
        want = [g for f in dc.RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]]
        check(pr["kind"] == "PrometheusRule" and pr["apiVersion"] == "monitoring.coreos.com/v1", "PrometheusRule kind")
        check(pr["metadata"]["labels"].get("release") == "test", "prometheusrule.sh ignores RULE_LABELS")
        check(pr["spec"]["groups"] == want, "prometheusrule.sh output differs from deploy/prometheus/rules")
    for e in errors:
        print("FAIL:", e)
    print(f"k8s: base {rb['objects']} objects, gpu {rg['objects']} objects; "
          f"server command line (base): normserved {' '.join(rb['args'])}; {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
