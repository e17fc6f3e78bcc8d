#!/usr/bin/env python3
"""Evaluates the models that scripts/train-models.sh trained, through a real normserved.

Serves RUNS/bundled/* and RUNS/compare/* from one repository on loopback, then, per model:
  - transformer_mt: translates the test split (beam 4) with the normserve CLI and scores it
    with sacrebleu (BLEU and chrF), and translates a few common phrases (SAMPLE_PHRASES);
  - transformer_lm: scores the test split with the CLI and sums the log-probabilities into a
    perplexity;
  - both: serving latency with normserve-bench (closed loop, concurrency 1 and 8), and the
    server's sampled norm time (normserve_norm_duration_seconds) during that load.
Writes RUNS/eval/<model>.json (and the hypotheses to RUNS/eval/<model>.hyp).

Usage: evaluate-models.py [--runs runs] [--build build] [--bench-secs 10] [--threads 2]
                          [--part quality|serving|all] [--models NAME...] [--limit N]
--part serving measures latency alone, e.g. on an otherwise idle machine after the quality
part ran beside other work; --limit takes only the first N test texts (a quick check whose
figures are not the report's).
"""
import argparse
import concurrent.futures
import json
import math
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.request

import sacrebleu

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from normserved_process import NormservedProcess  # noqa: E402

# Short, common phrases (the examples first), translated by every MT model so that the
# report can show what a user would see. Some are training entries, e.g. "Guten Morgen!".
SAMPLE_PHRASES = ["Guten Morgen", "Das ist nicht möglich.", "ein großes Haus", "Guten Morgen!",
                  "Guten Tag", "Vielen Dank!", "Ich habe keine Zeit.", "Wie geht es Ihnen?",
                  "Ich weiß es nicht.", "Das Wetter ist schön.", "ein kleines Kind", "der Hund"]
CHUNK = 64  # texts per request: the server batches what is in flight together
WORKERS = 2
BEAM = 4


def collect_models(runs):
    """name -> training directory, for every finished run (one with model.safetensors)."""
    models = {}
    for group in ("bundled", "compare"):
        for run in sorted((runs / group).glob("*/model.safetensors")):
            models[run.parent.name] = run.parent
    return models


def make_repository(models, repository):
    shutil.rmtree(repository, ignore_errors=True)
    for name, run in models.items():
        version = repository / name / "1"
        version.mkdir(parents=True)
        for f in ["config.json", "model.safetensors", *[p.name for p in run.glob("*.spm")]]:
            shutil.copy(run / f, version / f)


def cli(normserve, target, *args, stdin):
    out = subprocess.run([normserve, "--server", target, "--timeout", "600", *args],
                         input=stdin, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"normserve {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def in_chunks(lines, run_chunk):
    chunks = [lines[i:i + CHUNK] for i in range(0, len(lines), CHUNK)]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(run_chunk, chunks))


def read_lines(path, limit):
    return path.read_text(encoding="utf-8").splitlines()[:limit]


def translate_test(normserve, target, name, data, limit):
    sources = read_lines(data / "test.de", limit)
    references = read_lines(data / "test.en", limit)

    def run_chunk(chunk):
        out = cli(normserve, target, "translate", "--model", name, "--beam", str(BEAM),
                  stdin="\n".join(chunk) + "\n").splitlines()
        assert len(out) == len(chunk), f"{len(out)} translations for {len(chunk)} texts"
        return out

    hypotheses = [h for chunk in in_chunks(sources, run_chunk) for h in chunk]
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    return hypotheses, {"test_sentences": len(sources), "beam": BEAM,
                        "bleu": round(bleu.corpus_score(hypotheses, [references]).score, 2),
                        "chrf": round(chrf.corpus_score(hypotheses, [references]).score, 2),
                        "sacrebleu": f"BLEU {bleu.get_signature()}, chrF {chrf.get_signature()}",
                        "samples": dict(zip(SAMPLE_PHRASES, run_chunk(SAMPLE_PHRASES)))}


