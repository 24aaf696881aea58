"""onnxruntime int8: the other CPU runtime a user would pick, as a peer in the benchmark.

The float network goes to ONNX with the input step inside the graph (uint8 NHWC in, the
same normalization as torchao.normalize), so that every contender times the same region:
uint8 pixels in, logits out.  onnxruntime's own static PTQ then quantizes it: QDQ format,
per-channel int8 weights, uint8 activations, MinMax calibration on the images given (the
benchmark and compare.py pass the same 1,024 calibration images as every other row).

Needs the optional `peers` extra (`pip install -e ".[peers]"`): onnx and onnxruntime are
never core dependencies.  `missing()` says why they cannot be used, or None.
"""
import os
from pathlib import Path

import numpy as np

from intengine.cifar10 import MEAN, STD

INPUT = "images"


def missing():
    """-> None when onnx and onnxruntime import, else the reason (one line)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install -e \".[peers]\")"
    return None


def uint8_input(model, norm=None):
    """model -> a module taking uint8 (N,H,W,C): the timed region of every contender.  norm:
    the input normalization ({"mean", "std"} per channel, 0..1 scale), CIFAR-10's by default.
    (torch is imported here, so that running an .onnx file never loads it.)"""
    import torch
    mean, std = (norm["mean"], norm["std"]) if norm else (MEAN, STD)

    class Uint8Input(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255)

        def forward(self, x):
            return self.model((x.permute(0, 3, 1, 2).float() - self.mean) / self.std)
    return Uint8Input().eval()


def export_fp32(model, path, norm=None, shape=(32, 32, 3)):
    """The float model (eval mode) -> an ONNX file with a dynamic batch axis; shape: the
    input's (H, W, C)."""
    import torch
    wrapped = uint8_input(model, norm)
    example = torch.zeros(2, *shape, dtype=torch.uint8)
    torch.onnx.export(wrapped, (example,), str(path), input_names=[INPUT], output_names=["logits"],
                      dynamic_axes={INPUT: {0: "n"}, "logits": {0: "n"}}, opset_version=17,
                      dynamo=False)
    return Path(path)


class _Reader:
    """onnxruntime's CalibrationDataReader over uint8 NHWC images, in batches."""

    def __init__(self, images, batch_size=64):
        self.batches = iter([{INPUT: np.ascontiguousarray(images[s:s + batch_size])}
                             for s in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def quantize_int8(model, calib_images, folder, norm=None):
    """Static QDQ int8 (per-channel weights, MinMax) -> path of the quantized .onnx file."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fp32, prep, out = folder / "fp32.onnx", folder / "prep.onnx", folder / "int8.onnx"
    export_fp32(model, fp32, norm, calib_images.shape[1:])
    quant_pre_process(str(fp32), str(prep))
    quantize_static(str(prep), str(out), _Reader(calib_images), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


def session(path, threads, shared=False):
    """shared: the process times other contenders too, so the intra-op threads do not spin
    between runs (onnxruntime's default), which would take the CPU from whoever runs next."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if shared:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def predictor(path, threads=None, shared=False):
    """-> fn(uint8 NHWC batch) -> float32 logits (N,10), running the file in onnxruntime
    (shared: see session)."""
    sess = session(path, threads or os.cpu_count(), shared)

    def fn(images):
        return sess.run(None, {INPUT: np.ascontiguousarray(images)})[0]
    return fn


def int8_row(model, calib_images, folder, threads=None, norm=None):
    """For compare.py: (predict fn, size in bytes) of onnxruntime's static int8 model, for a
    process that times the other contenders too (no spinning threads: session)."""
    path = quantize_int8(model, calib_images, folder, norm)
    return predictor(path, threads, shared=True), os.path.getsize(path)
