"""The Hugging Face side of the parity tests (issue #14): what transformers gives on a model
directory of tests/parity/hf_make_models.py, for normserve to match.

Usage (in the venv of scripts/reference-venv.sh):
  python tests/parity/hf_reference.py MODEL_DIR OUT.json [--texts FILE]

FILE has one input text a line (UTF-8, spaces kept); by default the texts of hf_texts.py (240:
prose, text the vocabularies cannot hold, Marian language tokens). Everything runs in fp32,
eval(), torch.no_grad(), one text at a time (no padding); the slow SentencePiece tokenizers
(LlamaTokenizer, MarianTokenizer) are the reference tokenizers.

OUT.json holds "settings" (versions, the exact GenerationConfig of each search, the ids they
suppress) and one entry in "texts" per text:
  Llama and Mistral (normserve: Generate and Score):
    prompt_ids        LlamaTokenizer(text).input_ids: <s> first, no </s>.
    greedy_ids        the greedy continuation after the prompt, without its </s>;
    greedy_eos        whether it ended with </s> (else it stopped at max_new_tokens);
    greedy_text       tokenizer.decode(greedy_ids, skip_special_tokens=True);
    greedy_margin     the smallest gap, over its steps, between the chosen token's
                      log-probability and the next best one's (a tiny gap is a near tie
                      that float rounding may flip).
    score_logprobs    log-probabilities (log_softmax over the whole vocabulary, float64 from
                      fp32 logits) of tokens 1..n of prompt_ids and then </s>, given the prefix
                      before each: one forward pass over prompt_ids (which starts with <s>).
    spm_ids_equal     whether prompt_ids[1:] are plain SentencePiece ids of tokenizer.model
                      (sp.encode(text)); and for a directory with tokenizer.json,
                      fast_ids_equal: whether LlamaTokenizerFast gives prompt_ids too.
  Marian (normserve: Translate and Score):
    source_ids        MarianTokenizer(text).input_ids: WITH the </s> (id 0) it appends. A
                      leading >>xxx<< is one token (its vocab.json id, or <unk> when absent);
                      the rest is source.spm's pieces looked up in vocab.json (<unk> when
                      absent). vocab_ids_equal says whether exactly that rule rebuilds them.
    max_new_tokens    int(1.5 * (len(source_ids without </s>) + 1)) + 10, at most
                      max_position_embeddings - 1: normserve's MaxOutputTokens at its default
                      max_length_a 1.5 and max_length_b 10.
    greedy_ids, greedy_eos, greedy_text, greedy_margin
                      as above (after decoder_start_token_id, which is not in them).
    beam_ids, beam_eos, beam_text, beam_score, beam_logprob
                      the best of a beam-4 search, length_penalty 1.0: beam_score is its
                      normalized score as transformers gives it, beam_logprob the sum of its
                      tokens' (and </s>'s) log-probabilities by a Score pass.
    target_text, target_ids, score_logprobs
                      a Score of target_text (the next text of the list) given the source:
                      target_ids = MarianTokenizer(text_target=...).input_ids WITH its </s>;
                      decoder input = [decoder_start_token_id] + target_ids[:-1];
                      score_logprobs one per target id, </s> included.
  "logits" holds the full fp32 logits of the first two and the last two texts, for the
  max abs difference check: LM: of prompt_ids, [len(prompt_ids), vocab]; Marian: of the Score
  pass above, [len(target_ids), vocab].

How the searches map normserve's decoding (models/decoding/) onto generate():
- Search masks (token_mask.cc, step_scores.cc): normserve takes log_softmax over the whole
  vocabulary and then sets <pad> and <s> (unless <s> == </s>) to -inf, without normalizing
  again. generate() with suppress_tokens does the same: in beam search the logits processors
  run after log_softmax; in greedy search before the argmax, which then picks the same token.
  suppress_tokens: Marian [pad] (its config has no <s>); Llama [bos], plus pad when the config
  names one (these configs do not): normserve must mask no other id for the outputs to match.
- Greedy: do_sample=False, num_beams=1. Generate (LM): </s> may come first (min_new_tokens 0);
  max_new_tokens 32 counts the </s>, which matches normserve's loop of at most
  max_new_tokens tokens that stops at </s>. Translate at beam_size 1 (Marian):
  min_new_tokens=1, since normserve never chooses </s> at the first step.
- Beam (Marian, Translate): num_beams=4, num_return_sequences=1, length_penalty=1.0,
  early_stopping=True, min_new_tokens=1. transformers' BeamSearchScorer then follows
  sentence_beams.cc: each step ranks the best 2K expansions; a </s> among the best K finishes
  a hypothesis; the best K others stay live; with early_stopping=True the sentence is done
  once K hypotheses have finished; at max_new_tokens the live beams finish without </s>,
  scored by their own length.
  Length normalization agrees: a hypothesis that ends with </s> is divided by
  (tokens + 1)^length_penalty, counting the </s>, in both (BeamSearchScorer.process takes
  cur_len = input_ids.shape[-1] + 1, so its generated_len includes the </s>); an unfinished
  one at max_new_tokens by tokens^length_penalty (finalize). "summary" counts the texts whose
  beam_score is beam_logprob / (len(beam_ids) + beam_eos), which is all of them.
  One difference, without effect on the best hypothesis: when a step finishes more than the
  K-th hypothesis, normserve keeps the first ones in candidate order and drops the rest, while
  BeamHypotheses keeps the best K of all. Those of one step have the same length, so the best
  hypothesis (n_best 1) is the same either way; n_best > 1 could differ.
  Ties in top-k are broken by lower index in normserve and by torch.topk's order here;
  random float weights make exact ties practically absent (greedy_margin shows the closest).
- Settings that would change the outputs and are switched off: forced_eos_token_id (Marian
  configs set it to </s>, forcing </s> at max_length; normserve does not), bad_words_ids
  (replaced by suppress_tokens, which says the same for single tokens), repetition_penalty,
  no_repeat_ngram_size, do_sample.
- Decoder start: Marian's decoder_start_token_id (= pad); normserve's Translate must start
  the decoder from it, not from </s>. LM prompts start with <s> (LlamaTokenizer adds it).
"""

