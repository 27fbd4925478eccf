"""Provider registry and factory.

Built-in providers are described by `ProviderSpec`s; their modules are imported only when a
provider is first built, so loading the extension imports no SDK. Third parties add providers
through the entry-point group `llm_magic.providers` (value: a callable `factory(name) ->
Provider`) or at run time with `register(name, factory)`. User endpoints come from the config
file's `[providers.NAME]` tables.

What a provider is (how its base URL is normalised, its default concurrency, whether it lists
models, which model commands it offers) is declared by its class (`base.ProviderFacts`);
other modules ask here: `facts(name)`, `default_concurrency(name)`, `base_url_of(spec)`,
`embedding_problem(name)`, `model_command(provider, verb)`, `providers_with(verb)`. Nothing
outside this package imports a provider module.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import FileConfig, load_file_config
from ..errors import ConfigProblem, UnknownProvider
from .base import MODEL_COMMANDS, Provider, ProviderFacts

__all__ = [
    "BUILTIN",
    "Endpoint",
    "ProviderSpec",
    "adhoc_provider",
    "base_url_of",
    "base_urls_of",
    "batch_api",
    "batch_file_line",
    "batch_wire",
    "close_all",
    "default_concurrency",
    "default_limits",
    "embedding_problem",
    "facts",
    "get_provider",
    "kind_facts",
    "known_providers",
    "model_command",
    "model_folders",
    "per_server_cap",
    "pool_capacity",
    "providers_with",
    "register",
    "resolve_endpoint",
    "spec_for",
]

# kind -> "module:Class" of the class that speaks that protocol.
_KINDS = {
    "openai": "llm_magic.providers._openai:OpenAIProvider",
    "ollama": "llm_magic.providers._ollama:OllamaProvider",
    "mistral": "llm_magic.providers._mistral:MistralProvider",
    "local": "llm_magic.providers._local:LocalProvider",
    "anthropic": "llm_magic.providers._anthropic:AnthropicProvider",
}


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    kind: str  # a key of _KINDS
    default_base_url: str | None
    key_env: str | None = None  # where the API key is read from
    key_required: bool = False
    base_url_env: str | None = None  # defaults to <NAME>_BASE_URL
    source: str = "built-in"
    # Several servers behind this one name (config `base_urls`); default_base_url is the first.
    default_base_urls: tuple[str, ...] = ()
    per_server_concurrency: int | None = None  # config; None: the `concurrency` setting

    @property
    def url_env(self) -> str:
        return self.base_url_env or f"{self.name.upper()}_BASE_URL"


def _compat(name: str, url: str, *, required: bool) -> ProviderSpec:
    return ProviderSpec(name, "openai", url, f"{name.upper()}_API_KEY", key_required=required)


BUILTIN: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in [
        ProviderSpec("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY", True),
        ProviderSpec(
            "ollama", "ollama", "http://127.0.0.1:11434", None, base_url_env="OLLAMA_HOST"
        ),
        ProviderSpec("mistral", "mistral", "https://api.mistral.ai", "MISTRAL_API_KEY", True),
        ProviderSpec(
            "anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", True
        ),
        ProviderSpec("local", "local", None),
        _compat("localai", "http://127.0.0.1:8080/v1", required=False),
        _compat("llamacpp", "http://127.0.0.1:8080/v1", required=False),
        _compat("vllm", "http://127.0.0.1:8000/v1", required=False),
        _compat("lmstudio", "http://127.0.0.1:1234/v1", required=False),
        _compat("deepseek", "https://api.deepseek.com/v1", required=True),
        _compat("xai", "https://api.x.ai/v1", required=True),
        _compat("gemini", "https://generativelanguage.googleapis.com/v1beta/openai", required=True),
        _compat("groq", "https://api.groq.com/openai/v1", required=True),
        _compat("openrouter", "https://openrouter.ai/api/v1", required=True),
        _compat("llama", "https://api.llama.com/compat/v1", required=True),
    ]
}

_registered: dict[str, Callable[[str], Provider]] = {}
_entry_points: dict[str, Callable[[str], Provider]] | None = None
_instances: dict[tuple[str | None, ...], Provider] = {}
_lock = threading.Lock()


def register(name: str, factory: Callable[[str], Provider]) -> None:
    """Register a provider at run time: `factory(name)` returns a Provider."""
    with _lock:
        _registered[name] = factory
        for key in [k for k in _instances if k[0] == name]:
            del _instances[key]


def _plugins() -> dict[str, Callable[[str], Provider]]:
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points

        found: dict[str, Callable[[str], Provider]] = {}
        for ep in entry_points(group="llm_magic.providers"):
            found[ep.name] = ep.load
        _entry_points = found
    return _entry_points


def _user_specs(cfg: FileConfig) -> dict[str, ProviderSpec]:
    specs = {}
    for name, table in cfg.providers.items():
        base = BUILTIN.get(name)
        # A table for a built-in name (say [providers.ollama] with base_urls) keeps its kind.
        kind = table.get("kind", base.kind if base else "openai")
        if kind not in _KINDS:
            raise ConfigProblem(f"[providers.{name}] kind must be one of {', '.join(_KINDS)}")
        urls = tuple(u.strip() for u in table.get("base_urls", ()))
        specs[name] = ProviderSpec(
            name,
            kind,
            urls[0] if urls else table.get("base_url", base.default_base_url if base else None),
            table.get("api_key_env", base.key_env if base else None),
            key_required=bool(table.get("key_required", False)),
            base_url_env=base.base_url_env if base else None,
            source=f"config file {cfg.path}",
            default_base_urls=urls,
            per_server_concurrency=table.get("per_server_concurrency"),
        )
    return specs


def known_providers(cfg: FileConfig | None = None) -> list[str]:
    cfg = cfg if cfg is not None else load_file_config()
    names = set(BUILTIN) | set(_user_specs(cfg)) | set(_registered) | set(_plugins())
    return sorted(names)


def spec_for(name: str, cfg: FileConfig | None = None) -> ProviderSpec | None:
    cfg = cfg if cfg is not None else load_file_config()
    return _user_specs(cfg).get(name) or BUILTIN.get(name)


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None  # the first server's, when there are several
    base_url_source: str
    api_key: str | None  # never shown whole: redaction.redact_key gives its hint
    key_source: str | None
    base_urls: tuple[str, ...] = ()  # every server, when there are several (a pool)


def resolve_endpoint(spec: ProviderSpec) -> Endpoint:
    """Where the provider's base URL(s) and key come from right now. The URL variable may
    name several servers, separated by commas (`OLLAMA_HOST=a:11434,b:11434`)."""
    url_env = [u.strip() for u in os.environ.get(spec.url_env, "").split(",") if u.strip()]
    if url_env:
        urls, url_source = tuple(url_env), f"environment {spec.url_env}"
    else:
        urls, url_source = spec.default_base_urls, spec.source
    base_url = urls[0] if urls else spec.default_base_url
    key = os.environ.get(spec.key_env, "").strip() if spec.key_env else ""
    return Endpoint(
        base_url,
        url_source,
        key or None,
        f"environment {spec.key_env}" if key else None,
        urls if len(urls) > 1 else (),
    )


def get_provider(name: str, cfg: FileConfig | None = None) -> Provider:
    """The Provider called `name`, built once per base URL and key and then reused."""
    cfg = cfg if cfg is not None else load_file_config()
    factory = _registered.get(name)
    if factory is None and not (name in BUILTIN or name in cfg.providers):
        factory = _plugins().get(name)
        if factory is not None:
            factory = factory()  # entry point: load the callable itself
    if factory is not None:
        key = (name, None, None)
        with _lock:
            if key not in _instances:
                _instances[key] = factory(name)
            return _instances[key]
    spec = spec_for(name, cfg)
    if spec is None:
        raise UnknownProvider(
            f"unknown provider {name!r}; known providers: {', '.join(known_providers(cfg))}"
        )
    endpoint = resolve_endpoint(spec)
    from ._proxy import proxy_route

    # A proxy set or changed since (environment or config) needs a new client: a new key.
    urls = endpoint.base_urls or (endpoint.base_url,)
    routes = tuple(proxy_route(name, url, cfg).proxy if url else None for url in urls)
    key = (name, *urls, endpoint.api_key, *routes)
    if len(urls) > 1:
        key += (per_server_cap(spec),)
    with _lock:
        provider = _instances.get(key)
        if provider is None:
            servers = [
                _kind_class(spec.kind)(
                    name=name,
                    base_url=url,
                    api_key=endpoint.api_key,
                    # Named so the provider can say which variable to set when a key is missing.
                    key_env=spec.key_env if spec.key_required else None,
                )
                for url in urls
            ]
            provider = servers[0]
            if len(servers) > 1:  # loaded by name, as the kinds' classes are
                pooled = _load("llm_magic.providers._pool:PooledProvider")
                provider = pooled(name, servers, per_server_cap(spec))
            _instances[key] = provider
        return provider


def per_server_cap(spec: ProviderSpec) -> int:
    """Requests at once per server of a pool: the table's per_server_concurrency, else the
    default of the `concurrency` setting (8), which is what one server gets when alone."""
    if spec.per_server_concurrency is not None:
        return spec.per_server_concurrency
    from .._config import DEFAULTS

    return int(DEFAULTS["concurrency"])


def pool_capacity(names: Iterable[str], cfg: FileConfig | None = None) -> int:
    """Requests at once the pooled providers among `names` take in all (servers x cap); 0
    when none of them has several servers. The runner's concurrency grows to it."""
    cfg = cfg if cfg is not None else load_file_config()
    total = 0
    for name in dict.fromkeys(names):
        spec = None if name in _registered else spec_for(name, cfg)
        if spec is not None:
            servers = len(resolve_endpoint(spec).base_urls)
            total += servers * per_server_cap(spec) if servers > 1 else 0
    return total


