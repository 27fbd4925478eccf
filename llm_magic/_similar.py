"""The `similar:TEXT` checks: the cosine similarity of the embeddings of an answer and of TEXT.

Every text the run's similar: checks need (answers and filled TEXTs, each once) is embedded
after the answers are in, in batches sent through the runner (so concurrency, retries and the
deadline apply), logged in the run log, never a row of the result. With `--cache` each text's
vector is kept in the response cache under its own key, so no text is embedded twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._check_kinds import Verdict
from ._records import RunRecord
from ._runner import Job, Policy, run_jobs
from ._targets import Target, TargetSpec
from .errors import LLMMagicError, RunInterrupted, one_line
from .providers.base import Options

__all__ = ["BATCH_CHARS", "BATCH_TEXTS", "Embedder", "cosine", "embedding_key"]

# Texts per request, and characters (about 4 a token): well under what the embeddings
# endpoints take in one request (OpenAI: 2,048 inputs, 300,000 tokens in all).
BATCH_TEXTS = 32
BATCH_CHARS = 60_000
_SHOWN = 40  # characters of a TEXT quoted in a reason


def embedding_key(provider: str, base_url: str | None, model: str, text: str) -> str:
    """The cache key of one text's vector: sha256 of what decides it (never an answer's key)."""
    body = {
        "v": 1,
        "kind": "embedding",
        "provider": provider,
        "base_url": base_url.rstrip("/") if base_url else None,
        "model": model,
        "text": text,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _packed(vector: Sequence[float]) -> str:
    """A vector as cache text: float64 little-endian, base64 (exact, and ~11 characters a
    dimension against ~20 as JSON)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}d", *vector)).decode("ascii")


def _unpacked(text: str) -> list[float] | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    if not raw or len(raw) % 8:
        return None
    vector = list(struct.unpack(f"<{len(raw) // 8}d", raw))
    return vector if all(math.isfinite(x) for x in vector) else None


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The cosine of the angle between two vectors; NaN when one is all zeros or they differ
    in length (two models' vectors)."""
    if len(a) != len(b):
        return math.nan
    import numpy as np

    x, y = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    norms = float(np.linalg.norm(x) * np.linalg.norm(y))
    if norms == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(np.dot(x, y)) / norms))


def _quoted(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")


def _batches(texts: Sequence[str]) -> Iterator[tuple[str, ...]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        if batch and (len(batch) >= BATCH_TEXTS or size + len(text) > BATCH_CHARS):
            yield tuple(batch)
            batch, size = [], 0
        batch.append(text)
        size += len(text)
    if batch:
        yield tuple(batch)


Vector = list[float]


@dataclass(frozen=True, eq=False)
class Embedder:
    """Who embeds (one target: two models' vectors cannot be compared) and how its requests
    run: the run's policy, no streaming."""

    spec: TargetSpec
    policy: Policy
    options: Options
    get_provider: Callable[[str], Any]

    @property
    def target(self) -> Target:
        return self.spec.primary

    def __call__(self, tasks: Sequence[tuple[str, str]]) -> tuple[list[Verdict], dict]:
        """(TEXT, answer) per task -> a verdict each (the cosine, clipped to 0–1), and the
        batch's figures for df.attrs["embed"]: texts (distinct), cached, requests, failed,
        prompt_tokens, latency_s (sum), cost_usd (sum)."""
        texts = [t.strip() for task in tasks for t in task]
        vectors, stats = self.embed([t for t in texts if t])
        verdicts = [self._verdict(text.strip(), answer.strip(), vectors) for text, answer in tasks]
        return verdicts, stats

    def _verdict(self, text: str, answer: str, vectors: dict[str, Vector | str]) -> Verdict:
        if not answer or not text:
            return math.nan, "nothing to compare: " + ("an empty answer" if text else "empty TEXT")
        a, b = vectors[answer], vectors[text]
        for got in (a, b):
            if isinstance(got, str):
                return math.nan, got
        assert not isinstance(a, str) and not isinstance(b, str)
        value = cosine(a, b)
        if math.isnan(value):
            return math.nan, "no cosine: a vector of zeros, or vectors of two lengths"
        shown = f"cosine {value:.3f} to {_quoted(text)}"
        return (value, shown) if value >= 0 else (0.0, shown + " (scored 0)")

    def embed(self, texts: Sequence[str]) -> tuple[dict[str, Vector | str], dict]:
        """Each distinct text's vector, or the one-line reason it has none; and the figures."""
        wanted = list(dict.fromkeys(texts))
        found: dict[str, Vector | str] = {}
        base_url = self._base_url() if self.policy.cache else None
        if self.policy.cache:
            found.update(self._cached(wanted, base_url))
        cached = len(found)
        jobs = [
            Job(i, "\n".join(batch), (), self.spec, self.options, texts=batch)
            for i, batch in enumerate(_batches([t for t in wanted if t not in found]))
        ]
        # The runner's own cache keys a request by its messages (none here): this module
        # caches each text's vector instead.
        policy = replace(self.policy, cache=False)
        try:
            records = run_jobs(jobs, self.get_provider, policy) if jobs else []
        except RunInterrupted as stopped:  # the answers are in: keep them, compared or not
            records = list(stopped.records)
        from .store import record_run

        record_run(records, self.policy.max_log_chars)  # in the run log like any request
        for job, record in zip(jobs, records, strict=True):
            got = record.vectors if record.error is None else None
            if got is None or len(got) != len(job.texts):
                why = one_line(f"embedding failed: {record.error or 'no vectors'}", 200)
                found.update(dict.fromkeys(job.texts, why))
                continue
            found.update(zip(job.texts, got, strict=True))
            if self.policy.cache:
                self._keep(job.texts, got, record, base_url)
        costs = [r.cost_usd for r in records if r.cost_usd is not None]
        stats = {
            "target": self.spec.label,
            "texts": len(wanted),
            "cached": cached,
            "requests": len(records),
            "failed": sum(r.error is not None for r in records),
            "prompt_tokens": sum(r.prompt_tokens or 0 for r in records),
            "latency_s": float(sum(r.latency_s or 0.0 for r in records)),
            "cost_usd": float(sum(costs)) if costs else math.nan,
        }
        return found, stats

    # ---- the cache: one entry per text --------------------------------------------------------
    def _base_url(self) -> str | None:
        try:
            return getattr(self.get_provider(self.target.provider), "base_url", None)
        except LLMMagicError:
            return None  # the request itself will say why the provider cannot be built

    def _key(self, text: str, base_url: str | None) -> str:
        target = self.target
        return embedding_key(target.provider, base_url, target.model, text)

    def _cached(self, texts: Sequence[str], base_url: str | None) -> dict[str, Vector]:
        from .store import default_store

        store, hits = default_store(), {}
        for text in texts:
            hit = store.cache_get(self._key(text, base_url))
            vector = _unpacked(hit.output) if hit is not None else None
            if vector is not None:
                hits[text] = vector
        return hits

    def _keep(
        self,
        texts: Sequence[str],
        vectors: Sequence[Vector],
        record: RunRecord,
        base_url: str | None,
    ) -> None:
        from .store import default_store

        store = default_store()
        for text, vector in zip(texts, vectors, strict=True):
            entry = RunRecord(
                run_id=record.run_id,
                target=record.target,
                provider=record.provider,
                model=record.model,
                prompt=text,
                output=_packed(vector),
                finish_reason="stop",
            )
            store.cache_put(self._key(text, base_url), entry, max_chars=0)  # whole, or not at all
