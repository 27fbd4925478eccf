"""What redaction.py counts as a secret and how each kind is hidden."""

from __future__ import annotations

import base64

import httpx2

from llm_magic._redaction import (
    NO_KEY,
    Redactor,
    add_header_secrets,
    add_secret,
    add_secret_variable,
    redact,
    redact_key,
    redact_url,
)


def test_credentials_of_sent_headers_are_hidden_from_then_on() -> None:
    bearer, api_key, password = "plain0bearer0value01", "plain0x0api0key0value", "pl41n-pa55w0rd"
    basic = base64.b64encode(f"someone:{password}".encode()).decode()
    text = f"{bearer} {api_key} {basic} {password}"
    assert redact(text) == text
    add_header_secrets(
        httpx2.Headers(
            {
                "Authorization": f"Bearer {bearer}",
                "X-Api-Key": api_key,
                "Proxy-Authorization": f"Basic {basic}",
            }
        )
    )
    assert redact(text) == "*** *** *** ***"


def test_placeholders_are_no_secrets() -> None:
    """What key-less servers are sent (ours, and what their docs suggest) must not garble
    answers that hold the word."""
    for placeholder in (NO_KEY, "EMPTY", "ollama", "none"):
        add_secret(placeholder)
        add_header_secrets({"authorization": f"Bearer {placeholder}"})
    text = f"it is {NO_KEY}: EMPTY, ollama or none"
    assert redact(text) == text


def test_a_configured_variable_holds_a_secret_whatever_its_name(monkeypatch) -> None:
    monkeypatch.setenv("CORP_GATEWAY_CREDENTIAL", "corp0gateway0credential")
    redactor = Redactor()
    assert redactor("x corp0gateway0credential") == "x corp0gateway0credential"
    add_secret_variable("CORP_GATEWAY_CREDENTIAL")
    assert redact("x corp0gateway0credential") == "x ***"


def test_urls_and_keys_as_shown() -> None:
    assert redact_url("http://u:pw@h:1/v1?key=k&flag") == "http://u:***@h:1/v1?key=***&***"
    assert redact_url("http://token@h/v1") == "http://***@h/v1"
    assert redact_key("sk-abcdefghijklmnop") == "sk-…op"
    assert redact_key("short") == "***"
    assert redact_key(None) is None


def test_a_redactor_made_earlier_hides_a_key_registered_later() -> None:
    """A run makes its Redactor before its providers are built and its requests sent."""
    redactor = Redactor()
    key = "plain0key0registered0during0the0run"
    assert redactor(key) == key
    add_secret(key)
    assert redactor(f"echo {key}") == "echo ***"
