"""Integer-only inference engine for the exported ResNet20.  Never imports torch.

Data path: fileformat.py (read the .npz) -> validate.py (check it) -> model.py (unpack,
then input LUT -> conv/add/requant/pool/linear -> integer logits).  Each op kind is one
module of ops/ (fields, checks, unpacking, reference, kernel, fast-path lowering).  By
default model.py runs the whole network in one jitted call, graph.py, whose convs are the micro-kernels of vnni.py
(vpdpbusd where cpu.py finds AVX512-VNNI, portable LLVM vectors elsewhere); 16-bit files
use the per-op kernels of kernels.py (Numba); `keep=True` returns every point, from
graph.py's unfused debug layout on the fast path.  Every path is bit-identical
to reference.py (NumPy), which is docs/quantization.md in code.

    import intengine
    model = intengine.load("exports/resnet20_w4a8.npz")   # digest and format checked first
    logits = model.predict(images)        # uint8 (N,32,32,3) or (32,32,3) -> int32 (N,10), quantized
    real = model.dequantize_logits(logits)                # float64 s*(q - z); predict_logits does both
    proba = model.predict_proba(images)   # softmax of the real logits, (N,10)
    classes, p = model.top_k(images, k=3)
"""
__version__ = "1.0.0"                  # the project's one version: setup.cfg and every file's meta

from . import jitcache  # noqa: E402

jitcache.install()                     # before any jitted function is defined (jitcache.py)

from .fileformat import FormatError  # noqa: E402
from .model import Model, load  # noqa: E402

__all__ = ["FormatError", "Model", "load"]
