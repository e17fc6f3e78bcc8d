#!/usr/bin/env python3
"""Converts a fairseq checkpoint into a normserve model version directory.

    import-fairseq.py --checkpoint checkpoint_best.pt --data-dir DATA --spm SPM [SPM] --out DIR

A fairseq checkpoint is a Python pickle, and loading a pickle runs whatever code it names:
convert only checkpoints you trust, once, with this command. normserved never reads
checkpoints; it serves the directory written here (DESIGN.md section 4): config.json,
model.safetensors, the SentencePiece model(s) and, where fairseq's dictionary numbers the
pieces differently from SentencePiece, a vocabulary file mapping pieces to model ids.

Run it with a Python that has torch (scripts/fairseq-venv.sh makes one); fairseq itself is
not needed unless the checkpoint pickles fairseq objects.

Supported: the `transformer` (translation) and `transformer_lm` model families, pre- or
post-norm, sinusoidal positions, ReLU or GELU, shared embeddings, LayerNorm, and the PowerNorm
authors' MaskPowerNorm and batch norm (their fairseq fork's --encoder-norm-self and siblings:
layer, power, batch). Anything else is refused with a message naming the option.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys

EPS = 1e-5  # fairseq's LayerNorm and the PowerNorm fork's norms all use 1e-5
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]  # fairseq's dictionary ids 0..3


class Refused(Exception):
    """The checkpoint uses something normserve does not serve."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " The checkpoint is a pickle: loading it runs "
        "code, so convert only trusted files; the server never loads checkpoints.",
        epilog="Example: import-fairseq.py --checkpoint ckpt/checkpoint_best.pt "
        "--data-dir data-bin --spm spm.de.model spm.en.model --out repo/deen/1",
    )
    p.add_argument("--checkpoint", required=True, help="fairseq checkpoint (checkpoint_best.pt)")
    p.add_argument(
        "--data-dir",
        required=True,
        help="the directory of the dictionaries the model was trained with: dict.SRC.txt and "
        "dict.TGT.txt for translation, dict.txt for a language model",
    )
    p.add_argument(
        "--spm",
        required=True,
        nargs="+",
        metavar="SPM_MODEL",
        help="the SentencePiece model(s) the text was encoded with: one (shared, or the LM's) "
        "or two (source then target)",
    )
    p.add_argument("--out", required=True, help="the version directory to write (made if absent)")
    p.add_argument(
        "--dtype",
        choices=["f32", "f16", "bf16"],
        default="f32",
        help="weights dtype in model.safetensors (default f32)",
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Reading the checkpoint's options


def model_options(checkpoint):
    """The model's options as a dict: old checkpoints keep an argparse Namespace in "args",
    fairseq >= 0.10 a config whose "model" part holds the same names."""
    args = checkpoint.get("args")
    if args is not None:
        return dict(vars(args)), dict(vars(args))
    cfg = checkpoint.get("cfg")
    if cfg is None:
        raise Refused("the checkpoint has neither 'args' nor 'cfg': not a fairseq checkpoint")
    cfg = to_plain(cfg)
    model = to_plain(cfg.get("model") or {})
    task = to_plain(cfg.get("task") or {})
    merged = dict(task)
    merged.update(model)
    merged["bpe"] = (to_plain(cfg.get("bpe") or {}) or {}).get("_name")
    merged["tokenizer"] = (to_plain(cfg.get("tokenizer") or {}) or {}).get("_name")
    return merged, task


def to_plain(value):
    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if hasattr(value, "items"):
        return {k: v for k, v in value.items()}
    return value


def option(opts, name, default=None):
    value = opts.get(name, default)
    return default if value is None else value


def refuse_unless(condition, message):
    if not condition:
        raise Refused(message)


def check_supported(opts, is_mt):
    """Refuses every option whose model normserve would compute differently."""
    bpe = opts.get("bpe")
    refuse_unless(
        bpe in (None, "sentencepiece"),
        f"bpe is '{bpe}': only SentencePiece ('--bpe sentencepiece' or none) is supported",
    )
    tok = opts.get("tokenizer")
    refuse_unless(
        tok in (None, "space"),
        f"tokenizer is '{tok}': normserve applies SentencePiece to raw text, without a "
        "pre-tokenizer (supported: none)",
    )
    sides = ["encoder", "decoder"] if is_mt else ["decoder"]
    for side in sides:
        refuse_unless(
            not option(opts, f"{side}_learned_pos", False),
            f"{side}_learned_pos is set: learned positions are not supported, only fairseq's "
            "sinusoidal positions",
        )
    flags = {
        "no_token_positional_embeddings": "models without positions are not supported",
        "layernorm_embedding": "a norm after the embeddings is not supported",
        "cross_self_attention": "cross+self attention is not supported",
        "adaptive_input": "adaptive input embeddings are not supported",
        "character_embeddings": "character embeddings are not supported",
        "tie_adaptive_weights": "adaptive weights are not supported",
        "add_bos_token": "LM inputs starting with <s> are not supported; they start with </s>",
        "encoder_spec_norm": "spectral norm on attention projections is not supported",
        "no_decoder_final_norm": "a pre-norm decoder without its final norm is not supported",
    }
    for name, why in flags.items():
        refuse_unless(not option(opts, name, False), f"{name} is set: {why}")
    refuse_unless(
        not opts.get("adaptive_softmax_cutoff"),
        "adaptive_softmax_cutoff is set: adaptive softmax is not supported (only a full output "
        "projection)",
    )
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        # Layer dropping at inference (--*-layers-to-keep) removes layers by index.
        refuse_unless(
            not opts.get(name.replace("layerdrop", "layers_to_keep")),
            f"{name.replace('layerdrop', 'layers_to_keep')} is set: pruned layers are not "
            "supported",
        )
    activation = option(opts, "activation_fn", "relu")
    refuse_unless(
        activation in ("relu", "gelu"),
        f"activation_fn is '{activation}': supported are relu and gelu (erf form)",
    )
    # quant_noise_pq only perturbs weights while training: the saved Linear weights are plain.


def same(opts, names, what):
    values = {n: opts.get(n) for n in names if opts.get(n) is not None}
    refuse_unless(
        len(set(values.values())) <= 1,
        f"{what} differ ({', '.join(f'{k}={v}' for k, v in values.items())}): normserve has one "
        "value for the whole model",
    )
    return next(iter(values.values())) if values else None


# ---------------------------------------------------------------------------------------------
# Norms


def norm_kind(opts, site_option):
    """The PowerNorm fork's per-site choice (layer, power, batch); LayerNorm elsewhere."""
    kind = option(opts, site_option, "layer")
    refuse_unless(
        kind in ("layer", "power", "batch"),
        f"{site_option} is '{kind}': supported are layer, power and batch",
    )
    return kind


def norm_config(kind, heads):
    if kind == "layer":
        return {"type": "layernorm", "eps": EPS}
    if kind == "batch":
        # The fork's batch norm first divides each token by its root mean square over all
        # channels (eps 1e-5), then applies the running statistics: normserve's batchnorm
        # with layer_scaling.
        return {"type": "batchnorm", "eps": EPS, "layer_scaling": True, "group_eps": EPS}
    return {"type": "powernorm", "eps": EPS, "groups": heads, "group_eps": EPS}


def convert_norm(kind, prefix, state, out, dim):
    """Moves one norm's tensors from the checkpoint's `state` into `out` under normserve's
    names, dropping training-only state."""
    take = lambda name: state.pop(f"{prefix}.{name}")  # noqa: E731
    weight, bias = take("weight"), take("bias")
    if kind == "layer":
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = weight, bias
        return
    if kind == "power":
        phi = take("running_phi").reshape(-1)
        for name in ("ema_gz", "iters"):  # backward-pass and warm-up bookkeeping
            state.pop(f"{prefix}.{name}", None)
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = weight, bias
        out[f"{prefix}.running_phi"] = phi
    else:
        state.pop(f"{prefix}.num_batches_tracked", None)
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = weight, bias
        out[f"{prefix}.running_mean"] = take("running_mean")
        out[f"{prefix}.running_var"] = take("running_var")
    for name, t in out.items():
        if name.startswith(prefix + ".") and tuple(t.shape) != (dim,):
            raise Refused(f"{name} has shape {tuple(t.shape)}, expected ({dim},)")


# ---------------------------------------------------------------------------------------------
# Weights


def split_in_proj(state):
    """fairseq < 0.7 stored attention projections as one in_proj_weight [q; k; v]."""
    for key in [k for k in state if k.endswith(".in_proj_weight")]:
        prefix = key[: -len("in_proj_weight")]
        for part in ("weight", "bias"):
            packed = state.pop(prefix + "in_proj_" + part, None)
            if packed is None:
                continue
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), packed.chunk(3, dim=0)):
                state[f"{prefix}{name}.{part}"] = chunk.clone()


