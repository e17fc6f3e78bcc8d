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
import urllib.request

NORMSERVED, NORMSERVE, REPOSITORY = sys.argv[1:4]
TEXTS = ["Das ist ein kleines Haus am See", "Guten Morgen, wie geht es dir heute",
         "Wir fahren morgen mit dem Zug nach Berlin", "Der Hund schläft unter dem Tisch"]


def inflight(metrics_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        match = re.search(r"^normserve_inflight_requests (\S+)$", page.read().decode(), re.M)
    return float(match.group(1)) if match else 0.0


class ShutdownDrain(unittest.TestCase):
    def test_sigterm_drains_in_flight_calls_and_exits_zero(self):
        server = subprocess.Popen(
            [NORMSERVED, "--model-repository", REPOSITORY, "--grpc-address", "127.0.0.1:0",
             "--metrics-address", "127.0.0.1:0", "--shutdown-grace-secs", "60",
             "--max-batch-size", "1"],
            stderr=subprocess.PIPE, text=True)
        try:
            grpc_port = metrics_port = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and grpc_port is None:
                line = server.stderr.readline()
                match = re.search(r"gRPC on port (\d+), metrics on port (\d+)", line)
                if match:
                    grpc_port, metrics_port = int(match.group(1)), int(match.group(2))
            self.assertIsNotNone(grpc_port, "normserved did not start")
            target = f"127.0.0.1:{grpc_port}"

            # Slow calls: beam 8 over several sentences each, one batch at a time.
            clients = [subprocess.Popen(
                [NORMSERVE, "--server", target, "translate", "--model", "deen", "--beam", "8",
                 *TEXTS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and inflight(metrics_port) < 3:
                time.sleep(0.05)
            self.assertGreaterEqual(inflight(metrics_port), 3, "the calls never got in flight")

            server.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            health = subprocess.run([NORMSERVE, "--server", target, "--timeout", "5", "health"],
                                    capture_output=True, text=True, timeout=30)
            self.assertNotEqual(health.returncode, 0)
            self.assertIn("NOT_SERVING", health.stdout + health.stderr)
            late = subprocess.run(
                [NORMSERVE, "--server", target, "--timeout", "5", "translate", "--model", "deen",
                 "Hallo"], capture_output=True, text=True, timeout=30)
            self.assertEqual(late.returncode, 1)
            self.assertIn("UNAVAILABLE", late.stderr)

            for client in clients:
                out, err = client.communicate(timeout=120)
                self.assertEqual(client.returncode, 0, err)
                self.assertEqual(len(out.splitlines()), len(TEXTS))
            self.assertEqual(server.wait(timeout=60), 0)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
