"""Batch endpoints for the loopback servers, as shared/protocols/batch.md documents them.

OpenAI (`OpenAIBatchWire`, mounted under /v1): `POST /v1/files` (multipart: `file`,
`purpose`), `GET /v1/files/{id}/content`, `POST /v1/batches` ({input_file_id, endpoint,
completion_window: "24h", metadata}), `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`.
Mistral (`MistralBatchWire`): the same files routes, `POST /v1/batch/jobs` ({input_files,
endpoint, model, metadata}), `GET /v1/batch/jobs/{id}`, `POST /v1/batch/jobs/{id}/cancel`.

The input file is checked as each API says it checks it: every line JSON with a unique
`custom_id`; OpenAI's with `method` POST, `url` equal to the batch's endpoint and a `body`
holding `model` (one model per batch) and no `stream: true`; Mistral's `{custom_id, body}`
only. A file that breaks a rule fails validation, its errors (with line numbers) in `errors`.

A batch moves one status each time it is read (`GET`), `steps` reads per status:
validating → in_progress → finalizing → completed (Mistral: QUEUED → RUNNING → SUCCESS).
Its counters grow while in progress. Answers are the fake model's echo (wire.plan_completion);
a request whose last user message holds "[fail]" is answered with HTTP 400 in the error file.
Knobs on `server.batch_knobs` (reset with the server): `fail_validation`, `expire_after` (the
batch expires, `expired` / `TIMEOUT_EXCEEDED`, once that many requests are answered: the rest
are missing from its files), `steps`, `all_failed_output` (an all-failed batch reports
`output_file_id: null`, as observed: batch.md §1.6), `garbage_output` (the output file is an
HTML page). Cancelling moves to cancelling / CANCELLATION_REQUESTED, then at the next read to
cancelled with what was answered so far.

Wire facts not in the protocol notes, and their source: Mistral's output line is taken to be
OpenAI's shape `{id, custom_id, response: {status_code, body}, error}` — batch.md §2.4 says
only `custom_id`, `response.status_code` and `response.body` are confirmed (curator's reader).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .base import Exchange, TestServer
from .wire import plan_completion

__all__ = ["BatchKnobs", "MistralBatchWire", "OpenAIBatchWire"]

_CHAT = "/v1/chat/completions"


@dataclass
class BatchKnobs:
    steps: int = 1  # reads of a batch per status
    fail_validation: bool = False
    expire_after: int | None = None  # requests answered before the batch expires
    all_failed_output: bool = True  # an all-failed batch has output_file_id null
    garbage_output: bool = False  # the output file is an HTML page, not JSONL
    created: list[str] = field(default_factory=list)  # batch ids, in order


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """{field name: (filename, bytes)} of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class _BatchWire:
    """What both APIs share: files, the state machine, the answers. Subclasses say the rest."""

    files_prefix = "/v1/files"
    batches_prefix = ""
    statuses: tuple[str, ...] = ()  # validating/queued, in progress, finalizing, completed
    failed = expired = cancelling = cancelled = ""
    file_extra: dict[str, Any] = {}  # the API's own fields of a file object

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.lock = threading.RLock()  # _end writes files under it
        self.reset()
        server.routes[("POST", self.files_prefix)] = self._upload
        server.routes[("POST", self.batches_prefix)] = self._create
        server.prefix_routes.append((self.files_prefix + "/", self._files))
        server.prefix_routes.append((self.batches_prefix + "/", self._batch))

    def reset(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.server.batch_knobs = BatchKnobs()  # type: ignore[attr-defined]

    @property
    def knobs(self) -> BatchKnobs:
        return self.server.batch_knobs  # type: ignore[attr-defined]

    # -- files --------------------------------------------------------------------------
    def _upload(self, ex: Exchange) -> None:
        if not self._auth(ex):
            return
        ctype = ex.request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return self._error(ex, 400, "files must be uploaded as multipart/form-data")
        fields = parse_multipart(ctype, ex.request.raw)
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if "file" not in fields or purpose != "batch":
            return self._error(ex, 400, f"need a file and purpose=batch, got purpose {purpose!r}")
        filename, data = fields["file"]
        file_id = self._file(data, "batch")
        ex.send_json(200, self.file_object(file_id, filename or "upload", len(data)))

    def _file(self, data: bytes, purpose: str) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with self.lock:
            self.files[file_id] = (data, purpose)
        return file_id

    def _files(self, ex: Exchange, rest: str) -> None:
        if not self._auth(ex):
            return
        file_id, _, tail = rest.partition("/")
        if file_id not in self.files or ex.request.method != "GET" or tail not in ("", "content"):
            return self._error(ex, 404, f"No such File object: {file_id}")
        data, purpose = self.files[file_id]
        if tail == "content":
            return ex.send(200, data, "application/octet-stream")
        ex.send_json(200, self.file_object(file_id, file_id, len(data), purpose))

    # -- batches ------------------------------------------------------------------------
    def _create(self, ex: Exchange) -> None:
        if not self._auth(ex):
            return
        body = ex.body if isinstance(ex.body, dict) else {}
        problem, file_id, model = self.create_problem(body)
        if problem:
            return self._error(ex, 400, problem)
        data, _ = self.files[file_id]
        lines, errors = self.validate(data, model)
        batch = {
            "id": self.batch_id(),
            "input_file_id": file_id,
            "model": model or (lines[0]["body"].get("model") if lines else None),
            "metadata": body.get("metadata") or {},
            "lines": lines,
            "errors": errors,
            "step": 0,
            "reads": 0,
            "answered": [],
            "created_at": int(time.time()),
            "status": self.statuses[0],
        }
        with self.lock:
            self.batches[batch["id"]] = batch
            self.knobs.created.append(batch["id"])
        ex.send_json(200, self.batch_object(batch))

    def _batch(self, ex: Exchange, rest: str) -> None:
        if not self._auth(ex):
            return
        batch_id, _, tail = rest.partition("/")
        batch = self.batches.get(batch_id)
        if batch is None:
            return self._error(ex, 404, f"No batch found with id '{batch_id}'")
        with self.lock:
            if ex.request.method == "POST" and tail == "cancel":
                if batch["status"] not in self.terminal():
                    batch["status"] = self.cancelling
            elif ex.request.method == "GET" and tail == "":
                self._advance(batch)
            else:
                return self._error(ex, 404, "no such route")
        ex.send_json(200, self.batch_object(batch))

    def terminal(self) -> set[str]:
        return {self.statuses[-1], self.failed, self.expired, self.cancelled}

    def _advance(self, batch: dict[str, Any]) -> None:
        """One read: the batch moves on once it has been read `steps` times in its status."""
        if batch["status"] in self.terminal():
            return
        if batch["status"] == self.cancelling:
            return self._end(batch, self.cancelled)
        if batch["status"] == self.statuses[0] and (batch["errors"] or self.knobs.fail_validation):
            if not batch["errors"]:
                batch["errors"] = [
                    {"code": "invalid_request", "message": "validation failed", "line": 1}
                ]
            batch["status"] = self.failed
            return
        batch["reads"] += 1
        if batch["reads"] < self.knobs.steps:
            return
        batch["reads"] = 0
        if batch["status"] == self.statuses[1]:  # in progress: answer half the rest, or all
            todo = batch["lines"][len(batch["answered"]) :]
            now = todo[: max(1, len(todo) // 2)] if len(todo) > 1 else todo
            limit = self.knobs.expire_after
            if limit is not None:
                now = now[: max(0, limit - len(batch["answered"]))]
            batch["answered"] += [self.answer(line) for line in now]
            if limit is not None and len(batch["answered"]) >= limit:
                return self._end(batch, self.expired)
            if len(batch["answered"]) < len(batch["lines"]):
                return
        batch["status"] = self.statuses[self.statuses.index(batch["status"]) + 1]
        if batch["status"] == self.statuses[-1]:
            self._end(batch, batch["status"])

    def _end(self, batch: dict[str, Any], status: str) -> None:
        """Write the output and error files of what was answered; set the final status."""
        batch["status"] = status
        good = [a for a in batch["answered"] if a["response"]["status_code"] < 400]
        bad = [a for a in batch["answered"] if a["response"]["status_code"] >= 400]
        batch["output_file"] = batch["error_file"] = None
        if good or not self.knobs.all_failed_output:
            data = b"".join(json.dumps(a).encode() + b"\n" for a in good)
            if self.knobs.garbage_output:
                data = b"<!doctype html><html><body>Service Unavailable</body></html>"
            batch["output_file"] = self._file(data, "batch_output")
        if bad:
            batch["error_file"] = self._file(
                b"".join(json.dumps(a).encode() + b"\n" for a in bad), "batch_output"
            )

    def answer(self, line: dict[str, Any]) -> dict[str, Any]:
        body = line["body"]
        messages = body.get("messages") or []
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        if users and "[fail]" in str(users[-1]):
            error = {
                "error": {
                    "message": "This request was refused.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
            response = {"status_code": 400, "request_id": request_id, "body": error}
        else:
            c = plan_completion(
                None, None, body.get("model") or "", messages, body.get("max_tokens")
            )
            completion = {
                "id": f"chatcmpl-{c.id_hex[:29]}",
                "object": "chat.completion",
                "created": c.created,
                "model": c.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": c.text},
                        "finish_reason": c.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "total_tokens": c.total_tokens,
                },
            }
            response = {"status_code": 200, "request_id": request_id, "body": completion}
        return {
            "id": f"batch_req_{uuid.uuid4().hex[:16]}",
            "custom_id": line["custom_id"],
            "response": response,
            "error": None,
        }

    # -- helpers ------------------------------------------------------------------------
    def _auth(self, ex: Exchange) -> bool:
        if self.server.bearer_ok(ex):
            return True
        self._error(ex, 401, "Incorrect API key provided.")
        return False

    def _error(self, ex: Exchange, status: int, message: str) -> None:
        ex.send_json(
            status,
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )

    def validate(
        self, data: bytes, model: str | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines, errors, seen = [], [], set()
        for number, raw in enumerate(data.splitlines(), 1):
            try:
                line = json.loads(raw)
            except ValueError:
                errors.append({"code": "invalid_json_line", "message": "not JSON", "line": number})
                continue
            problem = self.line_problem(line, seen)
            if problem:
                errors.append({"code": "invalid_request", "message": problem, "line": number})
                continue
            seen.add(line["custom_id"])
            lines.append(line)
        return lines, errors

    def line_problem(self, line: Any, seen: set[str]) -> str | None:
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            return "custom_id must be a string"
        if line["custom_id"] in seen:
            return f"duplicate custom_id {line['custom_id']}"
        if not isinstance(line.get("body"), dict):
            return "body must be an object"
        if line["body"].get("stream") is True:
            return "stream is not supported in a batch"
        return None

    # subclass vocabulary
    def create_problem(self, body: dict[str, Any]) -> tuple[str | None, str, str | None]:
        raise NotImplementedError

    def batch_id(self) -> str:
        raise NotImplementedError

    def file_object(
        self, file_id: str, filename: str, size: int, purpose: str = "batch"
    ) -> dict[str, Any]:
        return {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            **self.file_extra,
        }

    def batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class OpenAIBatchWire(_BatchWire):
    batches_prefix = "/v1/batches"
    statuses = ("validating", "in_progress", "finalizing", "completed")
    failed, expired, cancelling, cancelled = "failed", "expired", "cancelling", "cancelled"
    file_extra = {"status": "processed"}  # deprecated, still sent

    def create_problem(self, body: dict[str, Any]) -> tuple[str | None, str, str | None]:
        file_id = body.get("input_file_id")
        if body.get("endpoint") != _CHAT:
            return (
                f"endpoint must be one of the batch endpoints, got {body.get('endpoint')!r}",
                "",
                None,
            )
        if body.get("completion_window") != "24h":
            return "completion_window must be '24h'", "", None
        if file_id not in self.files:
            return f"No such File object: {file_id}", "", None
        return None, file_id, None

    def line_problem(self, line: Any, seen: set[str]) -> str | None:
        problem = super().line_problem(line, seen)
        if problem:
            return problem
        if line.get("method") != "POST" or line.get("url") != _CHAT:
            return "method must be POST and url the batch's endpoint"
        if not isinstance(line["body"].get("model"), str):
            return "body.model is required"
        return None

    def validate(
        self, data: bytes, model: str | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines, errors = super().validate(data, model)
        models = {line["body"]["model"] for line in lines}
        if len(models) > 1:
            errors.append(
                {"code": "mismatched_model", "message": "one model per batch", "line": None}
            )
        return lines, errors

    def batch_id(self) -> str:
        return f"batch_{uuid.uuid4().hex[:24]}"

    def batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        answered = batch["answered"]
        failed = sum(1 for a in answered if a["response"]["status_code"] >= 400)
        status = batch["status"]
        return {
            "id": batch["id"],
            "object": "batch",
            "endpoint": _CHAT,
            "model": batch["model"],
            "errors": {"object": "list", "data": batch["errors"]} if batch["errors"] else None,
            "input_file_id": batch["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.get("output_file"),
            "error_file_id": batch.get("error_file") or "",  # "" when there is none, as observed
            "created_at": batch["created_at"],
            "in_progress_at": None,
            "expires_at": batch["created_at"] + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {
                "total": 0 if status == "validating" else len(batch["lines"]),
                "completed": len(answered) - failed,
                "failed": failed,
            },
            "metadata": batch["metadata"],
        }


class MistralBatchWire(_BatchWire):
    batches_prefix = "/v1/batch/jobs"
    statuses = ("QUEUED", "RUNNING", "RUNNING_DONE", "SUCCESS")
    failed, expired = "FAILED", "TIMEOUT_EXCEEDED"
    cancelling, cancelled = "CANCELLATION_REQUESTED", "CANCELLED"
    file_extra = {"sample_type": "batch_request", "source": "upload"}

    def create_problem(self, body: dict[str, Any]) -> tuple[str | None, str, str | None]:
        files = body.get("input_files")
        if body.get("endpoint") != _CHAT:
            return f"endpoint {body.get('endpoint')!r} is not supported", "", None
        if not isinstance(files, list) or len(files) != 1 or files[0] not in self.files:
            return "input_files must list uploaded files", "", None
        return None, files[0], body.get("model")

    def line_problem(self, line: Any, seen: set[str]) -> str | None:
        problem = super().line_problem(line, seen)
        if problem:
            return problem
        extra = set(line) - {"custom_id", "body"}
        return f"unknown fields {sorted(extra)}" if extra else None

    def batch_id(self) -> str:
        return str(uuid.uuid4())

    def batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        answered = batch["answered"]
        failed = sum(1 for a in answered if a["response"]["status_code"] >= 400)
        status = batch["status"]
        errors = [
            {"message": f"line {e['line']}: {e['message']}", "count": 1} for e in batch["errors"]
        ]
        return {
            "id": batch["id"],
            "object": "batch",
            "input_files": [batch["input_file_id"]],
            "metadata": batch["metadata"],
            "endpoint": _CHAT,
            "model": batch["model"],
            "output_file": batch.get("output_file"),
            "error_file": batch.get("error_file"),
            "errors": errors,
            # RUNNING_DONE is this server's own between-state; the wire only says RUNNING
            "status": "RUNNING" if status == "RUNNING_DONE" else status,
            "created_at": batch["created_at"],
            "total_requests": len(batch["lines"]),
            "completed_requests": len(answered),
            "succeeded_requests": len(answered) - failed,
            "failed_requests": failed,
            "started_at": None,
            "completed_at": None,
        }
