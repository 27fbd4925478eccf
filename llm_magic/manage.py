"""Look after backends and settings: `%llm providers`, `config`, `pull`, `rm`, `show`, `ps`.

Everything returns data (DataFrames, dicts, a pull summary) and prints nothing except the pull's
progress bar. A server's refusal arrives as a ProviderError carrying the server's own words;
the `%llm` handlers show it as one line. Keys are shown masked, never whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import backends, discovery, providers
from .config import DEFAULTS, FileConfig, config_path, load_file_config, resolve_setting
from .errors import ProviderError, UsageProblem, mask_url
from .providers import Endpoint
from .targets import Target, parse_target

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PullResult",
    "config_table",
    "providers_table",
    "pull",
    "remove",
    "running_table",
    "show",
]


def mask(key: str | None) -> str | None:
    """A key as it may be shown: a few characters of it at most (Endpoint's rule)."""
    return Endpoint(None, "", key, None).masked_key()


def _frame(rows: list[dict[str, Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(dtypes))
    for column, dtype in dtypes.items():
        if dtype.startswith("datetime64"):  # Ollama writes ISO 8601 with its own UTC offset
            frame[column] = pd.to_datetime(
                frame[column], utc=True, errors="coerce", format="ISO8601"
            )
    return frame.astype(dtypes)


# --------------------------------------------------------------------------- providers, config

_PROVIDER_COLUMNS = {
    "provider": "string",
    "kind": "string",
    "configured": "boolean",
    "key": "string",
    "key_source": "string",
    "base_url": "string",
    "base_url_source": "string",
}


def providers_table(cfg: FileConfig | None = None) -> pd.DataFrame:
    """Every registered provider: configured or not, its key (masked), its URL and their origin."""
    from .providers.ollama import parse_ollama_host

    cfg = cfg if cfg is not None else load_file_config()
    rows = []
    for name in providers.known_providers(cfg):
        spec = providers.spec_for(name, cfg)
        if spec is None:
            rows.append(
                {
                    "provider": name,
                    "kind": "plugin",
                    "configured": True,
                    "base_url_source": "registered provider",
                }
            )
            continue
        endpoint = providers.resolve_endpoint(spec)
        if endpoint.api_key:
            key = mask(endpoint.api_key)
        elif spec.key_required:
            key = f"missing: set {spec.key_env}"
        else:
            key = "not needed"
        url = endpoint.base_url
        if spec.kind == "ollama":
            url = parse_ollama_host(url)
        source = "in-process" if spec.kind == "local" else endpoint.base_url_source
        rows.append(
            {
                "provider": name,
                "kind": spec.kind,
                "configured": bool(endpoint.api_key) or not spec.key_required,
                "key": key,
                "key_source": endpoint.key_source,
                "base_url": mask_url(url) if url else url,
                "base_url_source": "built-in default" if source == "built-in" else source,
            }
        )
    return _frame(rows, _PROVIDER_COLUMNS)


_CONFIG_COLUMNS = {"setting": "string", "value": "object", "source": "string"}


def config_table(configured: Mapping[str, Any], cfg: FileConfig | None = None) -> pd.DataFrame:
    """Every resolved setting with where it came from; then files, folders and keys (masked)."""
    from .providers import gguf
    from .store import log_location

    cfg = cfg if cfg is not None else load_file_config()
    rows: list[dict[str, Any]] = []
    for name in DEFAULTS:
        if name == "log_path":  # the file the run log really uses, not the setting's raw text
            log, source = log_location()
            rows.append({"setting": name, "value": str(log), "source": source})
            continue
        setting = resolve_setting(name, configured=configured.get(name))
        rows.append({"setting": name, "value": setting.value, "source": setting.source})
    path = config_path()
    where = "environment LLM_MAGIC_CONFIG" if os.environ.get("LLM_MAGIC_CONFIG") else "default"
    rows.append(
        {
            "setting": "config_file",
            "value": str(path) + ("" if path.is_file() else " (not found)"),
            "source": where,
        }
    )
    folders = [str(f) for f in gguf.model_folders()]
    sources = [f"environment {gguf.MODELS_ENV}"] if os.environ.get(gguf.MODELS_ENV) else []
    sources += [f"config file {cfg.path}"] if cfg.model_dirs else []
    rows.append(
        {"setting": "model_dirs", "value": folders, "source": " + ".join(sources) or "default"}
    )
    if cfg.aliases:
        rows.append(
            {"setting": "aliases", "value": dict(cfg.aliases), "source": f"config file {cfg.path}"}
        )
    key_envs = {}
    for name in providers.known_providers(cfg):
        spec = providers.spec_for(name, cfg)
        if spec is not None and spec.key_env:
            key_envs.setdefault(spec.key_env, name)
    for env in sorted(key_envs):
        value = os.environ.get(env, "").strip()
        if value:  # which keys are set, masked; unset ones are in %llm providers
            rows.append({"setting": env, "value": mask(value), "source": f"environment {env}"})
    return _frame(rows, _CONFIG_COLUMNS)


# --------------------------------------------------------------------------- targets


def target_of(text: str, aliases: Mapping[str, str], cfg: FileConfig | None = None) -> Target:
    """One `provider:model` (or an alias of one) for show/pull/rm; a chain is refused."""
    spec = parse_target(text, aliases, providers.known_providers(cfg))
    if len(spec.chain) != 1:
        raise UsageProblem(f"{text!r} is a fallback chain; name one provider:model")
    return spec.primary


def _kind(name: str, cfg: FileConfig) -> str:
    spec = providers.spec_for(name, cfg)
    return spec.kind if spec is not None else "plugin"


def _ollama(target: Target, verb: str, cfg: FileConfig) -> Any:
    if _kind(target.provider, cfg) != "ollama":
        # A fixed example: the model given is another provider's ("gpt-4o"), not Ollama's.
        raise UsageProblem(f"%llm {verb} works with Ollama only (e.g. ollama:llama3.2)")
    return providers.get_provider(target.provider, cfg)


# --------------------------------------------------------------------------- pull, rm


@dataclass(frozen=True)
class PullResult:
    target: str
    layers: int
    total_bytes: int
    status: str  # the last status Ollama sent ("success")


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _downloaded(layers: Mapping[str, tuple[int, int]]) -> str | None:
    """'X of Y downloaded' over the layers announced so far; None before the first one."""
    total = sum(t for t, _ in layers.values())
    if not total:
        return None
    return f"{_size(sum(c for _, c in layers.values()))} of {_size(total)} downloaded"


def pull(target: Target, cfg: FileConfig | None = None) -> PullResult:
    """Pull an Ollama model with a progress bar fed by the per-layer `total`/`completed`.

    A pull that fails, stalls or is interrupted part way says how far it got. Ollama keeps what
    it downloaded: a new pull resumes from there.
    """
    from tqdm.auto import tqdm

    cfg = cfg if cfg is not None else load_file_config()
    provider = _ollama(target, "pull", cfg)
    layers: dict[str, tuple[int, int]] = {}  # digest -> (total, completed)
    status = ""
    # Decimal units, like the "GB" of the summary line; no total until the first layer says one.
    bar = tqdm(total=None, unit="B", unit_scale=True, desc=str(target))
    try:
        for event in provider.pull(target.model):
            status = str(event.get("status") or status)
            digest, total = event.get("digest"), event.get("total")
            if isinstance(digest, str) and isinstance(total, int):
                completed = event.get("completed")  # absent until non-zero
                layers[digest] = (total, completed if isinstance(completed, int) else 0)
            if status == "success":  # every layer is in place, whatever the last tick said
                layers = {d: (t, t) for d, (t, _) in layers.items()}
            # Layers appear one after another, so the total grows as they are announced.
            bar.total = sum(t for t, _ in layers.values()) or None
            bar.set_description_str(f"{target}: {status}"[:60], refresh=False)
            bar.update(sum(c for _, c in layers.values()) - bar.n)
        bar.refresh()
    except KeyboardInterrupt:
        # Still an interrupt (Run All stops), now saying how far the pull got.
        where = _downloaded(layers) or (
            f"last status: {status!r}" if status else "nothing downloaded yet"
        )
        raise KeyboardInterrupt(f"pull interrupted: {target}, {where}") from None
    except ProviderError as exc:
        where = _downloaded(layers)
        if where:
            exc.extended(f" ({where})")
        raise
    finally:
        bar.close()
    if status != "success":
        raise ProviderError(
            f"pull ended without success (last status: {status!r})", provider=target.provider
        )
    return PullResult(str(target), len(layers), sum(t for t, _ in layers.values()), status)


def remove(target: Target, cfg: FileConfig | None = None) -> str:
    """`rm ollama:M` deletes the model from Ollama; `rm local:M` unloads it from memory."""
    cfg = cfg if cfg is not None else load_file_config()
    if _kind(target.provider, cfg) == "local":
        from .providers import local

        if not local.unload(target.model):
            names = ", ".join(m.model for m in local.loaded()) or "none"
            raise UsageProblem(f"{target} is not loaded; loaded local models: {names}")
        return f"unloaded {target} from memory (the file stays on disk)"
    if _kind(target.provider, cfg) != "ollama":
        raise UsageProblem("%llm rm works with ollama:MODEL (delete) and local:MODEL (unload)")
    _ollama(target, "rm", cfg).delete(target.model)
    return f"deleted {target}"


# --------------------------------------------------------------------------- show


def _parameters(text: Any) -> dict[str, Any]:
    """Ollama's Modelfile parameters ("stop  \"<|eot_id|>\"" lines) as a dict; repeats -> list."""
    out: dict[str, Any] = {}
    for line in str(text or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        value = value.strip().strip('"')
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


def _show_ollama(target: Target, cfg: FileConfig) -> dict[str, Any]:
    body = _ollama(target, "show", cfg).show(target.model)
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    info = body.get("model_info") if isinstance(body.get("model_info"), dict) else {}
    return {
        "target": str(target),
        "family": details.get("family"),
        "parameter_size": details.get("parameter_size"),
        "quantization": details.get("quantization_level"),
        "format": details.get("format"),
        "context_length": backends.context_from_show(body),
        "capabilities": body.get("capabilities"),
        "parameters": _parameters(body.get("parameters")),
        "template": body.get("template"),
        "modified_at": body.get("modified_at"),
        "model_info": {k: v for k, v in info.items() if not isinstance(v, (list, dict))},
    }


def _show_listed(target: Target, cfg: FileConfig) -> dict[str, Any]:
    listed = providers.get_provider(target.provider, cfg).list_models()
    for m in listed:
        if m.model == target.model:
            return {
                "target": str(target),
                "model": m.model,
                "context_length": m.context_length,
                "created": m.modified,
                **m.details,
            }
    names = ", ".join(m.model for m in listed[:20]) + (", …" if len(listed) > 20 else "")
    raise UsageProblem(f"{target.provider} lists no model {target.model!r}; it has: {names}")


def _show_local(target: Target) -> dict[str, Any]:
    from .providers import gguf, local

    path = local.resolve_model(target.model, target.provider)
    try:
        info = gguf.read_gguf(path)
    except (gguf.GGUFError, OSError) as exc:
        raise ProviderError(str(exc), provider=target.provider) from None
    metadata = {
        k: (f"[{v.length} items]" if isinstance(v, gguf.ArraySummary) else v)
        for k, v in info.metadata.items()
        if k != "tokenizer.chat_template"
    }
    loaded = any(m.details.get("path") == str(path) for m in local.loaded())
    return {
        "target": str(target),
        "path": str(path),
        "size_gb": round(info.size_bytes / 1e9, 3),
        **info.summary(),
        "loaded": loaded,
        "chat_template": info.chat_template,
        "metadata": metadata,
    }


def show(target: Target, cfg: FileConfig | None = None) -> dict[str, Any]:
    """What a backend knows about one model, as a dict."""
    cfg = cfg if cfg is not None else load_file_config()
    kind = _kind(target.provider, cfg)
    if kind == "local":
        return _show_local(target)
    with backends.plain_timeouts(kind, target.provider):
        if kind == "ollama":
            return _show_ollama(target, cfg)
        if kind in ("openai", "mistral"):
            return _show_listed(target, cfg)
    raise UsageProblem(f"%llm show does not know how to ask {target.provider!r} about a model")


# --------------------------------------------------------------------------- ps

_PS_COLUMNS = {
    "provider": "string",
    "model": "string",
    "size_gb": "float64",
    "vram_gb": "float64",
    "context_length": "Int64",
    "expires_at": "datetime64[ns, UTC]",
    "details": "object",
}


def _gb(value: Any) -> float | None:
    return round(value / 1e9, 3) if isinstance(value, (int, float)) else None


def running_table(cfg: FileConfig | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Models loaded right now: Ollama's /api/ps and the embedded models of this process."""
    from .providers import local

    cfg = cfg if cfg is not None else load_file_config()
    ollamas = [b for b in backends.configured_backends(cfg) if b.kind == "ollama"]
    got = discovery.gather(
        {b.name: (lambda b=b: providers.get_provider(b.name, cfg).running()) for b in ollamas},
        deadline=35.0,
    )
    rows, failures = [], []
    for b in ollamas:
        if isinstance(got[b.name], BaseException):
            failures.append((b, got[b.name]))
            continue
        for m in got[b.name]:
            details = m.get("details") if isinstance(m.get("details"), dict) else {}
            rows.append(
                {
                    "provider": b.name,
                    "model": m.get("model") or m.get("name"),
                    "size_gb": _gb(m.get("size")),
                    "vram_gb": _gb(m.get("size_vram")),
                    "context_length": m.get("context_length"),
                    "expires_at": m.get("expires_at"),
                    "details": dict(details),
                }
            )
    for m in local.loaded():
        rows.append(
            {
                "provider": m.provider,
                "model": m.model,
                "size_gb": _size_of(m.details),
                "context_length": m.context_length,
                "details": dict(m.details),
            }
        )
    return _frame(rows, _PS_COLUMNS), backends.notes_for(failures, quiet_defaults=True)


def _size_of(details: Mapping[str, Any]) -> float | None:
    try:
        return _gb(Path(details["path"]).stat().st_size)
    except (KeyError, OSError, TypeError):
        return None
