"""OpenVINO int8: the CPU runtime x86 users reach for first, as a peer in the benchmark.

It runs the same static QDQ int8 ONNX file that onnxruntime runs (onnxrt.quantize_int8:
per-channel int8 weights, uint8 activations, MinMax on the same calibration images), compiled
for the CPU at OpenVINO's own defaults, with only the thread count set to the other
contenders'.  OpenVINO reads the QuantizeLinear/DequantizeLinear pairs and runs the layers
between them in int8 where its CPU plugin has kernels for them.

Needs the optional `peers` extra (`pip install -e ".[peers]"`).  `missing()` says why it
cannot be used, or None.  (Named after the package it wraps; the package itself is imported
inside the functions, so this module imports without it.)
"""
import numpy as np

from .onnxrt import INPUT


def missing():
    """-> None when openvino imports, else the reason (one line)."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install -e \".[peers]\")"
    return None


def compiled(path, threads=None):
    """The QDQ .onnx file compiled for the CPU: OpenVINO's defaults, `threads` inference threads."""
    import openvino as ov
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
    return core.compile_model(str(path), "CPU", config)


def predictor(path, threads=None):
    """-> fn(uint8 NHWC batch) -> float32 logits (N, classes), running the file in OpenVINO."""
    model = compiled(path, threads)
    request = model.create_infer_request()

    def fn(images):
        return np.array(request.infer({INPUT: np.ascontiguousarray(images)})[0])
    return fn