def proxy_shown(name: str, url: str | None) -> str | None:
    """The proxy a request to `url` goes through, credentials masked and its source named."""
    from ._proxy import proxy_shown as shown

    return shown(name, url)


def close_all() -> None:
    """Close every cached provider's connections (they are rebuilt on next use)."""
    with _lock:
        cached = list(_instances.values())
        _instances.clear()
    for provider in cached:
        close = getattr(provider, "close", None)
        if callable(close):
            close()


# --------------------------------------------------------------------------- what providers are


class _Defaulted:
    """A plugin class's facts: what it declares, else ProviderFacts' defaults."""

    def __init__(self, cls: type) -> None:
        self._cls = cls

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._cls, attr, getattr(ProviderFacts, attr))


def _kind_class(kind: str) -> type:
    return _load(_KINDS[kind])


def _load(where: str) -> type:
    """The class at "module:Class", imported on first use."""
    module_name, cls_name = where.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def kind_facts(kind: str) -> type[ProviderFacts]:
    """The facts of the class that speaks protocol `kind`; the defaults for another word
    (a "plugin", or the "http" of a server discovery could not identify)."""
    return _kind_class(kind) if kind in _KINDS else ProviderFacts


def facts(name: str, cfg: FileConfig | None = None) -> type[ProviderFacts]:
    """What provider `name` declares about itself. A built-in or config-file provider's class
    is imported, not built; a registered or plugin provider is built to find its class."""
    cfg = cfg if cfg is not None else load_file_config()
    spec = None if name in _registered else spec_for(name, cfg)
    if spec is not None:
        return kind_facts(spec.kind)
    cls = type(get_provider(name, cfg))
    return cls if issubclass(cls, ProviderFacts) else _Defaulted(cls)  # type: ignore[return-value]


