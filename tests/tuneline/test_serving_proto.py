"""The protocol's generated module matches its .proto file (regenerated here with grpcio-tools)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROTO = Path(__file__).resolve().parents[2] / "tuneline" / "serving" / "proto"


def test_inference_pb2_is_what_protoc_makes_of_inference_proto(tmp_path):
    result = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={tmp_path}",
                             "inference.proto"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "inference_pb2.py").read_text() == (PROTO / "inference_pb2.py").read_text(), \
        "regenerate: python -m grpc_tools.protoc -I tuneline/serving/proto --python_out=tuneline/serving/proto " \
        "inference.proto"


def test_the_service_has_the_protocols_six_calls_under_its_package_name():
    code = ("from tuneline.serving.proto import inference_pb2 as pb; "
            "s = pb.DESCRIPTOR.services_by_name['GRPCInferenceService']; "
            "print(s.full_name, sorted(m.name for m in s.methods))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split(" ", 1) == ["inference.GRPCInferenceService",
                                    "['ModelInfer', 'ModelMetadata', 'ModelReady', 'ServerLive', 'ServerMetadata', "
                                    "'ServerReady']\n"]
