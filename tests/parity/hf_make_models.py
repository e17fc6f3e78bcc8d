"""Builds the small random Hugging Face models of the parity tests (issue #14).

Usage (in the venv of scripts/reference-venv.sh):
  python tests/parity/hf_make_models.py OUT_DIR [--only llama,marian]

Writes one directory per model under OUT_DIR, each as `save_pretrained(...,
safe_serialization=True)` writes it, with its tokenizer files beside:
  llama               LlamaForCausalLM: hidden 64, 2 layers, 4 heads, 2 kv heads (GQA),
                      intermediate 160, rope_theta 500000, untied lm_head, rms_norm_eps 1e-5;
                      tokenizer.model (BPE with byte fallback) saved by the slow LlamaTokenizer,
                      plus tokenizer.json converted from it (LlamaTokenizerFast), as hub
                      checkpoints ship both.
  llama_tied_sharded  the same family with tie_word_embeddings and 1 kv head, saved in shards
                      of at most 100 kB (model.safetensors.index.json + model-0000k-of-0000n).
  mistral             MistralForCausalLM (a Llama under another name), sliding_window None,
                      rope_theta 1e6, the same tokenizer.model.
  marian              MarianMTModel: d_model 64, 2+2 layers, 4 heads, ffn 128, swish,
                      scale_embedding, shared and tied embeddings, a random non-zero
                      final_logits_bias, eos 0, unk 1, pad = decoder start = the last id;
                      source.spm and target.spm are two different unigram models and
                      vocab.json orders the union of their pieces by a seeded shuffle, so its
                      ids are not SentencePiece ids (">>deu<<" and ">>fra<<" are in it).

Every parameter is drawn from a fixed seed at a scale that gives peaked next-token
distributions (transformers' own initialization, std 0.02, gives nearly uniform ones, where
float rounding could swap the best two tokens); norm weights are near 1 and biases non-zero,
so that each of them matters. Tied embeddings get rows of equal-sized entries and a last norm
of balanced signs (break_self_attraction): with Gaussian rows, random tied models repeat one
token forever, which would leave beam reordering and positions hardly tested. The
end-of-sentence token is made more likely than the others
(Marian: its final_logits_bias; Llama: a larger lm_head row) so that greedy and beam outputs
often end with it before their length limit, as a trained model's would.

Each directory is loaded back with from_pretrained and must give the logits of the model in
memory exactly: what the files hold is the model the reference runs.
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import sys
import tempfile
import warnings

import sentencepiece
import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hf_texts  # noqa: E402

SEED = 20240514
# Chosen among a few seeds for outputs that vary and end with </s> about half the time.
MARIAN_SEED = SEED + 12
LLAMA_SPM_VOCAB = 800  # with the 256 byte pieces and <unk>, <s>, </s>
MARIAN_SOURCE_VOCAB = 400
MARIAN_TARGET_VOCAB = 500
MARIAN_LANGUAGE_TOKENS = [">>deu<<", ">>fra<<"]
MARIAN_EOS_BIAS = 3.0  # added to </s>'s final_logits_bias
# Twice 1/sqrt(d_model): times Marian's sqrt(d_model) embedding scale, the input token
# outweighs the position in the decoder's residual stream, so that the next token depends on it.
MARIAN_EMBEDDING_SCALE = 0.25
# </s>'s lm_head row is this much larger than the others (untied; tied rows are all of one
# size after break_self_attraction, so a smaller factor gives </s> as often).
LLAMA_EOS_ROW_SCALE = {False: 2.0, True: 1.5}


def train_spm(lines, prefix, **options):
    """Trains a SentencePiece model on `lines`; returns the .model file's path."""
    text_file = prefix + ".txt"
    with open(text_file, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=text_file, model_prefix=prefix, num_threads=1, minloglevel=2,
        **options)
    return prefix + ".model"


