#!/usr/bin/env python3
"""The decoding engine under concurrent load, through a real normserved (issue #11): each
figure is a ratio of two runs made side by side in one invocation.

1. Translate throughput (deen, beam 4, one sentence per call) at concurrency 64 against 1.
2. Generate tokens/s (enlm) of 16 concurrent streams against one stream.
3. p99 latency of a closed loop of short Translate calls alone, and beside a Generate stream
   as long as the model's positions allow, restarted while the loop runs.

With --instances, instead: Translate throughput at concurrency 64 and the p50 of one client,
for model instances x intra-op threads of 1x1, 2x1 and 1x2 (one normserved each, all started
first, measured in interleaved rounds; medians), the measurement behind the defaults.

Usage: scripts/bench-engine.py [--normserved build/server/normserved] [--seconds 10]
       [--threads 1] [--instances] [--rounds 3] [--out results/engine-bench-vm.md]
Prints a markdown table with the machine and its load average.
"""
import argparse
import os
import platform
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

from grpc_stubs import pb, stub  # noqa: E402
from normserved_process import NormservedProcess  # noqa: E402
from bench_machine import cpu_model, revision as project_revision  # noqa: E402

GERMAN = ["Guten Morgen", "Das ist nicht möglich.", "ein großes Haus", "Vielen Dank!",
          "Wie geht es Ihnen?", "Ich habe keine Zeit.", "Das Wetter ist schön.",
          "Morgen fahre ich mit dem Zug nach Berlin.", "Wo ist der Bahnhof?",
          "Ich trinke gern Kaffee."]


def translate(client, i, beam=4):
    request = pb.TranslateRequest(model="deen", texts=[GERMAN[i % len(GERMAN)].encode()],
                                  options=pb.TranslateOptions(beam_size=beam))
    return client.Translate(request, timeout=120)


def closed_loop(target, workers, seconds, call):
    """Runs `workers` threads calling call(client, i) back to back; returns the latencies."""
    latencies, lock = [], threading.Lock()
    deadline = time.monotonic() + seconds

    def work(w):
        client = stub(target)
        i = w
        while time.monotonic() < deadline:
            start = time.monotonic()
            call(client, i)
            with lock:
                latencies.append(time.monotonic() - start)
            i += workers
    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def generate(client, seed, tokens):
    request = pb.GenerateRequest(model="enlm", prompt=b"the house", options=pb.GenerateOptions(
        max_new_tokens=tokens, temperature=1.0, seed=seed))
    count = 0
    for message in client.Generate(request, timeout=300):
        count = message.tokens or count
    return count


def streams_tokens_per_second(target, streams, tokens):
    counts = [0] * streams
    start = time.monotonic()

    def run(s):
        counts[s] = generate(stub(target), s + 1, tokens)
    threads = [threading.Thread(target=run, args=(s,)) for s in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


INSTANCE_CONFIGS = [(1, 1), (2, 1), (1, 2)]  # (instances, intra-op threads)


def instances_rows(args):
    """Translate at concurrency 64 and 1 per (instances, threads), interleaved rounds."""
    servers = {c: NormservedProcess(args.normserved, args.repository, "--instances", str(c[0]),
                                    "--threads", str(c[1])) for c in INSTANCE_CONFIGS}
    rates = {c: [] for c in INSTANCE_CONFIGS}
    p50s = {c: [] for c in INSTANCE_CONFIGS}
    try:
        for server in servers.values():
            translate(stub(server.target), 0)  # warm-up
        for _ in range(args.rounds):
            for config, server in servers.items():
                many = closed_loop(server.target, 64, args.seconds, translate)
                rates[config].append(len(many) / args.seconds)
                one = closed_loop(server.target, 1, args.seconds / 2, translate)
                p50s[config].append(percentile(one, 50) * 1e3)
    finally:
        for server in servers.values():
            server.stop()
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    base = INSTANCE_CONFIGS[0]
    rows = []
    for config in INSTANCE_CONFIGS[1:]:
        name = f"{config[0]} instance(s) x {config[1]} thread(s) vs 1 x 1"
        rows.append((f"Translate calls/s at concurrency 64 (deen, beam 4), {name}",
                     f"{median(rates[base]):.1f}", f"{median(rates[config]):.1f}",
                     median(rates[config]) / median(rates[base])))
        rows.append((f"p50 ms of one client, {name}", f"{median(p50s[base]):.2f}",
                     f"{median(p50s[config]):.2f}", median(p50s[config]) / median(p50s[base])))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--normserved", default=os.path.join(ROOT, "build/server/normserved"))
    parser.add_argument("--repository", default=os.path.join(ROOT, "models/repository"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--instances", action="store_true",
                        help="compare model instances and intra-op threads instead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    load_start = os.getloadavg()
    if args.instances:
        rows = instances_rows(args)
    else:
        rows = load_rows(args)
    report(args, rows, load_start)


def load_rows(args):
    server = NormservedProcess(args.normserved, args.repository, "--threads", str(args.threads))
    rows = []
    try:
        target = server.target
        translate(stub(target), 0)  # warm-up
        one = closed_loop(target, 1, args.seconds, translate)
        many = closed_loop(target, 64, args.seconds, translate)
        rate_one, rate_many = len(one) / args.seconds, len(many) / args.seconds
        rows.append(("Translate calls/s (deen, beam 4, 1 sentence), concurrency 64 vs 1",
                     f"{rate_one:.1f}", f"{rate_many:.1f}", rate_many / rate_one))

        tokens = 64
        single = streams_tokens_per_second(target, 1, tokens)
        sixteen = streams_tokens_per_second(target, 16, tokens)
        rows.append((f"Generate tokens/s (enlm, {tokens} tokens each), 16 streams vs 1",
                     f"{single:.1f}", f"{sixteen:.1f}", sixteen / single))

        alone = closed_loop(target, 1, args.seconds, lambda c, i: translate(c, i, 1))
        stop = threading.Event()

        def long_generations():
            client = stub(target)
            seed = 100
            while not stop.is_set():
                generate(client, seed, 250)  # 256 positions: </s> + prompt + 250
                seed += 1
        background = threading.Thread(target=long_generations)
        background.start()
        beside = closed_loop(target, 1, args.seconds, lambda c, i: translate(c, i, 1))
        stop.set()
        background.join()
        p99_alone, p99_beside = percentile(alone, 99) * 1e3, percentile(beside, 99) * 1e3
        rows.append(("short Translate p99 ms (greedy), alone vs beside 250-token Generates",
                     f"{p99_alone:.2f}", f"{p99_beside:.2f}", p99_beside / p99_alone))
    finally:
        server.stop()
    return rows


def report(args, rows, load_start):
    load_end = os.getloadavg()
    cpu = cpu_model()
    revision = project_revision()
    lines = [
        "# normserve decoding engine under concurrent load",
        "",
        f"- Machine: `nproc` {os.cpu_count()}, {cpu}, {platform.machine()}",
        f"- Load average: start {' '.join(f'{x:.2f}' for x in load_start)}, "
        f"end {' '.join(f'{x:.2f}' for x in load_end)}",
        f"- normserve {revision}, "
        + (f"{args.rounds} interleaved rounds, medians" if args.instances
           else f"`--threads {args.threads}`")
        + f", {args.seconds:.0f} s per closed loop, clients in Python (grpcio) on the same "
        "machine",
        "",
        "| workload | baseline | under test | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {a} | {b} | {ratio:.2f}x |" for name, a, b, ratio in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
