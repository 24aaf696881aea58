"""Post-training quantization exporter: trained ResNet20 -> integer model file.

Data path: fold.py (load, BN folding, the graph) -> calibrate.py (activation ranges) ->
quantize.py (weights, scales, multipliers) -> build.py (the integer network and the file).
simulate.py walks the same graph in float, in exact integers and in fake-quant.
The math is docs/quantization.md; the file is docs/format.md.
"""
from intengine import __version__  # noqa: F401  (one version, defined in intengine/__init__.py)
