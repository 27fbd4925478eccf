"""Parse the `%%llm` line and cell into a frozen `Command`, and `%llm` lines into subcommands.

Nothing here knows IPython or sends anything: every mistake becomes one `UsageProblem` line that
names the bad option or value and says what is allowed.
"""

from __future__ import annotations

import argparse
import keyword
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._checks import (
    DEFAULT_THRESHOLD,
    SIMILAR_THRESHOLD,
    CheckSpec,
    compile_checks,
    parse_check,
)
from ._images import image_names
from ._ranges import RANGES, Range
from ._request import Request
from ._schema import schema_named
from .errors import UsageProblem

__all__ = [
    "FORMATS",
    "SUBCOMMANDS",
    "Command",
    "parse_command",
    "parse_subcommand",
    "split_line",
    "usage_text",
]

FORMATS: tuple[str, ...] = ("markdown", "text", "code", "json", "html")

# Subcommand -> (arguments as shown in help, the numbers of arguments it takes; None: any).
SUBCOMMANDS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "models": ("[PROVIDER]", (0, 1)),
    "status": ("", (0,)),
    "providers": ("", (0,)),
    "pull": ("ollama:MODEL", (1,)),
    "rm": ("ollama:MODEL | local:MODEL", (1,)),
    "show": ("TARGET", (1,)),
    "ps": ("", (0,)),
    "alias": ("[NAME TARGET]", (0, 2)),
    "config": ("", (0,)),
    "history": ("[N]", (0, 1)),
    "resume": ("RUN_ID", (1,)),
    "reset": ("[TARGET ...]", None),
    "panel": ("[TARGET ...]", None),
    "batches": ("", (0,)),
    "collect": ("ID | RUN_ID | all", (1,)),
    "cancel": ("ID", (1,)),
    "help": ("", (0,)),
}


@dataclass(frozen=True)
class Command:
    """What one `%%llm` cell asks for. `None` means "use the configured default"."""

    targets: tuple[str, ...] = ()
    template: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    system: str | None = None
    stop: tuple[str, ...] | None = None
    repeat: int = 1
    over: str | None = None
    out: str | None = None
    format: str = "markdown"
    stream: bool = True
    timeout: float | None = None
    deadline: float | None = None
    retries: int | None = None
    concurrency: int | None = None
    cache: bool | None = None
    chat: bool = False
    quiet: bool = False
    interpolate: bool = True
    help: bool = False
    checks: tuple[CheckSpec, ...] = ()
    judge: str | None = None
    images: tuple[str, ...] = ()  # --image words: a notebook variable's name, or a path or URL
    tools: tuple[str, ...] = ()  # names of notebook functions (or Pydantic model classes)
    run_tools: bool = False
    max_steps: int = 5
    batch: bool = False
    wait: bool = False
    embed: str | None = None
    schema: str | None = None  # the notebook variable holding the schema
    resume: bool = False

    def request(self, namespace: Mapping[str, Any]) -> Request:
        """The run this cell asks for; `--over VAR` and `{name}` fields read `namespace`."""
        over = None
        if self.over:
            if self.over not in namespace:
                raise UsageProblem(f"--over {self.over}: no variable {self.over!r} in the notebook")
            over = namespace[self.over]
        schema = schema_named(self.schema, namespace) if self.schema else None
        return Request(
            prompts=(self.template,),
            targets=self.targets,
            system=self.system,
            variables=namespace if self.interpolate else None,
            over=over,
            over_name=self.over or "over",
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
            repeat=self.repeat,
            stream=self.stream,
            timeout=self.timeout,
            deadline=self.deadline,
            retries=self.retries,
            concurrency=self.concurrency,
            cache=self.cache,
            chat=self.chat,
            format=self.format,
            checks=compile_checks(self.checks, namespace),
            judge=self.judge,
            images=tuple(image_names(self.images, namespace)),
            tools=tuple(_tool(name, namespace) for name in self.tools),
            run_tools=self.run_tools,
            max_steps=self.max_steps,
            batch=self.batch,
            wait=self.wait,
            embed=self.embed,
            schema=schema,
            resume=self.resume or None,
        )


def _tool(name: str, namespace: Mapping[str, Any]) -> Any:
    if name not in namespace:
        raise UsageProblem(f"--tools {name}: no function {name!r} in the notebook")
    return namespace[name]


def split_line(line: str) -> list[str]:
    """Split a magic line into words with shell quoting.

    Backslashes are kept as typed (no shell escapes) so `local:C:\\models\\x.gguf` survives, and
    `#` is not a comment: both are common in paths and system prompts.
    """
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:
        raise UsageProblem(
            "unbalanced quote in the magic line: close every ' and \" you open"
        ) from None


# --- value checkers: each raises ArgumentTypeError, which argparse prefixes with the option ---


def _ranged(limits: Range) -> Callable[[str], Any]:
    kind = "a whole number" if limits.whole else "a number"

    def check(text: str) -> int | float:
        try:
            value = int(text) if limits.whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {kind}; allowed: {limits.allowed}"
            ) from None
        why = limits.problem(value)
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return value

    return check


