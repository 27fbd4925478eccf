"""Settings and where each one came from.

Precedence, highest first: magic option > `%config LLMMagics.x` > environment > config file >
built-in default. The config file is TOML at `~/.config/llm_magic/config.toml` (platformdirs),
or wherever `LLM_MAGIC_CONFIG` points:

    default_target = "ollama:llama3.2"
    cache = false
    concurrency = 8

    [aliases]
    fast = "groq:llama-3.1-8b-instant"
    safe = "openai:gpt-4o-mini|local:smollm2"

    [providers.work]                 # an OpenAI-compatible endpoint of your own
    kind = "openai"
    base_url = "https://llm.example.com/v1"
    api_key_env = "WORK_LLM_KEY"     # the key itself never goes in this file
    proxy = "http://proxy.example.com:3128"   # optional: overrides HTTP(S)_PROXY for it

    [providers.cluster]              # several servers behind one target (providers/_pool.py)
    kind = "openai"
    base_urls = ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]
    per_server_concurrency = 16      # requests at once per server (default: `concurrency`)

    [prices."work:big-model"]        # USD per million tokens
    input = 0.5
    output = 1.5

Keys are read only from environment variables, never from this file.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _ranges as ranges
from ._redaction import add_secret_variable
from .errors import ConfigProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULTS",
    "ENV_SETTINGS",
    "FileConfig",
    "Setting",
    "config_path",
    "load_file_config",
    "resolve_setting",
]

# Built-in defaults of the settings a user can change with %config, env or the file.
DEFAULTS: dict[str, Any] = {
    "default_target": "local:smollm2",
    "timeout": 120.0,
    "connect_timeout": 5.0,
    "deadline": 600.0,
    "retries": 2,
    "concurrency": 8,
    "cache": False,
    "log": True,
    "log_path": "",
    "max_log_chars": 1_000_000,  # of each answer, in the run log and the cache; 0: no limit
}

# Environment variables that set a setting (types follow DEFAULTS).
ENV_SETTINGS: dict[str, str] = {
    "default_target": "LLM_MAGIC_DEFAULT_TARGET",
    "timeout": "LLM_MAGIC_TIMEOUT",
    "deadline": "LLM_MAGIC_DEADLINE",
    "retries": "LLM_MAGIC_RETRIES",
    "concurrency": "LLM_MAGIC_CONCURRENCY",
    "cache": "LLM_MAGIC_CACHE",
    "max_log_chars": "LLM_MAGIC_MAX_LOG_CHARS",
}


@dataclass(frozen=True)
class Setting:
    name: str
    value: Any
    source: str  # "option", "%config", "environment", "config file" or "default"


@dataclass(frozen=True)
class FileConfig:
    path: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)  # per-provider concurrency
    model_dirs: list[str] = field(default_factory=list)  # folders of GGUF files for local:


def config_path() -> Path:
    # Asked about a dozen times a run; platformdirs' answer depends only on these variables.
    env = os.environ
    return _config_path(
        env.get("LLM_MAGIC_CONFIG"), env.get("XDG_CONFIG_HOME"), env.get("HOME"), env.get("APPDATA")
    )


@functools.lru_cache(maxsize=8)
def _config_path(override: str | None, *platform_vars: str | None) -> Path:
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("llm_magic", appauthor=False)) / "config.toml"


_cache: dict[Path, tuple[tuple[int, int], FileConfig]] = {}


def load_file_config(path: Path | None = None) -> FileConfig:
    """Read the config file (re-read only when it changes); a missing file is an empty config."""
    path = path or config_path()
    try:
        stat = path.stat()
    except OSError:
        return FileConfig(path=None)
    # Size as well as time: two writes within the clock's resolution must not look the same.
    version = (stat.st_mtime_ns, stat.st_size)
    hit = _cache.get(path)
    if hit and hit[0] == version:
        return hit[1]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigProblem(f"cannot read config file {path}: {exc}") from None
    parsed = _parse(path, data)
    _cache[path] = (version, parsed)
    return parsed


def _table(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigProblem(f"{path}: [{key}] must be a table")
    return value


_TABLES = ("aliases", "providers", "prices", "limits", "concurrency", "model_dirs")


def _parse(path: Path, data: dict[str, Any]) -> FileConfig:
    for key in data:
        if key not in DEFAULTS and key not in _TABLES:
            close = difflib.get_close_matches(key, [*DEFAULTS, *_TABLES], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigProblem(f"{path}: unknown setting {key!r}{hint}")
    settings = {k: data[k] for k in DEFAULTS if k in data and not isinstance(data[k], dict)}
    aliases = _table(data, "aliases", path)
    for name, target in aliases.items():
        if not isinstance(target, str):
            raise ConfigProblem(f"{path}: alias {name!r} must be a string like 'provider:model'")
    providers = _table(data, "providers", path)
    for name, spec in providers.items():
        if not isinstance(spec, dict):
            raise ConfigProblem(f"{path}: [providers.{name}] must be a table")
        if "api_key" in spec:
            raise ConfigProblem(
                f"{path}: [providers.{name}] holds an api_key; name an environment variable "
                "with api_key_env instead"
            )
        _check_table(path, f"providers.{name}", spec, _PROVIDER_KEYS)
        _check_servers(path, f"providers.{name}", spec)
        if "api_key_env" in spec:  # its value is a key whatever the variable is called
            add_secret_variable(spec["api_key_env"])
    limits = data.get("limits", {})
    if isinstance(data.get("concurrency"), dict):  # [concurrency] per provider
        limits = data["concurrency"]
    model_dirs = data.get("model_dirs", [])
    if isinstance(model_dirs, str):
        model_dirs = [model_dirs]
    if not isinstance(model_dirs, list) or not all(isinstance(d, str) for d in model_dirs):
        raise ConfigProblem(f"{path}: model_dirs must be a list of folder paths")
    return FileConfig(
        path=path,
        model_dirs=[str(path.parent / Path(d).expanduser()) for d in model_dirs],
        settings=settings,
        aliases=dict(aliases),
        providers={k: dict(v) for k, v in providers.items()},
        prices={k: _price(k, v, path) for k, v in _table(data, "prices", path).items()},
        limits={k: _limit(k, v, path) for k, v in limits.items()},
    )


# The keys a [providers.NAME] table takes, and the type of each value.
_PROVIDER_KEYS: dict[str, type] = {
    "kind": str,
    "base_url": str,
    "api_key_env": str,
    "key_required": bool,
    "proxy": str,  # this provider's proxy ("" for none), over the environment's
    "batch": bool,  # it serves its kind's batch API (/v1/files + /v1/batches or batch jobs)
    "base_urls": list,  # several servers behind one target (instead of base_url)
    "per_server_concurrency": int,  # requests at once per server of base_urls
}
_PRICE_KEYS: dict[str, type] = {"input": float, "output": float}
_KIND_WORDS = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list of strings",
}


def _check_table(path: Path, where: str, table: dict[str, Any], keys: dict[str, type]) -> None:
    """A misspelt key or a value of the wrong type is named, not silently ignored."""
    for key, value in table.items():
        kind = keys.get(key)
        if kind is None:
            close = difflib.get_close_matches(key, list(keys), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(keys)}"
            raise ConfigProblem(f"{path}: [{where}] unknown key {key!r}{hint}")
        if kind is float:  # a TOML integer is a fine number; true/false is not one
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            fits = isinstance(value, kind)
        if not fits:
            words = _KIND_WORDS[kind]
            raise ConfigProblem(f"{path}: [{where}] {key} must be {words}, not {value!r}")


def _check_servers(path: Path, where: str, table: dict[str, Any]) -> None:
    """`base_urls` is a non-empty list of URLs, not given beside `base_url`; the cap is >= 1."""
    urls = table.get("base_urls")
    if urls is not None:
        if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
            raise ConfigProblem(f"{path}: [{where}] base_urls must be a list of URLs, not {urls!r}")
        if "base_url" in table:
            raise ConfigProblem(f"{path}: [{where}] gives base_url and base_urls: keep one")
    if "per_server_concurrency" in table:
        where = f"{path}: [{where}] per_server_concurrency"
        ranges.check("concurrency", table["per_server_concurrency"], where)


def _price(key: str, entry: Any, path: Path) -> dict[str, float]:
    where = f'prices."{key}"'
    if not isinstance(entry, dict) or not entry:
        example = "{input = 0.15, output = 0.6}"
        raise ConfigProblem(f"{path}: [{where}] must be a table like {example}")
    _check_table(path, where, entry, _PRICE_KEYS)
    for side, value in entry.items():
        if value < 0:
            raise ConfigProblem(f"{path}: [{where}] {side} must be 0 or more, not {value!r}")
    return {side: float(value) for side, value in entry.items()}


def _limit(provider: str, value: Any, path: Path) -> int:
    ranges.check("concurrency", value, f"{path}: [limits] {provider}")
    return int(value)


def _coerce(name: str, raw: Any, where: str) -> Any:
    kind = type(DEFAULTS[name])
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(raw, bool):  # TOML `retries = true` is not a number of retries
            raise ValueError(raw)
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigProblem(f"{where}: {name} must be {_KIND_WORDS[kind]}, not {raw!r}") from None


def resolve_setting(name: str, option: Any = None, configured: Any = None) -> Setting:
    """One setting's value and its source, by the precedence in this module's docstring.

    A value outside the setting's range is a UsageProblem that names where it came from.
    """
    setting = _find_setting(name, option, configured)
    ranges.check(name, setting.value, "" if setting.source == "option" else setting.source)
    return setting


def _find_setting(name: str, option: Any, configured: Any) -> Setting:
    if option is not None:
        return Setting(name, option, "option")
    if configured is not None:
        return Setting(name, configured, "%config")
    env = ENV_SETTINGS.get(name)
    if env and os.environ.get(env, "").strip():
        where = f"environment {env}"
        return Setting(name, _coerce(name, os.environ[env], where), where)
    file = load_file_config()
    if name in file.settings:
        where = f"config file {file.path}"
        return Setting(name, _coerce(name, file.settings[name], where), where)
    return Setting(name, DEFAULTS[name], "default")