# The built-in providers whose service has a batch API; any other opts in with `batch = true`
# in its [providers.NAME] table (an OpenAI-compatible server that implements /v1/batches).
_BATCH_BUILTIN = ("openai", "mistral")


def batch_wire(name: str, cfg: FileConfig | None = None) -> str | None:
    """The batch API provider `name` speaks ("openai", "mistral"), or None when it has none.
    Decided without building the provider, so the planner can refuse before anything is sent."""
    cfg = cfg if cfg is not None else load_file_config()
    table = cfg.providers.get(name, {})
    wanted = table.get("batch", name in _BATCH_BUILTIN and name not in _registered)
    return facts(name, cfg).batch_wire if wanted else None


def batch_api(name: str, cfg: FileConfig | None = None) -> Any:
    """Provider `name`'s batch service (see `_batch_api.BatchAPI`); UsageProblem when none."""
    if batch_wire(name, cfg) is None:
        from ..errors import UsageProblem

        raise UsageProblem(f"{name} has no batch API")
    return get_provider(name, cfg).batches()  # type: ignore[attr-defined]


def batch_file_line(custom_id: str, messages: list[Any], model: str, options: Any) -> bytes:
    """One line of an OpenAI batch input file (what `vllm run-batch` reads), its body built
    as the openai provider builds a request; no provider (and no SDK) is needed."""
    return _kind_class("openai").batch_line(custom_id, messages, model, options)


