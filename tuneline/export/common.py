"""What every export returns: the files written, their sizes and the parity measured against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    max_rel_diff: float
    rows: int
    shapes: tuple[tuple[int, int], ...]  # (batch, sequence) of each batch compared
    atol: float
    rtol: float = 0.0


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path  # FP32 model.onnx (optimised when requested), or the generator/ folder of a generative model
    int8_path: Path | None  # model.int8.onnx (dynamic, static), model.int8.pt (torch_dynamic) or generator.int8/
    quantization: str
    optimized: bool
    onnx_bytes: int
    int8_bytes: int | None
    opset: int
    parity: ParityReport

    @property
    def int8_onnx_path(self) -> Path | None:
        """The INT8 file (or generator folder) serving can run with onnxruntime, if there is one."""
        if self.int8_path is None or self.int8_path.suffix == ".pt":
            return None
        return self.int8_path


def folder_bytes(path: Path) -> int:
    """Size of a file, or of every file under a folder."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
