#!/usr/bin/env python3
"""Renders the measured tables of docs/reproduction.md from RUNS/eval/*.json.

The tables go between the `<!-- tables:begin -->` and `<!-- tables:end -->` markers of the
report, so the prose around them survives a re-run; the raw figures are also collected in
results/reproduction-<host>.json, with the machine they came from.

Usage: reproduction-report.py [--runs runs] [--out docs/reproduction.md] [--host vm]
"""
import argparse
import json
import os
import pathlib
import re
import struct

from bench_machine import cpu_model

NORMS = ["layernorm", "batchnorm", "powernorm", "rmsnorm", "prmsnorm"]
LABELS = {"layernorm": "LayerNorm", "batchnorm": "BatchNorm", "powernorm": "PowerNorm",
          "rmsnorm": "RMSNorm", "prmsnorm": "pRMSNorm (p = 0.0625)"}
# The papers' full-scale figures (DESIGN.md section 3 and the seed abstracts): IWSLT14 De-En
# and PTB from the PowerNorm paper; WMT14 En-De RNNSearch (BLEU newstest2014, training time)
# and the Transformer speed-up from the RMSNorm paper.
PAPER_MT = {"layernorm": "35.5 | 22.6, 665 s",
            "batchnorm": "34.4 | -",
            "powernorm": "35.9 (+0.4; +0.6 on WMT14) | -",
            "rmsnorm": "- | 22.4, 501 s (-24.7%); Transformer: on par, 7-9% faster",
            "prmsnorm": "- | 22.6, 493 s (-25.9%)"}
PAPER_LM = {"layernorm": "53.2", "batchnorm": "worse than LN (not quantified in the abstract)",
            "powernorm": "47.6 (-5.6; -3.0 on WikiText-103)", "rmsnorm": "-", "prmsnorm": "-"}
PAPER_MT_HEADER = "| norm | PowerNorm paper: IWSLT14 BLEU | RMSNorm paper: WMT En-De RNNSearch, newstest2014 BLEU, training time |"
PAPER_LM_HEADER = "| norm | PowerNorm paper: PTB test ppl |"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def seconds(duration):
    """'59s', '8m09s' or '1h02m' (the trainer's log) in seconds."""
    h, m, s = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration).groups()
    return 3600 * int(h or 0) + 60 * int(m or 0) + int(s or 0)


def checkpoint_state(path):
    """The trainer state that a checkpoint carries in its safetensors metadata: the step and
    the training seconds and target tokens of every part that led to it."""
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return json.loads(header["__metadata__"]["normserve_train_state"])


def newest_checkpoint(run):
    found = [(int(m.group(1)), p) for p in (run / "checkpoints").glob("checkpoint_*.safetensors")
             if (m := re.fullmatch(r"checkpoint_(\d+)\.safetensors", p.name))]
    return max(found)[1] if found else None


def training_totals(run, log):
    """(updates, seconds, target tokens) of the run. The newest checkpoint counts every part
    that led to it, parts stopped by a signal and resumed included; without checkpoints the
    log's finished parts are summed. A run started with --init-from adds its base's totals."""
    newest = newest_checkpoint(run)
    if newest is not None:
        state = checkpoint_state(newest)
        totals = [state["step"], state["train_seconds"], state["train_tokens"]]
    else:
        parts = [(int(n), seconds(t), int(rate)) for n, t, rate in
                 re.findall(r"trained (\d+) updates in (\S+) \((\d+) target tokens/s", log)]
        totals = [sum(n for n, _, _ in parts), sum(t for _, t, _ in parts),
                  sum(r * t for _, t, r in parts)]
    base = re.search(r"initialized from (\S+) \(step", log)
    base_updates = 0
    if base:
        state = checkpoint_state(base.group(1))
        base_updates = state["step"]
        totals = [totals[0] + state["step"], totals[1] + state["train_seconds"],
                  totals[2] + state["train_tokens"]]
    return totals, base_updates


def train_stats(run):
    """Updates, time per update and token rate (training_totals), and the validation
    perplexities from the run's train.log (the last one is the exported model's)."""
    log = (run / "train.log").read_text()
    final = re.findall(r"final model \| valid loss \S+ \| nll \S+ \| ppl (\S+)", log)
    params = re.search(r"model: (\d+) parameters, norm ([^,\s]+)", log)
    (updates, train_seconds, tokens), base_updates = training_totals(run, log)
    curve = [(int(s), float(p)) for s, p in
             re.findall(r"step (\d+) \| valid loss \S+ \| nll \S+ \| ppl (\S+)", log)]
    return {"updates": updates, "train_seconds": round(train_seconds),
            "ms_per_update": round(1000 * train_seconds / updates, 1),
            "target_tokens_per_s": round(tokens / train_seconds),
            "parameters": int(params.group(1)), "norm": params.group(2),
            "valid_ppl": float(final[-1]), "valid_curve": curve, "base_updates": base_updates}


