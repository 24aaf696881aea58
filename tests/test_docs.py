"""The docs name real things: every backticked file path, module and module.function in docs/
and the README exists (issue 16, item 5)."""
import importlib
import re

import pytest

from conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
PACKAGES = ("intengine", "exporter", "trainer")
GENERATED = ("exports/", "reports/", "results/", "checkpoints/", "~", "/", "$")   # made by a run, or not ours
SUFFIXES = (".py", ".md", ".cfg", ".json", ".jsonl", ".npz", ".png", ".pt", ".txt")


def spans():
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)        # code blocks are commands
        for span in re.findall(r"`([^`\n]+)`", text):
            yield doc.name, span.strip()


def modules():
    """Short module name (e.g. 'mixed') -> its full name (exporter.mixed)."""
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).glob("*.py"):
            if f.stem != "__init__":
                out.setdefault(f.stem, f"{pkg}.{f.stem}")
    return out


def resolve(name, short):
    parts = name.split(".")
    if parts[0] in PACKAGES:
        mod, rest = (f"{parts[0]}.{parts[1]}", parts[2:]) if len(parts) > 1 and parts[1] in {
            s for s, full in short.items() if full.startswith(parts[0] + ".")} else (parts[0], parts[1:])
    elif parts[0] in short:
        mod, rest = short[parts[0]], parts[1:]
    else:
        return None                                   # not a name of ours (torch.ao..., numpy...)
    while rest:                                       # a subpackage (exporter.ops) is a module too
        try:
            importlib.import_module(f"{mod}.{rest[0]}")
        except ImportError:
            break
        mod, rest = f"{mod}.{rest[0]}", rest[1:]
    obj = importlib.import_module(mod)
    for p in rest:
        obj = getattr(obj, p)
    return obj


def test_backticked_paths_exist():
    missing = []
    for doc, span in spans():
        path = span.split()[0].split("::")[0].rstrip(",.;:")
        if ("/" not in path or not path.endswith(SUFFIXES) or path.startswith(GENERATED) or "*" in path
                or re.search(r"[A-Z_]{3,}/", path)):                       # OUT_DIR/...: a placeholder
            continue
        if not (ROOT / path).exists():
            missing.append(f"{doc}: `{span}`")
    assert not missing, missing


def test_backticked_names_exist():
    short = modules()
    bad = []
    for doc, span in spans():
        m = re.fullmatch(r"([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?", span)
        if not m or m.group(1).endswith(SUFFIXES) or m.group(1).split(".")[-1] in ("py", "md", "npz"):
            continue
        try:
            if resolve(m.group(1), short) is None:
                continue
        except (ImportError, AttributeError) as e:
            bad.append(f"{doc}: `{span}` ({type(e).__name__}: {e})")
    assert not bad, bad


@pytest.mark.parametrize("name", ["mixed.solve", "exporter.pipeline.export", "graph.Lowering.fused",
                                  "exporter.ops.CONVERTERS"])
def test_the_resolver_finds_real_names(name):
    assert resolve(name, modules()) is not None
    with pytest.raises(AttributeError):
        resolve(name + "_nope", modules())
