"""The report's shared parts (exporter/report.py): the verified cache of committed files'
evaluations, and predictions with progress."""
import numpy as np

import intengine
from exporter import report
from intengine import cifar10

from conftest import ROOT


def test_the_evaluation_cache_is_checked_and_refreshed(tmp_path, data_dir):
    """A file evaluated once is cached by its digest, the engine version and the test set; the
    next run takes the cached predictions after checking a sample against the engine, and
    evaluates in full when the sample disagrees or the test set is another one."""
    x, y = cifar10.load_test(data_dir)
    x, y = x[:300], y[:300]
    model = intengine.load(ROOT / "models" / "resnet20_w2a8_brecq_lsq_s0.npz")
    committed, local = tmp_path / "evals.npz", tmp_path / "user" / "evals.npz"
    say = lambda m: None
    first = report.EvalCache(committed, x, y, check=32, local=local)
    pred, how = first.predictions(model, say, "w2")
    assert how == "evaluated" and first.changed and np.array_equal(pred, model.predict(x).argmax(1))
    first.save()
    again = report.EvalCache(committed, x, y, check=32, local=local)
    pred2, how2 = again.predictions(model, say, "w2")
    assert how2 == "cached evaluation, 32 images checked again" and np.array_equal(pred2, pred)
    assert not again.changed
    key = again.key(model.header["content_sha256"])
    again.entries[key] = (pred + 1) % 10                    # a wrong cache entry is caught
    again.save()
    bad = report.EvalCache(committed, x, y, check=32, local=local)
    pred3, how3 = bad.predictions(model, say, "w2")
    assert how3 == "evaluated" and np.array_equal(pred3, pred)
    other = report.EvalCache(committed, x[:200], y[:200], check=32, local=local)   # another test set
    assert other.predictions(model, say, "w2")[1] == "evaluated"


def test_predict_says_how_far_it_is():
    """A long prediction prints a progress line at least every `every` seconds."""
    lines = []
    out = report.predict(lambda b: np.eye(3)[np.zeros(len(b), int)], np.zeros((1000, 2)), lines.append, "fp16",
                         every=0.0)
    assert out.shape == (1000,) and lines and lines[0].startswith("fp16: 256 of 1,000 images")


def test_the_plot_labels_do_not_overlap():
    """Every label of the committed report's plot, in each panel, clear of every other label."""
    import json
    import sys
    import matplotlib.pyplot as plt
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare
    fig = compare.figure(json.loads((ROOT / "results" / "results.json").read_text()))
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(r) for t in ax.texts if t.get_text()]
        assert len(boxes) >= 4                                     # the panel is labelled at all
        hits = [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
        assert not hits, [(ax.texts[i].get_text(), ax.texts[j].get_text()) for i, j in hits]
    plt.close(fig)
