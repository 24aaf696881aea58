"""The compile cache is keyed on the whole engine's source (intengine/jitcache.py): a change to
any file of the package, not only the jitted function's own, means a fresh compile."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from intengine import fastops, jitcache
from intengine.ops import conv

ROOT = Path(jitcache.__file__).resolve().parent


def test_engine_functions_are_stamped_with_the_package_digest():
    for f in (fastops.conv_rows, fastops.run, conv.kernel):
        loc = f._cache._impl.locator
        assert getattr(loc, "engine", False), type(loc)
        assert loc.get_source_stamp() == jitcache.DIGEST


def test_the_digest_follows_every_file(tmp_path):
    copy = tmp_path / "intengine"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert jitcache.digest(copy) == jitcache.DIGEST
    (copy / "vnni.py").write_text((copy / "vnni.py").read_text() + "\n# changed\n")
    assert jitcache.digest(copy) != jitcache.DIGEST


def test_a_change_in_another_file_recompiles(tmp_path):
    """A cached function in one file that inlines a helper from another: after the helper
    changes, the next process computes with the new helper, not the cached code."""
    copy = tmp_path / "intengine"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "probe.py").write_text(textwrap.dedent("""
        from numba import njit
        from .fixedpoint import clamp

        @njit(cache=True)
        def probe(x):
            return clamp(x, 0, 10)
    """))
    run = [sys.executable, "-c", "from intengine.probe import probe; print(probe(99))"]
    first = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    fp = copy / "fixedpoint.py"
    fp.write_text(fp.read_text().replace('    return lo if x < lo else (hi if x > hi else x)',
                                         '    return lo if x < lo else (hi + 1 if x > hi else x)'))
    second = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert (first.strip(), second.strip()) == ("10", "11")
    assert list((copy / "__pycache__").glob("probe.probe-*.nbi"))        # it was cached
