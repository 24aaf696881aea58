"""The engine against torch.ao, point by point (issue: PyTorch's quantization as yardstick).

`teacher_forced`: every engine op gets torch.ao's own int_repr at its input, and its output
is compared with torch.ao's output.  `free_running`: the engine runs alone from the pixels,
and every point is compared.  torch.ao requantizes in float32 while the engine uses the
fixed point of docs/quantization.md, so 1 LSB differences are expected.
"""
import numpy as np


def _compare(got, want, zp):
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    active = (got != zp) | (want != zp)          # post-ReLU zeros would inflate the agreement
    return {"max_abs_diff": int(diff.max(initial=0)), "n_active": int(active.sum()),
            "identical_active": float((diff[active] == 0).mean()) if active.any() else 1.0,
            "identical_all": float((diff == 0).mean())}


def teacher_forced(model, torch_points):
    """model: intengine.Model of the torchao-params file; torch_points: name -> NHWC ints."""
    rows = []
    for op in model.ops:
        acts = [None] * len(model.points)
        for i in op.ins:
            acts[i] = np.ascontiguousarray(torch_points[model.points[i]].numpy().astype(np.int32))
        got = op.run(acts, scalar=True)
        name = model.points[op.out]
        rows.append({"op": op.name, "point": name,
                     **_compare(got, torch_points[name].numpy(), int(model.zero_points[op.out]))})
    return rows


def free_running(model, images, torch_points):
    acts = model.run(images, keep=True)
    return [{"point": name, **_compare(a, torch_points[name].numpy(), int(model.zero_points[i]))}
            for i, (name, a) in enumerate(zip(model.points, acts))]
