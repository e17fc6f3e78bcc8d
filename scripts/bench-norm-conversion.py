#!/usr/bin/env python3
"""A Pre-LN model against its lossless Pre-RMSNorm and Pre-CRMSNorm conversions (issue #17),
measured side by side in one run.

Two Pre-LN models: the bundled enlm (d 128, 2 layers) and a base-size transformer_lm made by
`normserve-model init` (d 512, 6 layers, ffn 2048, random weights: speed does not depend on
them). For each, one normserved serves the model three times in ONE variant group: as stored
(layernorm), and converted at load by model.json's "convert_norm" to rmsnorm and to crmsnorm. Each round runs
normserve-bench (closed loop, Score) against each member in a rotating order, scraping the
metrics port before and after, and then normserve-normbench on the three norm kernels alone at
the model's widths (crmsnorm at embed_dim - 1); the table gives the medians over the rounds:

- request latency p50 and tokens/s, from normserve-bench's JSON;
- norm time per forward, from the normserve_norm_duration_seconds histogram of the scrapes
  (sum / count between the two scrapes of a member's step: the server times one forward in
  16, every norm launch in it, labelled by norm, so the three members' series are apart);
- the kernels alone (fused add-and-norm, the form every norm after the first runs as), in us.

A last step sends Score calls to the group's name from a Python gRPC client, so that each
reply can be checked: the members share them, and each reply
names the member that served it. The load average is recorded before, during and after.

Usage: scripts/bench-norm-conversion.py [--rounds 5] [--seconds 5] [--concurrency 4]
       [--batch 4] [--threads 1] [--models enlm,base] [--out results/norm-conversion-bench-vm.md]
"""
import argparse
import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

from grpc_stubs import pb, stub  # noqa: E402
from normserved_process import NormservedProcess  # noqa: E402
from bench_machine import cpu_model, revision as project_revision  # noqa: E402

NORMS = ["layernorm", "rmsnorm", "crmsnorm"]
GROUP = "norm_variants"


def member(norm):
    return f"m_{norm}"


def make_repository(root, model_dir):
    """The model three times in one group; the conversions happen at load."""
    for norm in NORMS:
        shutil.copytree(model_dir, os.path.join(root, member(norm)))
        config = {"group": GROUP, "weight": 1}
        if norm != "layernorm":
            config["convert_norm"] = norm
        with open(os.path.join(root, member(norm), "model.json"), "w") as f:
            json.dump(config, f)


def scrape(port):
    """{(metric name, frozenset of labels): value} of one metrics scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? ([0-9.eE+-]+|NaN|[+-]Inf)$", line)
        if not match:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        out[(match.group(1), labels)] = float(match.group(3))
    return out


def series(metrics, name, **labels):
    """The sum of the series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, l), v in metrics.items() if n == name and wanted <= set(l))


def norm_seconds_per_forward(before, after, norm):
    count = (series(after, "normserve_norm_duration_seconds_count", norm=norm) -
             series(before, "normserve_norm_duration_seconds_count", norm=norm))
    total = (series(after, "normserve_norm_duration_seconds_sum", norm=norm) -
             series(before, "normserve_norm_duration_seconds_sum", norm=norm))
    return total / count if count > 0 else float("nan")


def run_bench(args, target, model, seconds, out_json, warmup=False):
    subprocess.run([args.bench, "--server", target, "--model", model, "--rpc", "score",
                    "--concurrency", str(args.concurrency), "--duration-secs", str(seconds),
                    "--warmup-secs", "1", "--batch", str(args.batch), "--json", out_json],
                   check=True, capture_output=True, text=True, timeout=seconds + 120)
    with open(out_json) as f:
        step = json.load(f)["steps"][0]
    if not warmup and (step["ok"] == 0 or step.get("errors")):
        raise RuntimeError(f"normserve-bench against {model}: {step}")
    return step


