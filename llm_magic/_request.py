"""`Request`: everything one run asks for, whichever entry point it came from.

The magic's parser, `compare()`, `complete()` and the panel each build one; `plan.py` turns it
into jobs. A new capability is a new field here (and its handling in the planner): every
entry point then has it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import UsageProblem

__all__ = ["Request"]


@dataclass(frozen=True, eq=False)
class Request:
    """What to ask, of whom, and how. `None` means "the configured setting, else the default".

    `prompts` are sent as written unless `variables` is given: then each is a template whose
    `{name}` fields are filled from it (the notebook's namespace), and from each item of `over`
    (a list, Series or DataFrame: one prompt per item, `over_name` naming it in messages).
    """

    prompts: tuple[str, ...]
    targets: tuple[str, ...] = ()
    system: str | None = None
    variables: Mapping[str, Any] | None = None
    over: Any = None
    over_name: str = "over"
    # sampling
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    # how the run goes
    repeat: int = 1
    stream: bool = True
    timeout: float | None = None  # seconds without a byte
    deadline: float | None = None  # seconds in all for one row, retries included; 0: none
    retries: int | None = None
    concurrency: int | None = None
    cache: bool | None = None
    chat: bool = False  # continue each target's conversation (the session keeps them)
    format: str = "markdown"  # how the answers are shown
    # checks.py: spec strings, functions, schemas (or a {name: check} dict); () adds no columns
    checks: Any = ()
    judge: str | None = None  # the target of judge: checks (None: the default target)
    # with the (last user) prompt: paths, http(s) URLs, bytes or PIL images (_images.py)
    images: Any = ()
    # tool calls: functions / Pydantic model classes the model may call; run_tools runs the
    # calls in the kernel and sends the results back, at most max_steps requests per row
    tools: Any = ()
    run_tools: bool = False
    max_steps: int = 5
    # provider batch APIs (_batch_plan.py): batchable targets go as batches, the rest live
    batch: bool = False
    wait: bool = False  # with batch: poll until the batches end and return their rows
    embed: str | None = None  # the target that embeds for similar: checks (None: the default)
    # structured output (_schema.py): a JSON Schema dict or a Pydantic model class; None: text
    schema: Any = None
    # Finish an earlier run of this same request (_resume.py): True for the newest one, or a
    # run id; only rows without an answer are sent.
    resume: bool | str | None = None

    @classmethod
    def build(
        cls,
        where: str,
        prompts: tuple[str, ...],
        targets: tuple[str, ...],
        options: Mapping[str, Any],
    ) -> Request:
        """A request from keyword options (compare(), complete()); an unknown name is refused
        with the closest known one."""
        known = [f.name for f in fields(cls) if f.name not in _NOT_OPTIONS]
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]}=?" if close else f"; known: {', '.join(known)}"
                raise UsageProblem(f"{where} got an unknown option {name}={options[name]!r}{hint}")
        values = dict(options)
        if values.get("stop") is not None:
            stop = values["stop"]
            values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        return cls(prompts=prompts, targets=targets, **values)


_NOT_OPTIONS = ("prompts", "targets", "variables", "over_name")