import argparse
import json
import os
import pathlib
import sys
import time
import warnings

import sentencepiece
import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hf_texts  # noqa: E402

LM_MAX_NEW_TOKENS = 32
MAX_LENGTH_A, MAX_LENGTH_B = 1.5, 10  # normserve's TranslationOptions defaults
BEAM_SIZE = 4
LENGTH_PENALTY = 1.0
LOGITS_TEXTS = 2  # full logits of this many texts at each end of the list


def generation_config(eos, pad, suppress, **settings):
    """A GenerationConfig from scratch (the directory's generation_config.json has opus-mt's
    forced_eos_token_id and bad_words_ids, which normserve does not apply)."""
    return transformers.GenerationConfig(
        do_sample=False, eos_token_id=eos, pad_token_id=pad, suppress_tokens=suppress,
        forced_eos_token_id=None, forced_bos_token_id=None, bad_words_ids=None,
        repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=True,
        return_dict_in_generate=True, output_scores=True, **settings)


def config_dict(config):
    return {k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"}


def log_probs(logits):
    return torch.log_softmax(logits.double(), dim=-1)


def greedy_margin(scores):
    """The smallest gap between the best and second-best processed score of a search's steps."""
    gaps = [float(top[0] - top[1]) for top in (s[0].topk(2).values for s in scores)]
    return min(gaps)


def split_eos(ids, eos):
    ids = list(ids)
    ended = bool(ids) and ids[-1] == eos
    return (ids[:-1] if ended else ids), ended


def rows(tensor):
    return [[float(x) for x in row] for row in tensor]


class LanguageModelReference:
    """Llama and Mistral: Generate (greedy) and Score."""

    def __init__(self, directory, config):
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, torch_dtype=torch.float32).eval()
        self.tokenizer = transformers.LlamaTokenizer.from_pretrained(directory)
        self.spm = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(directory, "tokenizer.model"))
        self.fast = None
        if os.path.exists(os.path.join(directory, "tokenizer.json")):
            self.fast = transformers.LlamaTokenizerFast.from_pretrained(directory)
        self.bos, self.eos = config.bos_token_id, config.eos_token_id
        suppress = [self.bos] + ([config.pad_token_id] if config.pad_token_id is not None else [])
        self.greedy = generation_config(
            self.eos, self.eos, suppress, num_beams=1, max_new_tokens=LM_MAX_NEW_TOKENS,
            min_new_tokens=0)

    def settings(self):
        return {"greedy": config_dict(self.greedy),
                "prompt": "LlamaTokenizer(text).input_ids: <s> first, no </s>",
                "score": "log-probabilities of prompt_ids[1:] + [</s>] given prompt_ids"}

    def run(self, text, _next_text):
        prompt = self.tokenizer(text).input_ids
        entry = {"text": text, "prompt_ids": prompt,
                 "spm_ids_equal": prompt[1:] == self.spm.encode(text)}
        if self.fast is not None:
            entry["fast_ids_equal"] = self.fast(text).input_ids == prompt
        input_ids = torch.tensor([prompt])
        out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                  generation_config=self.greedy)
        ids, ended = split_eos(out.sequences[0, len(prompt):].tolist(), self.eos)
        entry.update(greedy_ids=ids, greedy_eos=ended, greedy_margin=greedy_margin(out.scores),
                     greedy_text=self.tokenizer.decode(ids, skip_special_tokens=True))
        logits = self.model(input_ids).logits[0]
        targets = prompt[1:] + [self.eos]
        picked = log_probs(logits).gather(1, torch.tensor(targets).unsqueeze(1)).squeeze(1)
        entry["score_logprobs"] = picked.tolist()
        return entry, logits