def randomize(model, seed):
    """Fresh weights from `seed`: matrices N(0, 1/fan_in), norm weights near 1, biases
    around 0. Marian's sinusoidal position table is a constant, left as it is."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:
                continue
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
    return generator


def break_self_attraction(embedding, final_norm, scale, generator):
    """For tied embeddings. The residual stream carries the input token's embedding to the
    output, where the same row scores it: random Gaussian rows then make some tokens repeat
    themselves forever (those whose row puts its weight where the path's gains are
    positive). Rows of equal entries in size (random signs, `scale`) and a last norm whose
    weights are +1 and -1, half each, leave that self score at zero for every token."""
    with torch.no_grad():
        signs = torch.randint(0, 2, embedding.shape, generator=generator) * 2 - 1
        embedding.copy_(signs * scale)
        half = final_norm.numel() // 2
        balanced = torch.tensor([1.0] * half + [-1.0] * (final_norm.numel() - half))
        final_norm.copy_(balanced[torch.randperm(final_norm.numel(), generator=generator)])


def check_reload(model, directory, inputs):
    """The saved directory must load back into a model with the same logits."""
    loaded = type(model).from_pretrained(directory).eval()
    with torch.no_grad():
        before, after = model(**inputs).logits, loaded(**inputs).logits
    difference = (before - after).abs().max().item()
    if difference != 0:
        raise SystemExit(f"hf_make_models: {directory} loads back with logits {difference} away")


def describe(directory):
    """The directory's files and sizes, and the tensors of its safetensors files."""
    from safetensors import safe_open
    files = sorted(os.listdir(directory))
    tensors = []
    for name in files:
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(directory, name), "pt") as f:
                tensors += list(f.keys())
    sizes = ", ".join(f"{n} {os.path.getsize(os.path.join(directory, n))}" for n in files)
    print(f"{directory}: {sizes}")
    print(f"  {len(tensors)} tensors: {', '.join(sorted(tensors))}")


def llama_tokenizer_model(work):
    """Llama's kind of SentencePiece model: BPE, byte fallback, digits split, identity
    normalization, whitespace kept, <unk>=0 <s>=1 </s>=2."""
    return train_spm(
        hf_texts.prose_sentences(), os.path.join(work, "llama"), model_type="bpe",
        vocab_size=LLAMA_SPM_VOCAB, byte_fallback=True, split_digits=True,
        character_coverage=0.9995, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1)


