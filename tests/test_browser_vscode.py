"""The panel in VS Code's own ipywidgets 8 renderer, driven by Debian's headless Chromium.

VS Code cannot run here, but the widget renderer its Jupyter extension loads into the notebook
webview is published on npm (@vscode/jupyter-ipywidgets8). tests/vscode_renderer/ pins it and
holds a small page that runs 04-panel.ipynb's cells on a real kernel of a bare `jupyter server`
and shows the widget outputs through that renderer's WidgetManager, as the webview does. The
test presses the panel's Run button and waits for every answer of the embedded model, the
metrics table and the chart. The panel's screenshot goes to test-artifacts/panel-vscode.png (a
full-page one to panel-vscode-failure.png on failure, with the browser console printed).

The first run installs the pinned npm packages (`npm ci`, about 370 MB) into
tests/vscode_renderer/node_modules; every run bundles the page with esbuild into
tests/vscode_renderer/build/. Both are git-ignored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_serving import (
    ARTIFACTS,
    CHROMIUM,
    REPO,
    SLOW_MS,
    Jupyter,
    chromium_page,
    run_panel_and_check,
    serve,
)

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.local_model]

HARNESS = REPO / "tests" / "vscode_renderer"
BUILD = HARNESS / "build"  # served as an extra static path: /static/<PAGE_DIR>/…
PAGE_DIR = "vscode-renderer"
NOTEBOOK = REPO / "notebooks" / "04-panel.ipynb"
ARTIFACT = "panel-vscode"
# What the page needs next to its bundle, from node_modules: VS Code's renderer (loaded as its
# own module, as VS Code loads it) and requirejs (the renderer defines its modules with it).
COPIED = {
    "ipywidgets.js": "@vscode/jupyter-ipywidgets8/dist/ipywidgets.js",
    "require.js": "requirejs/require.js",
}


def _run(command: list[str], what: str) -> None:
    # A cold `npm ci` takes about 30 s here; pytest's own 300 s timeout stays the outer one.
    env = {**os.environ, "npm_config_update_notifier": "false"}
    done = subprocess.run(
        command, cwd=HARNESS, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        pytest.fail(f"{what} failed ({done.returncode}):\n" + "\n".join(output[-30:]))


def _install(npm: str) -> None:
    """`npm ci` when node_modules is missing or older than the lock file; `npm install` (which
    writes the lock) when there is no lock yet. No install scripts: nothing here needs one."""
    lock = HARNESS / "package-lock.json"
    installed = HARNESS / "node_modules" / ".package-lock.json"  # npm writes it last
    flags = ["--ignore-scripts", "--no-audit", "--no-fund"]
    if not lock.exists():
        _run([npm, "install", *flags], "npm install")
    elif not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        _run([npm, "ci", *flags], "npm ci")


def _build(node: str) -> Path:
    page = BUILD / PAGE_DIR
    shutil.rmtree(page, ignore_errors=True)
    page.mkdir(parents=True)
    esbuild = HARNESS / "node_modules" / "esbuild" / "bin" / "esbuild"
    _run(
        [
            node,
            str(esbuild),
            "harness.js",
            "--bundle",
            "--format=esm",
            "--platform=browser",
            "--target=es2020",
            "--log-level=warning",
            f"--outdir={page}",  # harness.js and the CSS it imports, harness.css
        ],
        "esbuild",
    )
    shutil.copy(HARNESS / "index.html", page)
    for name, source in COPIED.items():
        shutil.copy(HARNESS / "node_modules" / source, page / name)
    return page


@pytest.fixture(scope="module")
def renderer_page() -> Path:
    """The built page, ready to serve (installs the npm packages the first time)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            "node and npm are needed to build VS Code's renderer page (apt-get install npm)"
        )
    _install(npm)
    return _build(node)


@pytest.fixture
def jupyter(renderer_page: Path, tmp_path: Path) -> Iterator[Jupyter]:
    """A bare `jupyter server` that also serves the page, so the page, the REST API and the
    kernel's websocket share one origin."""
    root = tmp_path / "work"
    root.mkdir()
    static = f"--ServerApp.extra_static_paths={renderer_page.parent}"
    with serve("server", tmp_path, root, [static]) as running:
        yield running


def _panel_cells() -> list[str]:
    """04-panel.ipynb's code cells up to the one that shows the panel (same targets, prompt
    and options as readers get)."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    for i, source in enumerate(sources):
        if "Panel(" in source:
            return sources[: i + 1]
    raise AssertionError(f"no cell of {NOTEBOOK.name} makes a Panel")


def test_panel_runs_in_vscode_renderer(jupyter: Jupyter) -> None:
    query = urllib.parse.urlencode(
        [("token", jupyter.token), *(("cell", c) for c in _panel_cells())]
    )
    url = f"{jupyter.url}/static/{PAGE_DIR}/index.html?{query}"
    console: list[str] = []

    def explain() -> None:
        print("browser console:", *console, sep="\n")
        print("jupyter server:", jupyter.log_tail(), sep="\n")

    with chromium_page(ARTIFACT, explain) as page:
        page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
        _drive(page, url, sync_api.expect)


def _drive(page, url: str, expect) -> None:
    page.goto(url)
    # The page runs the cells and renders their widgets, then says how that went.
    page.wait_for_selector("body[data-harness]", state="attached", timeout=SLOW_MS)
    outcome = page.get_attribute("body", "data-harness")
    assert outcome == "ready", "VS Code's renderer did not show the panel:\n" + page.inner_text(
        "#harness-error"
    )

    run_panel_and_check(page, expect, ARTIFACTS / f"{ARTIFACT}.png")
