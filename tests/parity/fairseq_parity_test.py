"""fairseq checkpoints served by normserve compute what fairseq computes.

    fairseq_parity_test.py NORMSERVED MODEL_LOGITS [--models a,b]

fairseq itself (scripts/fairseq-venv.sh) builds small random models (transformer pre- and
post-norm, transformer_lm, MaskPowerNorm and the PowerNorm authors' batch norm at the encoder
sites), trains SentencePiece models and fairseq dictionaries on the repository's own
documentation, and saves checkpoint_best.pt with its Trainer (tests/parity/fairseq_reference.py).
scripts/import-fairseq.py converts each one; then, against fairseq's own numbers:
- logits of random token ids (fp32, model_logits logits): max abs difference <= 1e-4;
- token ids of a couple of hundred texts (model_logits tokenize) equal fairseq's
  SentencePiece + dictionary encoding;
- per-token log-probabilities of Score from a real normserved (gRPC) within 1e-4.
Prints the figures. Run with Debian's /usr/bin/python3 (grpcio, numpy).
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from grpc_stubs import pb, stub  # noqa: E402
from normserved_process import NormservedProcess  # noqa: E402

LOGIT_TOLERANCE = 1e-4
LOGPROB_TOLERANCE = 1e-4
# Encoder sites first in site order, then the decoder's LayerNorm.
EXPECTED_NORMS = {"mt_powernorm": "powernorm+layernorm", "mt_batchnorm": "batchnorm+layernorm"}
PROBE_TEXTS = 200
# Texts the documentation lacks: characters outside every SentencePiece vocabulary here.
EXTRA_TEXTS = ["Straße über Äpfel, naïve café.", "日本語のテキスト", "emoji 🙂 in text",
               "tabs\tand  double  spaces", "ALL CAPS AND 12345 digits"]


def documentation_texts():
    """Sentences of the repository's Markdown files, cleaned of markup, in a stable order."""
    texts = []
    for path in sorted(glob.glob(os.path.join(ROOT, "*.md")) +
                       glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = re.sub(r"[`*#|>\[\]]", " ", line).strip(" -\n")
                line = re.sub(r"\s+", " ", line)
                if 4 <= len(line.split()) <= 40 and line not in texts:
                    texts.append(line)
    return texts


class FairseqParityTest(unittest.TestCase):
    normserved = model_logits = None
    models = None

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="normserve-fairseq-")
        venv = subprocess.run([os.path.join(ROOT, "scripts", "fairseq-venv.sh")], check=True,
                              stdout=subprocess.PIPE, text=True).stdout.strip()
        cls.python = os.path.join(venv, "bin", "python")
        texts = documentation_texts()
        cls.probe_texts = texts[:PROBE_TEXTS - len(EXTRA_TEXTS)] + EXTRA_TEXTS
        texts_file = os.path.join(cls.work, "texts.txt")
        with open(texts_file, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n\n" + "\n".join(cls.probe_texts) + "\n")
        reference = [cls.python, os.path.join(HERE, "fairseq_reference.py"), cls.work, texts_file]
        subprocess.run(reference + ([",".join(cls.models)] if cls.models else []), check=True)
        cls.names = sorted(n for n in os.listdir(cls.work)
                           if os.path.isfile(os.path.join(cls.work, n, "reference.json")))
        cls.repository = os.path.join(cls.work, "repository")
        for name in cls.names:
            cls.convert(name)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    @classmethod
    def convert(cls, name):
        model_dir = os.path.join(cls.work, name)
        ref = cls.reference(name)
        subprocess.run([cls.python, os.path.join(ROOT, "scripts", "import-fairseq.py"),
                        "--checkpoint", os.path.join(model_dir, "checkpoint_best.pt"),
                        "--data-dir", os.path.join(model_dir, "data"), "--spm", *ref["spm"],
                        "--out", cls.version_dir(name)], check=True)

    @classmethod
    def version_dir(cls, name):
        return os.path.join(cls.repository, name, "1")

    @classmethod
    def reference(cls, name):
        with open(os.path.join(cls.work, name, "reference.json"), encoding="utf-8") as f:
            return json.load(f)

    def test_models_were_built(self):
        expected = self.models or ["lm_prenorm", "mt_batchnorm", "mt_postnorm_shared",
                                   "mt_powernorm", "mt_prenorm"]
        self.assertEqual(self.names, sorted(expected))

    def test_logits_match_fairseq(self):
        for name in self.names:
            with self.subTest(model=name):
                ref = self.reference(name)
                items_file = os.path.join(self.work, name, "items.json")
                with open(items_file, "w") as f:
                    json.dump({"items": ref["items"]}, f)
                output = os.path.join(self.work, name, "normserve_logits.f32")
                subprocess.run([self.model_logits, "logits", "--model", self.version_dir(name),
                                "--input", items_file, "--output", output], check=True)
                ours = np.fromfile(output, dtype="<f4")
                theirs = np.fromfile(os.path.join(self.work, name, "reference_logits.f32"),
                                     dtype="<f4")
                positions = sum(len(item["decoder_input"]) for item in ref["items"])
                self.assertEqual(theirs.size, positions * ref["vocab_size"])
                self.assertEqual(ours.shape, theirs.shape)
                diff = float(np.abs(ours.astype(np.float64) - theirs).max())
                print(f"fairseq parity {name}: logits of {len(ref['items'])} inputs "
                      f"({positions} positions x {ref['vocab_size']}): max abs diff {diff:.2e} "
                      f"(largest |logit| {float(np.abs(theirs).max()):.2f})", flush=True)
                self.assertLessEqual(diff, LOGIT_TOLERANCE)

    def test_token_ids_match_fairseq(self):
        texts_file = os.path.join(self.work, "probe.txt")
        with open(texts_file, "w", encoding="utf-8") as f:
            f.write("\n".join(self.probe_texts) + "\n")
        for name in self.names:
            ref = self.reference(name)
            for side, expected in ref["tokens"].items():
                with self.subTest(model=name, side=side):
                    out = subprocess.run(
                        [self.model_logits, "tokenize", "--model", self.version_dir(name),
                         "--side", side, "--texts", texts_file],
                        check=True, stdout=subprocess.PIPE, text=True).stdout
                    ours = [json.loads(line) for line in out.splitlines()]
                    unknown = sum(ids.count(3) for ids in expected)
                    same = sum(a == b for a, b in zip(ours, expected))
                    print(f"fairseq parity {name} {side}: {same}/{len(expected)} texts tokenized "
                          f"as fairseq does ({sum(map(len, expected))} ids, {unknown} <unk>)",
                          flush=True)
                    self.assertEqual(len(ours), len(expected))
                    for i, (a, b) in enumerate(zip(ours, expected)):
                        self.assertEqual(a, b, f"text {i}: {self.probe_texts[i]!r}")

    def test_unsupported_options_are_refused(self):
        """A checkpoint whose options normserve would compute differently: exit 1, naming it."""
        name = next((n for n in self.names if n.startswith("mt_")), self.names[0])
        ref = self.reference(name)
        edited = os.path.join(self.work, "edited-")
        cases = {"encoder_learned_pos": True, "decoder_learned_pos": True,
                 "layernorm_embedding": True,
                 "adaptive_softmax_cutoff": "100,200", "cross_self_attention": True,
                 "activation_fn": "gelu_accurate", "encoder_norm_self": "group",
                 "decoder_output_dim": 64}
        # One checkpoint per option, written in one run of the venv's python.
        edit = ("import json, sys, torch\n"
                "c = torch.load(sys.argv[1])\n"
                "m = c['cfg']['model']\n"
                "m = m if isinstance(m, dict) else vars(m)\n"
                "for option, value in json.loads(sys.argv[3]).items():\n"
                "    old = m.get(option)\n"
                "    m[option] = value\n"
                "    torch.save(c, sys.argv[2] + option + '.pt')\n"
                "    m[option] = old\n")
        subprocess.run([self.python, "-c", edit, os.path.join(self.work, name, "checkpoint_best.pt"),
                        edited, json.dumps(cases)], check=True)
        for option in cases:
            with self.subTest(option=option):
                out = os.path.join(self.work, "refused", option)
                run = subprocess.run(
                    [self.python, os.path.join(ROOT, "scripts", "import-fairseq.py"),
                     "--checkpoint", edited + option + ".pt",
                     "--data-dir", os.path.join(self.work, name, "data"), "--spm", *ref["spm"],
                     "--out", out],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                print(f"fairseq parity refused {option}: {run.stderr.strip()}", flush=True)
                self.assertEqual(run.returncode, 1, run.stderr)
                self.assertIn(option, run.stderr)
                self.assertFalse(os.path.exists(os.path.join(out, "config.json")))

    def test_score_matches_fairseq(self):
        server = NormservedProcess(self.normserved, self.repository, "--threads", "1")
        try:
            client = stub(server.target)
            for name in self.names:
                with self.subTest(model=name):
                    ref = self.reference(name)
                    scores = ref["scores"]
                    if ref["mt"]:
                        request = pb.ScoreRequest(model=name, pairs=[
                            pb.SourceTarget(source=s["source"].encode(),
                                            target=s["target"].encode()) for s in scores])
                    else:
                        request = pb.ScoreRequest(
                            model=name, texts=[s["target"].encode() for s in scores])
                    reply = client.Score(request, timeout=120)
                    # The metrics' norm label names the norms as the checkpoint has them.
                    self.assertEqual(reply.norm, EXPECTED_NORMS.get(name, "layernorm"))
                    results = reply.results
                    self.assertEqual(len(results), len(scores))
                    worst, count = 0.0, 0
                    for result, expected in zip(results, scores):
                        ours = [t.logprob for t in result.tokens]
                        self.assertEqual(len(ours), len(expected["logprobs"]), expected["target"])
                        for a, b in zip(ours, expected["logprobs"]):
                            worst = max(worst, abs(a - b))
                            count += 1
                    print(f"fairseq parity {name}: Score of {len(scores)} "
                          f"{'pairs' if ref['mt'] else 'texts'} ({count} tokens) via normserved: "
                          f"max abs log-prob diff {worst:.2e}", flush=True)
                    self.assertLessEqual(worst, LOGPROB_TOLERANCE)
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("normserved")
    parser.add_argument("model_logits")
    parser.add_argument("--models", help="comma-separated subset (default: all)")
    args, rest = parser.parse_known_args()
    FairseqParityTest.normserved = os.path.abspath(args.normserved)
    FairseqParityTest.model_logits = os.path.abspath(args.model_logits)
    FairseqParityTest.models = args.models.split(",") if args.models else None
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