def run_normbench(args, d, tmp):
    """us of the fused kernel per variant at the model's widths: {(norm, rows): us}."""
    csv_path = os.path.join(tmp, "normbench.csv")
    subprocess.run([args.normbench, "--variants", ",".join(NORMS), "--d", f"{d - 1},{d}",
                    "--rows", args.kernel_rows, "--dtypes", "float32", "--forms", "fused",
                    "--threads", str(args.threads), "--no-overhead", "--min-ms", "10",
                    "--csv", csv_path, "--markdown", os.path.join(tmp, "normbench.md")],
                   check=True, capture_output=True, text=True, timeout=600)
    out = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            width = d - 1 if row["variant"] == "crmsnorm" else d
            if int(row["d"]) == width:
                out[(row["variant"], int(row["rows"]))] = float(row["us"])
    return out


TEXTS = [b"the house is small .", b"we go home today and the dog runs quickly",
         b"music at night , water and bread", b"Berlin is old but the city is new"]


def group_load(target, workers, seconds):
    """Score calls to the group's name for `seconds` from `workers` threads: the latencies and
    the replies per member."""
    latencies, served, lock = [], {}, threading.Lock()
    deadline = time.monotonic() + seconds

    def work():
        client = stub(target)
        while time.monotonic() < deadline:
            start = time.monotonic()
            reply = client.Score(pb.ScoreRequest(model=GROUP, texts=TEXTS), timeout=60)
            with lock:
                latencies.append(time.monotonic() - start)
                served[reply.model] = served.get(reply.model, 0) + 1
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, served


def median(values):
    values = [v for v in values if v == v]  # NaN: no sampled forward in that step
    return statistics.median(values) if values else float("nan")


def change(value, base):
    return f"{100 * (value / base - 1):+.1f}%" if base == base and base else ""


BASE_CONFIG = {"architecture": "transformer_lm", "embed_dim": 512, "ffn_dim": 2048,
               "attention_heads": 8, "decoder_layers": 6, "normalize_before": True,
               "activation": "gelu", "max_positions": 256,
               "share_decoder_input_output_embed": True,
               "norm": {"default": {"type": "layernorm", "eps": 1e-5}}}


def make_base_model(args, tmp):
    """The base-size Pre-LN LM, its tokenizer trained on the repository's documentation."""
    text = os.path.join(tmp, "text.txt")
    with open(text, "w") as out:
        for name in ["README.md"] + sorted(os.listdir(os.path.join(ROOT, "docs"))):
            path = os.path.join(ROOT, name if name == "README.md" else "docs/" + name)
            if path.endswith(".md"):
                with open(path) as f:
                    out.write(f.read())
    config = os.path.join(tmp, "base.json")
    with open(config, "w") as f:
        json.dump(BASE_CONFIG, f)
    model_dir = os.path.join(tmp, "base")
    subprocess.run([args.normserve_model, "init", "--config", config, "--out",
                    os.path.join(model_dir, "1"), "--target-text", text, "--vocab-size", "2000",
                    "--dtype", "f16", "--seed", "1"],
                   check=True, capture_output=True, text=True, timeout=300)
    return model_dir


