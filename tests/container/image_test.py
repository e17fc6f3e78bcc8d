#!/usr/bin/env python3
"""The Dockerfile's `cpu` image, built and run without a Docker daemon.

scripts/build-image.sh builds it with buildah (chroot isolation). normserved then runs from a
working container of the image with `buildah run --isolation chroot`: the image's entrypoint,
environment and user (no --user given, so the image's USER applies), and the host's network,
which chroot isolation keeps. The only flags changed are the listen addresses: 127.0.0.1 and
free ports instead of the image's 0.0.0.0:50051 and :9464, so that the test binds loopback only
and never collides with another server. Over loopback the test checks the image's own
HEALTHCHECK command, gRPC health, a Translate through the Python client and a metrics scrape;
from /proc it checks that the server process runs as the image's non-root uid; and it bounds
the image's size.

Needs root with buildah and debootstrap (scripts/install-deps.sh).
    /usr/bin/python3 tests/container/image_test.py
"""
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from grpc_stubs import channel, health_pb, health_pb_grpc, pb, pb_grpc  # noqa: E402
from normserved_process import NormservedProcess  # noqa: E402

IMAGE = "localhost/normserve:cpu"
IMAGE_USER = "10001:10001"
# The image measured 962 MB (mostly Debian's LibTorch with its OpenCV and FFmpeg dependencies);
# a new dependency that pulls in hundreds of megabytes more should be a decision, not news.
MAX_IMAGE_BYTES = 1_200_000_000
STOP_SECS = 30


def buildah(*args):
    return subprocess.run(["buildah", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def descendants(pid):
    """Host pids of the processes below `pid`, read from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat_file:
                    # The command name, in parentheses, may hold spaces: fields follow the last ')'.
                    parent = int(stat_file.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            children.setdefault(parent, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def process_uids(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Uid:"):
                return [int(uid) for uid in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:  # gone
        return None


def kill_if_running(pid, name):
    if process_name(pid) == name:
        os.kill(pid, signal.SIGKILL)


class CpuImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        started = time.monotonic()
        subprocess.run([os.path.join(ROOT, "scripts", "build-image.sh"), IMAGE], check=True)
        print(f"image built in {time.monotonic() - started:.0f} s", flush=True)
        image = json.loads(buildah("inspect", "--type", "image", IMAGE))
        cls.config = image["Docker"]["config"]
        cls.layers = json.loads(image["Manifest"])["layers"]
        cls.container = buildah("from", "--pull=never", IMAGE)
        cls.addClassCleanup(buildah, "rm", cls.container)
        # NormservedProcess runs one executable with the server's flags: a launcher that starts
        # the image's entrypoint in the container.
        launcher_dir = tempfile.TemporaryDirectory(prefix="normserve-image-")
        cls.addClassCleanup(launcher_dir.cleanup)
        launcher = os.path.join(launcher_dir.name, "normserved-in-image")
        with open(launcher, "w") as script:
            script.write("#!/bin/sh\nexec buildah run --isolation chroot "
                         f"{shlex.quote(cls.container)} -- "
                         f"{shlex.join(cls.config['Entrypoint'])} \"$@\"\n")
        os.chmod(launcher, stat.S_IRWXU)
        cls.server = NormservedProcess(launcher, "/models")
        cls.addClassCleanup(cls.server.stop)
        servers = [pid for pid in descendants(cls.server.process.pid)
                   if process_name(pid) == "normserved"]
        # Killing `buildah run` (server.stop) would leave its command running: the server
        # goes first (cleanups run last-registered first).
        for pid in servers:
            cls.addClassCleanup(kill_if_running, pid, "normserved")
        assert len(servers) == 1, f"normserved processes below buildah run: {servers}"
        cls.server_pid = servers[0]

    def run_in_image(self, *command):
        return subprocess.run(["buildah", "run", "--isolation", "chroot", self.container, "--",
                               *command], capture_output=True, text=True, timeout=60)

    def test_a_image_is_configured_to_run_as_a_non_root_user(self):
        self.assertEqual(self.config["User"], IMAGE_USER)
        self.assertEqual(self.config["Entrypoint"], ["normserved"])
        self.assertIn("/models", self.config["Cmd"])

    def test_b_the_server_runs_as_the_images_user(self):
        user_id = int(IMAGE_USER.split(":")[0])
        self.assertEqual(process_uids(self.server_pid), [user_id] * 4)

    def test_c_the_images_healthcheck_passes(self):
        check = self.config["Healthcheck"]["Test"]
        self.assertEqual(check[0], "CMD")
        # The image's command, pointed at this server's port instead of the default 50051.
        command = [self.server.target if arg == "127.0.0.1:50051" else arg for arg in check[1:]]
        self.assertIn(self.server.target, command)
        result = self.run_in_image(*command)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("SERVING", result.stdout + result.stderr)

    def test_d_grpc_health_and_a_translation(self):
        ch = channel(self.server.target)
        health = health_pb_grpc.HealthStub(ch).Check(health_pb.HealthCheckRequest(), timeout=30)
        self.assertEqual(health.status, health_pb.HealthCheckResponse.SERVING)
        reply = pb_grpc.NormServeStub(ch).Translate(
            pb.TranslateRequest(model="deen", texts=[b"Guten Morgen"]), timeout=60)
        self.assertEqual(len(reply.translations), 1)
        self.assertTrue(reply.translations[0].hypotheses[0].text)

    def test_e_metrics_count_the_translation(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.server.metrics_port}/metrics",
                                    timeout=10) as page:
            body = page.read().decode()
        self.assertRegex(body, r'normserve_requests_total\{code="OK",model="deen",[^}]*'
                               r'rpc="Translate"[^}]*\} [1-9]')

    def test_f_image_size_is_bounded(self):
        # The layers as stored (uncompressed tar), the size `buildah images` and `docker images`
        # report.
        size = sum(layer["size"] for layer in self.layers)
        print(f"image size: {size / 1e6:.0f} MB in {len(self.layers)} layers", flush=True)
        self.assertGreater(size, 0)
        self.assertLess(size, MAX_IMAGE_BYTES)

    def test_z_sigterm_stops_the_server_cleanly(self):
        os.kill(self.server_pid, signal.SIGTERM)
        # buildah run exits with its command's status.
        self.assertEqual(self.server.process.wait(timeout=STOP_SECS), 0)
        self.assertIsNone(process_name(self.server_pid))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
