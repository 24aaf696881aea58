"""Numba's on-disk cache, keyed on the whole engine's source (docs/engine.md, "The compile
cache").

Numba keys a function's cached machine code on the contents of that function's own file.  The
engine's jitted functions also compile in code from other files: the micro-kernels of vnni.py,
the op-table columns of layout.py, the inlined helpers of fixedpoint.py.  Numba would load
stale code after a change to any of those alone (a `git pull` that touches vnni.py only, in an
editable install).  `install` puts locators first in Numba's list whose freshness stamp is
the hash of every .py file of this package, for this package's files only: any change to
the engine recompiles all of it once.  The cache folders are Numba's usual ones.
"""
import hashlib
from pathlib import Path

from numba.core import caching

ROOT = Path(__file__).resolve().parent


def digest(root=ROOT):
    """SHA-256 over the relative path and the bytes of every .py file under root."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.digest()


DIGEST = digest()


def _inside(py_file):
    try:
        return Path(py_file).resolve().is_relative_to(ROOT)
    except (OSError, ValueError):
        return False


def _locator(base):
    """`base` (a Numba cache locator class), for this package's files, stamped with DIGEST."""
    class Locator(base):
        engine = True

        @classmethod
        def from_function(cls, py_func, py_file):
            return super().from_function(py_func, py_file) if _inside(py_file) else None

        def get_source_stamp(self):
            return DIGEST

    Locator.__name__ = Locator.__qualname__ = "Engine" + base.__name__
    return Locator


def install():
    """Put the package-stamped locators first (once); before any jitted function is defined.
    A Numba without this (private) list keeps its own keys: a warning says so."""
    classes = getattr(getattr(caching, "CacheImpl", None), "_locator_classes", None)
    if not isinstance(classes, list):
        import warnings
        warnings.warn("intengine.jitcache: this Numba has no CacheImpl._locator_classes; the compile cache "
                      "follows each function's own file only (docs/engine.md, \"The compile cache\")")
        return
    if not any(getattr(c, "engine", False) for c in classes):
        classes[:0] = [_locator(b) for b in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                                             caching.UserWideCacheLocator)]
