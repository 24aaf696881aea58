"""What the report scripts share (scripts/*.py): progress lines, the machine description,
atomic writes and the generated sections of the README.

A generated section is the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`; only
a script's --publish option rewrites it.
"""
import os
import platform
import time
from pathlib import Path

import click

from intengine import cpu


class Progress:
    """One line per stage on stderr, with the time since the start."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, msg):
        click.echo(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", err=True)


def versions(*modules):
    """{module: version or None} for python and the named modules."""
    out = {"python": platform.python_version()}
    for mod in modules:
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def machine(**extra):
    """The processor (its model name and LLVM's name for it), cores, the flags that pick the
    engine's kernels, and the load average now; `extra` is added as is."""
    f = cpu.host_features()
    return {"cpu": cpu.processor_name(), "llvm_cpu": cpu.llvm_cpu_name(), "cores": os.cpu_count(),
            "flags": {k: bool(f.get(k)) for k in ("avx512vnni", "avxvnni", "amx-int8", "avx512bw", "avx2")},
            "load_average": list(os.getloadavg()), **extra}


def write_atomic(path, data):
    """Write bytes or text to path through a temporary file, so no half-written file is left."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    (tmp.write_bytes if isinstance(data, bytes) else tmp.write_text)(data)
    os.replace(tmp, path)


def fill_section(path, name, text):
    """Replace the generated section `name` of the file at path with text; False if it has none."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = path.read_text() if path.is_file() else ""
    if start not in body or end not in body:
        return False
    head, rest = body.split(start, 1)
    write_atomic(path, head + start + "\n" + text.rstrip("\n") + "\n" + end + rest.split(end, 1)[1])
    return True
