"""Shared fixtures: an isolated environment, a real IPython shell, and the loopback servers."""

from __future__ import annotations

import _thread
import atexit
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from servers.fixtures import *  # noqa: F403  (the protocol servers, refused_url, silent_url)
from servers.llamacpp import llamacpp_server  # noqa: F401
from traitlets.config import Config

# Provider variables a developer's machine may have set; tests must never see them.
_SCRUBBED = [
    name
    for name in os.environ
    if name.endswith(("_API_KEY", "_BASE_URL"))
    or name == "OLLAMA_HOST"
    or name.startswith("LLM_MAGIC")
    or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")  # loopback only
]


@pytest.fixture(scope="session", autouse=True)
def close_providers() -> Iterator[None]:
    """Providers are cached for the whole process; close their pooled sockets at the end."""
    yield
    from llm_magic import providers

    providers.close_all()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No real keys, no user config file, logs and cache in a temporary home.

    The stores opened in that home are closed afterwards: the process keeps one per path
    (store.default_store), each holding three files open (the database, -wal, -shm), and a
    suite of a thousand tests would pass the 1,024 descriptors select() can watch.
    """
    for name in _SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLM_MAGIC_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("LLM_MAGIC_HOME", str(tmp_path / "home"))
    yield tmp_path
    from llm_magic import store

    with store._stores_lock:
        opened = [path for path in store._stores if tmp_path in path.parents]
        for path in opened:
            store._stores.pop(path).close()


@pytest.fixture
def interrupt_main() -> Iterator[Callable[[], None]]:
    """`_thread.interrupt_main`, with Python's own SIGINT handler in place for the test.

    Started from a shell that ignores SIGINT (a background job, some CI agents), Python keeps
    SIG_IGN and interrupt_main() then does nothing; a kernel installs the handler itself.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield _thread.interrupt_main
    if previous is not None:  # None: set outside Python, which cannot put it back
        signal.signal(signal.SIGINT, previous)


class ShellForTests(InteractiveShell):
    """A real InteractiveShell whose run_cell raises instead of printing a traceback."""

    def run_cell(self, raw_cell: str, *args, **kwargs):  # type: ignore[override]
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result


@pytest.fixture
def published(ip: InteractiveShell) -> Iterator[CapturingDisplayPublisher]:
    """A display publisher that records, as a kernel's would send to the frontend."""
    saved = ip.display_pub
    ip.display_pub = CapturingDisplayPublisher(shell=ip)
    yield ip.display_pub
    ip.display_pub = saved


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    """A shell with llm_magic loaded and a fresh session (no aliases, no history)."""
    config = Config()
    config.HistoryManager.enabled = False
    InteractiveShell.clear_instance()  # another test may have made a plain shell
    shell = ShellForTests.instance(config=config)
    shell.extension_manager.load_extension("llm_magic")
    from llm_magic._session import Session

    magics = shell.magics_manager.registry["LLMMagics"]
    magics.session = Session()
    yield shell
    shell.extension_manager.unload_extension("llm_magic")
    for name in magics.trait_names(config=True):
        setattr(magics, name, None)
    shell.user_ns.clear()
    shell.init_user_ns()
    ShellForTests.clear_instance()
    # Every shell registers an atexit reset with a gc.collect(); hundreds of them kept every
    # shell alive and made the interpreter's exit after the suite take minutes.
    atexit.unregister(shell.atexit_operations)
