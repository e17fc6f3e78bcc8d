"""normserved asked for a CUDA device that it cannot use exits at once with status 3 and says so.

A CPU build has no CUDA support; a CUDA build on a machine without a GPU (this CI, or a node
whose driver is missing) sees none; no machine here has a hundredth GPU. Each of these is a
deployment error with exit status 3 and a message that starts with "no CUDA device", told
apart from a malformed --device (status 2). README "GPU".
Usage: no_device_e2e_test.py NORMSERVED MODEL_REPOSITORY [EXPECTED_REASON]
EXPECTED_REASON, when given, must appear in the message of `--device cuda` (scripts/gpu-build.sh
passes the CUDA build's "no CUDA device is present").
"""
import os
import subprocess
import sys
import unittest

NORMSERVED, REPOSITORY = sys.argv[1:3]
EXPECTED_REASON = sys.argv[3] if len(sys.argv) > 3 else "no CUDA device"
NO_DEVICE_EXIT = 3
USAGE_EXIT = 2


def run_normserved(device):
    # Loopback ports that nothing binds: the server must stop before it listens.
    return subprocess.run(
        [NORMSERVED, "--model-repository", REPOSITORY, "--device", device,
         "--grpc-address", "127.0.0.1:0", "--metrics-address", ""],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def gpu_visible():
    return os.path.exists("/dev/nvidia0")


class NoDevice(unittest.TestCase):
    @unittest.skipIf(gpu_visible(), "this machine has a GPU: --device cuda may serve")
    def test_cuda_without_a_device_exits_3_with_the_reason(self):
        result = run_normserved("cuda")
        self.assertEqual(result.returncode, NO_DEVICE_EXIT, result.stderr)
        self.assertIn("normserved: --device cuda: no CUDA device", result.stderr)
        self.assertIn(EXPECTED_REASON, result.stderr)
        self.assertNotIn("listening", result.stderr + result.stdout)

    def test_a_gpu_index_beyond_the_machine_exits_3(self):
        result = run_normserved("cuda:99")
        self.assertEqual(result.returncode, NO_DEVICE_EXIT, result.stderr)
        self.assertIn("normserved: --device cuda:99: no CUDA device", result.stderr)

    def test_a_malformed_device_is_a_usage_error(self):
        for device in ("tpu", "cuda:x"):
            with self.subTest(device=device):
                result = run_normserved(device)
                self.assertEqual(result.returncode, USAGE_EXIT, result.stderr)
                self.assertIn("use cpu or cuda[:N]", result.stderr)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
