"""The fairseq side of fairseq_parity_test.py; runs in scripts/fairseq-venv.sh's venv.

    fairseq_reference.py WORK_DIR TEXTS_FILE

Trains small SentencePiece models on TEXTS_FILE, builds fairseq dictionaries from them,
builds small random models with fairseq itself, saves each as checkpoint_best.pt with
fairseq's Trainer (as fairseq-train does), and writes what fairseq computes for the test to
compare: logits of random token ids, token ids of the texts, and per-token log-probabilities
of text pairs. WORK_DIR/<model>/ gets checkpoint_best.pt, data/ (dictionaries), *.model
(SentencePiece) and reference.json + reference_logits.f32.

MaskPowerNorm and the PowerNorm authors' batch norm are written here from their published
description (DESIGN.md section 3 and the paper), not copied: inference uses the running
statistics, as in a saved model. Their tensors carry the same names and shapes as in the
authors' fairseq fork (weight, bias, running_phi [1, C, 1, 1]; running_mean, running_var),
and the options the fork adds (encoder_norm_self, encoder_norm_ff, decoder_norm_self,
decoder_norm_ff: layer, power or batch) are recorded in the checkpoint's model config.
"""
import contextlib
import io
import json
import logging
import os
import random
import sys
import warnings
import zlib

import numpy as np
import sentencepiece as spm
import torch
from torch import nn

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
with contextlib.redirect_stderr(io.StringIO()):
    from fairseq import options, tasks
    from fairseq.data import Dictionary
    from fairseq.data.encoders.sentencepiece_bpe import SentencepieceBPE, SentencepieceConfig
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer
    from omegaconf import open_dict

EPS = 1e-5
LOGIT_ITEMS = 24  # random (source, decoder input) items per model
SCORE_TEXTS = 40  # texts (LM) or pairs (MT) scored per model


