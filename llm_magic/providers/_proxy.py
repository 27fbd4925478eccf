"""Which proxy a request goes through, decided per request from the environment as it is then.

The rules are the ones httpx (and so the official SDKs) apply:
- `proxy = "…"` in the provider's `[providers.NAME]` table wins for all its requests;
  `proxy = ""` sends them direct whatever the environment says;
- else `HTTPS_PROXY` for https URLs, `HTTP_PROXY` for http ones, `ALL_PROXY` for both when the
  scheme's own variable is unset; each also lower-case, which wins over upper-case (an empty
  lower-case value unsets it); a value without a scheme is an `http://` proxy;
- unless `NO_PROXY` names the host: `*` (every host), `example.com` (it and its subdomains),
  `.example.com` or `*.example.com` (subdomains only), `localhost`, an IP address or network
  (`10.0.0.0/8`, `::1`, `[::1]`), any of these with `:PORT` (that port only), or a whole
  `scheme://host[:port]`. Entries of another shape are ignored.
- As in urllib, `HTTP_PROXY` is ignored inside a CGI request (`REQUEST_METHOD` set): there it
  may come from a client's `Proxy:` header.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .._redaction import redact_url

if TYPE_CHECKING:
    from .._config import FileConfig

__all__ = ["Route", "configured_proxy", "proxy_route", "proxy_shown", "route_for"]

_SCHEME_VARIABLES = {"https": "https_proxy", "http": "http_proxy"}
_NAMES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Route:
    """How one request goes out: `proxy` None means direct; `source` says who decided."""

    proxy: str | None
    source: str = ""

    def shown(self) -> str | None:
        """The proxy as `%llm status` shows it (credentials hidden), with its source."""
        if self.proxy is None:
            return None
        return f"{redact_url(self.proxy)} ({self.source})"


def _variable(name: str) -> tuple[str, str] | None:
    """(value, variable) of a proxy variable: the lower-case one if set at all, else upper."""
    for spelling in (name, name.upper()):
        value = os.environ.get(spelling)
        if value is not None:
            return (value.strip(), spelling) if value.strip() else None
    return None


def _environment() -> tuple[tuple[str, str] | None, ...]:
    cgi = "REQUEST_METHOD" in os.environ
    return tuple(None if cgi and n == "http_proxy" else _variable(n) for n in _NAMES)


@dataclass(frozen=True)
class _Bypass:
    """One NO_PROXY entry."""

    scheme: str = ""  # "" any
    host: str = ""  # lower-case; "" any host
    subdomains_only: bool = False
    with_subdomains: bool = False
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        if self.scheme and self.scheme != scheme:
            return False
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        if not self.host:
            return True
        if host == self.host:
            return not self.subdomains_only
        return (self.subdomains_only or self.with_subdomains) and host.endswith("." + self.host)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        return None


def _bypass(entry: str) -> _Bypass | None:
    """The rule of one NO_PROXY entry, or None for an entry of no known shape."""
    entry = entry.strip().lower()
    if not entry:
        return None
    if "://" in entry:
        parts = urlsplit(entry)
        scheme = "" if parts.scheme == "all" else parts.scheme
        try:
            port = parts.port
        except ValueError:
            return None
        host = parts.hostname or ""
        network = _network(host) if host else None
        return _Bypass(scheme=scheme, host=host, network=network, port=port)
    network = _network(entry)
    if network is not None:  # an address, a network, or a bracketed IPv6 address
        return _Bypass(network=network)
    host, port = entry, None
    if entry.startswith("[") and "]:" in entry:  # [v6]:port
        host, _, port_text = entry[1:].partition("]:")
        network = _network(host)
        return _Bypass(network=network, port=int(port_text)) if port_text.isdigit() else None
    if entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        if not port_text.isdigit():
            return None
        port = int(port_text)
        network = _network(host)
        if network is not None:
            return _Bypass(network=network, port=port)
    if "/" in host or not host:
        return None
    if host.startswith("*."):
        return _Bypass(host=host[2:], subdomains_only=True, port=port)
    if host.startswith("."):
        return _Bypass(host=host[1:], subdomains_only=True, port=port)
    if host == "localhost":
        return _Bypass(host=host, port=port)
    return _Bypass(host=host, with_subdomains=True, port=port)


@dataclass(frozen=True)
class _Table:
    proxies: dict[str, tuple[str, str]]  # scheme -> (proxy URL, variable)
    bypass_all: bool
    bypass: tuple[_Bypass, ...]


@functools.lru_cache(maxsize=8)
def _table(environment: tuple[tuple[str, str] | None, ...]) -> _Table:
    found = dict(zip(_NAMES, environment, strict=True))
    proxies = {}
    for scheme, name in _SCHEME_VARIABLES.items():
        chosen = found[name] or found["all_proxy"]
        if chosen is not None:
            value, variable = chosen
            proxies[scheme] = (value if "://" in value else f"http://{value}", variable)
    entries = (found["no_proxy"] or ("", ""))[0].split(",")
    rules = tuple(rule for rule in map(_bypass, entries) if rule is not None)
    return _Table(proxies, any(e.strip() == "*" for e in entries), rules)


def route_for(scheme: str, host: str, port: int | None, configured: str | None) -> Route:
    """The route of a request to `scheme://host:port`; `configured` is the provider table's
    `proxy` (None when it has none)."""
    if configured is not None:
        if not configured.strip():
            return Route(None, "config file: proxy = \"\"")
        value = configured.strip()
        return Route(value if "://" in value else f"http://{value}", "config file")
    table = _table(_environment())
    chosen = table.proxies.get(scheme)
    if chosen is None or table.bypass_all:
        return Route(None)
    host = host.lower().strip("[]")
    port = port if port is not None else _DEFAULT_PORTS.get(scheme)
    if any(rule.matches(scheme, host, port) for rule in table.bypass):
        return Route(None, "NO_PROXY")
    proxy, variable = chosen
    return Route(proxy, f"environment {variable}")


def configured_proxy(name: str, cfg: FileConfig | None = None) -> str | None:
    """The `proxy` of the `[providers.NAME]` table, None when there is none."""
    if cfg is None:
        from .._config import load_file_config

        cfg = load_file_config()
    value = cfg.providers.get(name, {}).get("proxy")
    return value if isinstance(value, str) else None


def proxy_route(name: str, url: str, cfg: FileConfig | None = None) -> Route:
    """How a request of provider `name` to `url` goes out now: direct or through which proxy.
    `Route.shown()` is what `%llm status` shows; the registry keys its providers by it."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return route_for(parts.scheme, parts.hostname or "", port, configured_proxy(name, cfg))


def proxy_shown(name: str, url: str | None) -> str | None:
    """What `%llm status` says in its `proxy` column for provider `name` at `url`: the proxy
    with its credentials hidden and where it was set, or None when requests go direct."""
    return proxy_route(name, url).shown() if url else None
