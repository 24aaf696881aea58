import json

import pytest
import torch

from trainer import checkpoint, evaluate
from trainer.train import Config, lr_factor, train

TINY = dict(limit=512, test_limit=200, batch_size=64, warmup_epochs=0.5, device="cpu",
            precision="fp32", label_smoothing=0.0)


def quiet(*args):
    pass


def run(tmp, data_dir, **kw):
    cfg = Config(**{**TINY, **kw}, out_dir=str(tmp))
    return train(cfg, data_dir=data_dir, progress=False, log=quiet)


def test_lr_schedule_warmup_then_cosine_to_zero():
    f = lr_factor(Config(epochs=10, warmup_epochs=1), steps_per_epoch=100)
    assert f(0) == pytest.approx(0.01) and f(99) == pytest.approx(1.0)
    assert f(100) == pytest.approx(1.0) and f(999) == pytest.approx(0.0, abs=1e-4)
    assert all(f(s) >= f(s + 1) for s in range(100, 999))
    g = lr_factor(Config(epochs=10, warmup_epochs=0, schedule="step"), steps_per_epoch=100)
    assert (g(0), g(500), g(800)) == pytest.approx((1.0, 0.1, 0.01))


def test_a_few_steps_lower_the_loss(tmp_path, data_dir):
    _, history = run(tmp_path, data_dir, epochs=4, lr=0.05)
    losses = [row["train_loss"] for row in history]
    assert losses[-1] < losses[0] - 0.1, losses
    log = [json.loads(line) for line in (tmp_path / "resnet20.log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2, 3, 4]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s"} <= set(log[0])


def test_checkpoint_round_trip(tmp_path, data_dir):
    model, _ = run(tmp_path, data_dir, epochs=1)
    path = tmp_path / "resnet20.pt"
    raw = torch.load(path, weights_only=True)            # the format is weights_only-safe
    assert {"model", "optimizer", "scheduler", "rng", "config", "epoch", "metrics",
            "normalization"} <= set(raw)
    assert raw["epoch"] == 1 and raw["config"]["limit"] == 512
    assert raw["normalization"]["mean"] == pytest.approx([0.49139968, 0.48215841, 0.44653091])
    loaded, state = evaluate.load_model(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert len(raw["optimizer"]["state"]) > 0              # momentum buffers are kept


def test_resume_gives_the_same_weights(tmp_path, data_dir, monkeypatch):
    """4 epochs straight == 2 epochs, a crash, a resume, then 2 more."""
    straight, _ = run(tmp_path / "a", data_dir, epochs=4)

    class Killed(Exception):
        pass
    real_save, saves = checkpoint.save, []

    def save_then_die(*args, **kw):
        real_save(*args, **kw)
        saves.append(1)
        if len(saves) == 2:
            raise Killed
    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        run(tmp_path / "b", data_dir, epochs=4)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert torch.load(tmp_path / "b" / "resnet20.pt", weights_only=True)["epoch"] == 2
    cfg = Config(**{**TINY, "epochs": 4}, out_dir=str(tmp_path / "b"))
    resumed, history = train(cfg, resume=True, data_dir=data_dir, progress=False, log=quiet)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    log = (tmp_path / "b" / "resnet20.log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4]
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)



def test_seed_changes_the_weights(tmp_path, data_dir):
    a, _ = run(tmp_path / "a", data_dir, epochs=1, seed=0)
    b, _ = run(tmp_path / "b", data_dir, epochs=1, seed=1)
    assert not torch.equal(a.state_dict()["fc.weight"], b.state_dict()["fc.weight"])


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "truncated"])
def test_bad_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        torch.save({"format": checkpoint.FORMAT, "version": 1, "model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match="bad.pt"):
        checkpoint.load(path)


def test_foreign_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(checkpoint.CheckpointError, match="not a"):
        checkpoint.load(path)