def convert_weights(state, opts, sizes, norms, is_mt):
    """normserve's weights (fairseq's names) from the checkpoint's model state."""
    state = dict(state)
    split_in_proj(state)
    for key in list(state):
        # Sinusoidal tables are recomputed; "version" marks fairseq's state upgrades.
        if key.endswith("embed_positions._float_tensor") or key.endswith(".version"):
            del state[key]
    out = {}
    move = lambda name: out.__setitem__(name, state.pop(name))  # noqa: E731
    layer_names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    attn_names = [f"{p}_proj.{w}" for p in "qkvo" for w in ("weight", "bias")]
    attn_names = [n.replace("o_proj", "out_proj") for n in attn_names]
    dim = sizes["embed_dim"]

    def take_or_refuse(name):
        if name not in state:
            raise Refused(f"the checkpoint has no '{name}'")
        move(name)

    sides = (["encoder"] if is_mt else []) + ["decoder"]
    for side in sides:
        take_or_refuse(f"{side}.embed_tokens.weight")
        for i in range(sizes[f"{side}_layers"]):
            p = f"{side}.layers.{i}"
            attentions = ["self_attn"] + (["encoder_attn"] if side == "decoder" and is_mt else [])
            for a in attentions:
                for n in attn_names:
                    take_or_refuse(f"{p}.{a}.{n}")
                site = f"{side}_{'self_attn' if a == 'self_attn' else 'cross_attn'}"
                convert_norm(norms[site], f"{p}.{a}_layer_norm", state, out, dim)
            for n in layer_names:
                take_or_refuse(f"{p}.{n}")
            convert_norm(norms[f"{side}_ffn"], f"{p}.final_layer_norm", state, out, dim)
        if sizes["normalize_before"]:
            convert_norm("layer", f"{side}.layer_norm", state, out, dim)
    shared_all = sizes["share_all_embeddings"]
    if is_mt and shared_all:  # normserve takes the encoder's table for the decoder
        del out["decoder.embed_tokens.weight"]
    if sizes["share_decoder_input_output_embed"] or shared_all:
        state.pop("decoder.output_projection.weight", None)
    else:
        take_or_refuse("decoder.output_projection.weight")
    if state:
        raise Refused(
            "the checkpoint has weights that no supported option explains: "
            + ", ".join(sorted(state)[:8])
            + (" ..." if len(state) > 8 else "")
        )
    return out


