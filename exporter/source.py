"""Where an export starts: the float network, as a trainer checkpoint, a user's `torch.export`
program, or (from Python) an nn.Module and an example input.  Each becomes the same `Source`:
the float graph (exporter/capture.py), a module that runs the float network (FP32 scores,
QAT's distillation, the peers), the input normalization and where it came from.

    src = source.load(checkpoint="checkpoints/resnet56.pt")         # any --arch of the trainer
    src = source.load(program="net.pt2", mean=(...), std=(...))     # torch.export.save'd
    src = source.from_module(model, example)                        # the Python API
"""
import dataclasses
import hashlib
import logging
import zipfile
from pathlib import Path

import torch

from intengine.cifar10 import MEAN, STD
from trainer.checkpoint import CheckpointError, FORMAT as CKPT_FORMAT, read_file
from trainer.model import ARCHS, build
from . import capture


class SourceError(Exception):
    """The network to export cannot be read or run; one line."""


@dataclasses.dataclass
class Source:
    points: list                 # the float graph, capture.graph's
    ops: list
    module: torch.nn.Module      # the float network: normalized NCHW float32 -> logits
    arch: str                    # the trainer's architecture name, or the program file's stem
    norm: dict                   # {"mean": [...], "std": [...]} per channel, on a 0..1 scale
    norm_from: str               # where norm came from, for the export line
    path: Path = None            # the checkpoint or program file
    sha256: str = None

    @property
    def input_shape(self):
        return tuple(self.points[0]["shape"])            # H, W, C


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def floats(text, option):
    """--mean/--std's text: '0.5,0.5,0.5' -> (0.5, 0.5, 0.5); None stays None."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected numbers separated by commas, one per input channel") from None


def _norm(mean, std, saved, channels):
    """--mean/--std, else the checkpoint's, else CIFAR-10's -> (norm, where from)."""
    if (mean is None) != (std is None):
        raise SourceError("give --mean and --std together")
    if mean is not None:
        norm, why = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}, "--mean/--std"
    elif saved:
        norm, why = {"mean": [float(v) for v in saved["mean"]], "std": [float(v) for v in saved["std"]]}, \
            "the checkpoint's"
    else:
        norm, why = {"mean": list(MEAN), "std": list(STD)}, "CIFAR-10's (no --mean/--std given)"
    if len(norm["mean"]) != channels or len(norm["std"]) != channels:
        raise SourceError(f"the normalization has {len(norm['mean'])} means and {len(norm['std'])} stds "
                          f"for an input of {channels} channels")
    if not all(0 < s < float("inf") for s in norm["std"]) or \
            not all(abs(m) < float("inf") for m in norm["mean"]):
        raise SourceError(f"the normalization's std must be positive and finite: {norm}")
    return norm, why


def checkpoint_model(path):
    """A trainer checkpoint (any --arch) or a bare state_dict of the trainer's -> the model, in eval mode."""
    return read_checkpoint(path)[0]


def read_checkpoint(path):
    """A trainer checkpoint (any --arch) or a bare state_dict of one of the trainer's
    architectures -> (model in eval mode, arch, saved normalization or None)."""
    path = Path(path)
    state = read_file(path)                   # weights_only=True; one line per kind of bad file
    saved, arch = None, None
    if isinstance(state, dict) and state.get("format") == CKPT_FORMAT:
        saved = state.get("normalization")
        arch = (state.get("config") or {}).get("model")
        state = state.get("model")
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds neither a trainer checkpoint nor a state_dict")
    if arch not in ARCHS:                     # a bare state_dict: the architecture its keys fit
        arch = next((a for a in ARCHS if set(build(a).state_dict()) == set(state)), "resnet20")
    model = build(arch)
    want = model.state_dict()
    missing, extra = [k for k in want if k not in state], [k for k in state if k not in want]
    shapes = [f"{k} is {tuple(state[k].shape)}, not {tuple(v.shape)}" for k, v in want.items()
              if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        def first(what, keys):
            return keys and f"{what} {keys[0]}" + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")
        why = ", ".join(filter(None, [first("missing", missing), first("unexpected", extra),
                                      first("shape:", shapes)]))
        raise CheckpointError(f"{path} is not a checkpoint of the trainer's architectures ({why} for {arch}); "
                              f"export your own network with --model net.pt2")
    model.load_state_dict(state)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN/inf) in {bad[0]}" +
                              (f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""))
    neg = [k for k, v in state.items() if k.endswith("running_var") and (v < 0).any()]
    if neg:
        raise CheckpointError(f"{path}: negative BatchNorm variance in {neg[0]}")
    return model.eval(), arch, saved


