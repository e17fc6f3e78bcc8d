"""End to end: the command lines of the real binaries (common/command_line.h): --help, --version,
environment-variable fallbacks, an unknown flag and a bad value, each with its exit status and
message.

Usage: command_line_e2e_test.py VERSION REPOSITORY NORMSERVED NORMSERVE NORMSERVE_BENCH
                                NORMSERVE_MODEL NORMSERVE_NORMBENCH [NORMSERVE_TRAIN]
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

VERSION, REPOSITORY = sys.argv[1:3]
BINARIES = dict(zip(["normserved", "normserve", "normserve-bench", "normserve-model",
                     "normserve-normbench", "normserve-train"], sys.argv[3:9]))
USAGE_ERROR = 2


def run(program, *args, env=None, timeout=120):
    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run([BINARIES[program], *args], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def closed_port():
    """A loopback port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CommonConventions(unittest.TestCase):
    """The same behaviour in every binary."""

    def test_help_lists_flags_and_their_environment_variables(self):
        # A flag of each program and the variable that stands in for it.
        expected = {
            "normserved": ("--model-repository", "NORMSERVED_MODEL_REPOSITORY"),
            "normserve": ("--server", "NORMSERVE_SERVER"),
            "normserve-bench": ("--concurrency", "NORMSERVE_BENCH_CONCURRENCY"),
            "normserve-normbench": ("--rows", "NORMSERVE_NORMBENCH_ROWS"),
            "normserve-train": ("--train-text", "NORMSERVE_TRAIN_TRAIN_TEXT"),
        }
        for program, (flag, variable) in expected.items():
            if program not in BINARIES:
                continue
            with self.subTest(program=program):
                out = run(program, "--help")
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertIn(f"Usage: {program}", out.stdout)
                self.assertRegex(out.stdout, rf"\n  {re.escape(flag)} ")
                self.assertIn(f"env {variable}", out.stdout)
        # normserve-model's flags belong to its commands.
        out = run("normserve-model", "convert", "--help")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("env NORMSERVE_MODEL_OUTPUT", out.stdout)

    def test_version_is_the_project_version(self):
        for program in BINARIES:
            with self.subTest(program=program):
                out = run(program, "--version")
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(out.stdout, f"{program} {VERSION}\n")

    def test_unknown_flag_is_a_usage_error_naming_it(self):
        for program in BINARIES:
            with self.subTest(program=program):
                out = run(program, "--no-such-flag")
                self.assertEqual(out.returncode, USAGE_ERROR, out.stderr)
                self.assertIn(f"{program}: The following argument was not expected: "
                              "--no-such-flag", out.stderr)
                self.assertIn(f"({program} --help lists the flags)", out.stderr)

    def test_bad_value_names_the_flag_and_what_it_takes(self):
        cases = {
            "normserved": (["--model-repository", REPOSITORY, "--threads", "0"],
                           "--threads: needs a number in 1..1024, got '0'"),
            "normserve": (["translate", "--model", "deen", "--beam", "many", "Hallo"],
                          "--beam: needs a number in 0..4294967295, got 'many'"),
            "normserve-bench": (["--server", "127.0.0.1:1", "--model", "deen",
                                 "--concurrency", "1,0"],
                                "--concurrency: needs a number in 1..4096, got '0'"),
            "normserve-model": (["convert", "--norm", "rmsnorm", "--input", "in", "--output",
                                 "out", "--dtype", "f64"],
                                "--dtype: f64 not in {f32,f16,bf16}"),
            "normserve-normbench": (["--device", "tpu"], "--device: tpu not in {cpu,cuda}"),
            "normserve-train": (["--config", "c.json", "--out", "o", "--steps", "-1"],
                                "--steps: needs a number in 0..1e+15, got '-1'"),
        }
        for program, (args, message) in cases.items():
            if program not in BINARIES:
                continue
            with self.subTest(program=program):
                out = run(program, *args)
                self.assertEqual(out.returncode, USAGE_ERROR, out.stderr)
                self.assertIn(f"{program}: {message}", out.stderr)

    def test_a_bad_value_from_the_environment_is_named_like_the_flag(self):
        out = run("normserved", env={"NORMSERVED_MODEL_REPOSITORY": REPOSITORY,
                                     "NORMSERVED_MODEL_CONTROL": "sometimes"})
        self.assertEqual(out.returncode, USAGE_ERROR, out.stderr)
        self.assertIn("--model-control: sometimes not in {none,poll,explicit}", out.stderr)

    def test_the_last_of_a_repeated_flag_wins(self):
        first, last = closed_port(), closed_port()
        out = run("normserve", "--server", f"127.0.0.1:{first}", "--timeout", "5", "health",
                  "--server", f"127.0.0.1:{last}")
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn(f"127.0.0.1:{last}", out.stderr)
        self.assertNotIn(f"127.0.0.1:{first}", out.stderr)

    def test_a_flag_wins_over_its_environment_variable(self):
        out = run("normserve-normbench", "--device", "tpu",
                  env={"NORMSERVE_NORMBENCH_DEVICE": "cpu"})
        self.assertEqual(out.returncode, USAGE_ERROR)
        self.assertIn("--device: tpu", out.stderr)