def write_safetensors(path, tensors, dtype):
    """safetensors: 8-byte little-endian header length, JSON header, raw little-endian data."""
    import torch

    torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    names = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
    header, blobs, offset = {"__metadata__": {"format": "pt", "source": "fairseq"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch_dtype).contiguous().cpu()
        data = t.view(torch.int16 if t.element_size() == 2 else torch.int32).numpy().tobytes()
        header[name] = {
            "dtype": names[dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - (8 + len(text)) % 8) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for data in blobs:
            f.write(data)


# ---------------------------------------------------------------------------------------------
# Dictionaries and SentencePiece


def read_dictionary(path):
    """fairseq's dict.txt: <s>, <pad>, </s>, <unk>, then one symbol per line, in order."""
    symbols = list(SPECIAL)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.rsplit(" ", 1)
            if fields[-1] == "#fairseq:overwrite":
                fields = fields[0].rsplit(" ", 1)
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise Refused(f"{path}:{number}: not a fairseq dictionary line ('<symbol> <count>')")
            symbols.append(fields[0])
    return symbols


def spm_pieces(path):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(path)
    except OSError as e:
        raise Refused(f"--spm {path}: not a readable SentencePiece model ({e})") from e
    return [processor.IdToPiece(i) for i in range(processor.GetPieceSize())]


def vocabulary_map(dict_path, spm_path, model_rows, what):
    """{piece: model id} of the dictionary, or None where SentencePiece's ids already are the
    model's ids. fairseq's padding symbols (madeupwordNNNN) stay out of the map but count in
    the vocabulary, and so in the embedding's rows."""
    symbols = read_dictionary(dict_path)
    if len(symbols) != model_rows:
        raise Refused(
            f"{dict_path} has {len(symbols)} symbols (with the 4 special ones) but the "
            f"{what} embedding has {model_rows} rows: not the model's dictionary"
        )
    pieces = spm_pieces(spm_path)
    known = set(pieces)
    words = [s for s in symbols[4:] if not s.startswith("madeupword")]
    covered = sum(1 for s in words if s in known)
    if words and covered < 0.9 * len(words):
        raise Refused(
            f"only {covered} of the {len(words)} symbols of {dict_path} are pieces of "
            f"{spm_path}: the dictionary was not built from this SentencePiece model"
        )
    vocab = {}
    for i, s in enumerate(symbols):
        if i >= 4 and s.startswith("madeupword"):
            continue
        vocab.setdefault(s, i)
    # SentencePiece's own <unk>, <s>, </s> pieces are the special tokens.
    identity = len(pieces) == len(symbols) and all(
        vocab.get(p) == i for i, p in enumerate(pieces) if i >= 4
    ) and all(pieces[i] == SPECIAL[i] for i in range(min(4, len(pieces))))
    return None if identity else vocab


def find_dictionary(data_dir, name):
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
        raise Refused(f"{path} does not exist: --data-dir must hold the model's {name}")
    return path


# ---------------------------------------------------------------------------------------------


def convert(args):
    import torch

    # weights_only=False: the options are pickled Python objects (see the module docstring).
    kwargs = {"weights_only": False} if "weights_only" in torch.load.__code__.co_varnames else {}
    checkpoint = torch.load(args.checkpoint, map_location="cpu", **kwargs)
    if "model" not in checkpoint:
        raise Refused(f"{args.checkpoint} has no 'model' state: not a fairseq checkpoint")
    state = checkpoint["model"]
    opts, task = model_options(checkpoint)
    is_mt = any(k.startswith("encoder.") for k in state)
    arch = opts.get("arch") or opts.get("_name") or "?"
    refuse_unless(
        arch.startswith("transformer") and "align" not in arch and "pointer" not in arch,
        f"arch is '{arch}': supported are fairseq's transformer and transformer_lm families",
    )
    check_supported(opts, is_mt)

    sides = ["encoder", "decoder"] if is_mt else ["decoder"]
    embed_dim = same(opts, [f"{s}_embed_dim" for s in sides], "embed dims")
    embed_dim = embed_dim or state["decoder.embed_tokens.weight"].shape[1]
    for name in ("decoder_output_dim", "decoder_input_dim"):
        refuse_unless(
            opts.get(name) in (None, embed_dim),
            f"{name} is {opts.get(name)}, not decoder_embed_dim {embed_dim}: projections "
            "around the decoder are not supported",
        )
    heads = same(opts, [f"{s}_attention_heads" for s in sides], "attention heads")
    ffn_dim = same(opts, [f"{s}_ffn_embed_dim" for s in sides], "FFN dims")
    before = same(opts, [f"{s}_normalize_before" for s in sides], "normalize_before settings")
    count_layers = lambda side: len(  # noqa: E731
        {k.split(".")[2] for k in state if k.startswith(f"{side}.layers.")}
    )
    sizes = {
        "embed_dim": embed_dim,
        "normalize_before": bool(before),
        "share_all_embeddings": bool(option(opts, "share_all_embeddings", False)),
        "share_decoder_input_output_embed": bool(
            option(opts, "share_decoder_input_output_embed", False)
            or option(opts, "share_all_embeddings", False)
        ),
        "decoder_layers": count_layers("decoder"),
    }
    if is_mt:
        sizes["encoder_layers"] = count_layers("encoder")

    sites = {
        "encoder_self_attn": "encoder_norm_self",
        "encoder_ffn": "encoder_norm_ff",
        "decoder_self_attn": "decoder_norm_self",
        "decoder_cross_attn": "decoder_norm_self",  # the fork uses one option for both
        "decoder_ffn": "decoder_norm_ff",
    }
    if not is_mt:
        sites = {k: v for k, v in sites.items() if k.startswith("decoder") and "cross" not in k}
    norms = {site: norm_kind(opts, name) for site, name in sites.items()}
    weights = convert_weights(state, opts, sizes, norms, is_mt)

    os.makedirs(args.out, exist_ok=True)
    config = {
        "architecture": "transformer_mt" if is_mt else "transformer_lm",
        "embed_dim": embed_dim,
        "ffn_dim": ffn_dim or weights["decoder.layers.0.fc1.weight"].shape[0],
        "attention_heads": heads,
        "decoder_layers": sizes["decoder_layers"],
        "normalize_before": sizes["normalize_before"],
        "activation": option(opts, "activation_fn", "relu"),
        "positions": "sinusoidal",
        "scale_embedding": not option(opts, "no_scale_embedding", False),
        "share_decoder_input_output_embed": sizes["share_decoder_input_output_embed"],
        "special_tokens": {"bos": 0, "pad": 1, "eos": 2, "unk": 3},
    }
    spm = args.spm
    refuse_unless(len(spm) <= (2 if is_mt else 1), "--spm takes one model for a language model")
    tokenizer = {}
    if is_mt:
        src, tgt = task.get("source_lang"), task.get("target_lang")
        refuse_unless(src and tgt, "the checkpoint names no source_lang/target_lang")
        config["encoder_layers"] = sizes["encoder_layers"]
        config["share_all_embeddings"] = sizes["share_all_embeddings"]
        config["source_vocab_size"] = state["encoder.embed_tokens.weight"].shape[0]
        config["target_vocab_size"] = state["decoder.embed_tokens.weight"].shape[0]
        config["max_positions"] = min(
            option(opts, "max_source_positions", 1024), option(opts, "max_target_positions", 1024)
        )
        source_spm, target_spm = spm[0], spm[-1]
        files = [
            ("source", "source.spm", source_spm, f"dict.{src}.txt", "source_vocab_size"),
            ("target", "target.spm", target_spm, f"dict.{tgt}.txt", "target_vocab_size"),
        ]
    else:
        config["vocab_size"] = state["decoder.embed_tokens.weight"].shape[0]
        config["max_positions"] = option(
            opts, "max_target_positions", option(opts, "tokens_per_sample", 1024)
        )
        files = [("model", "lm.spm", spm[0], "dict.txt", "vocab_size")]
    for key, spm_name, spm_path, dict_name, size_field in files:
        vocab = vocabulary_map(
            find_dictionary(args.data_dir, dict_name), spm_path, config[size_field], key
        )
        shutil.copyfile(spm_path, os.path.join(args.out, spm_name))
        tokenizer[key] = spm_name
        if vocab is not None:
            vocab_name = ("vocab" if key == "model" else f"{key}_vocab") + ".json"
            with open(os.path.join(args.out, vocab_name), "w", encoding="utf-8") as f:
                json.dump(vocab, f, ensure_ascii=False, indent=0)
            tokenizer["vocab" if key == "model" else f"{key}_vocab"] = vocab_name
    config["tokenizer"] = tokenizer
    config["norm"] = {site: norm_config(kind, heads) for site, kind in norms.items()}
    if sizes["normalize_before"]:
        config["norm"]["final"] = norm_config("layer", heads)
    write_safetensors(os.path.join(args.out, "model.safetensors"), weights, args.dtype)
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return config


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = convert(args)
    except Refused as e:
        print(f"import-fairseq: {args.checkpoint}: {e}", file=sys.stderr)
        return 1
    norms = sorted({n["type"] for n in config["norm"].values()})
    print(
        f"import-fairseq: wrote {args.out} ({config['architecture']}, "
        f"{'pre' if config['normalize_before'] else 'post'}-norm, norms {'+'.join(norms)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
