"""The Python gRPC client of the end-to-end tests, generated from the project's own protos.

Run the tests with Debian's /usr/bin/python3: its python3-grpcio and python3-protobuf match
the protoc and grpc_python_plugin of protobuf-compiler-grpc, which generate the stubs here
into a temporary directory (scripts/install-deps.sh installs all four).

    from grpc_stubs import pb, pb_grpc, health_pb, health_pb_grpc, channel
"""
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_PROTO_DIR = os.path.join(_ROOT, "proto")


def _generate():
    out = tempfile.mkdtemp(prefix="normserve-stubs-")
    # The health protocol's Python modules would be grpc.health.v1, inside grpcio's own
    # package; a copy under another directory keeps the wire names (package grpc.health.v1).
    os.makedirs(os.path.join(out, "normserve_health"))
    shutil.copy(os.path.join(_PROTO_DIR, "grpc/health/v1/health.proto"),
                os.path.join(out, "normserve_health/health.proto"))
    for proto_path, proto in [(_PROTO_DIR, "normserve/v1/normserve.proto"),
                              (out, "normserve_health/health.proto")]:
        subprocess.run(
            ["protoc", f"--proto_path={proto_path}", f"--python_out={out}", f"--grpc_out={out}",
             "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", proto],
            check=True)
    sys.path.insert(0, out)


_generate()
pb = importlib.import_module("normserve.v1.normserve_pb2")
pb_grpc = importlib.import_module("normserve.v1.normserve_pb2_grpc")
health_pb = importlib.import_module("normserve_health.health_pb2")
health_pb_grpc = importlib.import_module("normserve_health.health_pb2_grpc")


def channel(target, **options):
    """An insecure channel to a loopback server, ready or raising within 10 s."""
    ch = grpc.insecure_channel(target, options=list(options.items()))
    grpc.channel_ready_future(ch).result(timeout=10)
    return ch


def stub(target):
    return pb_grpc.NormServeStub(channel(target))
