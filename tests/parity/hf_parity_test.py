"""Parity of imported Hugging Face models with transformers, served by a real normserved (#14).

transformers (scripts/reference-venv.sh: Debian's torch 1.13 + transformers 4.40.2) builds
small random Llama (untied), Llama (tied, GQA 4:1, sharded safetensors), Mistral and Marian
models (hf_make_models.py) and records what they compute on 240 texts (hf_reference.py).
`normserve-model import` converts each; then:
- logits: model_logits on the reference's inputs, max |difference| <= 1e-4 (fp32); the Llama
  imported with bf16 and with f16 weights within 1e-4 of transformers in fp32 on the same
  rounded weights (its distance to the fp32 model is reported);
- token ids: model_logits tokenize against LlamaTokenizer / MarianTokenizer, all equal;
- a real normserved serves the four, plus the untied Llama with LayerNorm instead of RMSNorm
  in variant group "llama-norms" with the RMSNorm one:
  Llama/Mistral: greedy Generate (temperature 0, 32 tokens) on every text: the same
  continuation (token count, finish reason, text) as generate(); Score against the
  reference's log-probabilities (<= 1e-4);
  Marian: Translate beam 1 and beam 4 (return_tokens) on every text: the same token ids as
  generate(); Score of pairs against the reference's log-probabilities;
  Translate on a Llama model is INVALID_ARGUMENT saying why;
  the group's metrics carry norm="rmsnorm" and norm="layernorm" and GetModel reports the norms.

The reference outputs are cached under ~/.cache/normserve/parity/ keyed by the content of the
reference scripts and the venv's versions (computing them takes minutes; they change only
when those do).

Usage: hf_parity_test.py NORMSERVED NORMSERVE_MODEL MODEL_LOGITS
"""
import array
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from grpc_stubs import pb, stub  # noqa: E402
from normserved_process import NormservedProcess  # noqa: E402

NORMSERVED, NORMSERVE_MODEL, MODEL_LOGITS = sys.argv[1:4]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
VENV_PYTHON = os.path.expanduser("~/.cache/normserve/reference-venv/bin/python")
MODELS = ["llama", "llama_tied_sharded", "mistral", "marian"]
LANGUAGE_MODELS = ["llama", "llama_tied_sharded", "mistral"]
LOGIT_TOLERANCE = 1e-4
LOGPROB_TOLERANCE = 1e-4
BATCH = 16
UNK_SURFACE = " \u2047 "


def reference_outputs():
    """{model: reference JSON}, and the directory of the Hugging Face models."""
    subprocess.run([os.path.join(ROOT, "scripts", "reference-venv.sh")], check=True,
                   stdout=subprocess.DEVNULL)
    key = hashlib.sha256()
    for script in ["hf_make_models.py", "hf_reference.py", "hf_texts.py"]:
        with open(os.path.join(HERE, script), "rb") as f:
            key.update(f.read())
    key.update(subprocess.run(
        [VENV_PYTHON, "-c", "import torch, transformers, sentencepiece; "
         "print(torch.__version__, transformers.__version__, sentencepiece.__version__)"],
        check=True, capture_output=True, text=True).stdout.encode())
    cache = os.path.expanduser(f"~/.cache/normserve/parity/hf-{key.hexdigest()[:16]}")
    if not os.path.exists(os.path.join(cache, "done")):
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run([VENV_PYTHON, os.path.join(HERE, "hf_make_models.py"),
                        os.path.join(cache, "hf")], check=True, stdout=subprocess.DEVNULL)
        for model in MODELS:
            subprocess.run([VENV_PYTHON, os.path.join(HERE, "hf_reference.py"),
                            os.path.join(cache, "hf", model),
                            os.path.join(cache, f"reference-{model}.json")], check=True)
        open(os.path.join(cache, "done"), "w").close()
    references = {}
    for model in MODELS:
        with open(os.path.join(cache, f"reference-{model}.json"), encoding="utf-8") as f:
            references[model] = json.load(f)
    return references, os.path.join(cache, "hf")


