"""`similar:TEXT` checks end to end: the Ollama loopback server answers (it echoes the prompt),
an embeddings endpoint embeds (the doubles' vectors are bags of words, so which texts are close
is known), through the magic, compare() and df.llm.check(); and the embedded model as the
embedder."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError
from servers.embeddings import vector_of

import llm_magic
import llm_magic._api
from llm_magic._checks import SIMILAR_THRESHOLD
from llm_magic._plan import make_plan
from llm_magic._request import Request
from llm_magic._session import Session
from llm_magic.errors import UsageProblem
from llm_magic.results import run_frame as run_frame_of
from tests.cells import run_frame

ANSWERER = "ollama:llama3.2"
EMBEDDER = "openai:text-embedding-3-small"
EMBED = f"--embed {EMBEDDER}"
CAPITAL = "Paris is the capital of France"


def _cos(a: str, b: str) -> float:
    x, y = np.array(vector_of(a)), np.array(vector_of(b))
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _echo(prompt: str) -> str:
    return f"Echo from llama3.2: {prompt}"


@pytest.fixture
def wired(ip, backends):
    ip.user_ns["cases"] = pd.DataFrame(
        {
            "prompt": [CAPITAL, "Name a yellow fruit"],
            "expected": ["the capital of France is Paris", "the capital of France is Paris"],
        }
    )
    return ip, backends


def _embedding_requests(server):
    return [r for r in server.requests if r.path.endswith("/embeddings")]


def test_similar_scores_the_cosine_and_sends_each_text_once_in_one_request(wired) -> None:
    ip, backends = wired
    cell = f"%%llm {ANSWERER} --over cases -q {EMBED} --check 'similar:{{expected}}'\n{{prompt}}"
    df = run_frame(ip, cell)
    assert len(df) == 2 and (df["target"] == ANSWERER).all()  # no embedding row
    expected = "the capital of France is Paris"
    scores = [_cos(_echo(CAPITAL), expected), _cos(_echo("Name a yellow fruit"), expected)]
    assert df["score_similar"].tolist() == pytest.approx(scores, abs=1e-9)
    assert scores[0] > 0.5 > scores[1]
    assert df["pass_similar"].tolist() == [s >= SIMILAR_THRESHOLD for s in scores]
    assert df["checks"][0]["similar"]["reason"].startswith(f"cosine {scores[0]:.3f} to 'the ")
    (sent,) = _embedding_requests(backends.openai)  # two answers and one TEXT: one batch
    assert sorted(sent.body["input"]) == sorted([_echo(CAPITAL), _echo("Name a yellow fruit"),
                                                 expected])
    stats = df.attrs["embed"]
    assert stats["target"] == EMBEDDER and stats["texts"] == 3 and stats["requests"] == 1
    assert stats["failed"] == 0 and stats["cached"] == 0 and stats["latency_s"] > 0
    assert stats["prompt_tokens"] == sum(len(t.split()) for t in sent.body["input"])
    assert stats["cost_usd"] == pytest.approx(stats["prompt_tokens"] * 0.02 / 1e6)  # priced
    assert "judge" not in df.attrs


def test_a_threshold_and_a_name(wired) -> None:
    ip, backends = wired
    cell = (f"%%llm {ANSWERER} --over cases -q {EMBED} --check 'close@0.5=similar:{{expected}}'"
            "\n{prompt}")
    df = run_frame(ip, cell)
    assert df["pass_close"].tolist() == [True, False] and df["passed"].tolist() == [True, False]


def test_compare_takes_embed_and_mistral_embeds(wired) -> None:
    ip, backends = wired
    df = llm_magic.compare(CAPITAL, ANSWERER, checks=[f"similar:{CAPITAL}"],
                           embed="mistral:mistral-embed")
    assert df["score_similar"].tolist() == pytest.approx([_cos(_echo(CAPITAL), CAPITAL)])
    (sent,) = _embedding_requests(backends.mistral)
    assert sent.body == {"model": "mistral-embed", "input": [CAPITAL, _echo(CAPITAL)]}
    assert backends.openai.request_count == 0


def test_df_llm_check_compares_an_existing_frame_and_asks_no_answer_again(wired) -> None:
    ip, backends = wired
    df = llm_magic.compare([CAPITAL, "Bananas"], ANSWERER)
    scored = df.assign(expected=CAPITAL).llm.check("similar:{expected}", embed="ollama:llama3.2")
    assert scored["score_similar"].tolist() == pytest.approx(
        [_cos(_echo(CAPITAL), CAPITAL), _cos(_echo("Bananas"), CAPITAL)]
    )
    assert len(backends.ollama.chat_requests()) == 2  # the answers were not asked again
    (sent,) = [r for r in backends.ollama.requests if r.path == "/api/embed"]
    assert sent.body["model"] == "llama3.2" and len(sent.body["input"]) == 3
    assert scored.attrs["embed"]["target"] == "ollama:llama3.2"


def test_with_cache_no_text_is_embedded_twice(wired) -> None:
    ip, backends = wired
    cell = (f"%%llm {ANSWERER} --over cases -q --cache {EMBED} "
            "--check 'similar:{expected}'\n{prompt}")
    first = run_frame(ip, cell)
    second = run_frame(ip, cell)
    assert len(_embedding_requests(backends.openai)) == 1
    assert second["score_similar"].tolist() == first["score_similar"].tolist()  # exact
    assert second.attrs["embed"]["cached"] == 3 and second.attrs["embed"]["requests"] == 0
    # a new text is embedded alone; the ones seen before come from the cache
    ip.user_ns["cases"].loc[1, "expected"] = "a yellow fruit"
    third = run_frame(ip, cell)
    requests = _embedding_requests(backends.openai)
    assert len(requests) == 2 and requests[-1].body["input"] == ["a yellow fruit"]
    assert third.attrs["embed"]["cached"] == 3 and third.attrs["embed"]["texts"] == 4


def test_without_cache_the_texts_are_embedded_again(wired) -> None:
    ip, backends = wired
    cell = f"%%llm {ANSWERER} -q --no-cache {EMBED} --check 'similar:{CAPITAL}'\n{CAPITAL}"
    run_frame(ip, cell)
    run_frame(ip, cell)
    assert len(_embedding_requests(backends.openai)) == 2


def test_embedding_requests_are_in_the_run_log(wired) -> None:
    ip, backends = wired
    run_frame(ip, f"%%llm {ANSWERER} -q {EMBED} --check 'similar:{CAPITAL}'\n{CAPITAL}")
    logged = ip.run_line_magic("llm", "history")
    assert list(logged["target"]) == [ANSWERER, EMBEDDER]
    assert logged["output"].iloc[1] == "2 embeddings of 64 dimensions"
    assert logged["prompt"].iloc[1].splitlines() == [CAPITAL, _echo(CAPITAL)]  # the texts


@pytest.mark.parametrize(
    ("fault", "why"),
    [({"status": 500}, "embedding failed: openai: "), ({"malformed_after": 0}, "not JSON")],
)
def test_a_failing_embedder_is_nan_and_a_reason_and_no_row_is_lost(wired, fault, why) -> None:
    ip, backends = wired
    for name, value in fault.items():
        setattr(backends.openai.faults, name, value)
    checks = "--check 'similar:{expected}' --check 'contains:Echo'"
    df = run_frame(ip, f"%%llm {ANSWERER} --over cases -q --retries 0 {EMBED} {checks}\n{{prompt}}")
    assert len(df) == 2 and df["error"].isna().all() and df["pass_contains"].all()
    assert df["score_similar"].isna().all() and not df["passed"].any()
    reason = df["checks"][0]["similar"]["reason"]
    assert reason.startswith("embedding failed:") and why in reason and "\n" not in reason
    assert df.attrs["embed"]["failed"] == 1 and df.attrs["embed"]["requests"] == 1


def test_the_runs_retries_apply_to_embedding_requests(wired) -> None:
    ip, backends = wired
    backends.openai.faults.status, backends.openai.faults.fail_times = 503, 1
    df = run_frame(ip, f"%%llm {ANSWERER} -q --retries 1 {EMBED} --check 'similar:{CAPITAL}'"
                       f"\n{CAPITAL}")
    assert df["score_similar"].notna().all() and len(_embedding_requests(backends.openai)) == 2


def test_a_slow_embedder_meets_the_runs_deadline(wired) -> None:
    ip, backends = wired
    backends.openai.faults.delay = 5.0  # the test server gives up once the test resets it
    df = run_frame(ip, f"%%llm {ANSWERER} -q --deadline 0.5 {EMBED} --check 'similar:{CAPITAL}'"
                       f"\n{CAPITAL}")
    assert len(df) == 1 and df["error"].isna().all() and df["score_similar"].isna().all()
    reason = df["checks"][0]["similar"]["reason"]
    assert reason.startswith("embedding failed: openai: the deadline of 0.5 s passed")
    assert df.attrs["embed"]["failed"] == 1 and df.attrs["embed"]["latency_s"] < 5.0


def test_a_failed_or_empty_answer_is_not_embedded(wired) -> None:
    ip, backends = wired
    backends.ollama.faults.status = 500
    df = run_frame(ip, f"%%llm {ANSWERER} -q --retries 0 {EMBED} --check similar:x\nHi")
    assert df["checks"][0]["similar"]["reason"] == "no answer"
    assert backends.openai.request_count == 0 and df.attrs["embed"]["requests"] == 0
    backends.ollama.reset()
    backends.ollama.faults.reply = ""
    df = run_frame(ip, f"%%llm {ANSWERER} -q {EMBED} --check similar:x\nHi")
    assert math.isnan(df["score_similar"][0])
    assert df["checks"][0]["similar"]["reason"] == "nothing to compare: an empty answer"


def test_a_stopped_run_is_not_compared(wired) -> None:
    ip, backends = wired
    plan = make_plan(
        Request(("Hi", "Bye"), (ANSWERER,), checks=["similar:Hi"], embed=EMBEDDER), Session()
    )
    records = llm_magic._api.run(plan)
    records[1].finish_reason, records[1].error = "interrupted", "interrupted"
    df = run_frame_of(records, plan)
    assert len(df) == 2 and df["score_similar"].isna().all()
    assert df["checks"][0]["similar"]["reason"] == "not compared (the run was stopped)"
    assert backends.openai.request_count == 0 and "embed" not in df.attrs


# ---- refused before anything is sent ---------------------------------------------------------
def _refused(ip, backends, cell: str) -> str:
    with pytest.raises(UsageError) as info:
        ip.run_cell(cell)
    message = str(info.value)
    assert "\n" not in message
    assert backends.ollama.request_count == 0 and backends.openai.request_count == 0
    assert backends.anthropic.request_count == 0
    return message


def test_a_default_target_that_cannot_embed_is_one_line(wired) -> None:
    ip, backends = wired
    ip.run_line_magic("config", "LLMMagics.default_target = 'anthropic:claude-haiku-4-5'")
    message = _refused(ip, backends, f"%%llm {ANSWERER} --check similar:x\nHi")
    assert "Anthropic's API has no embeddings endpoint" in message and "--embed" in message
    assert "the default target anthropic:claude-haiku-4-5" in message


@pytest.mark.parametrize(
    ("embed", "said"),
    [
        ("anthropic:claude-haiku-4-5", "Anthropic's API has no embeddings endpoint"),
        (f"'{EMBEDDER}|mistral:mistral-embed'", "not a fallback chain"),
        ("nosuch:model", "the embedding target (--embed, embed=): unknown provider 'nosuch'"),
    ],
)
def test_an_embed_target_that_cannot_embed_is_one_line(wired, embed, said) -> None:
    ip, backends = wired
    assert said in _refused(ip, backends, f"%%llm {ANSWERER} --embed {embed} --check similar:x\nHi")


def test_similar_without_text_is_refused() -> None:
    with pytest.raises(UsageProblem, match="similar needs TEXT"):
        llm_magic.compare("Hi", ANSWERER, checks=["similar:"])


def test_python_entry_points_refuse_a_target_that_cannot_embed(wired) -> None:
    ip, backends = wired
    with pytest.raises(UsageProblem, match="no embeddings endpoint"):
        llm_magic.compare("Hi", ANSWERER, checks=["similar:x"], embed="anthropic:claude-haiku-4-5")
    df = llm_magic.compare("Hi", ANSWERER)
    with pytest.raises(UsageProblem, match="no embeddings endpoint"):
        df.llm.check("similar:x", embed="anthropic:claude-haiku-4-5")
    assert backends.ollama.request_count == 1 and backends.anthropic.request_count == 0


def test_without_similar_checks_no_embedder_is_needed(wired) -> None:
    ip, backends = wired
    ip.run_line_magic("config", "LLMMagics.default_target = 'anthropic:claude-haiku-4-5'")
    df = run_frame(ip, f"%%llm {ANSWERER} -q --check contains:Echo\nHi")
    assert df["passed"].all() and "embed" not in df.attrs


# ---- the embedded model as the embedder ------------------------------------------------------
@pytest.mark.local_model
def test_the_embedded_model_scores_similar_answers_higher(ip) -> None:
    pytest.importorskip("llama_cpp")
    frame = pd.DataFrame(
        {
            "prompt": ["Capital of France?"] * 3,
            "output": [
                "The capital of France is Paris.",
                "Paris is France's capital city.",
                "Bananas are a yellow fruit rich in potassium.",
            ],
            "error": [None, None, None],
        }
    )
    scored = frame.llm.check("similar:Paris is the capital of France.", embed="local:smollm2")
    close, paraphrase, unrelated = scored["score_similar"].tolist()
    assert close > unrelated and paraphrase > unrelated
    assert all(0.0 <= s <= 1.0 for s in (close, paraphrase, unrelated))
    stats = scored.attrs["embed"]
    assert stats["target"] == "local:smollm2" and stats["texts"] == 4 and stats["failed"] == 0


@pytest.mark.local_model
def test_the_embedded_model_embeds_for_the_magic(wired) -> None:
    pytest.importorskip("llama_cpp")
    ip, backends = wired
    cell = (f"%%llm {ANSWERER} --over cases -q --embed local:smollm2 "
            "--check 'similar:{expected}'\n{prompt}")
    df = run_frame(ip, cell)
    first, second = df["score_similar"].tolist()
    assert first > second  # the echo of the capital question is closer to the expected answer
    assert df.attrs["embed"]["requests"] == 1 and df.attrs["embed"]["failed"] == 0
