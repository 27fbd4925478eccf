"""What the browser tests share: a Jupyter server on 127.0.0.1 in an isolated environment, and
Debian's headless Chromium to drive it.

Not a test module: test_browser.py (JupyterLab, Notebook 7) and test_browser_vscode.py (VS
Code's widget renderer) import it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Generous: a cold start imports llama.cpp and loads the model in the kernel.
SLOW_MS = 90_000


@dataclass(frozen=True)
class Jupyter:
    """A running `jupyter <subcommand>`: where it listens, its token, and its log file."""

    url: str
    token: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, token: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, b""


def get_quietly(url: str, token: str, method: str = "GET") -> int | None:
    try:
        return call(url, token, method)[0]
    except OSError:
        return None


def config_dir(tmp_path: Path) -> Path:
    """The JUPYTER_CONFIG_DIR that `serve` gives the server (write frontend config here)."""
    return tmp_path / "jupyter-config"


@contextmanager
def serve(
    subcommand: str, tmp_path: Path, root: Path, args: Sequence[str] = ()
) -> Iterator[Jupyter]:
    """Runs `jupyter <subcommand>` on a random loopback port with a random token, serving
    `root`, until the block ends; config, runtime, data and IPython dirs are under tmp_path."""
    env = {
        **os.environ,  # includes the isolated LLM_MAGIC_* of conftest's autouse fixture
        "JUPYTER_CONFIG_DIR": str(config_dir(tmp_path)),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),  # kernels still come from the venv
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    token, port = secrets.token_hex(16), free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "jupyter.log"
    command = [
        str(Path(sys.executable).with_name("jupyter")),
        subcommand,
        "--no-browser",
        f"--IdentityProvider.token={token}",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        *args,
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    jupyter = Jupyter(url, token, log)
    try:
        end = time.monotonic() + 60
        while get_quietly(f"{url}/api/status", token) != 200:
            if process.poll() is not None or time.monotonic() > end:
                pytest.fail(f"jupyter {subcommand} did not start:\n{jupyter.log_tail()}")
            time.sleep(0.2)
        yield jupyter
    finally:
        # A clean shutdown also stops the kernels it started.
        get_quietly(f"{url}/api/shutdown", token, method="POST")
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def run_panel_and_check(page: Any, expect: Any, screenshot: Path) -> None:
    """On a page showing the llm_magic panel: fill the prompt if empty, press Run, and check
    that every column holds an answer, the metrics table and the chart appear and the status
    says done; then keep a screenshot of the panel."""
    panel = page.locator(".llm-panel").first
    expect(panel).to_be_visible(timeout=SLOW_MS)
    prompt = panel.locator("textarea").first
    if not prompt.input_value().strip():  # the notebook may leave the prompt to the reader
        prompt.fill("Explain in one sentence why the sky is blue.")
    panel.locator("button", has_text=re.compile(r"^\s*Run\s*$")).click()

    # Columns appear at once; the metrics table only when every target has answered.
    expect(panel.locator(".llm-panel-metrics table")).to_be_visible(timeout=SLOW_MS)
    columns = panel.locator(".llm-panel-column")
    assert columns.count() >= 1
    for i in range(columns.count()):
        answer = columns.nth(i).locator(".llm-answer").first
        assert answer.inner_text().strip(), f"column {i} is empty"
    expect(panel.locator(".llm-panel-status")).to_contain_text("done")
    chart = panel.locator("img").first
    expect(chart).to_be_visible()
    assert chart.evaluate("img => img.naturalWidth") > 0
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(screenshot))


@contextmanager
def chromium_page(artifact: str, on_failure: Callable[[], None]) -> Iterator[Any]:
    """A tall page in Debian's headless Chromium. When the body fails, a full-page screenshot
    goes to test-artifacts/<artifact>-failure.png and `on_failure` prints what helps."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # tall: an element screenshot is clipped to what the notebook's scroller shows
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            try:
                yield page
            except Exception:
                page.screenshot(path=str(ARTIFACTS / f"{artifact}-failure.png"), full_page=True)
                on_failure()  # pytest shows what it prints with the failure
                raise
        finally:
            browser.close()