class PowerNormInference(nn.Module):
    """PowerNorm (Shen et al. 2020) as used after training: each token's channels are split
    into `groups` groups and divided by the root of their mean square (+1e-5); then
    y = weight * x / sqrt(running_phi + eps) + bias with the running quadratic mean phi."""

    def __init__(self, dim, groups):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_phi", torch.ones(1, dim, 1, 1))
        self.register_buffer("ema_gz", torch.zeros(1, dim, 1, 1))  # training state
        self.register_buffer("iters", torch.zeros(1, dtype=torch.long))  # training state

    def forward(self, x, pad_mask=None):
        shape = x.shape
        grouped = x.reshape(*shape[:-1], self.groups, shape[-1] // self.groups)
        scaled = (grouped / (grouped.pow(2).mean(-1, keepdim=True) + EPS).sqrt()).reshape(shape)
        phi = self.running_phi.reshape(-1)
        return self.weight * scaled / (phi + EPS).sqrt() + self.bias


class ScaledBatchNormInference(nn.Module):
    """The PowerNorm authors' batch norm after training: each token divided by the root of
    its mean square over all channels (+1e-5), then the running mean and variance:
    y = weight * (x - running_mean) / sqrt(running_var + eps) + bias."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x, pad_mask=None):
        scaled = x / (x.pow(2).mean(-1, keepdim=True) + EPS).sqrt()
        return self.weight * (scaled - self.running_mean) / (self.running_var + EPS).sqrt() + (
            self.bias
        )


# name: (task, arch, extra fairseq arguments, PowerNorm fork's norms, dictionary kind)
# Dictionary kinds: "frequency": fairseq-preprocess's way (pieces by count, padded to a
# multiple of 8 with madeupword entries), needing a vocabulary file in normserve;
# "spm_order": SentencePiece trained with fairseq's special ids and the dictionary listing its
# pieces in order, so that the ids agree without one.
MODELS = {
    "mt_prenorm": ("translation", "transformer",
                   ["--encoder-normalize-before", "--decoder-normalize-before"], {}, "frequency"),
    "mt_postnorm_shared": ("translation", "transformer",
                           ["--share-all-embeddings", "--activation-fn", "gelu"], {}, "spm_order"),
    "lm_prenorm": ("language_modeling", "transformer_lm",
                   ["--decoder-normalize-before", "--share-decoder-input-output-embed",
                    "--activation-fn", "gelu", "--no-scale-embedding",
                    "--tokens-per-sample", "128"], {}, "frequency"),
    "mt_powernorm": ("translation", "transformer", [],
                     {"encoder_norm_self": "power", "encoder_norm_ff": "power",
                      "decoder_norm_self": "layer", "decoder_norm_ff": "layer"}, "spm_order"),
    "mt_batchnorm": ("translation", "transformer",
                     ["--encoder-normalize-before", "--decoder-normalize-before"],
                     {"encoder_norm_self": "batch", "encoder_norm_ff": "batch",
                      "decoder_norm_self": "layer", "decoder_norm_ff": "layer"}, "spm_order"),
}
def size_args(mt):
    args = []
    for side in ["encoder", "decoder"] if mt else ["decoder"]:
        args += [f"--{side}-layers", "2", f"--{side}-embed-dim", "32",
                 f"--{side}-ffn-embed-dim", "64", f"--{side}-attention-heads", "4"]
    if not mt:  # transformer_lm's defaults would add 512-wide projections around the decoder
        args += ["--decoder-input-dim", "32", "--decoder-output-dim", "32"]
    return args


def train_spm(texts, prefix, vocab_size, fairseq_ids):
    ids = (dict(bos_id=0, pad_id=1, eos_id=2, unk_id=3) if fairseq_ids else {})
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=prefix, vocab_size=vocab_size,
        character_coverage=1.0, model_type="unigram", minloglevel=2, **ids)
    return prefix + ".model"


def build_dictionary(spm_model, texts, path, kind):
    """dict.txt as fairseq-preprocess writes it (or in SentencePiece's order)."""
    bpe = SentencepieceBPE(SentencepieceConfig(sentencepiece_model=spm_model))
    d = Dictionary()
    if kind == "frequency":
        for text in texts:
            d.encode_line(bpe.encode(text), add_if_not_exist=True)
        d.finalize(padding_factor=8)
    else:
        processor = spm.SentencePieceProcessor(model_file=spm_model)
        for i in range(4, processor.get_piece_size()):
            d.add_symbol(processor.id_to_piece(i))
    d.save(path)
    return bpe


def randomize(model, rng):
    """Random values everywhere fairseq leaves constants: biases, norms, running statistics."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if name.endswith("norm.weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=rng))
        for name, b in model.named_buffers():
            if name.endswith("running_phi") or name.endswith("running_var"):
                b.copy_(0.5 + 1.5 * torch.rand(b.shape, generator=rng))
            elif name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=rng))


def replace_norms(model, fork_norms, heads):
    for side in ("encoder", "decoder"):
        for layer in getattr(model, side).layers:
            sites = [("self_attn_layer_norm", f"{side}_norm_self"),
                     ("final_layer_norm", f"{side}_norm_ff")]
            if side == "decoder":
                sites.append(("encoder_attn_layer_norm", "decoder_norm_self"))
            for attribute, option in sites:
                kind = fork_norms[option]
                dim = getattr(layer, attribute).weight.shape[0]
                if kind == "power":
                    setattr(layer, attribute, PowerNormInference(dim, heads))
                elif kind == "batch":
                    setattr(layer, attribute, ScaledBatchNormInference(dim))


def build_model(name, work, texts):
    task_name, arch, extra, fork_norms, kind = MODELS[name]
    out = os.path.join(work, name)
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    mt = task_name == "translation"
    half = len(texts) // 2
    # Source and target sides learn from different halves, so their vocabularies differ.
    if kind == "spm_order":
        shared = train_spm(texts, os.path.join(out, "shared"), 256, True)
        models = {"de": shared, "en": shared}
    elif mt:
        models = {"de": train_spm(texts[:half], os.path.join(out, "de"), 280, False),
                  "en": train_spm(texts[half:], os.path.join(out, "en"), 240, False)}
    else:
        models = {"lm": train_spm(texts, os.path.join(out, "lm"), 300, False)}
    encoders = {}
    for lang, model_file in models.items():
        dict_name = "dict.txt" if lang == "lm" else f"dict.{lang}.txt"
        encoders[lang] = build_dictionary(model_file, texts, os.path.join(data, dict_name), kind)

    args = [data, "--task", task_name, "--arch", arch, "--optimizer", "adam", "--lr", "0.0005",
            "--lr-scheduler", "inverse_sqrt", "--cpu", "--criterion", "cross_entropy",
            "--max-tokens", "1000", "--save-dir", out, "--seed", "1"]
    args += (["-s", "de", "-t", "en"] if mt else []) + size_args(mt)
    parser = options.get_training_parser()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        parsed = options.parse_args_and_arch(parser, args + extra)
        cfg = convert_namespace_to_omegaconf(parsed)
        with open_dict(cfg):
            for option, value in fork_norms.items():
                setattr(cfg.model, option, value)
        task = tasks.setup_task(cfg.task)
        model = task.build_model(cfg.model)
        if fork_norms:
            replace_norms(model, fork_norms, 4)
        randomize(model, torch.Generator().manual_seed(zlib.crc32(name.encode())))
        trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
        trainer.consolidate_optimizer()
        trainer.save_checkpoint(os.path.join(out, "checkpoint_best.pt"), {})
    model.eval()
    dicts = ({"de": task.source_dictionary, "en": task.target_dictionary} if mt
             else {"lm": task.source_dictionary})
    return out, model, mt, encoders, dicts, models


def _drop_encoder_values(args):
    """Removes "--encoder-* VALUE" pairs (a language model has no encoder)."""
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a.startswith("--encoder"):
            skip = True
            continue
        kept.append(a)
    return kept


def forward(model, mt, source, decoder_input):
    with torch.no_grad():
        prev = torch.tensor([decoder_input])
        if mt:
            src = torch.tensor([source + [2]])
            logits, _ = model(src, torch.tensor([src.shape[1]]), prev)
        else:
            logits, _ = model(prev)
    return logits[0].float()


def encode(encoder, dictionary, text):
    """fairseq's own text -> ids: SentencePiece pieces, then the dictionary (no </s>)."""
    return dictionary.encode_line(encoder.encode(text), add_if_not_exist=False,
                                  append_eos=False).long().tolist()


def reference(name, work, texts, probe_texts):
    out, model, mt, encoders, dicts, spm_models = build_model(name, work, texts)
    rng = random.Random(name)
    target = dicts["en" if mt else "lm"]
    source = dicts.get("de")
    items, blobs = [], []
    for _ in range(LOGIT_ITEMS):
        # Any id but <pad> may be fed; fairseq's nspecial = 4 special ids come first.
        pick = lambda d, n: [rng.choice([2, 3] + list(range(4, len(d)))) for _ in range(n)]  # noqa
        item = {"decoder_input": [2] + pick(target, rng.randint(0, 12))}
        if mt:
            item["source"] = pick(source, rng.randint(1, 14))
        items.append(item)
        blobs.append(forward(model, mt, item.get("source"), item["decoder_input"]).numpy())
    np.concatenate([b.reshape(-1) for b in blobs]).astype("<f4").tofile(
        os.path.join(out, "reference_logits.f32"))

    sides = {"target": ("en" if mt else "lm")}
    if mt:
        sides["source"] = "de"
    tokens = {side: [encode(encoders[lang], dicts[lang], t) for t in probe_texts]
              for side, lang in sides.items()}

    scores = []
    for i in range(SCORE_TEXTS):
        tgt_text = probe_texts[i]
        src_text = probe_texts[-1 - i] if mt else None
        tgt = encode(encoders[sides["target"]], target, tgt_text)
        src = encode(encoders["de"], source, src_text) if mt else None
        logits = forward(model, mt, src, [2] + tgt)
        logprobs = torch.log_softmax(logits.double(), -1)
        expected = tgt + [2]
        scores.append({"source": src_text, "target": tgt_text,
                       "logprobs": [logprobs[j, t].item() for j, t in enumerate(expected)]})
    with open(os.path.join(out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump({"mt": mt, "spm": [spm_models[k] for k in (["de", "en"] if mt else ["lm"])],
                   "items": items, "tokens": tokens, "scores": scores,
                   "vocab_size": len(target)}, f, ensure_ascii=False)


def main():
    work, texts_file = sys.argv[1], sys.argv[2]
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(MODELS)
    with open(texts_file, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    split = lines.index("")  # training texts, a blank line, then the probe texts
    texts, probe_texts = lines[:split], lines[split + 1:]
    torch.manual_seed(0)
    for name in names:
        reference(name, work, texts, probe_texts)
        print(f"fairseq_reference: built {name}", flush=True)


if __name__ == "__main__":
    main()
