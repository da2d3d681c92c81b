"""The layering of issue 15 holds (import-linter's contracts in .importlinter), and the check is known to bite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"   # the venv's own, beside its python

# A tree with the real layout and imports that keep every contract; each case below breaks one (the edge
# modules a case imports import nothing, so the break is that contract's alone, not a chain on to Tornado).
CLEAN_TREE = {
    "server/__init__.py": "",
    "server/edge/__init__.py": "",
    "server/edge/app.py": "import tornado.web\nimport server.dialects\nimport server.chat\n",
    "server/edge/handlers.py": "",
    "server/core/__init__.py": "",
    "server/chat/__init__.py": "import server.core\nimport server.emulation\nimport server.upstream\n",
    "server/emulation/__init__.py": "import server.core\n",
    "server/dialects/__init__.py": "import server.core\nimport server.emulation\n",
    "server/upstream/__init__.py": "import server.core\n",
    "server/healthcheck.py": "import common\n",
    "common/__init__.py": "",
    "refresher/__init__.py": "import common\n",
}


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    """Run lint-imports with the project's contracts on the packages under `cwd` (no cache left behind)."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), str(CONFIG), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _write(tree: Path, files: dict[str, str]) -> None:
    """Create `files` (path -> source) under `tree`."""
    for name, source in files.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


def test_the_project_keeps_every_layering_contract():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_clean_tree_passes_the_same_check(tmp_path):
    _write(tmp_path, CLEAN_TREE)
    result = _lint(tmp_path)
    assert result.returncode == 0 and "7 kept, 0 broken" in result.stdout, result.stdout + result.stderr


LAYERS = "the server's layers, top to bottom (each imports only those below it)"
UPSTREAM, CORE = "upstream never imports dialects, edge or emulation", "core never imports dialects or edge"
EMULATION, DIALECTS = "emulation never imports edge or dialects", "dialects never import edge or upstream"


# Each break names the contracts it breaks: most also break the layers contract, some only that one.
@pytest.mark.parametrize("module, source, contract", [
    ("server/upstream/kimi.py", "from server.edge import handlers\n", (LAYERS, UPSTREAM)),
    ("server/upstream/turn.py", "import server.emulation\n", (LAYERS, UPSTREAM)),
    ("server/core/request.py", "import server.dialects\n", (LAYERS, CORE)),
    ("server/core/answer.py", "import server.upstream\n", (LAYERS,)),
    ("server/chat/plan.py", "import server.dialects\n", (LAYERS,)),
    ("server/emulation/prompt.py", "import server.edge.handlers\n", (LAYERS, EMULATION)),
    ("server/dialects/render.py", "from server import upstream\n", (DIALECTS,)),   # above it, but never Kimi
    ("refresher/daemon.py", "import server.core\n", ("common and refresher never import server",)),
    ("server/core/sse.py", "import tornado.web\n", ("only server.edge imports tornado",)),
    ("common/net.py", "from tornado import httpclient\n", ("only server.edge imports tornado",)),
])
def test_each_contract_bites(tmp_path, module, source, contract):
    _write(tmp_path, {**CLEAN_TREE, module: source})
    result = _lint(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert all(f"{name} BROKEN" in output for name in contract), output
    assert f"{7 - len(contract)} kept, {len(contract)} broken" in output, output
