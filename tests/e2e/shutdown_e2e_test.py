"""Graceful shutdown of the real normserved: SIGTERM while requests are queued and running.

Health turns NOT_SERVING, new calls get UNAVAILABLE, the calls in flight finish, exit 0.
Usage: shutdown_e2e_test.py NORMSERVED NORMSERVE MODEL_REPOSITORY
"""
import re
import signal
import subprocess
import sys
import time
import unittest

from normserved_process import NormservedProcess
import urllib.request

NORMSERVED, NORMSERVE, REPOSITORY = sys.argv[1:4]
# Slow calls whatever the model: 64 sentences at beam 8 take the trained bundled deen about
# 1.6 s per call on 2 idle cores, and the four calls run one batch at a time.
TEXTS = ["Das ist ein kleines Haus am See", "Guten Morgen, wie geht es dir heute",
         "Wir fahren morgen mit dem Zug nach Berlin", "Der Hund schläft unter dem Tisch"] * 16


def inflight(metrics_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        match = re.search(r"^normserve_inflight_requests (\S+)$", page.read().decode(), re.M)
    return float(match.group(1)) if match else 0.0


class ShutdownDrain(unittest.TestCase):
    def test_sigterm_drains_in_flight_calls_and_exits_zero(self):
        normserved = NormservedProcess(NORMSERVED, REPOSITORY, "--shutdown-grace-secs", "60",
                                       "--max-batch-size", "1")
        server, target, metrics_port = normserved.process, normserved.target, normserved.metrics_port
        try:
            clients = [subprocess.Popen(
                [NORMSERVE, "--server", target, "translate", "--model", "deen", "--beam", "8",
                 *TEXTS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
            # Every call must have reached the server: one that arrives after SIGTERM is
            # refused, as it should be.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and inflight(metrics_port) < len(clients):
                time.sleep(0.02)
            self.assertEqual(inflight(metrics_port), len(clients), "the calls never got in flight")

            server.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            health = subprocess.run([NORMSERVE, "--server", target, "--timeout", "5", "health"],
                                    capture_output=True, text=True, timeout=30)
            self.assertNotEqual(health.returncode, 0)
            self.assertIn("NOT_SERVING", health.stdout + health.stderr, health)
            late = subprocess.run(
                [NORMSERVE, "--server", target, "--timeout", "5", "translate", "--model", "deen",
                 "Hallo"], capture_output=True, text=True, timeout=30)
            self.assertEqual(late.returncode, 1, late)
            self.assertIn("UNAVAILABLE", late.stderr, late)

            for client in clients:
                out, err = client.communicate(timeout=120)
                self.assertEqual(client.returncode, 0, err)
                self.assertEqual(len(out.splitlines()), len(TEXTS))
            self.assertEqual(server.wait(timeout=60), 0)
        finally:
            normserved.stop()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
