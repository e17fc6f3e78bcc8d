#!/usr/bin/python3
"""Benchmarks normserve against CTranslate2 (PyPI `ctranslate2` 4.x) on the same weights.

The normserve model version directory (config.json, model.safetensors, source.spm, target.spm)
is converted to a CTranslate2 model with the `ctranslate2.specs` API; the conversion is checked
by scoring the same pairs with both engines (per-token log-prob differences) and by translating
the same sentences (share of identical outputs, beam 4 and greedy). Then both engines are timed
interleaved (CTranslate2, normserve, CTranslate2, ... medians of --rounds) at each of --threads
intra-op thread counts: beam-4 batches, single-sentence latency, greedy batches, Score. normserve
is the real normserved, started here on loopback with --threads N, driven over gRPC.

Both engines do the same work: raw text in, text out. normserve tokenizes in the server;
CTranslate2 gets the pieces of the model's source.spm and its output is decoded with target.spm
inside the timed region. Both decode to the same per-batch length bound.

CTranslate2 and SentencePiece come from a cached venv (made on first use from Debian's
python3 with --system-site-packages, so that Debian's grpcio and protobuf stay visible):
${XDG_CACHE_HOME:-~/.cache}/normserve/ct2-venv. The script re-runs itself inside it.

Usage: scripts/bench-ctranslate2.py [--model-dir DIR | --base] [--threads 1,2] [--quick]
                                    [--sources FILE] [--out FILE.md]
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from bench_machine import cpu_model, revision as project_revision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CT2_REQUIREMENT = "ctranslate2>=4,<5"
VENV_MARKER = "NORMSERVE_CT2_VENV"


def venv_dir():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "normserve", "ct2-venv")


def ensure_venv_and_reexec():
    """Creates the venv and installs CTranslate2 (and SentencePiece, when Debian's is missing)
    into it once, then runs this script again with the venv's Python."""
    venv = venv_dir()
    python = os.path.join(venv, "bin", "python")
    if os.environ.get(VENV_MARKER) == venv:
        return
    if not os.path.exists(python):
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv],
                       check=True)
    have = subprocess.run([python, "-c", "import ctranslate2, sentencepiece, numpy"],
                          capture_output=True)
    if have.returncode != 0:
        packages = [CT2_REQUIREMENT]
        if subprocess.run([python, "-c", "import sentencepiece"],
                          capture_output=True).returncode != 0:
            packages.append("sentencepiece")
        print(f"bench-ctranslate2: pip install {' '.join(packages)} into {venv}", file=sys.stderr)
        pip = subprocess.run([python, "-m", "pip", "install", "-q", *packages])
        if pip.returncode != 0:
            sys.exit(f"bench-ctranslate2: pip could not install {' '.join(packages)} into "
                     f"{venv} (is PyPI reachable? a proxy needs HTTPS_PROXY); see pip's message "
                     "above")
    os.environ[VENV_MARKER] = venv
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
# Reading the normserve model


def read_safetensors(path, np):
    """{name: float32 array} of a safetensors file (F32, F16 or BF16)."""
    with open(path, "rb") as f:
        header_size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_size))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "F32":
            array = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "F16":
            array = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif info["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}")
        tensors[name] = array.reshape(info["shape"]).astype(np.float32)
    return tensors


NORM_SITES = ["encoder_self_attn", "encoder_ffn", "decoder_self_attn", "decoder_cross_attn",
              "decoder_ffn", "final"]


def site_norm(config, site):
    norm = config.get("norm", {})
    found = norm.get(site, norm.get("default"))
    return dict({"bias": True, "eps": 1e-5, "eps_placement": "inside_sqrt"}, **found)