class EnvironmentFallbacks(unittest.TestCase):
    """Each program does its work with flags that come only from the environment."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="normserve-command-line-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def start_server_from_environment(self):
        server = subprocess.Popen(
            [BINARIES["normserved"]], stderr=subprocess.PIPE, text=True, errors="replace",
            env=dict(os.environ, NORMSERVED_MODEL_REPOSITORY=REPOSITORY,
                     NORMSERVED_GRPC_ADDRESS="127.0.0.1:0",
                     NORMSERVED_METRICS_ADDRESS="127.0.0.1:0", NORMSERVED_THREADS="1"))
        log = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = server.stderr.readline()
            if not line:
                break
            log.append(line)
            match = re.search(r"gRPC on port (\d+)", line)
            if match:
                # Keep reading the log: a full pipe would block the server on its next line.
                threading.Thread(target=server.stderr.read, daemon=True).start()
                return server, int(match.group(1))
        server.kill()
        server.wait()
        server.stderr.close()
        self.fail("normserved did not start from its environment:\n" + "".join(log))

    def test_server_client_and_bench_from_the_environment(self):
        server, port = self.start_server_from_environment()
        try:
            health = run("normserve", "health",
                         env={"NORMSERVE_SERVER": f"127.0.0.1:{port}", "NORMSERVE_TIMEOUT": "10"})
            self.assertEqual(health.returncode, 0, health.stderr)
            self.assertEqual(health.stdout.strip(), "SERVING")
            bench = run("normserve-bench",
                        env={"NORMSERVE_BENCH_SERVER": f"127.0.0.1:{port}",
                             "NORMSERVE_BENCH_MODEL": "deen",
                             "NORMSERVE_BENCH_CONCURRENCY": "1", "NORMSERVE_BENCH_REQUESTS": "2",
                             "NORMSERVE_BENCH_WARMUP_SECS": "0",
                             "NORMSERVE_BENCH_JSON": os.path.join(self.dir, "bench.json")})
            self.assertEqual(bench.returncode, 0, bench.stderr)
            self.assertTrue(os.path.exists(os.path.join(self.dir, "bench.json")))
        finally:
            server.terminate()
            self.assertEqual(server.wait(timeout=60), 0)

    def test_client_reads_its_server_from_the_environment(self):
        port = closed_port()
        out = run("normserve", "--timeout", "5", "health",
                  env={"NORMSERVE_SERVER": f"127.0.0.1:{port}"})
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn(f"127.0.0.1:{port}", out.stderr)

    def test_model_tool_writes_where_the_environment_says(self):
        output = os.path.join(self.dir, "converted")
        out = run("normserve-model", "convert", "--input",
                  os.path.join(REPOSITORY, "enlm", "1"),
                  env={"NORMSERVE_MODEL_NORM": "rmsnorm", "NORMSERVE_MODEL_OUTPUT": output})
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(os.path.exists(os.path.join(output, "config.json")))

    def test_normbench_writes_where_the_environment_says(self):
        csv = os.path.join(self.dir, "normbench.csv")
        out = run("normserve-normbench", "--rows", "1", "--d", "512", "--dtypes", "float32",
                  "--variants", "rmsnorm", "--forms", "plain", "--no-overhead", "--min-ms", "1",
                  "--markdown", os.path.join(self.dir, "normbench.md"),
                  env={"NORMSERVE_NORMBENCH_CSV": csv, "NORMSERVE_NORMBENCH_THREADS": "1"})
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(csv) as f:
            rows = f.read().splitlines()
        self.assertGreaterEqual(len(rows), 2)  # the header and the measured shape
        self.assertTrue(all(",rmsnorm," in row for row in rows[1:]), rows)

    @unittest.skipUnless("normserve-train" in BINARIES, "normserve-train is not built")
    def test_trainer_takes_its_required_flags_from_the_environment(self):
        missing = os.path.join(self.dir, "missing-config.json")
        out = run("normserve-train",
                  env={"NORMSERVE_TRAIN_CONFIG": missing,
                       "NORMSERVE_TRAIN_OUT": os.path.join(self.dir, "out"),
                       "NORMSERVE_TRAIN_TRAIN_TEXT": os.path.join(self.dir, "train.txt"),
                       "NORMSERVE_TRAIN_THREADS": "1"})
        # Past the parser (which would say "--config is required"): the trainer reads the file.
        self.assertNotIn("is required", out.stderr)
        self.assertIn(missing, out.stderr)
        self.assertNotEqual(out.returncode, 0)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