def default_concurrency(name: str, cfg: FileConfig | None = None) -> int | None:
    """How many requests provider `name` takes at once unless the config file's [limits]
    says otherwise (the embedded model: 1); None when it declares no limit."""
    return facts(name, cfg).default_concurrency


def default_limits(names: Iterable[str], cfg: FileConfig | None = None) -> dict[str, int]:
    """{provider: its default concurrency} for the providers named that declare one."""
    limits = {name: default_concurrency(name, cfg) for name in dict.fromkeys(names)}
    return {name: n for name, n in limits.items() if n is not None}


def embedding_problem(name: str, cfg: FileConfig | None = None) -> str | None:
    """Why provider `name` cannot embed (its class has no `embed()`), or None when it can."""
    cls = facts(name, cfg)
    return None if callable(getattr(cls, "embed", None)) else cls.no_embeddings


def base_url_of(spec: ProviderSpec, endpoint: Endpoint | None = None) -> str | None:
    """Where requests to `spec`'s provider go, normalised as its class does it (Ollama reads
    OLLAMA_HOST its own way, Mistral drops a /v1); None for an in-process provider."""
    endpoint = endpoint if endpoint is not None else resolve_endpoint(spec)
    return kind_facts(spec.kind).normalise_base_url(endpoint.base_url)


def base_urls_of(spec: ProviderSpec, endpoint: Endpoint | None = None) -> list[str]:
    """Every server of `spec`'s provider (several for a pool), normalised as base_url_of."""
    endpoint = endpoint if endpoint is not None else resolve_endpoint(spec)
    normalise = kind_facts(spec.kind).normalise_base_url
    urls = [normalise(u) for u in endpoint.base_urls or (endpoint.base_url,)]
    return [u for u in urls if u]


def adhoc_provider(kind: str, name: str, base_url: str) -> Provider:
    """A keyless provider of protocol `kind` for a server nobody configured (one discovery
    found); not cached: the caller closes it."""
    return _kind_class(kind)(name=name, base_url=base_url, api_key=None)


def model_folders() -> tuple[list[Path], str]:
    """The folders searched for GGUF files, and the environment variable that names them."""
    from . import _gguf as gguf

    return gguf.model_folders(), gguf.MODELS_ENV


def model_command(provider: Provider, verb: str) -> Callable[..., Any] | None:
    """The provider's method for `%llm VERB` (a key of MODEL_COMMANDS), or None."""
    method = getattr(provider, MODEL_COMMANDS[verb], None)
    return method if callable(method) else None


def providers_with(verb: str, cfg: FileConfig | None = None) -> list[str]:
    """The built-in and config-file providers whose class offers `%llm VERB`."""
    cfg = cfg if cfg is not None else load_file_config()
    found = []
    for name in sorted(set(BUILTIN) | set(cfg.providers)):
        spec = spec_for(name, cfg)
        method = getattr(kind_facts(spec.kind), MODEL_COMMANDS[verb], None) if spec else None
        if callable(method):
            found.append(name)
    return found
