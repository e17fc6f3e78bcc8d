"""Lossless norm conversion on the real tools and server (issue #17).

1. `normserve-model convert` writes enlm's Pre-RMSNorm and Pre-CRMSNorm equivalents (exit 0;
   the latter with residual_dim embed_dim - 1), refuses the RMSNorm deen (naming the site)
   with exit 1, and an unknown target or a missing flag with exit 2.
2. normserved serves enlm as stored, enlm converted at load (model.json "convert_norm") to
   either target and the converted directories: the conversions report their target's label
   and Score gives the same log-probabilities as the original.
3. A model.json asking to convert deen (not Pre-LN) fails that model with the reason.

Usage: norm_conversion_e2e_test.py NORMSERVED NORMSERVE_MODEL MODEL_REPOSITORY
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from grpc_stubs import pb, stub
from normserved_process import NormservedProcess

NORMSERVED, NORMSERVE_MODEL, REPOSITORY = sys.argv[1:4]
TEXTS = ["the house is small .", "we go home today and the dog runs quickly",
         "music at night , water and bread", "Berlin is old but the city is new"]


def convert(*args):
    return subprocess.run([NORMSERVE_MODEL, "convert", *args], capture_output=True, text=True,
                          timeout=120)


class NormConversionE2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="normserve_convert_e2e_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_tool_and_server(self):
        enlm = os.path.join(REPOSITORY, "enlm", "1")
        repo = os.path.join(self.root, "repository")
        converted = os.path.join(repo, "enlm_rmsnorm", "1")
        done = convert("--norm", "rmsnorm", "--input", enlm, "--output", converted,
                       "--dtype", "f32")
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(os.path.join(converted, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["positions"], "sinusoidal_zero_mean")
        self.assertFalse(config["share_decoder_input_output_embed"])
        self.assertEqual({site["type"] for site in config["norm"].values()}, {"rmsnorm"})

        crms_dir = os.path.join(repo, "enlm_crmsnorm", "1")
        crms = convert("--norm", "crmsnorm", "--input", enlm, "--output", crms_dir,
                       "--dtype", "f32")
        self.assertEqual(crms.returncode, 0, crms.stderr)
        with open(os.path.join(crms_dir, "config.json")) as f:
            crms_config = json.load(f)
        self.assertEqual(crms_config["residual_dim"], crms_config["embed_dim"] - 1)
        self.assertTrue(crms_config["output_bias"])
        self.assertEqual({site["type"] for site in crms_config["norm"].values()}, {"crmsnorm"})
        unknown = convert("--norm", "powernorm", "--input", enlm, "--output",
                          os.path.join(self.root, "power"))
        self.assertEqual(unknown.returncode, 2)
        self.assertIn("use rmsnorm or crmsnorm", unknown.stderr)
        deen = convert("--norm", "rmsnorm", "--input", os.path.join(REPOSITORY, "deen", "1"),
                       "--output", os.path.join(self.root, "deen_rms"))
        self.assertEqual(deen.returncode, 1)
        self.assertIn("'encoder_self_attn' is rmsnorm", deen.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.root, "deen_rms")))
        usage = convert("--norm", "rmsnorm", "--input", enlm)
        self.assertEqual(usage.returncode, 2)
        self.assertIn("--output", usage.stderr)

        shutil.copytree(os.path.join(REPOSITORY, "enlm"), os.path.join(repo, "enlm"))
        for name, target in (("enlm_at_load", "rmsnorm"), ("enlm_crms_at_load", "crmsnorm")):
            shutil.copytree(os.path.join(REPOSITORY, "enlm"), os.path.join(repo, name))
            with open(os.path.join(repo, name, "model.json"), "w") as f:
                json.dump({"convert_norm": target}, f)
        shutil.copytree(os.path.join(REPOSITORY, "deen"), os.path.join(repo, "deen_at_load"))
        with open(os.path.join(repo, "deen_at_load", "model.json"), "w") as f:
            json.dump({"convert_norm": "rmsnorm"}, f)

        server = NormservedProcess(NORMSERVED, repo)
        try:
            client = stub(server.target)
            texts = [t.encode() for t in TEXTS]
            original = client.Score(pb.ScoreRequest(model="enlm", texts=texts), timeout=60)
            self.assertEqual(original.norm, "layernorm")
            for name, norm in (("enlm_at_load", "rmsnorm"), ("enlm_rmsnorm", "rmsnorm"),
                               ("enlm_crms_at_load", "crmsnorm"),
                               ("enlm_crmsnorm", "crmsnorm")):
                reply = client.Score(pb.ScoreRequest(model=name, texts=texts), timeout=60)
                self.assertEqual(reply.norm, norm, name)
                for a, b in zip(original.results, reply.results):
                    self.assertEqual([t.token for t in a.tokens], [t.token for t in b.tokens])
                    self.assertAlmostEqual(a.total_logprob, b.total_logprob, delta=1e-3)
                    for ta, tb in zip(a.tokens, b.tokens):
                        self.assertAlmostEqual(ta.logprob, tb.logprob, delta=1e-4)
            info = client.GetModel(pb.GetModelRequest(model="enlm_at_load"), timeout=10)
            self.assertEqual({s.variant for s in info.norm_sites}, {"rmsnorm"})
            info = client.GetModel(pb.GetModelRequest(model="enlm_crms_at_load"), timeout=10)
            self.assertEqual({s.variant for s in info.norm_sites}, {"crmsnorm"})
            refused = client.GetModel(pb.GetModelRequest(model="deen_at_load"), timeout=10)
            self.assertFalse(refused.ready)
            self.assertIn("cannot convert to rmsnorm", refused.error)
            self.assertIn("encoder_self_attn", refused.error)
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
