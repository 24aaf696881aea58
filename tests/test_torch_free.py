"""The engine never imports torch, directly or through anything it imports."""
import subprocess
import sys

from conftest import ROOT

BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'torchvision'):
            raise ImportError('torch is blocked in this test: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_engine_runs_with_torch_blocked(exported, data_dir):
    code = BLOCK + f"""
import intengine, intengine.__main__, intengine.kernels, intengine.reference, intengine.validate
sys.argv = ['intengine', 'eval', {str(exported[4][0])!r}, '--limit', '40', '--json',
            '--no-progress', '--data-dir', {data_dir!r}]
try:
    intengine.__main__.main()
finally:
    assert not any(m.split('.')[0] in ('torch', 'torchvision') for m in sys.modules), 'torch got imported'
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"n": 40' in r.stdout.strip().splitlines()[-1]


def test_blocker_really_blocks():
    r = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True, text=True)
    assert r.returncode != 0 and "torch is blocked" in r.stderr
