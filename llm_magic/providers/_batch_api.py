"""Provider batch APIs: OpenAI's `/v1/files` + `/v1/batches` and Mistral's `/v1/files` +
`/v1/batch/jobs`, as shared/protocols/batch.md describes them.

One class per wire, over a small `BatchTransport` (JSON calls, a multipart upload, a bounded
download) that each provider module supplies: OpenAI's through its SDK client, Mistral's
through its `HTTPService`. What differs between the two wires is all here:

|              | OpenAI                                    | Mistral                             |
| input line   | {custom_id, method, url, body}            | {custom_id, body}                   |
| create       | POST /batches {input_file_id, endpoint,   | POST /v1/batch/jobs {input_files,   |
|              |  completion_window: "24h", metadata}      |  endpoint, model, metadata}         |
| status words | validating … completed (lower-case)       | QUEUED … SUCCESS (upper-case)       |
| counters     | request_counts {total, completed, failed} | total/succeeded/failed_requests     |
| result files | output_file_id, error_file_id ("" = none) | output_file, error_file             |

Both take a batch at half the synchronous price (batch.md §1.7, §2.4). A line's own `stream`
is never sent: batches do not stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx2

from .. import errors
from .._pricing import BATCH_PRICE_FACTOR
from .base import BatchState, Message, Options

if TYPE_CHECKING:
    from ._http import HTTPService

__all__ = [
    "BATCH_TIMEOUT",
    "BatchAPI",
    "BatchTransport",
    "MistralBatches",
    "OpenAIBatches",
    "ServiceTransport",
]

# An input file may be 200 MB: uploads and downloads get minutes, not the chat's read timeout.
BATCH_TIMEOUT = httpx2.Timeout(300.0, connect=5.0)

# The most a result file may hold before the download is refused (a reply is untrusted):
# OpenAI's own cap on a file.
DOWNLOAD_LIMIT = 512 * 1024 * 1024
_CHAT = "/v1/chat/completions"


class BatchTransport(Protocol):
    def json(self, method: str, path: str, body: Any = None) -> Any: ...

    def upload(self, path: str, data: bytes, filename: str, fields: Mapping[str, str]) -> Any: ...

    def download(self, path: str, limit: int) -> bytes: ...


class ServiceTransport:
    """The batch calls of a provider that speaks through an `HTTPService` (Mistral)."""

    def __init__(self, http: HTTPService) -> None:
        self._http = http

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return self._http.call_json(method, path, json_body=body, timeouts=BATCH_TIMEOUT)

    def upload(self, path: str, data: bytes, filename: str, fields: Mapping[str, str]) -> Any:
        return self._http.upload(path, data, filename, dict(fields), timeouts=BATCH_TIMEOUT)

    def download(self, path: str, limit: int) -> bytes:
        return self._http.download(path, limit, timeouts=BATCH_TIMEOUT)


BodyMaker = Callable[[list[Message], str, Options], dict[str, Any]]


class BatchAPI:
    """One provider's batch service. `line()` is pure; the rest are one request each and
    raise `llm_magic.errors` (a server's refusal in its own words)."""

    wire: ClassVar[str] = ""
    max_requests: ClassVar[int] = 50_000  # per input file
    max_bytes: ClassVar[int] = 200 * 1024 * 1024  # per input file
    price_factor: ClassVar[float] = BATCH_PRICE_FACTOR  # of the synchronous price
    files_path: ClassVar[str] = "/files"
    batches_path: ClassVar[str] = "/batches"
    terminal: ClassVar[frozenset[str]] = frozenset()
    # The terminal words that leave requests unanswered, and what a row missing from such a
    # batch says; any other terminal word means the batch itself answered every line.
    missing_reason: ClassVar[dict[str, str]] = {}

    def __init__(self, name: str, transport: BatchTransport, body: BodyMaker) -> None:
        self.name = name
        self._transport = transport
        self._body = body

    def line(self, custom_id: str, messages: list[Message], model: str, options: Options) -> bytes:
        raise NotImplementedError

    def upload(self, data: bytes) -> str:
        """Upload an input file (purpose `batch`); its file id."""
        reply = self._transport.upload(
            self.files_path, data, "llm_magic_batch.jsonl", {"purpose": "batch"}
        )
        file_id = reply.get("id") if isinstance(reply, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise errors.BadResponse(
                f"{self.files_path} replied without a file id", provider=self.name
            )
        return file_id

    def create_body(self, file_id: str, model: str, metadata: Mapping[str, str]) -> dict:
        raise NotImplementedError

    def create(self, file_id: str, model: str, metadata: Mapping[str, str]) -> BatchState:
        """Start a batch of an uploaded file's requests, all to `model`."""
        body = self.create_body(file_id, model, metadata)
        return self._state(self._transport.json("POST", self.batches_path, body))

    def state(self, batch_id: str) -> BatchState:
        return self._state(self._transport.json("GET", f"{self.batches_path}/{batch_id}"))

    def cancel(self, batch_id: str) -> BatchState:
        return self._state(self._transport.json("POST", f"{self.batches_path}/{batch_id}/cancel"))

    def download(self, file_id: str) -> bytes:
        return self._transport.download(f"{self.files_path}/{file_id}/content", DOWNLOAD_LIMIT)

    def _state(self, reply: Any) -> BatchState:
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
            raise errors.BadResponse("the batch reply is not a batch object", provider=self.name)
        return self._read(reply)

    def _read(self, reply: dict[str, Any]) -> BatchState:
        raise NotImplementedError


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _file(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None  # "" means none (batch.md §1.6)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


class OpenAIBatches(BatchAPI):
    wire = "openai"
    terminal = frozenset({"failed", "completed", "expired", "cancelled"})
    missing_reason = {
        "failed": "the batch failed validation",
        "expired": "the batch expired (24 h window) before this request was done",
        "cancelled": "the batch was cancelled before this request was done",
    }

    def line(self, custom_id: str, messages: list[Message], model: str, options: Options) -> bytes:
        return self.line_for(custom_id, self._body(messages, model, options))

    @staticmethod
    def line_for(custom_id: str, body: dict[str, Any]) -> bytes:
        """The input line of a request `body` (its streaming fields dropped)."""
        body.pop("stream", None)
        body.pop("stream_options", None)
        return _dumps({"custom_id": custom_id, "method": "POST", "url": _CHAT, "body": body})

    def create_body(self, file_id: str, model: str, metadata: Mapping[str, str]) -> dict:
        return {
            "input_file_id": file_id,
            "endpoint": _CHAT,
            "completion_window": "24h",
            "metadata": dict(metadata),
        }

    def _read(self, reply: dict[str, Any]) -> BatchState:
        status = str(reply.get("status") or "").lower()
        counts = (
            reply.get("request_counts") if isinstance(reply.get("request_counts"), dict) else {}
        )
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        problems = reply.get("errors") if isinstance(reply.get("errors"), dict) else {}
        said = [
            f"line {e['line']}: {e.get('message')}"
            if _int(e.get("line"))
            else str(e.get("message"))
            for e in problems.get("data") or []
            if isinstance(e, dict)
        ]
        return BatchState(
            id=reply["id"],
            status=status,
            done=status in self.terminal,
            total=_int(counts.get("total")),
            succeeded=_int(counts.get("completed")),
            failed=_int(counts.get("failed")),
            output_file=_file(reply.get("output_file_id")),
            error_file=_file(reply.get("error_file_id")),
            created_at=_int(reply.get("created_at")),
            problem="; ".join(said) or None,
            missing_reason=self.missing_reason.get(status),
            prompt_tokens=_int(usage.get("input_tokens")),
            completion_tokens=_int(usage.get("output_tokens")),
        )


class MistralBatches(BatchAPI):
    wire = "mistral"
    # No per-file request count is documented; 1,000,000 pending requests per workspace is.
    max_requests = 1_000_000
    max_bytes = 512 * 1024 * 1024
    files_path = "/v1/files"
    batches_path = "/v1/batch/jobs"
    terminal = frozenset({"success", "failed", "timeout_exceeded", "cancelled"})
    missing_reason = {
        "failed": "the batch job failed",
        "timeout_exceeded": "the batch job timed out before this request was done",
        "cancelled": "the batch job was cancelled before this request was done",
    }

    def line(self, custom_id: str, messages: list[Message], model: str, options: Options) -> bytes:
        body = self._body(messages, model, options)
        body.pop("stream", None)
        return _dumps({"custom_id": custom_id, "body": body})

    def create_body(self, file_id: str, model: str, metadata: Mapping[str, str]) -> dict:
        return {
            "input_files": [file_id],
            "endpoint": _CHAT,
            "model": model,
            "metadata": dict(metadata),
        }

    def _read(self, reply: dict[str, Any]) -> BatchState:
        status = str(reply.get("status") or "").lower()
        problems = reply.get("errors") if isinstance(reply.get("errors"), list) else []
        said = [str(e.get("message")) for e in problems if isinstance(e, dict)]
        return BatchState(
            id=reply["id"],
            status=status,
            done=status in self.terminal,
            total=_int(reply.get("total_requests")),
            succeeded=_int(reply.get("succeeded_requests")),
            failed=_int(reply.get("failed_requests")),
            output_file=_file(reply.get("output_file")),
            error_file=_file(reply.get("error_file")),
            created_at=_int(reply.get("created_at")),
            problem="; ".join(said) or None,
            missing_reason=self.missing_reason.get(status),
        )