def measure(args, model_dir, tmp):
    """The table's rows and its notes for one model."""
    with open(os.path.join(model_dir, "1", "config.json")) as f:
        config = json.load(f)
    d = config["embed_dim"]
    kernel_rows = [int(r) for r in args.kernel_rows.split(",")]
    loads = [os.getloadavg()]
    results = {norm: {"p50": [], "tps": [], "norm_us": []} for norm in NORMS}
    kernels = {(norm, rows): [] for norm in NORMS for rows in kernel_rows}
    repo = os.path.join(tmp, "repository_" + os.path.basename(model_dir))
    make_repository(repo, model_dir)
    server = NormservedProcess(args.normserved, repo, "--threads", str(args.threads))
    try:
        for norm in NORMS:  # warm-up: first calls of each member
            run_bench(args, server.target, member(norm), 1, os.path.join(tmp, "w.json"), True)
        for r in range(args.rounds):
            order = NORMS[r % 3:] + NORMS[:r % 3]
            for norm in order:
                before = scrape(server.metrics_port)
                step = run_bench(args, server.target, member(norm), args.seconds,
                                 os.path.join(tmp, "bench.json"))
                after = scrape(server.metrics_port)
                results[norm]["p50"].append(step["p50_ms"])
                results[norm]["tps"].append(step["tokens_per_s"])
                results[norm]["norm_us"].append(
                    1e6 * norm_seconds_per_forward(before, after, norm))
            for key, us in run_normbench(args, d, tmp).items():
                if key in kernels:
                    kernels[key].append(us)
            loads.append(os.getloadavg())
        group_latencies, served = group_load(server.target, args.concurrency, args.seconds)
        group_requests = {norm: served.get(member(norm), 0) for norm in NORMS}
    finally:
        server.stop()
    loads.append(os.getloadavg())

    rows = []
    med = {norm: {k: median(v) for k, v in results[norm].items()} for norm in NORMS}
    for key, label, fmt in (("p50", "Score request latency p50 (ms)", "{:.2f}"),
                            ("tps", "tokens/s (Score)", "{:.0f}"),
                            ("norm_us", "norm time per forward (us, metrics histogram)",
                             "{:.1f}")):
        values = [med[n][key] for n in NORMS]
        rows.append([label] + [fmt.format(v) for v in values] +
                    [change(values[1], values[0]), change(values[2], values[0])])
    for rows_count in kernel_rows:
        values = [median(kernels[(n, rows_count)]) for n in NORMS]
        rows.append([f"normbench fused add+norm, {rows_count} rows (us; crmsnorm at d-1)"] +
                    [f"{v:.2f}" for v in values] +
                    [change(values[1], values[0]), change(values[2], values[0])])
    name = os.path.basename(os.path.normpath(model_dir))
    lines = [
        f"## `{name}`: {config['architecture']}, embed_dim {d}, "
        f"{config['decoder_layers']} layers, ffn {config['ffn_dim']}",
        "",
        "- Load average (1/5/15 min) at start, after each round and at the end: " +
        "; ".join(" ".join(f"{x:.2f}" for x in load) for load in loads),
        "",
        "| measure | layernorm | rmsnorm | crmsnorm | rmsnorm vs layernorm | "
        "crmsnorm vs layernorm |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        f"Score calls of {len(TEXTS)} texts to the group's name (`{GROUP}`, weight 1 each), "
        f"{args.concurrency} Python clients for {args.seconds:.0f} s: p50 "
        f"{1e3 * median(group_latencies):.2f} ms; calls served per member: " +
        ", ".join(f"{norm} {group_requests[norm]}" for norm in NORMS) + ".",
        "",
    ]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--normserved", default=os.path.join(ROOT, "build/server/normserved"))
    parser.add_argument("--bench", default=os.path.join(ROOT, "build/client/normserve-bench"))
    parser.add_argument("--normbench",
                        default=os.path.join(ROOT, "build/models/normserve-normbench"))
    parser.add_argument("--normserve-model",
                        default=os.path.join(ROOT, "build/models/normserve-model"))
    parser.add_argument("--models", default="enlm,base",
                        help="enlm (the bundled model), base (made by normserve-model init)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernel-rows", default="16,256")
    parser.add_argument("--out")
    args = parser.parse_args()

    cpu = cpu_model()
    revision = project_revision()
    lines = [
        "# Pre-LN models and their lossless Pre-RMSNorm and Pre-CRMSNorm conversions",
        "",
        f"- Written by `scripts/bench-norm-conversion.py` (normserve {revision}) on `nproc` "
        f"{os.cpu_count()}, {cpu}, {platform.machine()}",
        f"- Per model: the three members of one variant group `{GROUP}` in one normserved "
        f"(`--threads {args.threads}`, CPU, fp32), converted at load by model.json "
        "`convert_norm`",
        f"- Load: normserve-bench, Score, closed loop, concurrency {args.concurrency}, "
        f"{args.batch} texts per request, {args.seconds:.0f} s per member per round, "
        f"{args.rounds} rounds in rotating order; medians over the rounds",
        "- Kernels: normserve-normbench, fp32, fused add-and-norm, one run per round between "
        "the load steps; crmsnorm at d - 1, the others at d",
        "",
    ]
    tmp = tempfile.mkdtemp(prefix="normserve_norm_bench_")
    try:
        for model in args.models.split(","):
            model_dir = (make_base_model(args, tmp) if model == "base"
                         else os.path.join(ROOT, "models/repository", model))
            lines += measure(args, model_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