def score_test(normserve, target, name, data, limit):
    texts = read_lines(data / "test.txt", limit)

    def run_chunk(chunk):
        results = json.loads(cli(normserve, target, "--json", "score", "--model", name,
                                 stdin="\n".join(chunk) + "\n"))["results"]
        assert len(results) == len(chunk)
        return [(r["total_logprob"], len(r["tokens"])) for r in results]

    scored = [s for chunk in in_chunks(texts, run_chunk) for s in chunk]
    logprob = sum(s[0] for s in scored)
    tokens = sum(s[1] for s in scored)
    return {"test_texts": len(texts), "test_tokens": tokens,
            "test_ppl": round(math.exp(-logprob / tokens), 2)}


def norm_time(metrics_port):
    """norm label -> (sum of seconds, count) of the sampled norm timings so far."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    totals = {}
    for kind, norm, value in re.findall(
            r'^normserve_norm_duration_seconds_(sum|count)\{[^}]*norm="([^"]+)"[^}]*\} (\S+)$',
            text, re.M):
        entry = totals.setdefault(norm, [0.0, 0.0])
        entry[0 if kind == "sum" else 1] += float(value)
    return totals


def bench(bench_binary, target, metrics_port, name, architecture, secs, out_json):
    before = norm_time(metrics_port)
    args = [bench_binary, "--server", target, "--model", name, "--concurrency", "1,8",
            "--duration-secs", str(secs), "--json", str(out_json)]
    if architecture == "transformer_mt":
        args += ["--beam", str(BEAM)]
    subprocess.run(args, check=True, capture_output=True, text=True)
    after = norm_time(metrics_port)
    steps = json.loads(out_json.read_text())["steps"]
    norms = {}
    for norm, (total, count) in after.items():
        d_sum = total - before.get(norm, [0.0, 0.0])[0]
        d_count = count - before.get(norm, [0.0, 0.0])[1]
        if d_count > 0:
            norms[norm] = {"sampled_calls": int(d_count), "mean_us": round(1e6 * d_sum / d_count, 2)}
    return {"serving": {str(s["concurrency"]): {k: s[k] for k in
                                                ("throughput_rps", "tokens_per_s", "p50_ms", "p90_ms", "p99_ms")}
                        for s in steps},
            "norm_kernel": norms}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", type=pathlib.Path)
    parser.add_argument("--build", default="build", type=pathlib.Path)
    parser.add_argument("--bench-secs", default=10, type=int)
    parser.add_argument("--threads", default=2, type=int)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--part", choices=["quality", "serving", "all"], default="all")
    parser.add_argument("--models", nargs="*", help="only these (default: every finished run)")
    args = parser.parse_args()
    runs, build = args.runs.resolve(), args.build.resolve()
    models = collect_models(runs)
    if args.models:
        models = {name: models[name] for name in args.models}
    if not models:
        sys.exit(f"no trained models under {runs}/bundled or {runs}/compare")
    out = runs / "eval"
    out.mkdir(exist_ok=True)
    make_repository(models, out / "repository")
    normserve = str(build / "client" / "normserve")
    server = NormservedProcess(str(build / "server" / "normserved"), str(out / "repository"),
                               "--threads", str(args.threads))
    try:
        for name, run in models.items():
            architecture = json.loads((run / "config.json").read_text())["architecture"]
            path = out / f"{name}.json"
            result = json.loads(path.read_text()) if path.exists() else {}
            result.update({"model": name, "architecture": architecture, "run": str(run)})
            if args.part in ("quality", "all"):
                if architecture == "transformer_mt":
                    hypotheses, quality = translate_test(normserve, server.target, name,
                                                         ROOT / "data" / "deen", args.limit)
                    (out / f"{name}.hyp").write_text("\n".join(hypotheses) + "\n",
                                                     encoding="utf-8")
                else:
                    quality = score_test(normserve, server.target, name, ROOT / "data" / "enlm",
                                         args.limit)
                result["test"] = quality
                print(f"{name}: {json.dumps(quality)}", flush=True)
            if args.part in ("serving", "all"):
                result["server_threads"] = args.threads
                result.update(bench(str(build / "client" / "normserve-bench"), server.target,
                                    server.metrics_port, name, architecture, args.bench_secs,
                                    out / f"{name}.bench.json"))
                print(f"{name}: {json.dumps(result['serving'])}", flush=True)
            path.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
