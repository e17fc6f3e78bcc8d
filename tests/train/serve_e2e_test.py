"""End to end: a model trained by the real normserve-train binary, served by the real
normserved unchanged, scores the trainer's own per-token log-probabilities (its eval-mode
forward, written by --score-out) through the normserve CLI; for an MT model with PowerNorm
and BatchNorm sites (their running statistics folded by the server) and for an LM.

Usage: serve_e2e_test.py NORMSERVE_TRAIN NORMSERVED NORMSERVE
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from normserved_process import NormservedProcess  # noqa: E402

TRAIN, NORMSERVED, NORMSERVE = sys.argv[1:4]
WORDS = [("das", "the"), ("Haus", "house"), ("ist", "is"), ("klein", "small"), ("groß", "big"),
         ("wir", "we"), ("gehen", "go"), ("heute", "today"), ("Katze", "cat"), ("Hund", "dog"),
         ("sieht", "sees"), ("Fluss", "river"), ("Stadt", "city"), ("grün", "green")]


def write_pairs(dir_, name, count, seed):
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        src.append(" ".join(d for d, _ in words))
        tgt.append(" ".join(e for _, e in words))
    for ext, lines in (("de", src), ("en", tgt)):
        with open(os.path.join(dir_, f"{name}.{ext}"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


class TrainedModelServed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="normserve_train_e2e_")
        write_pairs(cls.tmp, "train", 200, 1)
        write_pairs(cls.tmp, "valid", 20, 2)
        cls.repo = os.path.join(cls.tmp, "repo")
        cls.scores = {}
        base = {"embed_dim": 32, "ffn_dim": 64, "attention_heads": 2, "decoder_layers": 1,
                "normalize_before": True, "activation": "relu", "max_positions": 32}
        mt = dict(base, architecture="transformer_mt", encoder_layers=1,
                  norm={"default": {"type": "layernorm"},
                        "encoder_self_attn": {"type": "powernorm", "groups": 2},
                        "decoder_ffn": {"type": "batchnorm"}})
        lm = dict(base, architecture="transformer_lm",
                  norm={"default": {"type": "rmsnorm", "bias": False}})
        for name, config, data in (
                ("tinymt", mt, ["--train-source", "train.de", "--train-target", "train.en",
                                "--valid-source", "valid.de", "--valid-target", "valid.en"]),
                ("tinylm", lm, ["--train-text", "train.en", "--valid-text", "valid.en"])):
            config_path = os.path.join(cls.tmp, name + ".json")
            with open(config_path, "w", encoding="utf-8") as f:
                json.dump(config, f)
            out = os.path.join(cls.tmp, name)
            score_out = os.path.join(cls.tmp, name + ".scores.jsonl")
            run = subprocess.run(
                [TRAIN, "--config", config_path, *data, "--out", out, "--steps", "60",
                 "--warmup", "10", "--lr", "5e-3", "--max-tokens", "256", "--vocab-size", "48",
                 "--threads", "1", "--no-progress", "--validate-every", "0",
                 "--score-out", score_out, "--score-sentences", "6"],
                cwd=cls.tmp, capture_output=True, text=True, timeout=300)
            if run.returncode != 0:
                raise RuntimeError(f"normserve-train failed:\n{run.stdout}\n{run.stderr}")
            version = os.path.join(cls.repo, name, "1")
            os.makedirs(version)
            for f in os.listdir(out):
                if f.endswith((".json", ".safetensors", ".spm")):
                    shutil.copy(os.path.join(out, f), version)
            with open(score_out, encoding="utf-8") as f:
                cls.scores[name] = [json.loads(line) for line in f]
        cls.server = NormservedProcess(NORMSERVED, cls.repo, "--threads", "1")
        cls.port = cls.server.grpc_port

    @classmethod
    def tearDownClass(cls):
        server = getattr(cls, "server", None)
        if server is not None:
            server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def score(self, model, stdin):
        out = subprocess.run(
            [NORMSERVE, "--server", f"127.0.0.1:{self.port}", "--json", "score", "--model", model],
            input=stdin, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)["results"]

    def check(self, model, stdin):
        expected = self.scores[model]
        self.assertGreater(len(expected), 0)
        results = self.score(model, stdin)
        self.assertEqual(len(results), len(expected))
        for want, got in zip(expected, results):
            served = [t["logprob"] for t in got["tokens"]]
            self.assertEqual(len(served), len(want["logprobs"]))
            for a, b in zip(served, want["logprobs"]):
                self.assertAlmostEqual(a, b, delta=1e-4)

    def test_mt_pairs_score_as_in_the_trainer(self):
        rows = self.scores["tinymt"]
        self.check("tinymt", "".join(f"{r['source']}\t{r['target']}\n" for r in rows))

    def test_lm_texts_score_as_in_the_trainer(self):
        self.check("tinylm", "".join(r["text"] + "\n" for r in self.scores["tinylm"]))

    def test_the_server_reports_the_norms(self):
        out = subprocess.run([NORMSERVE, "--server", f"127.0.0.1:{self.port}", "--json",
                              "models"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        listed = {m["name"]: m for m in json.loads(out.stdout)["models"]}
        self.assertTrue(listed["tinymt"]["ready"])
        self.assertEqual(listed["tinymt"]["norm"], "powernorm+layernorm+batchnorm")
        self.assertEqual(listed["tinylm"]["norm"], "rmsnorm")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