def load(eval_dir):
    """The evaluation of every model, with its training figures from the run's log."""
    results = {}
    for p in sorted(eval_dir.glob("*.json")):
        if p.name.endswith(".bench.json"):
            continue
        result = json.loads(p.read_text())
        result["train"] = train_stats(pathlib.Path(result["run"]))
        results[p.stem] = result
    return results


def serving(result, concurrency):
    s = result["serving"][concurrency]
    return s["p50_ms"], s["p99_ms"], s["throughput_rps"]


def norm_us(result):
    kernels = result["norm_kernel"]
    return ", ".join(f"{n} {v['mean_us']:.1f}" for n, v in sorted(kernels.items())) or "-"


def relative(value, base):
    return f"{value:.0f} ({100 * (value / base - 1):+.1f}%)"


def table(results, prefix, quality_header, quality):
    if f"{prefix}layernorm" not in results:
        return "(no LayerNorm baseline run)"
    base = results[f"{prefix}layernorm"]["train"]["ms_per_update"]
    rows = [f"| norm | {quality_header} | valid ppl | ms / update (vs LN) | target tok/s "
            "| serving p50 / p99 ms, c=1 | req/s, c=8 | tok/s, c=8 | sampled norm call, mean us |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for norm in NORMS:
        r = results.get(prefix + norm)
        if r is None:
            rows.append(f"| {LABELS[norm]} | not run | | | | | | | |")
            continue
        t = r["train"]
        p50, p99, _ = serving(r, "1")
        _, _, rps8 = serving(r, "8")
        rows.append(f"| {LABELS[norm]} | {quality(r)} | {t['valid_ppl']:.2f} "
                    f"| {relative(t['ms_per_update'], base)} | {t['target_tokens_per_s']} "
                    f"| {p50:.1f} / {p99:.1f} | {rps8:.1f} "
                    f"| {r['serving']['8']['tokens_per_s']:.0f} | {norm_us(r)} |")
    return "\n".join(rows)


def paper_table(header, paper):
    columns = header.count("|") - 1
    return "\n".join([header, "|" + " --- |" * columns] +
                     [f"| {LABELS[norm]} | {paper[norm]} |" for norm in NORMS])


def bundled_names(results):
    """The runs of the bundled lane, the bundled models first."""
    return sorted((n for n, r in results.items() if pathlib.Path(r["run"]).parent.name == "bundled"),
                  key=lambda n: (n not in ("deen", "enlm"), n))


def bundled_table(results):
    """The bundled models, and the other runs of the bundled lane (candidates), deen first."""
    rows = ["| model | norm | updates | train time | test | valid ppl | serving p50 / p99 ms, c=1 |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in bundled_names(results):
        r = results[name]
        t, q = r["train"], r["test"]
        test = (f"BLEU {q['bleu']:.2f}, chrF {q['chrf']:.2f}" if "bleu" in q
                else f"ppl {q['test_ppl']:.2f}")
        updates = str(t["updates"])
        if t["base_updates"]:
            updates = f"{t['base_updates']} + {t['updates'] - t['base_updates']} fine-tuning"
        p50, p99, _ = serving(r, "1")
        rows.append(f"| {name} | {t['norm']} | {updates} | {t['train_seconds'] / 60:.1f} min "
                    f"| {test} | {t['valid_ppl']:.2f} | {p50:.1f} / {p99:.1f} |")
    return "\n".join(rows)


def samples_table(results):
    """Each sample phrase as the bundled lane's MT models translate it (deen first)."""
    models = [n for n in bundled_names(results) if "samples" in results[n]["test"]]
    if not models:
        return "(no sample translations)"
    phrases = list(results[models[0]]["test"]["samples"])
    rows = ["| input | " + " | ".join(f"`{n}`" for n in models) + " |",
            "| --- |" + " --- |" * len(models)]
    for phrase in phrases:
        rows.append(f"| {phrase} | " + " | ".join(
            results[n]["test"]["samples"].get(phrase, "-") for n in models) + " |")
    return "\n".join(rows)


def curves(results, prefix):
    if f"{prefix}layernorm" not in results:
        return "(no LayerNorm baseline run)"
    steps = [s for s, _ in results[f"{prefix}layernorm"]["train"]["valid_curve"]]
    rows = ["| norm | " + " | ".join(f"step {s}" for s in steps) + " | exported |",
            "| --- |" + " --- |" * (len(steps) + 1)]
    for norm in NORMS:
        r = results.get(prefix + norm)
        if r is not None:
            ppl = dict(r["train"]["valid_curve"])
            rows.append(f"| {LABELS[norm]} | " +
                        " | ".join(f"{ppl[s]:.1f}" if s in ppl else "-" for s in steps) +
                        f" | {r['train']['valid_ppl']:.1f} |")
    return "\n".join(rows)


def load_other_seeds(runs):
    """{run name: {seed: exported model's validation perplexity}} of RUNS/compare-seed<N>."""
    seeds = {}
    for log in sorted(runs.glob("compare-seed*/*/train.log")):
        if "final model" in log.read_text():
            seed = int(log.parent.parent.name[len("compare-seed"):])
            seeds.setdefault(log.parent.name, {})[seed] = train_stats(log.parent)["valid_ppl"]
    return seeds


def seeds_table(results, other_seeds, prefix):
    runs = [n for n in NORMS if prefix + n in other_seeds and prefix + n in results]
    if not runs:
        return "(no second-seed runs)"
    seeds = sorted({s for n in runs for s in other_seeds[prefix + n]})
    rows = ["| norm | seed 1 | " + " | ".join(f"seed {s}" for s in seeds) + " | spread |",
            "| --- |" + " --- |" * (len(seeds) + 2)]
    for norm in runs:
        ppl = [results[prefix + norm]["train"]["valid_ppl"]] + [
            other_seeds[prefix + norm].get(s) for s in seeds]
        known = [p for p in ppl if p is not None]
        spread = 100 * (max(known) / min(known) - 1)
        rows.append(f"| {LABELS[norm]} | " + " | ".join(
            f"{p:.2f}" if p is not None else "-" for p in ppl) + f" | {spread:.1f}% |")
    return "\n".join(rows)


def render(results, other_seeds):
    mt_quality = lambda r: f"{r['test']['bleu']:.2f} / {r['test']['chrf']:.2f}"  # noqa: E731
    lm_quality = lambda r: f"{r['test']['test_ppl']:.2f}"  # noqa: E731
    signature = next((r["test"]["sacrebleu"] for r in results.values() if "sacrebleu" in r["test"]),
                     "")
    return "\n\n".join([
        "### Bundled models", bundled_table(results),
        "Common phrases, beam 4:", samples_table(results),
        "### DE->EN translation (Ding test split, 3,848 pairs, beam 4)",
        table(results, "mt-", "test BLEU / chrF", mt_quality),
        f"sacrebleu signatures: `{signature}`",
        "Validation perplexity during training:", curves(results, "mt-"),
        "The papers, on their full-scale tasks:", paper_table(PAPER_MT_HEADER, PAPER_MT),
        "### English LM (English side of Ding, test split)",
        table(results, "lm-", "test ppl", lm_quality),
        "Validation perplexity during training:", curves(results, "lm-"),
        "Exported model's validation perplexity with another seed (initialization, batch order "
        "and dropout), same recipe:", seeds_table(results, other_seeds, "lm-"),
        "The papers, on their full-scale tasks:", paper_table(PAPER_LM_HEADER, PAPER_LM)])


def replace_tables(report_text, tables):
    """report_text with the block between the markers replaced by tables."""
    if BEGIN not in report_text or END not in report_text:
        raise ValueError(f"the report has no {BEGIN} ... {END} block")
    return re.sub(re.escape(BEGIN) + ".*?" + re.escape(END),
                  lambda _: f"{BEGIN}\n{tables}\n{END}", report_text, flags=re.S)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", type=pathlib.Path)
    parser.add_argument("--out", default="docs/reproduction.md", type=pathlib.Path)
    parser.add_argument("--host", default="vm")
    args = parser.parse_args()
    results = load(args.runs / "eval")
    other_seeds = load_other_seeds(args.runs)
    args.out.write_text(replace_tables(args.out.read_text(), render(results, other_seeds)))
    machine = {"host": args.host, "cpu": cpu_model(),
               "cores": os.cpu_count()}
    raw = pathlib.Path("results") / f"reproduction-{args.host}.json"
    raw.write_text(json.dumps({"machine": machine, "models": results,
                               "valid_ppl_other_seeds": other_seeds}, indent=2) + "\n")
    print(f"wrote {args.out} and {raw}")


if __name__ == "__main__":
    main()
