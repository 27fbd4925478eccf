"""Binder's build replayed: a clean venv, binder/requirements.txt, binder/postBuild, then every
notebook executed by nbconvert in that venv, with no key and no server.

repo2docker installs binder/requirements.txt with pip from the repository's root and then runs
binder/postBuild there. The replay does the same in a copy of the repository, so the editable
install writes its metadata into the copy and never into the working tree. It is slow (a
couple of minutes of pip with a warm cache; llama-cpp-python compiles only the first time,
after which pip's wheel cache has it) and marked so. binder/apt.txt is not replayed: it needs
root and only adds the C++ toolchain that compiling llama-cpp-python takes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
BINDER = REPO / "binder"
# Not part of what Binder clones, or rebuilt by the replay itself.
_SKIP = shutil.ignore_patterns(
    ".git", ".venv", ".venv-*", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
    "test-artifacts", "build", "dist", ".ipynb_checkpoints",
)  # fmt: skip


def test_binder_installs_the_demo_extra_from_the_repository() -> None:
    lines = [
        line.strip()
        for line in (BINDER / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "-e .[demo]" in lines
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    demo = " ".join(project["optional-dependencies"]["demo"])
    # The notebooks need the embedded model, widgets, plots and a JupyterLab to open them in.
    for need in ("local", "widgets", "plot", "jupyterlab"):
        assert need in demo, f"the demo extra lacks {need}"


def test_binder_python_is_one_the_project_supports() -> None:
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-3\.(\d+)", runtime)
    assert match, f"runtime.txt must read python-3.X, not {runtime!r}"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    lowest = re.fullmatch(r">=\s*3\.(\d+)", requires)
    assert lowest and int(match.group(1)) >= int(lowest.group(1))


def test_post_build_is_an_executable_strict_bash_script() -> None:
    script = BINDER / "postBuild"
    assert os.access(script, os.X_OK), "repo2docker runs postBuild directly: chmod +x it"
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{output[-5000:]}"
    return output


@pytest.mark.slow
@pytest.mark.local_model
@pytest.mark.timeout(2400)
def test_binder_build_replayed_in_a_clean_venv(tmp_path: Path) -> None:
    if importlib.util.find_spec("nbformat") is None:
        pytest.skip("nbformat is not installed: pip install -e '.[test]'")
    import nbformat

    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=_SKIP)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / "bin"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
        # As if the venv were activated, the way Binder's environment is.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        # Jupyter's per-user state in the temporary folder: kernels come from the venv only.
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }

    # 1. repo2docker: pip install -r binder/requirements.txt, from the repository's root.
    _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-r",
         "binder/requirements.txt"],
        repo, env, timeout=1800,
    )  # fmt: skip
    where = _run([str(bin_dir / "python"), "-c", "import llm_magic; print(llm_magic.__file__)"],
                 repo, env, timeout=60)  # fmt: skip
    assert Path(where.strip().splitlines()[-1]).is_relative_to(repo), where

    # 2. repo2docker: binder/postBuild, from the repository's root.
    log = _run(["bash", "binder/postBuild"], repo, env, timeout=600)
    assert "embedded model OK" in log

    # 3. A Binder user: every notebook, top to bottom, in that environment.
    out = tmp_path / "executed"
    for notebook in sorted((repo / "notebooks").glob("*.ipynb")):
        _run(
            [str(bin_dir / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
             "--ExecutePreprocessor.timeout=600", "--output-dir", str(out), str(notebook)],
            repo, env, timeout=900,
        )  # fmt: skip
        # nbconvert stops at the first failing cell; also make sure every cell really ran.
        executed = nbformat.read(out / notebook.name, as_version=4)
        unrun = [c.source[:60] for c in executed.cells
                 if c.cell_type == "code" and c.execution_count is None]  # fmt: skip
        assert not unrun, f"{notebook.name}: cells not run: {unrun}"
    assert sorted(p.name for p in out.glob("*.ipynb")) == sorted(
        p.name for p in (repo / "notebooks").glob("*.ipynb")
    )
