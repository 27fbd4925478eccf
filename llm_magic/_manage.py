"""Look after backends and settings: `%llm providers`, `config`, `pull`, `rm`, `show`, `ps`.

Everything returns data (DataFrames, dicts, a pull summary) and prints nothing except the pull's
progress bar. A server's refusal arrives as a ProviderError carrying the server's own words;
the `%llm` handlers show it as one line. Keys are shown masked, never whole.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _backends as backends
from . import _discovery as discovery
from . import providers
from ._config import DEFAULTS, FileConfig, config_path, load_file_config, resolve_setting
from ._redaction import redact_key, redact_url
from ._targets import Target, parse_target
from .errors import ProviderError, UsageProblem

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
            key = redact_key(endpoint.api_key)
        elif spec.key_required:
            key = f"missing: set {spec.key_env}"
        else:
            key = "not needed"
        urls = providers.base_urls_of(spec, endpoint)  # several: a pool of servers
        in_process = providers.kind_facts(spec.kind).in_process
        source = "in-process" if in_process else endpoint.base_url_source
        rows.append(
            {
                "provider": name,
                "kind": spec.kind,
                "configured": bool(endpoint.api_key) or not spec.key_required,
                "key": key,
                "key_source": endpoint.key_source,
                "base_url": ", ".join(map(redact_url, urls)) or None,
                "base_url_source": "built-in default" if source == "built-in" else source,
            }
        )
    return _frame(rows, _PROVIDER_COLUMNS)


_CONFIG_COLUMNS = {"setting": "string", "value": "object", "source": "string"}


def config_table(configured: Mapping[str, Any], cfg: FileConfig | None = None) -> pd.DataFrame:
    """Every resolved setting with where it came from; then files, folders and keys (masked)."""
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
    found, models_env = providers.model_folders()
    folders = [str(f) for f in found]
    sources = [f"environment {models_env}"] if os.environ.get(models_env) else []
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
            shown = redact_key(value)
            rows.append({"setting": env, "value": shown, "source": f"environment {env}"})
    return _frame(rows, _CONFIG_COLUMNS)


# --------------------------------------------------------------------------- targets


def target_of(text: str, aliases: Mapping[str, str], cfg: FileConfig | None = None) -> Target:
    """One `provider:model` (or an alias of one) for show/pull/rm; a chain is refused."""
    spec = parse_target(text, aliases, providers.known_providers(cfg))
    if len(spec.chain) != 1:
        raise UsageProblem(f"{text!r} is a fallback chain; name one provider:model")
    return spec.primary


def _command(target: Target, verb: str, cfg: FileConfig) -> Callable[..., Any]:
    """The method of `target`'s provider that does `%llm VERB`; UsageProblem when it has none."""
    provider = providers.get_provider(target.provider, cfg)
    method = providers.model_command(provider, verb)
    if method is None:
        able = ", ".join(providers.providers_with(verb, cfg)) or "no provider"
        raise UsageProblem(f"%llm {verb} works with {able} only, not {target.provider}")
    return method


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
    pull_model = _command(target, "pull", cfg)
    layers: dict[str, tuple[int, int]] = {}  # digest -> (total, completed)
    status = ""
    # Decimal units, like the "GB" of the summary line; no total until the first layer says one.
    bar = tqdm(total=None, unit="B", unit_scale=True, desc=str(target))
    try:
        for event in pull_model(target.model):
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
    """`rm ollama:M` deletes the model from Ollama; `rm local:M` unloads it from memory: each
    provider says what removing means for it, in the line it returns."""
    cfg = cfg if cfg is not None else load_file_config()
    return str(_command(target, "rm", cfg)(target.model))


# --------------------------------------------------------------------------- show


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


def show(target: Target, cfg: FileConfig | None = None) -> dict[str, Any]:
    """What a backend knows about one model, as a dict: the provider's own description when it
    has one (Ollama's /api/show, a GGUF header), else its listing's entry for the model."""
    cfg = cfg if cfg is not None else load_file_config()
    facts = providers.facts(target.provider, cfg)
    describe = providers.model_command(providers.get_provider(target.provider, cfg), "show")
    with backends.plain_timeouts(facts, target.provider):
        if describe is not None:
            return dict(describe(target.model))
        if facts.lists_models:
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


def running_table(cfg: FileConfig | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Models loaded right now, from every configured backend that can say (Ollama's /api/ps,
    the embedded models of this process, asked once however many names point at them)."""
    cfg = cfg if cfg is not None else load_file_config()
    can = set(providers.providers_with("ps", cfg))
    asking: dict[str, Callable[[], Any]] = {}
    seen_in_process: set[type] = set()
    able = []
    for b in backends.configured_backends(cfg):
        if b.name not in can:
            continue
        facts = providers.kind_facts(b.kind)
        if facts.in_process:
            if facts in seen_in_process:
                continue  # one process, one list of loaded models
            seen_in_process.add(facts)
        able.append(b)
        asking[b.name] = lambda b=b: providers.get_provider(b.name, cfg).running_models()
    got = discovery.gather(asking, deadline=35.0)
    rows, failures = [], []
    for b in able:
        if isinstance(got[b.name], BaseException):
            failures.append((b, got[b.name]))
            continue
        rows.extend({"provider": b.name, **row} for row in got[b.name])
    return _frame(rows, _PS_COLUMNS), backends.notes_for(failures, quiet_defaults=True)