def _finite(ops, where):
    bad = [op["name"] for op in ops if "weight" in op and not (torch.isfinite(op["weight"]).all()
                                                             and torch.isfinite(op["bias"]).all())]
    if bad:
        raise SourceError(f"{where}: non-finite weights (NaN/inf) in {bad[0]}"
                          + (f" and {len(bad) - 1} more layers" if len(bad) > 1 else ""))


def _graph(program, where):
    try:
        points, ops = capture.graph(program)
    except capture.CaptureError as e:
        raise SourceError(f"{where}: {e}") from None
    _finite(ops, where)
    return points, ops


def from_module(model, example, *, mean=None, std=None, arch=None):
    """The Python API: an nn.Module (float, NCHW, normalized input) and an example input."""
    try:
        program = capture.export(model, example)
    except Exception as e:                          # torch.export's own errors: many types
        raise SourceError(f"torch.export could not trace the model ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None
    points, ops = _graph(program, "the model")
    norm, why = _norm(mean, std, None, points[0]["shape"][2])
    return Source(points, ops, model.eval(), arch or type(model).__name__.lower(), norm, why)


def load(checkpoint=None, program=None, *, mean=None, std=None):
    """A trainer checkpoint or a saved ExportedProgram (`torch.export.save`) -> Source."""
    if (checkpoint is None) == (program is None):
        raise SourceError("give a trainer checkpoint or a torch.export program (--model), one of them")
    if checkpoint is not None:
        model, arch, saved = read_checkpoint(checkpoint)
        src = from_module(model, torch.zeros(1, 3, 32, 32), mean=mean, std=std, arch=arch)
        src.norm, src.norm_from = _norm(mean, std, saved, 3)
        src.path, src.sha256 = Path(checkpoint), file_sha256(checkpoint)
        return src
    path = Path(program)
    if not path.is_file():
        raise SourceError(f"no program at {path}; save one with torch.export.save(torch.export.export("
                          f"model.eval(), (x,)), '{path.name}')")
    if not zipfile.is_zipfile(path):
        raise SourceError(f"{path} is not a program saved by torch.export.save (not a zip archive)")
    quiet = logging.getLogger("torch.export")        # it logs a traceback before raising
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        prog = torch.export.load(path)
    except Exception as e:                          # a wrong or damaged file: many types
        why = str(e).strip().splitlines()[0].split(". Please check")[0][:160] if str(e).strip() else ""
        raise SourceError(f"{path} is not a program saved by torch.export.save ({type(e).__name__}: {why}); "
                          f"a trainer checkpoint goes to --checkpoint") from None
    finally:
        quiet.setLevel(level)
    points, ops = _graph(prog, str(path))
    norm, why = _norm(mean, std, None, points[0]["shape"][2])
    return Source(points, ops, FloatGraph(ops), path.stem, norm, why, path, file_sha256(path))


class FloatGraph(torch.nn.Module):
    """A saved program's float network as a module that takes any batch: the captured graph
    walked in float32 (simulate.forward; tests/test_capture.py holds it to the program).  A
    program is traced at one batch size, so its own module() refuses others."""

    def __init__(self, ops):
        super().__init__()
        self.ops = [{**op, **({"weight": op["weight"].float(), "bias": op["bias"].float()} if "weight" in op else {})}
                    for op in ops]

    def forward(self, x):
        from .simulate import forward
        return forward(self.ops, x.float())


def graph_of(model, shape=(1, 3, 32, 32)):
    """An nn.Module's float graph (points, ops), captured at an input of `shape`."""
    src = from_module(model, torch.zeros(shape))
    return src.points, src.ops
