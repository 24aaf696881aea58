"""The engine stands alone: nothing in intengine/ imports the exporter, the trainer or torch,
not even inside a function, so the engine wheel ships no converter code and an edit on the
converter side leaves users' compiled engine caches valid.  The packages' imports form no
circle: intengine <- exporter, intengine <- trainer, trainer <- exporter."""
import ast

import pytest

from conftest import ROOT

ABOVE = {"intengine": {"exporter", "trainer", "torch", "torchvision", "scripts", "tests"},
         "trainer": {"exporter", "scripts", "tests"},
         "exporter": {"scripts", "tests"}}


def imports(path):
    """Every top-level package a module imports, at any depth of its code (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_package_imports_one_above_it(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = {str(f.relative_to(ROOT)): sorted(imports(f) & ABOVE[package]) for f in files}
    assert not {f: b for f, b in bad.items() if b}


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The check can fail: an import of torch inside a function is found."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    import torch.nn as nn\n    from exporter.simulate import walk\n")
    assert imports(f) == {"torch", "exporter"}
