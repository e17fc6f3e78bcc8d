"""Shared by the Open Inference Protocol tests: runs the test in the cached venv of Triton's
clients (scripts/triton-venv.sh makes it once: tritonclient 2.41.0 with perf_analyzer, on
Debian's python3, grpcio and protobuf), and starts normserved with its HTTP port.

    import kserve_clients  # first: re-runs the test inside the venv
    server, http_port = kserve_clients.start(NORMSERVED, REPOSITORY, *flags)
"""
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_MARKER = "NORMSERVE_TRITON_VENV"


def _enter_venv():
    if os.environ.get(_MARKER):
        return
    venv = subprocess.run([os.path.join(ROOT, "scripts", "triton-venv.sh")], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    os.environ[_MARKER] = venv
    python = os.path.join(venv, "bin", "python")
    os.execv(python, [python, os.path.abspath(sys.argv[0]), *sys.argv[1:]])


_enter_venv()

from normserved_process import NormservedProcess  # noqa: E402  (after the venv)


def venv_dir():
    return os.environ[_MARKER]


def start(normserved, repository, *flags):
    """normserved with --http-address 127.0.0.1:0; its HTTP port is read from its log."""
    server = NormservedProcess(normserved, repository, "--http-address", "127.0.0.1:0", *flags)
    match = re.search(r"Open Inference Protocol HTTP on port (\d+)", "".join(server.log))
    if not match:
        server.stop()
        raise RuntimeError("normserved did not log its HTTP port:\n" + "".join(server.log))
    return server, int(match.group(1))