class MarianReference:
    """Marian: Translate (greedy and beam 4) and Score."""

    def __init__(self, directory, config):
        self.model = transformers.MarianMTModel.from_pretrained(
            directory, torch_dtype=torch.float32).eval()
        self.tokenizer = transformers.MarianTokenizer.from_pretrained(directory)
        with open(os.path.join(directory, "vocab.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.source_spm = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(directory, "source.spm"))
        self.eos, self.pad = config.eos_token_id, config.pad_token_id
        self.start = config.decoder_start_token_id
        self.max_positions = config.max_position_embeddings
        common = dict(decoder_start_token_id=self.start, min_new_tokens=1)
        self.greedy = generation_config(self.eos, self.pad, [self.pad], num_beams=1, **common)
        self.beam = generation_config(
            self.eos, self.pad, [self.pad], num_beams=BEAM_SIZE, num_return_sequences=1,
            length_penalty=LENGTH_PENALTY, early_stopping=True, **common)

    def settings(self):
        return {"greedy": config_dict(self.greedy), "beam": config_dict(self.beam),
                "max_new_tokens": f"int({MAX_LENGTH_A} * (source tokens without </s> + 1)) + "
                                  f"{MAX_LENGTH_B}, at most {self.max_positions - 1}",
                "source": "MarianTokenizer(text).input_ids, ending with </s>",
                "score": "target_ids (with </s>) given source_ids, decoder input "
                         "[decoder_start_token_id] + target_ids[:-1]"}

    def vocab_rule_ids(self, text):
        """source_ids rebuilt by the rule normserve implements: a leading >>xxx<< token, then
        source.spm's pieces of the rest, looked up in vocab.json, then </s>."""
        code = self.tokenizer.language_code_re.match(text)
        rest = self.tokenizer.language_code_re.sub("", text)
        pieces = ([code.group(0)] if code else []) + self.source_spm.encode(rest, out_type=str)
        unk = self.vocab["<unk>"]
        return [self.vocab.get(p, unk) for p in pieces] + [self.eos]

    def run(self, text, next_text):
        source = self.tokenizer(text).input_ids
        limit = int(MAX_LENGTH_A * len(source)) + MAX_LENGTH_B  # len(source) counts the </s>
        max_new = min(max(limit, 1), self.max_positions - 1)
        entry = {"text": text, "source_ids": source,
                 "vocab_ids_equal": source == self.vocab_rule_ids(text),
                 "max_new_tokens": max_new}
        inputs = {"input_ids": torch.tensor([source]),
                  "attention_mask": torch.ones(1, len(source), dtype=torch.long)}
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731

        out = self.model.generate(**inputs, generation_config=self.greedy, max_new_tokens=max_new)
        ids, ended = split_eos(out.sequences[0, 1:].tolist(), self.eos)
        entry.update(greedy_ids=ids, greedy_eos=ended, greedy_margin=greedy_margin(out.scores),
                     greedy_text=decode(ids))

        out = self.model.generate(**inputs, generation_config=self.beam, max_new_tokens=max_new)
        ids, ended = split_eos(out.sequences[0, 1:].tolist(), self.eos)
        scored = ids + [self.eos] if ended else ids
        entry.update(beam_ids=ids, beam_eos=ended, beam_score=float(out.sequences_scores[0]),
                     beam_text=decode(ids),
                     beam_logprob=sum(self.score(inputs, scored)[0].tolist()))

        target = self.tokenizer(text_target=next_text).input_ids
        picked, logits = self.score(inputs, target)
        entry.update(target_text=next_text, target_ids=target, score_logprobs=picked.tolist())
        return entry, logits

    def score(self, inputs, target):
        """Log-probabilities of `target` given the source, and the logits of that pass."""
        decoder_input = torch.tensor([[self.start] + target[:-1]])
        logits = self.model(**inputs, decoder_input_ids=decoder_input).logits[0]
        picked = log_probs(logits).gather(1, torch.tensor(target).unsqueeze(1)).squeeze(1)
        return picked, logits


def summarize(entries, kind):
    count = lambda key: sum(1 for e in entries if e.get(key))  # noqa: E731
    summary = {"texts": len(entries), "greedy_eos": count("greedy_eos"),
               "smallest_greedy_margin": min(e["greedy_margin"] for e in entries)}
    if kind == "marian":
        summary.update(
            beam_eos=count("beam_eos"), vocab_ids_equal=count("vocab_ids_equal"),
            unk_in_source=sum(1 for e in entries if 1 in e["source_ids"]),
            # beam_score must be beam_logprob / (tokens, counting a closing </s>)^1.0.
            beam_score_follows_rule=sum(
                1 for e in entries
                if abs(e["beam_score"] - e["beam_logprob"] / (len(e["beam_ids"]) + e["beam_eos"]))
                < 1e-4))
    else:
        summary.update(spm_ids_equal=count("spm_ids_equal"),
                       byte_fallback_texts=sum(1 for e in entries if e["byte_pieces"]))
        if "fast_ids_equal" in entries[0]:
            summary["fast_ids_equal"] = count("fast_ids_equal")
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("out_json")
    parser.add_argument("--texts", help="one input text a line (default: hf_texts.py's)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
    torch.manual_seed(0)
    if args.texts:
        with open(args.texts, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f if line.strip()]
    else:
        texts = hf_texts.reference_texts()

    config = transformers.AutoConfig.from_pretrained(args.model_dir)
    kind = config.model_type
    if kind == "marian":
        reference = MarianReference(args.model_dir, config)
    elif kind in ("llama", "mistral"):
        reference = LanguageModelReference(args.model_dir, config)
    else:
        raise SystemExit(f"hf_reference: model_type {kind} is neither marian, llama nor mistral")

    started = time.monotonic()
    entries, logits = [], {}
    logits_at = set(range(LOGITS_TEXTS)) | set(range(len(texts) - LOGITS_TEXTS, len(texts)))
    with torch.no_grad():
        for i, text in enumerate(texts):
            entry, text_logits = reference.run(text, texts[(i + 1) % len(texts)])
            if kind != "marian":
                entry["byte_pieces"] = sum(
                    1 for t in entry["prompt_ids"] if reference.spm.is_byte(t))
            entries.append(entry)
            if i in logits_at:
                logits[str(i)] = rows(text_logits)
    seconds = time.monotonic() - started

    result = {
        "model_dir": os.path.abspath(args.model_dir),
        "model_type": kind,
        "settings": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "dtype": "float32", **reference.settings()},
        "summary": summarize(entries, kind),
        "texts": entries,
        "logits": logits,
    }
    with open(args.out_json, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)
    print(f"hf_reference: {kind} {args.model_dir}: {len(texts)} texts in {seconds:.1f} s -> "
          f"{args.out_json}; {json.dumps(result['summary'])}")


if __name__ == "__main__":
    main()
