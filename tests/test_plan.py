"""The one planner: every entry point builds a Request and gets the same checks and jobs."""

from __future__ import annotations

import pandas as pd
import pytest

from llm_magic._plan import make_plan
from llm_magic._request import Request
from llm_magic._session import Session
from llm_magic.errors import UsageProblem

TARGETS = ("openai:gpt-4o-mini", "ollama:llama3.2")


def test_jobs_are_prompt_by_target_by_repeat() -> None:
    plan = make_plan(Request(("a", "b"), TARGETS, repeat=2), Session())
    shape = [(j.prompt, j.spec.label, j.repeat) for j in plan.jobs]
    assert shape[:4] == [("a", TARGETS[0], 0), ("a", TARGETS[0], 1), ("a", TARGETS[1], 0),
                         ("a", TARGETS[1], 1)]
    assert len(shape) == 8 and [j.index for j in plan.jobs] == list(range(8))
    assert plan.labels == TARGETS


def test_over_fills_the_templates_and_the_system_prompt_per_item() -> None:
    cases = pd.DataFrame({"topic": ["tides", "rust"], "tone": ["dry", "warm"]})
    request = Request(("About {topic}",), TARGETS[:1], system="Be {tone}", variables={},
                      over=cases, over_name="cases")
    plan = make_plan(request, Session())
    assert [j.prompt for j in plan.jobs] == ["About tides", "About rust"]
    assert [j.messages[0].content for j in plan.jobs] == ["Be dry", "Be warm"]


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (Request(("x",), chat=True, over=["a"]), "--chat cannot be combined with --over"),
        (Request(("x",), chat=True, repeat=2), "--chat cannot be combined with -r/--repeat"),
        (Request(("x",), format="pdf"), "unknown format 'pdf'"),
        (Request(("x",), temperature=3), "temperature 3 is out of range"),
        (Request(("x",), deadline=-1), "deadline -1 is out of range"),
        (Request(("  ",)), "empty"),
        (Request(()), "no prompt"),
        (Request(("{nope}",), variables={}), "'nope' is not defined"),
    ],
)
def test_bad_requests_are_one_line_before_anything_is_sent(request_: Request, words: str) -> None:
    with pytest.raises(UsageProblem) as info:
        make_plan(request_, Session())
    assert words in info.value.message and "\n" not in info.value.message


def test_keyword_options_are_checked_by_name() -> None:
    with pytest.raises(UsageProblem) as info:
        Request.build("compare()", ("x",), (), {"temprature": 0.5})
    assert "unknown option temprature=0.5" in info.value.message
    assert "did you mean temperature=" in info.value.message
    assert Request.build("compare()", ("x",), (), {"stop": "END"}).stop == ("END",)


def test_deadline_comes_from_the_settings_and_zero_means_none(monkeypatch) -> None:
    assert make_plan(Request(("x",)), Session()).policy.deadline == 600
    assert make_plan(Request(("x",), deadline=0), Session()).policy.deadline is None
    monkeypatch.setenv("LLM_MAGIC_DEADLINE", "30")
    assert make_plan(Request(("x",)), Session()).policy.deadline == 30
    configured = Session(settings=lambda: {"deadline": 5.0})  # as %config LLMMagics.deadline
    assert make_plan(Request(("x",)), configured).policy.deadline == 5
    assert make_plan(Request(("x",), deadline=2), configured).policy.deadline == 2