LAYERNORM_VARIANT = r"""
import json, sys
import numpy as np
from safetensors.numpy import load_file, save_file
src, dst = sys.argv[1:3]
config = json.load(open(src + "/config.json"))
config["norm"] = {"default": {"type": "layernorm", "eps": 1e-5}}
weights = load_file(src + "/model.safetensors")
for name in list(weights):
    if name.endswith("layer_norm.weight"):
        weights[name[:-len("weight")] + "bias"] = np.zeros_like(weights[name])
save_file(weights, dst + "/model.safetensors")
json.dump(config, open(dst + "/config.json", "w"), indent=2)
"""


# transformers' logits of a model whose weights are rounded to a dtype and computed in fp32, as
# normserve computes weights stored in that dtype on the CPU. Buffers (the rotary frequencies)
# keep their fp32 values.
ROUNDED_REFERENCE = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM
model_dir, dtype, inputs, out = sys.argv[1:5]
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
for p in model.parameters():
    p.data = p.data.to(getattr(torch, dtype)).to(torch.float32)
with torch.no_grad(), open(out, "wb") as f:
    for item in json.load(open(inputs))["items"]:
        ids = torch.tensor([item["decoder_input"]])
        f.write(model(input_ids=ids).logits[0].numpy().astype("<f4").tobytes())
