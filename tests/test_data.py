import numpy as np
import pytest
import torch

from trainer import data


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert data.resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("CIFAR10_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.resolve_data_dir(None) == tmp_path / "cache" / "lowbit-ptq" / "cifar10"


def test_real_npz_shapes_and_dtypes(data_dir):
    train = data.load("train", data_dir)
    test = data.load("test", data_dir)
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and set(test.labels.unique().tolist()) == set(range(10))
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_normalization_constants_match_training_set(data_dir):
    x = data.load_arrays(data_dir)["x_train"]
    mean = x.reshape(-1, 3).mean(0, dtype=np.float64) / 255
    std = x.reshape(-1, 3).std(0, dtype=np.float64) / 255
    np.testing.assert_allclose(mean, data.MEAN, atol=1e-6)
    np.testing.assert_allclose(std, data.STD, atol=1e-6)


def test_limit_is_a_seeded_random_subset():
    a = data.seeded_subset(1000, 50, seed=0)
    assert np.array_equal(a, data.seeded_subset(1000, 50, seed=0))
    assert not np.array_equal(a, data.seeded_subset(1000, 50, seed=1))
    assert not np.array_equal(a, np.arange(50)) and len(set(a.tolist())) == 50
    assert np.array_equal(data.seeded_subset(10, None, 0), np.arange(10))


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match=str(tmp_path)):
        data.load_arrays(tmp_path, download=False)


@pytest.mark.parametrize("content", [b"", b"not a zip", "truncated", None])
def test_corrupt_npz_is_a_clear_error(tmp_path, content):
    path = tmp_path / "cifar10.npz"
    if content == "truncated":
        good = tmp_path / "good.npz"
        np.savez_compressed(good, **{k: np.zeros(s, np.uint8) for k, s in data._SHAPES.items()})
        path.write_bytes(good.read_bytes()[:-200])
    elif content is None:     # a valid npz whose splits disagree on the image shape
        np.savez(path, x_train=np.zeros((5, 32, 32, 3), np.uint8), y_train=np.zeros(5, np.uint8),
                 x_test=np.zeros((5, 16, 16, 3), np.uint8), y_test=np.zeros(5, np.uint8))
    else:
        path.write_bytes(content)
    with pytest.raises(data.DataError, match="cifar10.npz"):
        data.load_arrays(tmp_path)


def test_torchvision_download_writes_npz(monkeypatch, tmp_path):
    """Without cifar10.npz, torchvision is asked and its arrays are saved as cifar10.npz."""
    import torchvision.datasets

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            n = 50000 if train else 10000
            rng = np.random.default_rng(int(train))
            self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = list(rng.integers(0, 10, n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    arrays = data.load_arrays(tmp_path)
    assert (tmp_path / "cifar10.npz").is_file()
    again = data.read_npz(tmp_path / "cifar10.npz")
    assert np.array_equal(arrays["x_test"], again["x_test"])
    assert np.array_equal(again["x_train"], FakeCIFAR10(None, True, True).data)


def test_failed_download_is_a_clear_error(monkeypatch, tmp_path):
    import torchvision.datasets

    def offline(*a, **k):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(data.DataError, match=r"\(the folder given by --data-dir\); point --data-dir at the "
                                             r"folder that holds it, and the torchvision download failed"):
        data.load_arrays(tmp_path)
    assert not (tmp_path / "cifar10.npz").exists()
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match=r"set CIFAR10_DIR to the folder that holds it"):
        data.load_arrays(None)


def test_augment_is_deterministic_under_a_seed():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    a = data.augment(x, torch.Generator().manual_seed(7))
    b = data.augment(x, torch.Generator().manual_seed(7))
    c = data.augment(x, torch.Generator().manual_seed(8))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_is_a_padded_crop_or_its_mirror():
    x = torch.randint(1, 256, (200, 3, 8, 8), dtype=torch.uint8)   # no zeros in the image
    out = data.augment(x, torch.Generator().manual_seed(0), pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = offsets = 0
    for i in range(len(x)):
        matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(out[i], (lambda w: w.flip(2) if f else w)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert matches, f"image {i} is not a crop of the padded input"
        flips += any(f for _, _, f in matches)
        offsets += any((dy, dx) != (2, 2) for dy, dx, _ in matches)
    assert 60 < flips < 140 and offsets > 150    # both transforms actually happen


def test_normalize():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = data.normalize(x)
    expected = (1 - torch.tensor(data.MEAN)) / torch.tensor(data.STD)
    torch.testing.assert_close(y[0, :, 0, 0], expected)
