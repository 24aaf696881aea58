"""Post-training quantization exporter: a trained CNN -> integer model file.

Data path: source.py (a trainer checkpoint, a torch.export program or an nn.Module) ->
capture.py (its ATen graph -> points and ops, BN folded) -> blocks.py (first/last layers,
units) -> calibrate.py (activation ranges) -> quantize.py / reconstruct.py (weights) ->
build.py (the integer network and the file).  pipeline.py runs it: `export(Config, out)`,
or `export_module(model, example, out, bits=...)` from Python.
simulate.py walks the same graph in float, in exact integers and in fake-quant.
The math is docs/quantization.md; the file is docs/format.md.
"""
from intengine import __version__  # noqa: F401  (one version, defined in intengine/__init__.py)


def export_module(model, example, out, *, bits, **settings):
    """exporter.pipeline.export_module, importable as `from exporter import export_module`."""
    from .pipeline import export_module as run
    return run(model, example, out, bits=bits, **settings)
