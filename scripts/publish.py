"""Writing reports: atomically, and into the generated sections of the README.

A generated section is the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`; only
the scripts' --publish options rewrite it.
"""
import os
from pathlib import Path


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
