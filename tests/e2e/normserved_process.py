"""Starts the real normserved on loopback with free ports and stops it: shared by the e2e tests
and by scripts/evaluate-models.py."""
import re
import subprocess
import threading
import time
import urllib.request

STARTUP_SECS = 60


class NormservedProcess:
    """normserved --grpc-address 127.0.0.1:0 ...; the ports are read from its start-up log."""

    def __init__(self, binary, repository, *flags):
        self.process = subprocess.Popen(
            [binary, "--model-repository", repository, "--grpc-address", "127.0.0.1:0",
             "--metrics-address", "127.0.0.1:0", *flags],
            stderr=subprocess.PIPE, text=True, errors="replace")
        log = []
        deadline = time.monotonic() + STARTUP_SECS
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            log.append(line)
            match = re.search(r"gRPC on port (\d+), metrics on port (\d+)", line)
            if match:
                self.grpc_port, self.metrics_port = int(match.group(1)), int(match.group(2))
                self.target = f"127.0.0.1:{self.grpc_port}"
                # Keep reading the log: a full pipe would block the server on its next line.
                self.log = log
                threading.Thread(target=self._drain_log, daemon=True).start()
                return
        self.stop()
        raise RuntimeError("normserved did not start:\n" + "".join(log))

    def _drain_log(self):
        for line in self.process.stderr:
            self.log.append(line)

    def metrics(self):
        """The text of one scrape of /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as page:
            return page.read().decode()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