def save_llama_family(directory, model_class, config, spm_model, seed, fast_tokenizer,
                      max_shard_size="10GB"):
    torch.manual_seed(seed)
    model = model_class(config).eval()
    generator = randomize(model, seed)
    if config.tie_word_embeddings:
        break_self_attraction(model.get_input_embeddings().weight, model.model.norm.weight,
                              config.hidden_size ** -0.5, generator)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[config.eos_token_id] *= LLAMA_EOS_ROW_SCALE[config.tie_word_embeddings]
    model.save_pretrained(directory, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer = transformers.LlamaTokenizer(spm_model, legacy=False)
    tokenizer.save_pretrained(directory)
    if fast_tokenizer:
        transformers.LlamaTokenizerFast.from_pretrained(directory).save_pretrained(directory)
    ids = tokenizer("The server loads each model directory once.").input_ids
    check_reload(model, directory, {"input_ids": torch.tensor([ids])})


def llama_config(model_type, vocab_size, **overrides):
    settings = dict(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=160, max_position_embeddings=512,
        rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False)
    settings.update(overrides)
    if model_type == "mistral":
        return transformers.MistralConfig(**settings)
    return transformers.LlamaConfig(attention_bias=False, **settings)


def make_llama(out, work):
    spm_model = llama_tokenizer_model(work)
    vocab = sentencepiece.SentencePieceProcessor(model_file=spm_model).get_piece_size()
    save_llama_family(os.path.join(out, "llama"),
                      transformers.LlamaForCausalLM,
                      llama_config("llama", vocab, rope_theta=500000.0),
                      spm_model, SEED + 1, fast_tokenizer=True)
    save_llama_family(os.path.join(out, "llama_tied_sharded"),
                      transformers.LlamaForCausalLM,
                      llama_config("llama", vocab, num_key_value_heads=1,
                                   tie_word_embeddings=True, rope_theta=10000.0),
                      spm_model, SEED + 2, fast_tokenizer=False, max_shard_size="100KB")
    save_llama_family(os.path.join(out, "mistral"),
                      transformers.MistralForCausalLM,
                      llama_config("mistral", vocab, sliding_window=None, rope_theta=1e6),
                      spm_model, SEED + 3, fast_tokenizer=False)


def marian_vocab(source_spm, target_spm):
    """opus-mt's vocab.json layout: </s>=0, <unk>=1, the language tokens, the union of both
    models' pieces in a seeded shuffle, <pad> last."""
    pieces = set()
    for model_file in (source_spm, target_spm):
        processor = sentencepiece.SentencePieceProcessor(model_file=model_file)
        for i in range(processor.get_piece_size()):
            if not (processor.is_control(i) or processor.is_unknown(i)):
                pieces.add(processor.id_to_piece(i))
    ordered = sorted(pieces)
    random.Random(SEED).shuffle(ordered)
    tokens = ["</s>", "<unk>"] + MARIAN_LANGUAGE_TOKENS + ordered + ["<pad>"]
    return {token: i for i, token in enumerate(tokens)}


def make_marian(out, work):
    sentences = hf_texts.prose_sentences()
    common = dict(model_type="unigram", character_coverage=1.0)
    source_spm = train_spm(sentences[0::2], os.path.join(work, "source"),
                           vocab_size=MARIAN_SOURCE_VOCAB, **common)
    target_spm = train_spm(sentences[1::2], os.path.join(work, "target"),
                           vocab_size=MARIAN_TARGET_VOCAB, **common)
    vocab = marian_vocab(source_spm, target_spm)
    vocab_file = os.path.join(work, "vocab.json")
    with open(vocab_file, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=2)
    pad = len(vocab) - 1
    config = transformers.MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=64,
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, activation_function="swish",
        max_position_embeddings=512, scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, pad_token_id=pad, eos_token_id=0, decoder_start_token_id=pad,
        forced_eos_token_id=0, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        # As opus-mt's configs have them (the last two are ignored by transformers).
        bad_words_ids=[[pad]], num_beams=4, max_length=512,
        static_position_embeddings=True, normalize_before=False)
    torch.manual_seed(MARIAN_SEED)
    model = transformers.MarianMTModel(config).eval()
    generator = randomize(model, MARIAN_SEED)
    break_self_attraction(model.model.shared.weight,
                          model.model.decoder.layers[-1].final_layer_norm.weight,
                          MARIAN_EMBEDDING_SCALE, generator)
    with torch.no_grad():
        bias = 0.5 * torch.randn(model.final_logits_bias.shape, generator=generator)
        bias[0, config.eos_token_id] += MARIAN_EOS_BIAS
        model.final_logits_bias.copy_(bias)
    directory = os.path.join(out, "marian")
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer = transformers.MarianTokenizer(source_spm, target_spm, vocab_file)
    tokenizer.save_pretrained(directory)
    batch = tokenizer(["The server loads each model directory once."], return_tensors="pt")
    check_reload(model, directory, {**batch, "decoder_input_ids": torch.tensor([[pad, 5, 6]])})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--only", default="llama,marian",
                        help="llama (llama, llama_tied_sharded, mistral) and/or marian")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
    os.makedirs(args.out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="hf_make_models.")
    try:
        kinds = args.only.split(",")
        if "llama" in kinds:
            make_llama(args.out_dir, work)
        if "marian" in kinds:
            make_marian(args.out_dir, work)
    finally:
        shutil.rmtree(work)
    for name in sorted(os.listdir(args.out_dir)):
        describe(os.path.join(args.out_dir, name))


if __name__ == "__main__":
    main()
