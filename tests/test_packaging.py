"""The engine installs without torch: the packaging metadata, and the one-line errors of the
torch tools where torch is missing (issue 16, item 11)."""
import configparser
import re
import subprocess
import sys

from conftest import ROOT
from test_torch_free import BLOCK


def _names(text):
    return {re.split(r"[<>=\[ ;]", line.strip())[0].lower() for line in text.strip().splitlines() if line.strip()}


def test_engine_dependencies_leave_out_torch():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    core = _names(cfg["options"]["install_requires"])
    assert core == {"numpy", "numba", "click", "tqdm", "pillow"}, core
    extras = cfg["options.extras_require"]
    assert {"torch", "torchvision", "matplotlib"} <= _names(extras["train"])
    assert {"torch", "torchvision", "matplotlib", "pytest"} <= _names(extras["dev"])     # the README's install
    assert not {"aimet-torch", "onnxruntime"} & (core | _names(extras["dev"]))         # peers stay optional


def test_torch_tools_say_what_to_install_when_torch_is_missing():
    for module in ("exporter", "trainer"):
        code = BLOCK + f"import runpy; sys.argv = ['{module}', '-h']; runpy.run_module('{module}', run_name='__main__')"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0] == (f"error: python -m {module} needs torch and torchvision, which this install lacks (the "
                            f"engine alone needs neither): pip install 'lowbit-ptq[train]'")


def test_the_wheel_ships_every_module_and_the_one_version(tmp_path):
    """`pip install .` installs what the wheel holds: every module of the three packages,
    subpackages included (intengine/ops was once left out), under the version that
    intengine/__init__.py defines and every exported file records.  .ci/run also installs
    that wheel into a fresh venv without torch and runs the engine from it."""
    import shutil
    import zipfile
    import intengine
    src = tmp_path / "src"                   # a copy: no build/ folder left by an earlier build
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("intengine", "exporter", "trainer"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith(f"lowbit_ptq-{intengine.__version__}-"), wheel.name
    shipped = set(zipfile.ZipFile(wheel).namelist())
    source = {p.relative_to(ROOT).as_posix() for pkg in ("intengine", "exporter", "trainer")
              for p in (ROOT / pkg).rglob("*.py")}
    assert source and source <= shipped, sorted(source - shipped)
    from exporter import __version__ as exporter_version
    assert exporter_version == intengine.__version__
