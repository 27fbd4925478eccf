"""The panel in a real JupyterLab 4 and Notebook 7, driven by Debian's headless Chromium.

Each frontend serves a temporary copy of notebooks/ on 127.0.0.1 with a random token; the test
opens 04-panel.ipynb, runs every cell, presses the panel's Run button and waits until every
column holds an answer from the embedded model and the metrics table is shown. The panel's
screenshot goes to test-artifacts/<frontend>.png (a full-page one to <frontend>-failure.png on
failure). Notebook 7 is built from JupyterLab's own widgets (same menus, same execution
indicator), so one driver serves both; only the launch command and the notebook's URL differ.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from jupyter_serving import (
    ARTIFACTS,
    CHROMIUM,
    REPO,
    SLOW_MS,
    Jupyter,
    call,
    chromium_page,
    config_dir,
    run_panel_and_check,
    serve,
)

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.local_model]

NOTEBOOK = "04-panel.ipynb"
# Lab shows this in its status bar, Notebook 7 in the notebook's toolbar.
IDLE = '.jp-Notebook-ExecutionIndicator[data-status="idle"]'


@dataclass(frozen=True)
class Frontend:
    """What differs between JupyterLab and Notebook 7 for this test."""

    id: str
    module: str  # the package that must be importable to run this variant
    subcommand: str  # `jupyter <subcommand>`
    app_class: str  # the traitlets class that owns workspaces_dir
    page: str  # URL prefix that opens a notebook
    artifact: str  # screenshot name, without .png


FRONTENDS = [
    Frontend(
        id="jupyterlab",
        module="jupyterlab",
        subcommand="lab",
        app_class="LabApp",
        page="lab/tree",
        artifact="panel",
    ),
    Frontend(
        id="notebook7",
        module="notebook",
        subcommand="notebook",
        app_class="JupyterNotebookApp",
        page="notebooks",
        artifact="panel-notebook7",
    ),
]


@dataclass(frozen=True)
class Server(Jupyter):
    frontend: Frontend


@pytest.fixture(params=FRONTENDS, ids=lambda f: f.id)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    frontend: Frontend = request.param
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    if importlib.util.find_spec(frontend.module) is None:
        pytest.skip(f"{frontend.module} is not installed (pip install llm_magic[test])")
    root = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", root)
    labconfig = config_dir(tmp_path) / "labconfig"
    labconfig.mkdir(parents=True)
    # No "get Jupyter news?" toast over the notebook, no network fetch for it (both frontends
    # read this file).
    disabled = {"@jupyterlab/apputils-extension:announcements": True}
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": disabled}))
    workspaces = f"--{frontend.app_class}.workspaces_dir={tmp_path / 'workspaces'}"
    with serve(frontend.subcommand, tmp_path, root, [workspaces]) as jupyter:
        yield Server(url=jupyter.url, token=jupyter.token, log=jupyter.log, frontend=frontend)


def _wait_for_connected_kernel(server: Server, timeout: float = SLOW_MS / 1000) -> None:
    """Until the server has an idle kernel with the page's websocket attached. The notebook's
    own indicator says "idle" before a kernel is attached, and Run All at that moment opens a
    kernel chooser instead of running."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, body = call(f"{server.url}/api/kernels", server.token)
        kernels = json.loads(body) if status == 200 else []
        if any(
            k.get("connections", 0) >= 1 and k.get("execution_state") == "idle" for k in kernels
        ):
            return
        time.sleep(0.2)
    pytest.fail(f"no kernel connected within {timeout:g} s:\n{server.log_tail()}")


def test_panel_runs_in_browser(server: Server) -> None:
    with chromium_page(server.frontend.artifact, lambda: print(server.log_tail())) as page:
        _drive(page, server, sync_api.expect)


def _drive(page, server: Server, expect) -> None:
    frontend = server.frontend
    page.goto(f"{server.url}/{frontend.page}/{NOTEBOOK}?token={server.token}")
    # Kernel started and idle, then Run > Run All Cells (the same Lumino menu in both).
    expect(page.locator(IDLE).first).to_be_visible(timeout=SLOW_MS)
    _wait_for_connected_kernel(server)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    run_panel_and_check(page, expect, ARTIFACTS / f"{frontend.artifact}.png")
