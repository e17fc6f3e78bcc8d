"""End to end: the real normserved binary on loopback, driven by the real normserve CLI.

Usage: cli_e2e_test.py NORMSERVED NORMSERVE MODEL_REPOSITORY
"""
import json
import signal
import subprocess
import sys
import unittest
import urllib.request

from normserved_process import NormservedProcess

NORMSERVED, NORMSERVE, REPOSITORY = sys.argv[1:4]


class CliEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.normserved = NormservedProcess(NORMSERVED, REPOSITORY, "--threads", "2")
        cls.server = cls.normserved.process
        cls.grpc_port = cls.normserved.grpc_port
        cls.metrics_port = cls.normserved.metrics_port

    @classmethod
    def tearDownClass(cls):
        cls.normserved.stop()

    def cli(self, *args, stdin=None):
        return subprocess.run(
            [NORMSERVE, "--server", f"127.0.0.1:{self.grpc_port}", *args], input=stdin,
            capture_output=True, text=True, timeout=60)

    def test_health_and_models(self):
        health = self.cli("health")
        self.assertEqual(health.returncode, 0, health.stderr)
        self.assertEqual(health.stdout.strip(), "SERVING")
        models = self.cli("--json", "models")
        self.assertEqual(models.returncode, 0, models.stderr)
        listed = {m["name"]: m for m in json.loads(models.stdout)["models"]}
        self.assertEqual(listed["deen"]["architecture"], "transformer_mt")
        self.assertEqual(listed["enlm"]["architecture"], "transformer_lm")
        self.assertTrue(all(m["ready"] for m in listed.values()))

    def test_translate_from_arguments_and_stdin(self):
        args = self.cli("translate", "--model", "deen", "Guten Morgen", "ein großes Haus")
        self.assertEqual(args.returncode, 0, args.stderr)
        lines = args.stdout.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(all(lines))
        stdin = self.cli("translate", "--model", "deen", stdin="Guten Morgen\nein großes Haus\n")
        self.assertEqual(stdin.returncode, 0, stdin.stderr)
        self.assertEqual(stdin.stdout.splitlines(), lines)

    def test_translate_json_n_best(self):
        out = self.cli("--json", "translate", "--model", "deen", "--beam", "4", "--n-best", "2",
                       "Das ist nicht möglich.")
        self.assertEqual(out.returncode, 0, out.stderr)
        response = json.loads(out.stdout)
        hypotheses = response["translations"][0]["hypotheses"]
        self.assertEqual(len(hypotheses), 2)
        self.assertGreaterEqual(hypotheses[0]["score"], hypotheses[1]["score"])
        self.assertEqual(response["norm"], "rmsnorm")

    def test_score_lm_and_mt_pairs(self):
        lm = self.cli("--json", "score", "--model", "enlm", "the house is big")
        self.assertEqual(lm.returncode, 0, lm.stderr)
        result = json.loads(lm.stdout)["results"][0]
        self.assertEqual(result["tokens"][-1]["token"], "</s>")
        self.assertAlmostEqual(sum(t["logprob"] for t in result["tokens"]),
                               result["total_logprob"], places=3)
        text = self.cli("score", "--model", "enlm", "the house is big")
        self.assertIn("perplexity", text.stdout)
        mt = self.cli("score", "--model", "deen", stdin="Haus\thouse\n")
        self.assertEqual(mt.returncode, 0, mt.stderr)
        self.assertIn("total_logprob", mt.stdout)

    def test_errors_carry_status_name_and_message(self):
        missing = self.cli("translate", "--model", "nope", "Hallo")
        self.assertEqual(missing.returncode, 1)
        self.assertRegex(missing.stderr, r"error: NOT_FOUND: model 'nope' .*deen, enlm")
        beam = self.cli("translate", "--model", "deen", "--beam", "0", "Hallo")
        self.assertEqual(beam.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: beam_size is 0; it must be in 1..64", beam.stderr)
        usage = self.cli("translate", "Hallo")
        self.assertEqual(usage.returncode, 2)
        self.assertIn("--model is required", usage.stderr)
        # Texts without a tab go as texts; the server says the model takes pairs.
        no_tab = self.cli("score", "--model", "deen", "Haus")
        self.assertEqual(no_tab.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: model 'deen' is a transformer_mt", no_tab.stderr)
        self.assertIn("SOURCE<TAB>TARGET", no_tab.stderr)

    def test_generate_streams_and_reproduces_with_a_seed(self):
        first = self.cli("generate", "--model", "enlm", "--seed", "5", "--max-new-tokens", "8",
                         "the house")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertTrue(first.stdout.strip())
        self.assertRegex(first.stderr, r"\[(length|eos)\]")
        again = self.cli("generate", "--model", "enlm", "--seed", "5", "--max-new-tokens", "8",
                         "the house")
        self.assertEqual(again.stdout, first.stdout)
        pieces = self.cli("--json", "generate", "--model", "enlm", "--max-new-tokens", "4", "a")
        self.assertEqual(json.loads(pieces.stdout.splitlines()[-1])["finish_reason"] in
                         ("length", "eos"), True)

    def test_load_and_unload_need_explicit_model_control(self):
        out = self.cli("unload", "enlm")
        self.assertEqual(out.returncode, 1)
        self.assertIn("FAILED_PRECONDITION", out.stderr)
        self.assertIn("--model-control explicit", out.stderr)

    def test_metrics_endpoint_counts_requests(self):
        self.cli("translate", "--model", "deen", "Hallo")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as page:
            body = page.read().decode()
        self.assertRegex(body, r'normserve_requests_total\{code="OK",model="deen",'
                               r'norm="rmsnorm",rpc="Translate",version="1"\} \d+')

    def test_zz_sigterm_exits_cleanly(self):
        self.server.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait(timeout=30), 0)
        down = self.cli("--timeout", "2", "health")
        self.assertNotEqual(down.returncode, 0)
        self.assertIn("UNAVAILABLE", down.stderr)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
