"""Integer-only inference engine for the exported ResNet20.  Never imports torch.

Data path: fileformat.py (read the .npz) -> validate.py (check it) -> model.py (unpack,
then input LUT -> conv/add/pool/linear kernels -> integer logits).  kernels.py (Numba) is
bit-identical to reference.py (NumPy), which is docs/quantization.md in code.

    import intengine
    model = intengine.load("exports/resnet20_w4a8.npz")
    logits = model.predict(images)        # uint8 (N,32,32,3) -> int32 (N,10)
"""
from .fileformat import FormatError
from .model import Model, load

__all__ = ["FormatError", "Model", "load"]