def _identifier(text: str) -> str:
    if keyword.iskeyword(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a Python keyword, not a variable name")
    if not text.isidentifier():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Python variable name (letters, digits and _, not starting "
            "with a digit)"
        )
    return text


def _format_name(text: str) -> str:
    if text.lower() not in FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a format; allowed: {', '.join(FORMATS)}")
    return text.lower()


def _check(text: str) -> CheckSpec:
    try:
        return parse_check(text)
    except UsageProblem as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError('the text is empty; quote it, e.g. -s "You are terse"')
    return text


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _stop(text: str) -> str:
    # Backslashes reach us as typed, so `--stop "\n"` is decoded here to mean a newline.
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    if not out:
        raise argparse.ArgumentTypeError("the text is empty; give the text that ends an answer")
    return "".join(out)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that never prints or exits: every complaint is a UsageProblem."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageProblem(_tidy(message))

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageProblem(_tidy(message or "invalid magic line"))


def _tidy(message: str) -> str:
    """Turn argparse's wording into ours."""
    message = message.strip()
    if message.startswith("unrecognized arguments: "):
        words = message.removeprefix("unrecognized arguments: ")
        return f"unknown option {words}; see %llm help for the options"
    if message.startswith("argument "):
        message = message.removeprefix("argument ")
    message = message.replace("not allowed with argument ", "not allowed with ")
    if message.endswith(": expected one argument"):
        return message.removesuffix(": expected one argument") + " needs a value"
    return message


def _build_parser() -> _Parser:
    p = _Parser(prog="%%llm", add_help=False, allow_abbrev=False, exit_on_error=False)
    p.add_argument("targets", nargs="*")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-t", "--temperature", type=_ranged(RANGES["temperature"]))
    p.add_argument("-n", "--max-tokens", type=_ranged(RANGES["max_tokens"]))
    p.add_argument("--top-p", type=_ranged(RANGES["top_p"]))
    p.add_argument("--seed", type=_ranged(RANGES["seed"]))
    p.add_argument("-s", "--system", type=_text)
    p.add_argument("--stop", type=_stop, action="append")
    p.add_argument("-r", "--repeat", type=_ranged(RANGES["repeat"]), default=1)
    p.add_argument("--over", type=_identifier)
    p.add_argument("-o", "--out", type=_identifier)
    p.add_argument("-f", "--format", type=_format_name, default="markdown")
    p.add_argument("--no-stream", dest="stream", action="store_false")
    p.add_argument("--timeout", type=_ranged(RANGES["timeout"]))
    p.add_argument("--deadline", type=_ranged(RANGES["deadline"]))
    p.add_argument("--retries", type=_ranged(RANGES["retries"]))
    p.add_argument("-c", "--concurrency", type=_ranged(RANGES["concurrency"]))
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache", dest="cache", action="store_const", const=True)
    cache.add_argument("--no-cache", dest="cache", action="store_const", const=False)
    p.add_argument("--chat", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-interpolate", dest="interpolate", action="store_false")
    p.add_argument("--check", dest="checks", type=_check, action="append", default=[])
    p.add_argument("--judge")
    p.add_argument("--image", dest="images", type=_text, action="append", default=[])
    p.add_argument("--tools", type=_identifier, nargs="+", action="extend", default=[])
    p.add_argument("--run-tools", action="store_true")
    p.add_argument("--max-steps", type=_ranged(RANGES["max_steps"]), default=5)
    p.add_argument("--batch", action="store_true")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--embed")
    p.add_argument("--schema", type=_identifier)
    p.add_argument("--resume", action="store_true")
    return p


_PARSER = _build_parser()


def _prompt_text(cell: str) -> str:
    """The cell without blank lines before the prompt or whitespace after it."""
    lines = cell.rstrip().splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def parse_command(line: str, cell: str | None) -> Command:
    """Parse `%%llm LINE` + CELL. `cell=None` is the line form, which carries no prompt."""
    words = split_line(line)
    try:
        ns = _PARSER.parse_intermixed_args(words)
    except argparse.ArgumentError as exc:  # exit_on_error=False hands these to us
        raise UsageProblem(_tidy(str(exc))) from None
    template = "" if cell is None else _prompt_text(cell)
    if cell is not None and not template and not ns.help:
        raise UsageProblem("the cell is empty: write the prompt below %%llm")
    if ns.over and not ns.interpolate:
        raise UsageProblem("--over fills {fields} of the cell; it cannot go with --no-interpolate")
    return Command(
        targets=tuple(ns.targets),
        template=template,
        temperature=ns.temperature,
        max_tokens=ns.max_tokens,
        top_p=ns.top_p,
        seed=ns.seed,
        system=ns.system,
        stop=tuple(ns.stop) if ns.stop else None,
        repeat=ns.repeat,
        over=ns.over,
        out=ns.out,
        format=ns.format,
        stream=ns.stream,
        timeout=ns.timeout,
        deadline=ns.deadline,
        retries=ns.retries,
        concurrency=ns.concurrency,
        cache=ns.cache,
        chat=ns.chat,
        quiet=ns.quiet,
        interpolate=ns.interpolate,
        help=ns.help,
        checks=tuple(ns.checks),
        judge=ns.judge,
        images=tuple(ns.images),
        tools=tuple(ns.tools),
        run_tools=ns.run_tools,
        max_steps=ns.max_steps,
        batch=ns.batch,
        wait=ns.wait,
        embed=ns.embed,
        schema=ns.schema,
        resume=ns.resume,
    )


def parse_subcommand(line: str) -> tuple[str, list[str]]:
    """Parse `%llm SUBCOMMAND args`. An empty line, `-h` and `--help` mean `help`."""
    words = split_line(line)
    if not words or words[0] in ("-h", "--help"):
        return "help", words[1:]
    name, args = words[0], words[1:]
    if name not in SUBCOMMANDS:
        known = ", ".join(SUBCOMMANDS)
        hint = " (a prompt goes in a %%llm cell)" if ":" in name else ""
        raise UsageProblem(f"unknown subcommand {name!r}{hint}; known subcommands: {known}")
    shape, counts = SUBCOMMANDS[name]
    if counts is not None and len(args) not in counts:
        raise UsageProblem(f"usage: %llm {name} {shape}".rstrip())
    if name == "history" and args:
        _history_count(args[0])
    return name, args


def _history_count(text: str) -> int:
    try:
        return _ranged(Range(1, whole=True))(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageProblem(f"%llm history N: {exc}") from None


def usage_text() -> str:
    """Help shown by `%llm help` and `%%llm --help`."""
    subs = "\n".join(f"  %llm {name} {shape}".rstrip() for name, (shape, _) in SUBCOMMANDS.items())
    allowed = {name: limits.allowed for name, limits in RANGES.items()}
    return f"""\
%%llm [TARGET ...] [options]
prompt template, may use {{name}} from the notebook ({{{{ and }}}} for literal braces)

TARGET is provider:model (ollama:llama3.2:1b), an alias, or a fallback chain a|b|c.
No target: the configured default target.

Options:
  -t, --temperature T     sampling temperature, {allowed["temperature"]}
  -n, --max-tokens N      most tokens to generate, {allowed["max_tokens"]}
  --top-p P               nucleus sampling, {allowed["top_p"]}
  --seed N                sampling seed, {allowed["seed"]}
  -s, --system TEXT       system prompt, quoted: -s "You are terse"
  --stop TEXT             stop sequence (repeatable; "\\n" is a newline)
  -r, --repeat N          ask each target N times, {allowed["repeat"]}
  --over VAR              render the cell once per item of a list or Series ({{item}} or
                          {{VAR}}) or per row of a DataFrame ({{column}})
  -o, --out VAR           also store the result DataFrame in VAR
  -f, --format FMT        {" | ".join(FORMATS)} (default markdown)
  --no-stream             show answers only when complete
  --timeout S             seconds without a byte before a request fails, {allowed["timeout"]}
  --deadline S            seconds in all for one answer, retries included ({allowed["deadline"]};
                          0: none)
  --retries N             retries on transient errors, {allowed["retries"]}
  -c, --concurrency N     requests in flight at once, {allowed["concurrency"]}
  --cache, --no-cache     use or skip the response cache
  --chat                  continue a conversation per target across cells
  -q, --quiet             show nothing; the result is in _llm (and -o VAR)
  --no-interpolate        send the cell text as written, no {{name}} fields
  --check SPEC            score every answer (repeatable): contains:TEXT, icontains:TEXT,
                          not-contains:TEXT, equals:TEXT, regex:PATTERN, json, schema:VAR,
                          py:FUNC, judge:RUBRIC, similar:TEXT; NAME=SPEC names it,
                          NAME@0.8=SPEC sets its threshold (default {DEFAULT_THRESHOLD},
                          similar: {SIMILAR_THRESHOLD}); TEXT, PATTERN and RUBRIC take {{fields}}
  --judge TARGET          who judges judge: checks (default: the default target)
  --embed TARGET          who embeds for similar: checks (default: the default target)
  --image X               send an image with the prompt (repeatable): a notebook variable
                          (a path, URL, bytes or PIL image, or a list of them) or a path or
                          http(s) URL as written; PNG, JPEG, GIF or WEBP, at most 20 MB
  --tools F [G ...]       notebook functions the model may call (after the targets, or
                          --tools F --tools G); their calls are in the tool_calls column
  --run-tools             run the calls in the kernel and send the results back until the
                          model answers in text
  --max-steps N           most requests per answer while tools run, {allowed["max_steps"]}
                          (default 5)
  --batch                 send through the providers' batch APIs (half price, within 24 h);
                          targets without one run live; %llm collect gets the rows
  --wait                  with --batch: wait for the batches and return their rows
  --schema VAR            structured output: every answer held to VAR, a JSON Schema dict
                          or a Pydantic model class; adds parsed, schema_valid, schema_error
  --resume                finish this cell's last run: send only the rows without an answer
  -h, --help              show this help

Subcommands:
{subs}
"""