def sinusoidal_positions(np, rows, dim, pad):
    """normserve's (fairseq's) table: sin | cos halves, row pad+1 is the first position; the
    rows returned start there."""
    half = dim // 2
    step = np.log(10000.0) / max(half - 1, 1)
    freqs = np.exp(np.arange(half, dtype=np.float32) * np.float32(-step)).astype(np.float32)
    positions = np.arange(pad + 1, pad + 1 + rows, dtype=np.float32)
    angles = positions[:, None] * freqs[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def convert_to_ctranslate2(model_dir, out_dir):
    """Writes a CTranslate2 model of the normserve transformer_mt model in model_dir to out_dir;
    returns the list of notes on what had to be folded or approximated."""
    import numpy as np
    import sentencepiece
    from ctranslate2 import specs
    from ctranslate2.specs import common_spec

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("architecture") != "transformer_mt":
        raise SystemExit(f"{model_dir}: only transformer_mt models convert (this is "
                         f"{config.get('architecture')})")
    if config.get("positions", "sinusoidal") != "sinusoidal":
        raise SystemExit(f"{model_dir}: positions {config['positions']} do not convert")
    pre_norm = config.get("normalize_before", True)
    norms = {site: site_norm(config, site) for site in NORM_SITES if pre_norm or site != "final"}
    notes = []
    for site, norm in norms.items():
        if norm["type"] not in ("layernorm", "rmsnorm"):
            raise SystemExit(f"{model_dir}: norm {site} is {norm['type']}; CTranslate2 has only "
                             "LayerNorm and RMSNorm")
        if norm["type"] == "rmsnorm" and norm["bias"] and not pre_norm:
            raise SystemExit(f"{model_dir}: a post-norm RMSNorm with a bias feeds the residual "
                             "stream; CTranslate2's RMSNorm has no bias to carry it")
        if norm["eps_placement"] != "inside_sqrt":
            notes.append(f"norm {site} adds eps outside the sqrt; CTranslate2 adds it inside")
    eps_values = sorted({norm["eps"] for norm in norms.values()})
    if len(eps_values) > 1:
        notes.append(f"the norms' eps differ ({eps_values}); CTranslate2 has one: "
                     f"{eps_values[0]} is used")
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"), np)
    d, heads = config["embed_dim"], config["attention_heads"]
    pad = config.get("special_tokens", {}).get("pad", 1)
    activation = {"relu": specs.Activation.RELU, "gelu": specs.Activation.GELU}[
        config.get("activation", "relu")]

    encoder = specs.TransformerEncoderSpec(config["encoder_layers"], heads, pre_norm=pre_norm,
                                           activation=activation)
    decoder = specs.TransformerDecoderSpec(config["decoder_layers"], heads, pre_norm=pre_norm,
                                           activation=activation)
    # RMSNorm with a bias: CTranslate2's RMSNorm has a scale only. In a pre-norm model a norm's
    # output feeds only linear layers, so W (g*n + b) + c = (W g) n + (W b + c): the bias moves
    # into the biases of the linear layers that read the norm (exact up to rounding).
    folded = []

    def set_norm(spec_holder, attribute, site, prefix):
        norm = norms[site]
        rms = norm["type"] == "rmsnorm"
        layer_norm = common_spec.LayerNormSpec(rms_norm=rms)
        setattr(spec_holder, attribute, layer_norm)
        layer_norm.gamma = w[prefix + ".weight"]
        bias = w.get(prefix + ".bias")
        if not rms:
            layer_norm.beta = bias
            return None
        if bias is not None and np.any(bias != 0):
            folded.append(prefix)
            return bias
        return None

    def linear(spec, weight, bias, norm_bias=None):
        spec.weight = weight
        spec.bias = bias if norm_bias is None else bias + weight @ norm_bias

    def attention_weights(prefix, part):
        return w[f"{prefix}.{part}_proj.weight"], w[f"{prefix}.{part}_proj.bias"]

    def self_attention(layer, prefix, site):
        nb = set_norm(layer.self_attention, "layer_norm", site, prefix + ".self_attn_layer_norm")
        qkv = [attention_weights(prefix + ".self_attn", part) for part in ("q", "k", "v")]
        linear(layer.self_attention.linear[0], np.concatenate([x[0] for x in qkv]),
               np.concatenate([x[1] for x in qkv]), nb)
        linear(layer.self_attention.linear[1], *attention_weights(prefix + ".self_attn", "out"))

    def feed_forward(spec, prefix, norm_bias):
        linear(spec.linear_0, w[prefix + ".fc1.weight"], w[prefix + ".fc1.bias"], norm_bias)
        linear(spec.linear_1, w[prefix + ".fc2.weight"], w[prefix + ".fc2.bias"])

    source_table = w["encoder.embed_tokens.weight"]
    target_table = source_table if config.get("share_all_embeddings") else \
        w["decoder.embed_tokens.weight"]
    positions = sinusoidal_positions(np, config["max_positions"], d, pad)
    encoder.embeddings[0].weight = source_table
    encoder.position_encodings.encodings = positions
    for i, layer in enumerate(encoder.layer):
        p = f"encoder.layers.{i}"
        self_attention(layer, p, "encoder_self_attn")
        nb = set_norm(layer.ffn, "layer_norm", "encoder_ffn", p + ".final_layer_norm")
        feed_forward(layer.ffn, p, nb)
    encoder_final_bias = None
    if pre_norm:
        encoder_final_bias = set_norm(encoder, "layer_norm", "final", "encoder.layer_norm")

    decoder.embeddings.weight = target_table
    decoder.position_encodings.encodings = positions
    for i, layer in enumerate(decoder.layer):
        p = f"decoder.layers.{i}"
        self_attention(layer, p, "decoder_self_attn")
        # The cross-attention norm feeds the queries only; the encoder's final norm feeds the
        # keys and values of every decoder layer.
        nb = set_norm(layer.attention, "layer_norm", "decoder_cross_attn",
                      p + ".encoder_attn_layer_norm")
        linear(layer.attention.linear[0], *attention_weights(p + ".encoder_attn", "q"), nb)
        kv = [attention_weights(p + ".encoder_attn", part) for part in ("k", "v")]
        linear(layer.attention.linear[1], np.concatenate([x[0] for x in kv]),
               np.concatenate([x[1] for x in kv]), encoder_final_bias)
        linear(layer.attention.linear[2], *attention_weights(p + ".encoder_attn", "out"))
        nb = set_norm(layer.ffn, "layer_norm", "decoder_ffn", p + ".final_layer_norm")
        feed_forward(layer.ffn, p, nb)
    decoder_final_bias = None
    if pre_norm:
        decoder_final_bias = set_norm(decoder, "layer_norm", "final", "decoder.layer_norm")
    output = target_table if config.get("share_decoder_input_output_embed", True) else \
        w["decoder.output_projection.weight"]
    decoder.projection.weight = output
    if decoder_final_bias is not None:
        decoder.projection.bias = output @ decoder_final_bias
    if folded:
        notes.append(f"{len(folded)} RMSNorm biases folded into the following linear layers' "
                     "biases (CTranslate2's RMSNorm has no bias; exact for pre-norm)")

    spec = specs.TransformerSpec(encoder, decoder)
    special = dict({"bos": 0, "pad": 1, "eos": 2, "unk": 3}, **config.get("special_tokens", {}))
    vocabularies = []
    for side in ("source", "target"):
        processor = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(model_dir, config["tokenizer"][side]))
        vocabularies.append([processor.id_to_piece(i) for i in range(processor.get_piece_size())])
    source_vocabulary, target_vocabulary = vocabularies
    spec.register_source_vocabulary(source_vocabulary)
    spec.register_target_vocabulary(target_vocabulary)
    spec.config.unk_token = target_vocabulary[special["unk"]]
    spec.config.bos_token = target_vocabulary[special["bos"]]
    spec.config.eos_token = target_vocabulary[special["eos"]]
    # fairseq's convention, as in normserve: source + </s>; the decoder starts from </s>.
    spec.config.decoder_start_token = target_vocabulary[special["eos"]]
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = eps_values[0]
    spec.validate()
    spec.optimize(quantization="float32")
    os.makedirs(out_dir, exist_ok=True)
    spec.save(out_dir)
    return notes


