"""Batch files for self-hosted servers: the OpenAI batch input format `vllm run-batch` reads,
and its output file (both shapes vLLM has written, batch.md §3) back into a run's frame."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import llm_magic
from llm_magic.errors import UsageProblem
from llm_magic.results import DTYPES


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_batch_file_writes_one_openai_batch_line_per_request(tmp_path) -> None:
    path = llm_magic.batch_file(
        ["Why is the sky blue?", "What is {x}?"],
        ["vllm:Qwen/Qwen3-8B", "llamacpp:smollm2"],
        path=tmp_path / "in.jsonl",
        system="Be brief",
        max_tokens=32,
        temperature=0,
        stop=["\n\n"],
        repeat=2,
    )
    lines = _lines(path)
    assert len(lines) == 8  # prompt x target x repeat
    first = lines[0]
    assert set(first) == {"custom_id", "method", "url", "body"}
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
    assert first["custom_id"] == "0.0.vllm:Qwen/Qwen3-8B"
    assert first["body"] == {
        "model": "Qwen/Qwen3-8B",
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
        "temperature": 0,
        "max_tokens": 32,
        "stop": ["\n\n"],
    }
    assert lines[3]["custom_id"] == "3.1.llamacpp:smollm2"
    assert lines[7]["body"]["messages"][-1]["content"] == "What is {x}?"  # no fields: as written
    assert len({line["custom_id"] for line in lines}) == 8


def _vllm_output(
    inputs: Path, out: Path, *, old_shape_for: int = -1, fail: int = -1, drop: int = -1
):
    """What `vllm run-batch` writes for `inputs` (batch.md §3): one line per request in input
    order, the answer wrapped in {status_code, request_id, body}, or (older versions) bare."""
    written = []
    for i, line in enumerate(_lines(inputs)):
        if i == drop:
            continue
        body = line["body"]
        completion = {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"answer {i}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10 + i, "completion_tokens": 2, "total_tokens": 12 + i},
        }
        if i == fail:
            response = {"status_code": 400, "request_id": f"vllm-batch-{i}", "body": None}
            error = "The model `nope` does not exist."
        elif i == old_shape_for:
            response, error = completion, None
        else:
            response = {"status_code": 200, "request_id": f"vllm-batch-{i}", "body": completion}
            error = None
        written.append(
            {
                "id": f"vllm-{i}",
                "custom_id": line["custom_id"],
                "response": response,
                "error": error,
            }
        )
    out.write_text("".join(json.dumps(w) + "\n" for w in written))


def test_read_batch_output_gives_the_run_frame(tmp_path) -> None:
    inputs = llm_magic.batch_file(
        ["a", "b", "c"], "vllm:Qwen/Qwen3-8B", path=tmp_path / "in.jsonl", system="S", seed=3
    )
    out = tmp_path / "out.jsonl"
    _vllm_output(inputs, out, old_shape_for=1, fail=2)
    df = llm_magic.read_batch_output(out, inputs)
    assert {c: str(t) for c, t in df.dtypes.items()} == {**DTYPES, "batched": "boolean"}
    assert df["prompt"].tolist() == ["a", "b", "c"]
    assert df["output"].tolist() == ["answer 0", "answer 1", ""]
    assert df["target"].tolist() == ["vllm:Qwen/Qwen3-8B"] * 3
    assert df["params"].iloc[0] == {"system": "S", "seed": 3}
    assert df["prompt_tokens"].tolist()[:2] == [10, 11]
    assert df["error"].iloc[2] == "HTTP 400: The model `nope` does not exist."
    assert df["cost_usd"].iloc[0] == 0.0  # a local server
    assert math.isnan(df["latency_s"].iloc[0]) and df["batched"].all()
    assert df["run_id"].nunique() == 1
    # without the input file: the rows still name their targets and repeats, not prompts
    bare = llm_magic.read_batch_output(out)
    assert bare["target"].tolist() == ["vllm:Qwen/Qwen3-8B"] * 3 and bare["prompt"].eq("").all()


def test_a_request_missing_from_the_output_is_a_row_with_an_error(tmp_path) -> None:
    inputs = llm_magic.batch_file(["a", "b"], "vllm:m", path=tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    _vllm_output(inputs, out, drop=0)
    df = llm_magic.read_batch_output(out, inputs)
    assert df["error"].tolist()[0] == "not in the output file"
    assert df["output"].tolist() == ["", "answer 1"]


def test_a_frame_becomes_a_batch_file_and_comes_back(ip, tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real-000000")
    df = llm_magic.compare(["one", "two"], ["openai:gpt-4o-mini"], max_tokens=5, system="Sys")
    path = df.llm.to_batch_file(tmp_path / "again.jsonl")
    lines = _lines(path)
    assert [line["body"]["messages"][-1]["content"] for line in lines] == ["one", "two"]
    assert lines[0]["body"]["max_tokens"] == 5 and lines[0]["body"]["model"] == "gpt-4o-mini"
    assert lines[0]["body"]["messages"][0] == {"role": "system", "content": "Sys"}
    assert lines[1]["custom_id"] == "1.0.openai:gpt-4o-mini"
    # an OpenAI output file downloaded by hand reads back at the batch price
    out = tmp_path / "out.jsonl"
    _vllm_output(path, out)
    back = llm_magic.read_batch_output(out, path, provider="openai")
    assert back["target"].tolist() == ["openai:gpt-4o-mini"] * 2
    from llm_magic._pricing import price

    rates = price("openai", "gpt-4o-mini")
    assert back["cost_usd"].iloc[0] == pytest.approx((10 * rates[0] + 2 * rates[1]) / 1e6 / 2)


def test_an_output_file_of_another_format_is_one_line(tmp_path) -> None:
    inputs = llm_magic.batch_file(["a"], "vllm:m", path=tmp_path / "in.jsonl")
    with pytest.raises(UsageProblem, match=r"in\.jsonl, line 1, is not a batch output line"):
        llm_magic.read_batch_output(inputs)  # the input file, not its output
    csv = tmp_path / "cases.csv"
    pd.DataFrame({"prompt": ["x"]}).to_csv(csv, index=False)
    with pytest.raises(UsageProblem, match=r"cases\.csv, line 1, is not a batch output line"):
        llm_magic.read_batch_output(csv)
    with pytest.raises(UsageProblem, match="cannot read"):
        llm_magic.read_batch_output(tmp_path / "missing.jsonl")
    with pytest.raises(UsageProblem, match="batch_file\\(\\) writes requests; checks= is"):
        llm_magic.batch_file(["a"], "vllm:m", path=tmp_path / "x.jsonl", checks=["json"])
