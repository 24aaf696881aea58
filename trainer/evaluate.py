"""Test-set evaluation of a float model, and loading a model from a checkpoint."""
import torch
import torch.nn.functional as F

from . import checkpoint, data
from .model import build


@torch.no_grad()
def evaluate(model, dataset, device, batch_size=1000, precision="fp32",
             memory_format=torch.contiguous_format):
    """Return (mean cross-entropy loss, accuracy in 0..1, n) over `dataset` (a data.Cifar10)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, len(dataset)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for lo in range(0, n, batch_size):
        x = data.normalize(dataset.images[lo:lo + batch_size].to(device), memory_format)
        y = dataset.labels[lo:lo + batch_size].to(device)
        with torch.autocast(**autocast):
            out = model(x).float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    model.train(was_training)
    return loss_sum / n, correct / n, n


def load_model(path):
    """Rebuild the model from a checkpoint's config and load its weights (CPU, eval mode)."""
    state = checkpoint.load(path)
    model = build(state["config"].get("model", "resnet20"))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise checkpoint.CheckpointError(f"{path}: weights do not fit the model ({str(e).splitlines()[0]})") from None
    model.eval()
    return model, state