"""


def read_f32(path):
    values = array.array("f")
    with open(path, "rb") as f:
        values.frombytes(f.read())
    return values


def piece_ids(pieces, vocab):
    return [vocab.get(p, -1) for p in pieces]


class HuggingFaceParity(unittest.TestCase):
    figures = {}

    @classmethod
    def setUpClass(cls):
        cls.references, hf_dir = reference_outputs()
        cls.hf_dir = hf_dir
        cls.tmp = tempfile.mkdtemp(prefix="normserve-hf-parity-")
        cls.repo = os.path.join(cls.tmp, "repo")
        for model in MODELS:
            out = subprocess.run([NORMSERVE_MODEL, "import", "--from", os.path.join(hf_dir, model),
                                  "--out", os.path.join(cls.repo, model, "1")],
                                 check=True, capture_output=True, text=True).stdout
            print(f"import {model}: {out.splitlines()[0]}", flush=True)
        variant = os.path.join(cls.repo, "llama_layernorm", "1")
        shutil.copytree(os.path.join(cls.repo, "llama", "1"), variant)
        subprocess.run([VENV_PYTHON, "-c", LAYERNORM_VARIANT, os.path.join(cls.repo, "llama", "1"),
                        variant], check=True)
        for member in ["llama", "llama_layernorm"]:
            with open(os.path.join(cls.repo, member, "model.json"), "w") as f:
                json.dump({"group": "llama-norms"}, f)
        with open(os.path.join(hf_dir, "marian", "vocab.json"), encoding="utf-8") as f:
            cls.marian_vocab = json.load(f)
        cls.server = NormservedProcess(NORMSERVED, cls.repo)
        cls.client = stub(cls.server.target)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        print("figures: " + json.dumps(cls.figures, sort_keys=True), flush=True)

    def model_dir(self, model):
        return os.path.join(self.repo, model, "1")

    def test_logits_match_within_1e_4(self):
        for model in MODELS:
            ref = self.references[model]
            items, expected = [], []
            for index, rows in ref["logits"].items():
                entry = ref["texts"][int(index)]
                if model == "marian":
                    start = ref["settings"]["greedy"]["decoder_start_token_id"]
                    items.append({"source": entry["source_ids"][:-1],
                                  "decoder_input": [start] + entry["target_ids"][:-1]})
                else:
                    items.append({"decoder_input": entry["prompt_ids"]})
                expected.append(rows)
            path = os.path.join(self.tmp, f"logits-{model}")
            with open(path + ".json", "w") as f:
                json.dump({"items": items}, f)
            subprocess.run([MODEL_LOGITS, "logits", "--model", self.model_dir(model), "--input",
                            path + ".json", "--output", path + ".f32"], check=True)
            mine = read_f32(path + ".f32")
            flat = [v for rows in expected for row in rows for v in row]
            self.assertEqual(len(mine), len(flat), model)
            worst = max(abs(a - b) for a, b in zip(mine, flat))
            self.figures[f"{model} max |logit diff|"] = worst
            self.assertLessEqual(worst, LOGIT_TOLERANCE, model)

    def test_weights_stored_in_bf16_and_f16(self):
        """Imported with --dtype: within 1e-4 of transformers on the same rounded weights; the
        distance to the fp32 model is the rounding's own and is reported."""
        ref = self.references["llama"]
        items = [{"decoder_input": ref["texts"][int(i)]["prompt_ids"]} for i in ref["logits"]]
        fp32 = [v for i in ref["logits"] for row in ref["logits"][i] for v in row]
        inputs = os.path.join(self.tmp, "rounded.json")
        with open(inputs, "w") as f:
            json.dump({"items": items}, f)
        for dtype, torch_dtype in [("bf16", "bfloat16"), ("f16", "float16")]:
            out_dir = os.path.join(self.tmp, f"llama-{dtype}", "1")
            subprocess.run([NORMSERVE_MODEL, "import", "--from", os.path.join(self.hf_dir, "llama"),
                            "--out", out_dir, "--dtype", dtype], check=True, capture_output=True)
            mine_path = os.path.join(self.tmp, f"rounded-{dtype}.f32")
            subprocess.run([MODEL_LOGITS, "logits", "--model", out_dir, "--input", inputs,
                            "--output", mine_path], check=True)
            theirs_path = os.path.join(self.tmp, f"rounded-{dtype}-reference.f32")
            subprocess.run([VENV_PYTHON, "-c", ROUNDED_REFERENCE, os.path.join(self.hf_dir, "llama"),
                            torch_dtype, inputs, theirs_path], check=True)
            mine, theirs = read_f32(mine_path), read_f32(theirs_path)
            self.assertEqual(len(mine), len(theirs))
            same_weights = max(abs(a - b) for a, b in zip(mine, theirs))
            rounding = max(abs(a - b) for a, b in zip(mine, fp32))
            self.figures[f"llama {dtype} max |logit diff| vs same rounded weights"] = same_weights
            self.figures[f"llama {dtype} max |logit diff| vs fp32 model"] = rounding
            self.assertLessEqual(same_weights, LOGIT_TOLERANCE, dtype)
            self.assertGreater(rounding, same_weights, dtype)  # the rounding did happen

    def tokenize(self, model, side, texts):
        path = os.path.join(self.tmp, f"texts-{model}-{side}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        out = subprocess.run([MODEL_LOGITS, "tokenize", "--model", self.model_dir(model),
                              "--side", side, "--texts", path],
                             check=True, capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines()]

    def test_token_ids_equal_the_reference_tokenizers(self):
        for model in LANGUAGE_MODELS:
            entries = self.references[model]["texts"]
            mine = self.tokenize(model, "target", [e["text"] for e in entries])
            theirs = [e["prompt_ids"][1:] for e in entries]  # LlamaTokenizer puts <s> first
            self.assertEqual(mine, theirs, model)
            self.figures[f"{model} texts tokenized alike"] = f"{len(entries)}/{len(entries)}"
        entries = self.references["marian"]["texts"]
        self.assertEqual(self.tokenize("marian", "source", [e["text"] for e in entries]),
                         [e["source_ids"][:-1] for e in entries])  # MarianTokenizer adds </s>
        self.assertEqual(self.tokenize("marian", "target", [e["target_text"] for e in entries]),
                         [e["target_ids"][:-1] for e in entries])
        self.figures["marian texts tokenized alike"] = f"{len(entries)}/{len(entries)} both sides"

    def generate(self, model, prompt):
        text, last = "", None
        for reply in self.client.Generate(pb.GenerateRequest(
                model=model, prompt=prompt.encode(),
                options=pb.GenerateOptions(temperature=0, max_new_tokens=32)), timeout=60):
            text += reply.text
            last = reply
        return text, last

    def test_greedy_generate_continues_like_generate(self):
        for model in LANGUAGE_MODELS:
            entries = self.references[model]["texts"]
            differ, with_unk = [], 0
            for i, e in enumerate(entries):
                text, last = self.generate(model, e["text"])
                # A continuation whose first piece starts a word begins with its space; the
                # reference decodes the continuation alone, which drops it. A generated <unk>
                # reads as SentencePiece's " \u2047 " here; skip_special_tokens drops it there.
                if UNK_SURFACE in text:
                    with_unk += 1
                same = (last.tokens == len(e["greedy_ids"])
                        and (last.finish_reason == "eos") == e["greedy_eos"]
                        and text.replace(UNK_SURFACE, "") in (e["greedy_text"],
                                                               " " + e["greedy_text"]))
                if not same:
                    differ.append((i, e["text"], text, e["greedy_text"], last.tokens,
                                   len(e["greedy_ids"]), last.finish_reason))
            self.figures[f"{model} greedy Generate identical"] = \
                f"{len(entries) - len(differ)}/{len(entries)} ({with_unk} with a generated <unk>)"
            self.assertEqual(differ, [], model)

    def test_score_matches_reference_logprobs(self):
        for model in MODELS:
            entries = self.references[model]["texts"]
            worst = 0.0
            for start in range(0, len(entries), BATCH):
                batch = entries[start:start + BATCH]
                if model == "marian":
                    request = pb.ScoreRequest(model=model, pairs=[
                        pb.SourceTarget(source=e["text"].encode(), target=e["target_text"].encode())
                        for e in batch])
                else:
                    request = pb.ScoreRequest(model=model, texts=[e["text"].encode() for e in batch])
                reply = self.client.Score(request, timeout=60)
                for e, result in zip(batch, reply.results):
                    mine = [t.logprob for t in result.tokens]
                    self.assertEqual(len(mine), len(e["score_logprobs"]), (model, e["text"]))
                    worst = max([worst] + [abs(a - b) for a, b in zip(mine, e["score_logprobs"])])
            self.figures[f"{model} Score max |log-prob diff|"] = worst
            self.assertLessEqual(worst, LOGPROB_TOLERANCE, model)

    def test_marian_translations_are_generates_token_ids(self):
        entries = self.references["marian"]["texts"]
        for beam, key in [(1, "greedy_ids"), (4, "beam_ids")]:
            differ = []
            for start in range(0, len(entries), BATCH):
                batch = entries[start:start + BATCH]
                reply = self.client.Translate(pb.TranslateRequest(
                    model="marian", texts=[e["text"].encode() for e in batch],
                    options=pb.TranslateOptions(beam_size=beam, return_tokens=True)), timeout=120)
                for offset, (e, t) in enumerate(zip(batch, reply.translations)):
                    mine = piece_ids(t.hypotheses[0].tokens, self.marian_vocab)
                    if mine != e[key]:
                        differ.append((start + offset, e["text"], mine, e[key]))
            self.figures[f"marian beam {beam} Translate identical"] = \
                f"{len(entries) - len(differ)}/{len(entries)}"
            self.assertEqual(differ, [], f"beam {beam}")

    def test_translate_on_a_language_model_is_refused(self):
        with self.assertRaises(grpc.RpcError) as raised:
            self.client.Translate(pb.TranslateRequest(model="llama", texts=[b"hello"]), timeout=30)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("transformer_lm", raised.exception.details())

    def test_the_norm_variant_group_reports_each_norm(self):
        seen = set()
        for i in range(40):
            _, last = self.generate("llama-norms", self.references["llama"]["texts"][i]["text"])
            seen.add((last.model, last.norm))
        self.assertEqual(seen, {("llama", "rmsnorm"), ("llama_layernorm", "layernorm")})
        metrics = self.server.metrics()
        for model, norm in seen:
            count = 0
            for line in metrics.splitlines():
                match = re.match(r"^normserve_requests_total\{(.*)\} (\S+)$", line)
                labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) if match else {}
                if labels.get("model") == model and labels.get("norm") == norm:
                    count += float(match.group(2))
            self.assertGreater(count, 0, (model, norm))
            self.figures[f"normserve_requests_total model={model} norm={norm}"] = count
        info = self.client.GetModel(pb.GetModelRequest(model="llama"), timeout=10)
        self.assertEqual(info.norm, "rmsnorm")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
