"""The demo notebooks: committed executed, and run top to bottom under nbval with no key.

Each notebook runs in a pytest of its own (`python -m pytest --nbval-lax NOTEBOOK`), started
from here rather than by collecting notebooks/ in the main run, because the subprocess then
inherits conftest's isolated environment: no API keys, no Ollama address, a temporary
LLM_MAGIC_HOME and config file. A developer's keys never reach a notebook under test, and the
notebooks see what a Binder user sees. `--nbval-lax` runs every cell and compares the outputs
only of cells marked `# NBVAL_CHECK_OUTPUT` (the deterministic ones: column lists, prompts,
row counts); model text is never compared, since it depends on the CPU's float rounding.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
EXPECTED = [
    "01-quickstart.ipynb",
    "02-compare-providers.ipynb",
    "03-batch-and-repeats.ipynb",
    "04-panel.ipynb",
    "05-local-models-and-ollama.ipynb",
    "06-evaluate.ipynb",
    "07-structured-tools-images.ipynb",
]
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CHECK = "# NBVAL_CHECK_OUTPUT"
# Outputs are committed so GitHub shows them; this keeps them from growing into megabytes.
MAX_BYTES = 200_000


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def test_the_demos_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_executed_and_small(path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a demo without code"
    unrun = [i for i, c in enumerate(code) if c.execution_count is None]
    assert not unrun, f"code cells {unrun} were never run: execute the notebook before committing"
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"committed with an error: {out.get('ename')}"
            if out.output_type == "stream":
                assert "Traceback" not in out.text
    assert path.stat().st_size < MAX_BYTES, "outputs too large: clear big HTML or widget state"


@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.name != "04-panel.ipynb"], ids=lambda p: p.stem
)
def test_deterministic_cells_are_checked_and_have_outputs(path: Path) -> None:
    checked = [c for c in _cells(path) if c["cell_type"] == "code" and CHECK in _source(c)]
    assert checked, f"{path.name} checks no output: mark a deterministic cell with {CHECK}"
    # nbval compares against the committed output: a checked cell without one checks nothing.
    assert all(c["outputs"] for c in checked)


@pytest.mark.slow
@pytest.mark.local_model
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_nbval(path: Path, tmp_path: Path) -> None:
    for module in ("nbval", "llama_cpp", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[test]'")
    env = {
        **os.environ,  # already isolated by conftest: no keys, temporary LLM_MAGIC_HOME
        "IPYTHONDIR": str(tmp_path / "ipython"),  # no profile or startup files of the developer
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    command = [
        sys.executable, "-m", "pytest", str(path),
        "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=300",
        "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=850, check=False
    )
    report = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"nbval failed on {path.name}:\n{report}"
    assert " passed" in proc.stdout and "failed" not in proc.stdout, report