# ---------------------------------------------------------------------------------------------
# Sentences


def load_prepare_data():
    import importlib.util
    spec = importlib.util.spec_from_file_location("prepare_data",
                                                  os.path.join(ROOT, "scripts", "prepare-data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def german_sentences(sources_file):
    """(sentences, where from): --sources, else the held-out test split of
    scripts/prepare-data.py."""
    if sources_file:
        with open(sources_file, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()], sources_file
    data = prepared_data()
    if data is None:
        raise SystemExit("bench-ctranslate2: no German sentences: pass --sources FILE or "
                         "install trans-de-en (for the test split of scripts/prepare-data.py)")
    with open(os.path.join(data, "test.de"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()], \
            "the test split of scripts/prepare-data.py (Ding dictionary)"


def take(sentences, count):
    """count sentences, cycling through the list when it is shorter."""
    return [sentences[i % len(sentences)] for i in range(count)]


def batches(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------------------------------------
# The two engines, with the same interface: translate(texts, beam), score(pairs)


def length_bound(source_lengths):
    """normserve's default output bound (1.5 * (tokens + 1) + 10) for the longest source of a
    batch; both engines get it for every sentence of the batch."""
    return int(1.5 * (max(source_lengths) + 1)) + 10


class CTranslate2Engine:
    def __init__(self, model_dir, ct2_dir, threads):
        import ctranslate2
        import sentencepiece
        self.translator = ctranslate2.Translator(ct2_dir, device="cpu", compute_type="float32",
                                                 inter_threads=1, intra_threads=threads)
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            tokenizers = json.load(f)["tokenizer"]
        self.source = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(model_dir, tokenizers["source"]))
        self.target = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(model_dir, tokenizers["target"]))

    def translate(self, texts, beam):
        pieces = self.source.encode(texts, out_type=str)
        results = self.translator.translate_batch(
            pieces, beam_size=beam, max_decoding_length=length_bound([len(p) for p in pieces]),
            min_decoding_length=1, max_batch_size=0)
        return [self.target.decode_pieces(r.hypotheses[0]) for r in results]

    def score(self, pairs):
        sources = self.source.encode([s for s, _ in pairs], out_type=str)
        targets = self.target.encode([t for _, t in pairs], out_type=str)
        return [(r.tokens, r.log_probs) for r in self.translator.score_batch(sources, targets)]


class NormserveEngine:
    def __init__(self, normserved, model_dir, threads, flags):
        sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
        from grpc_stubs import pb, stub
        from normserved_process import NormservedProcess
        self.pb = pb
        self.repository = tempfile.mkdtemp(prefix="normserve-ct2bench-")
        self.name = "bench"
        version = os.path.join(self.repository, self.name, "1")
        shutil.copytree(model_dir, version)
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            self.source_tokenizer = json.load(f)["tokenizer"]["source"]
        self.server = NormservedProcess(normserved, self.repository, "--threads", str(threads),
                                        *flags)
        self.stub = stub(self.server.target)
        import sentencepiece
        # Only to set the same per-batch length bound as CTranslate2's; not timed on this side.
        self.source = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(version, self.source_tokenizer))
        self.bounds = {}

    def bound(self, texts):
        key = tuple(texts)
        if key not in self.bounds:
            self.bounds[key] = length_bound([len(p) for p in self.source.encode(texts)])
        return self.bounds[key]

    def translate(self, texts, beam):
        options = self.pb.TranslateOptions(beam_size=beam, max_length_a=0,
                                           max_length_b=self.bound(texts))
        reply = self.stub.Translate(self.pb.TranslateRequest(
            model=self.name, texts=[t.encode() for t in texts], options=options), timeout=600)
        return [t.hypotheses[0].text for t in reply.translations]

    def score(self, pairs):
        reply = self.stub.Score(self.pb.ScoreRequest(
            model=self.name,
            pairs=[self.pb.SourceTarget(source=s.encode(), target=t.encode()) for s, t in pairs]),
            timeout=600)
        return [([x.token for x in r.tokens], [x.logprob for x in r.tokens]) for r in reply.results]

    def stop(self):
        self.server.stop()
        shutil.rmtree(self.repository, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Agreement


def agreement(ct2, normserve, sentences, pairs, batch_size):
    """Identical-output shares (beam 4, greedy) and the per-token log-prob differences of the
    same scored pairs."""
    out = {"sentences": len(sentences)}
    for name, beam in (("beam4", 4), ("greedy", 1)):
        same = 0
        examples = []
        for batch in batches(sentences, batch_size):
            for source, a, b in zip(batch, ct2.translate(batch, beam),
                                    normserve.translate(batch, beam)):
                if a == b:
                    same += 1
                elif len(examples) < 3:
                    examples.append((source, a, b))
        out[name] = same
        out[name + "_examples"] = examples
    differences, token_mismatches = [], 0
    for batch in batches(pairs, batch_size):
        for (ct2_tokens, ct2_logprobs), (ns_tokens, ns_logprobs) in zip(ct2.score(batch),
                                                                        normserve.score(batch)):
            if ct2_tokens != ns_tokens:
                token_mismatches += 1
                continue
            differences += [abs(a - b) for a, b in zip(ct2_logprobs, ns_logprobs)]
    out["pairs"] = len(pairs)
    out["token_mismatches"] = token_mismatches
    out["scored_tokens"] = len(differences)
    out["logprob_max_diff"] = max(differences) if differences else float("nan")
    out["logprob_mean_diff"] = statistics.fmean(differences) if differences else float("nan")
    return out


# ---------------------------------------------------------------------------------------------
# Timing


def workloads(args, sentences, latency_sentences, pairs):
    """(name, unit, higher_is_better, run(engine) -> figure of one round)."""

    def throughput(beam):
        def run(engine):
            start = time.perf_counter()
            for batch in batches(sentences, args.batch_size):
                engine.translate(batch, beam)
            return len(sentences) / (time.perf_counter() - start)
        return run

    def latency(engine):
        times = []
        for sentence in latency_sentences:
            start = time.perf_counter()
            engine.translate([sentence], 4)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    def score(engine):
        start = time.perf_counter()
        for batch in batches(pairs, args.batch_size):
            engine.score(batch)
        return len(pairs) / (time.perf_counter() - start)

    return [
        (f"beam-4 throughput, {len(sentences)} sentences in batches of {args.batch_size}",
         "sentences/s", True, throughput(4)),
        (f"single-sentence p50 latency, beam 4 ({len(latency_sentences)} sentences)", "ms", False,
         latency),
        (f"greedy throughput, {len(sentences)} sentences in batches of {args.batch_size}",
         "sentences/s", True, throughput(1)),
        (f"Score, {len(pairs)} pairs in batches of {args.batch_size}", "pairs/s", True, score),
    ]


def warm_up(engine, sentences, pairs, batch_size):
    """One call of each kind first: caches, allocators, first-batch costs stay out of the
    figures."""
    engine.translate(sentences[:batch_size], 4)
    engine.translate(sentences[:batch_size], 1)
    engine.translate(sentences[:1], 4)
    engine.score(pairs[:batch_size])


def time_interleaved(ct2, normserve, work, rounds):
    """Rows (name, unit, CT2 median, normserve median, ratio); ratio > 1: normserve better."""
    rows = []
    for name, unit, higher_is_better, run in work:
        figures = {"ct2": [], "normserve": []}
        for _ in range(rounds):
            figures["ct2"].append(run(ct2))
            figures["normserve"].append(run(normserve))
        a, b = statistics.median(figures["ct2"]), statistics.median(figures["normserve"])
        rows.append((name, unit, a, b, b / a if higher_is_better else a / b))
        print(f"  {name}: CTranslate2 {a:.2f} {unit}, normserve {b:.2f} {unit}", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def machine_info():
    return cpu_model(), os.cpu_count()


def report(args, model_dir, source_origin, notes, agree, timings, load_start, load_end,
           mean_source_tokens):
    import ctranslate2
    cpu, cores = machine_info()
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    shape = (f"d {config['embed_dim']}, {config['encoder_layers']}+{config['decoder_layers']} "
             f"layers, {config['attention_heads']} heads, FFN {config['ffn_dim']}, vocabularies "
             f"{config['source_vocab_size']}/{config['target_vocab_size']}")

    def pct(count, total):
        return f"{count}/{total} ({100.0 * count / total:.1f}%)"

    lines = [
        f"# normserve vs CTranslate2: {args.label}",
        "",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- Machine: `nproc` {cores}, {cpu}, {platform.machine()}, Linux {platform.release()}",
        f"- Load average (1/5/15 min): start {' '.join(f'{x:.2f}' for x in load_start)}, end "
        f"{' '.join(f'{x:.2f}' for x in load_end)}",
        f"- Versions: normserve {project_revision()}, CTranslate2 {ctranslate2.__version__} "
        f"(compute_type float32, inter_threads 1), Python {platform.python_version()}",
        f"- Model: `{os.path.relpath(model_dir, ROOT) if model_dir.startswith(ROOT) else model_dir}`"
        f" ({shape}; fp16 weights, both engines compute in float32)",
        f"- Conversion: {'; '.join(notes) if notes else 'exact'}",
        f"- Sentences: {source_origin}, {args.min_words}+ words, mean "
        f"{mean_source_tokens:.1f} source tokens",
        f"- normserved flags: `--threads N {' '.join(args.server_flags)}`",
        "- Tokenization is included for both: normserve tokenizes in the server (raw text over "
        "gRPC on loopback, so its figures also include the RPC); CTranslate2 runs SentencePiece "
        "encode/decode in Python inside the timed region. Both decode to the same per-batch "
        "length bound (normserve's default 1.5 * (tokens + 1) + 10 of the longest source) and "
        "follow the same search rules (README \"Search rules\"): no </s> at the first step "
        "(CTranslate2's min_decoding_length 1), and a hypothesis at the bound ends without </s>.",
        f"- Timing: interleaved (CTranslate2, normserve, CTranslate2, ...), {args.rounds} rounds "
        "after a warm-up call of each kind, medians.",
        "",
        "## Agreement (conversion check)",
        "",
        f"- Score of {agree['pairs']} (source, normserve beam-4 output) pairs: per-token log-prob "
        f"|difference| max {agree['logprob_max_diff']:.2e}, mean {agree['logprob_mean_diff']:.2e} "
        f"over {agree['scored_tokens']} tokens; {agree['token_mismatches']} pairs tokenized "
        "differently",
        f"- Identical output strings, beam 4: {pct(agree['beam4'], agree['sentences'])}; greedy: "
        f"{pct(agree['greedy'], agree['sentences'])}",
    ]
    for name in ("beam4", "greedy"):
        for source, a, b in agree[name + "_examples"]:
            lines.append(f"  - {name} differs: `{source}` -> CTranslate2 `{a}`, normserve `{b}`")
    lines += ["", "## Speed", "",
              "Ratio: normserve/CTranslate2 for throughput, CTranslate2/normserve for latency "
              "(> 1: normserve is better).", "",
              "| workload | threads | CTranslate2 | normserve | ratio |",
              "|---|---|---|---|---|"]
    for threads, rows in timings:
        for name, unit, a, b, ratio in rows:
            lines.append(f"| {name} | {threads} | {a:.2f} {unit} | {b:.2f} {unit} | "
                         f"{ratio:.2f}x |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The base-size model of issue #11


BASE_CONFIG = {
    "architecture": "transformer_mt", "embed_dim": 512, "ffn_dim": 2048, "attention_heads": 8,
    "encoder_layers": 6, "decoder_layers": 6, "normalize_before": True, "activation": "relu",
    "positions": "sinusoidal", "max_positions": 256, "share_all_embeddings": False,
    "share_decoder_input_output_embed": True,
    # The bundled deen's norm: RMSNorm with a bias, eps inside the sqrt.
    "norm": {"default": {"type": "rmsnorm", "eps": 1e-5}},
}


def cache_dir():
    return os.path.dirname(venv_dir())


def prepared_data():
    """data/deen of scripts/prepare-data.py: the checkout's, else one made once in the cache."""
    for base in (os.path.join(ROOT, "data"), os.path.join(cache_dir(), "data")):
        if os.path.exists(os.path.join(base, "deen", "test.de")):
            return os.path.join(base, "deen")
    prepare_data = load_prepare_data()
    if not os.path.exists(prepare_data.DING_PATH):
        return None
    out = os.path.join(cache_dir(), "data")
    print(f"bench-ctranslate2: scripts/prepare-data.py --out {out} (about a minute)",
          file=sys.stderr)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "prepare-data.py"), "--out",
                    out], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(out, "deen")


def base_model(normserve_model, vocab_size):
    """The base-size model with random weights (normserve-model init), made once in the cache;
    its SentencePiece models are trained on the training split of prepare-data.py."""
    out = os.path.join(cache_dir(), f"base-{vocab_size}", "1")
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    data = prepared_data()
    if data is None:
        raise SystemExit("bench-ctranslate2: --base needs the training text of "
                         "scripts/prepare-data.py: install trans-de-en")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as config:
        json.dump(BASE_CONFIG, config)
        config.flush()
        print(f"bench-ctranslate2: normserve-model init -> {out} (SentencePiece training)",
              file=sys.stderr)
        subprocess.run([normserve_model, "init", "--config", config.name, "--out", out,
                        "--source-text", os.path.join(data, "train.de"), "--target-text",
                        os.path.join(data, "train.en"), "--vocab-size", str(vocab_size),
                        "--seed", "1", "--dtype", "f16"], check=True)
    return out


# ---------------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=os.path.join(ROOT, "models", "repository", "deen",
                                                            "1"),
                        help="a normserve model version directory (default: the bundled deen)")
    parser.add_argument("--base", action="store_true",
                        help="benchmark the base-size model of issue #11 (d 512, 6+6 layers, 8 "
                        "heads, FFN 2048, random weights), made once with normserve-model init")
    parser.add_argument("--base-vocab-size", type=int, default=32000)
    parser.add_argument("--normserved", default=os.path.join(ROOT, "build", "server",
                                                             "normserved"))
    parser.add_argument("--normserve-model", default=os.path.join(ROOT, "build", "models",
                                                                  "normserve-model"))
    parser.add_argument("--sources", help="German sentences, one a line (default: the held-out "
                        "test split of scripts/prepare-data.py)")
    parser.add_argument("--min-words", type=int, default=3,
                        help="use sentences of at least this many words (default 3)")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-sentences", type=int, default=100)
    parser.add_argument("--score-pairs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2",
                        help="intra-op thread counts, comma-separated (default 1,2)")
    parser.add_argument("--server-flag", dest="server_flags", action="append",
                        default=None, help="extra normserved flag (repeatable; default "
                        "--max-queue-delay-us 0 --tokenizer-threads 1)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, one round, 1 thread: a check that everything runs")
    parser.add_argument("--out", help="also write the markdown report here")
    parser.add_argument("--json", help="also write the agreement figures and rows as JSON here")
    args = parser.parse_args()
    if args.server_flags is None:
        # One client sends one request at a time: waiting for batch partners would only add
        # latency. One tokenizer thread keeps normserve's thread count near CTranslate2's.
        args.server_flags = ["--max-queue-delay-us", "0", "--tokenizer-threads", "1"]
    else:
        args.server_flags = [part for flag in args.server_flags for part in flag.split()]
    if args.quick:
        args.sentences, args.latency_sentences, args.score_pairs = 32, 4, 16
        args.rounds, args.threads = 1, "1"
    args.thread_counts = [int(t) for t in args.threads.split(",")]
    return args


