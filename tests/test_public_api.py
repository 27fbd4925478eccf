"""The public surface, pinned (as httpx pins its own): what users may import is listed in
`__all__` of the package and of each public module; every other module is private by name."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import llm_magic

PACKAGE = Path(llm_magic.__file__).parent

PUBLIC = {
    "llm_magic": [
        "Completion",
        "Panel",
        "__version__",
        "available",
        "batch_file",
        "batches",
        "check_targets",
        "collect",
        "compare",
        "complete",
        "load_ipython_extension",
        "read_batch_output",
    ],
    "llm_magic.errors": [
        "AuthFailed",
        "BadResponse",
        "Cancelled",
        "ConfigProblem",
        "ConnectFailed",
        "DeadlinePassed",
        "GGUFError",
        "LLMMagicError",
        "ModelNotFound",
        "NotFound",
        "ProviderError",
        "RateLimited",
        "RunInterrupted",
        "ServerFailed",
        "StatusError",
        "StreamBroken",
        "TemplateProblem",
        "TimedOut",
        "TransportError",
        "UnknownProvider",
        "UsageProblem",
    ],
    "llm_magic.results": [
        "DTYPES",
        "LLMAccessor",
        "SideBySide",
        "compact",
        "empty_frame",
        "run_frame",
        "to_dataframe",
        "verdict_lines",
    ],
    "llm_magic.store": [
        "ANSWER_FIELDS",
        "DB_NAME",
        "Store",
        "cache_key",
        "copy_answer",
        "default_store",
        "log_location",
        "log_path",
        "record_run",
    ],
    "llm_magic.providers": [
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
    ],
    "llm_magic.providers.base": [
        "BatchState",
        "CancelToken",
        "Chunk",
        "Embeddings",
        "Health",
        "Image",
        "MODEL_COMMANDS",
        "Message",
        "ModelInfo",
        "Options",
        "Provider",
        "ProviderFacts",
        "ToolCall",
        "ToolCallPiece",
        "ToolSpec",
        "Usage",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_each_public_module_lists_what_it_offers(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name


def test_every_other_module_is_private_by_name() -> None:
    public_files = {
        PACKAGE.joinpath(*m.split(".")[1:]).with_suffix(".py") for m in PUBLIC if m != "llm_magic"
    }
    public_files |= {p for p in PACKAGE.rglob("__init__.py")}
    for path in PACKAGE.rglob("*.py"):
        if path in public_files:
            continue
        private = any(part.startswith("_") for part in path.relative_to(PACKAGE).parts)
        assert private, f"{path.relative_to(PACKAGE)} is neither public nor named _private"


def test_the_errors_raised_to_users_are_one_tree() -> None:
    from llm_magic import errors

    for name in PUBLIC["llm_magic.errors"]:
        # An interrupted run stays a KeyboardInterrupt, so Ctrl-C handling keeps working.
        root = KeyboardInterrupt if name == "RunInterrupted" else errors.LLMMagicError
        assert issubclass(getattr(errors, name), root), name


def test_the_package_loads_its_api_lazily_and_names_it_whole() -> None:
    for name in llm_magic.__all__:
        assert getattr(llm_magic, name) is not None, name
    assert llm_magic.Completion.__module__ == "llm_magic._api"
