"""End to end: the real normserved binary on loopback, loaded by the real normserve-bench.

Usage: bench_e2e_test.py NORMSERVED NORMSERVE_BENCH MODEL_REPOSITORY
"""
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

from normserved_process import NormservedProcess

NORMSERVED, BENCH, REPOSITORY = sys.argv[1:4]
STEP_KEYS = {"requests", "ok", "errors", "throughput_rps", "tokens_per_s", "p50_ms", "p90_ms",
             "p99_ms"}


class BenchEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.normserved = NormservedProcess(NORMSERVED, REPOSITORY, "--threads", "2")
        cls.server = cls.normserved.process
        cls.grpc_port = cls.normserved.grpc_port
        cls.metrics_port = cls.normserved.metrics_port
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.normserved.stop()
        cls.tmp.cleanup()

    def bench(self, *args, server=None):
        server = server or f"127.0.0.1:{self.grpc_port}"
        return subprocess.run([BENCH, "--server", server, *args], capture_output=True, text=True,
                              timeout=120)

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def check_step(self, step):
        self.assertLessEqual(STEP_KEYS, set(step), step)
        self.assertIsInstance(step["errors"], dict)
        self.assertGreater(step["ok"], 0, step)
        self.assertEqual(step["requests"], step["ok"] + sum(step["errors"].values()))
        self.assertGreater(step["throughput_rps"], 0)
        self.assertGreater(step["tokens_per_s"], 0)
        self.assertLessEqual(0, step["p50_ms"])
        self.assertLessEqual(step["p50_ms"], step["p90_ms"])
        self.assertLessEqual(step["p90_ms"], step["p99_ms"])

    def test_concurrency_sweep_writes_json_csv_and_table(self):
        out = self.bench("--model", "deen", "--concurrency", "1,4", "--duration-secs", "2",
                         "--json", self.path("c.json"), "--csv", self.path("c.csv"))
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(self.path("c.json")) as f:
            report = json.load(f)
        self.assertEqual(report["server"], f"127.0.0.1:{self.grpc_port}")
        self.assertEqual(report["model"], "deen")
        self.assertEqual(report["rpc"], "translate")
        self.assertEqual(report["duration_secs"], 2)
        self.assertEqual([s["concurrency"] for s in report["steps"]], [1, 4])
        for step in report["steps"]:
            self.check_step(step)
        with open(self.path("c.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([r["concurrency"] for r in rows], ["1", "4"])
        self.assertEqual(int(rows[0]["ok"]), report["steps"][0]["ok"])
        self.assertIn("p99 ms", out.stdout)
        self.assertRegex(out.stdout, r"\n\s+4\s+\d+\s+\d+\s+\d+\s+[\d.]+.* OK=\d+")

    def test_rate_mode(self):
        out = self.bench("--model", "deen", "--rate", "20", "--duration-secs", "2",
                         "--json", self.path("r.json"))
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(self.path("r.json")) as f:
            report = json.load(f)
        self.assertEqual(report["mode"], "rate")
        [step] = report["steps"]
        self.assertEqual(step["rate"], 20)
        self.check_step(step)
        self.assertIn("dropped", step)

    def test_language_model_scores_a_request_count(self):
        out = self.bench("--model", "enlm", "--concurrency", "2", "--requests", "20",
                         "--warmup-secs", "0", "--json", self.path("lm.json"))
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(self.path("lm.json")) as f:
            report = json.load(f)
        self.assertEqual(report["rpc"], "score")
        [step] = report["steps"]
        self.check_step(step)
        self.assertEqual(step["ok"], 20)

    def test_unknown_model_prints_not_found(self):
        out = self.bench("--model", "nope", "--concurrency", "1", "--duration-secs", "1")
        self.assertNotEqual(out.returncode, 0)
        self.assertRegex(out.stderr, r"NOT_FOUND: model 'nope' .*deen, enlm")

    def test_unreachable_server(self):
        with socket.socket() as s:  # a loopback port that nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = self.bench("--model", "deen", "--duration-secs", "1", server=f"127.0.0.1:{port}")
        self.assertEqual(out.returncode, 1)
        self.assertIn("UNAVAILABLE: cannot reach normserved", out.stderr)

    def test_usage(self):
        help_text = self.bench("--help")
        self.assertEqual(help_text.returncode, 0)
        self.assertIn("loopback", help_text.stdout)
        both = self.bench("--model", "deen", "--concurrency", "1", "--rate", "5")
        self.assertEqual(both.returncode, 2)
        self.assertIn("not both", both.stderr)
        no_server = subprocess.run([BENCH, "--model", "deen"], capture_output=True, text=True)
        self.assertEqual(no_server.returncode, 2)
        self.assertIn("--server", no_server.stderr)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