def main():
    ensure_venv_and_reexec()
    args = parse_args()
    load_start = os.getloadavg()
    if args.base:
        args.model_dir = base_model(args.normserve_model, args.base_vocab_size)
    model_dir = os.path.abspath(args.model_dir)
    args.label = "base-size model (random weights)" if args.base else \
        os.path.relpath(model_dir, ROOT) if model_dir.startswith(ROOT) else model_dir
    all_sentences, origin = german_sentences(args.sources)
    long_enough = [s for s in all_sentences if len(s.split()) >= args.min_words]
    if not long_enough:
        raise SystemExit(f"bench-ctranslate2: no sentence of {args.min_words}+ words in {origin}")
    sentences = take(long_enough, args.sentences)
    latency_sentences = take(long_enough, args.latency_sentences)

    work_dir = tempfile.mkdtemp(prefix="normserve-ct2-")
    try:
        ct2_dir = os.path.join(work_dir, "ct2-model")
        notes = convert_to_ctranslate2(model_dir, ct2_dir)
        timings, agree = [], None
        for threads in args.thread_counts:
            print(f"bench-ctranslate2: {threads} thread(s)", file=sys.stderr)
            ct2 = CTranslate2Engine(model_dir, ct2_dir, threads)
            normserve = NormserveEngine(args.normserved, model_dir, threads, args.server_flags)
            try:
                if agree is None:
                    targets = []
                    for batch in batches(take(sentences, args.score_pairs), args.batch_size):
                        targets += normserve.translate(batch, 4)
                    pairs = [(s, t) for s, t in zip(take(sentences, args.score_pairs), targets)
                             if t]
                    agree = agreement(ct2, normserve, sentences, pairs, args.batch_size)
                    mean_tokens = statistics.fmean(
                        len(p) for p in ct2.source.encode(sentences))
                for engine in (ct2, normserve):
                    warm_up(engine, sentences, pairs, args.batch_size)
                timings.append((threads, time_interleaved(
                    ct2, normserve, workloads(args, sentences, latency_sentences, pairs),
                    args.rounds)))
            finally:
                normserve.stop()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    text = report(args, model_dir, origin, notes, agree, timings, load_start, os.getloadavg(),
                  mean_tokens)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"agreement": {k: v for k, v in agree.items() if "examples" not in k},
                       "timings": {str(t): [list(r) for r in rows] for t, rows in timings}},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
