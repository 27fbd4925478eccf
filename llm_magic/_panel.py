"""`llm_magic.Panel()` / `%llm panel`: the comparison run with clicks instead of a magic line.

    panel = llm_magic.Panel(["local:smollm2", "ollama:llama3.2"], prompt="Why is the sky blue?")
    panel            # in a notebook: type a prompt, pick targets, press Run
    panel.result     # the DataFrame of the last run (the same schema as %%llm's)

Plain ipywidgets 8, no custom JavaScript, so it works in JupyterLab, Notebook 7 and VS Code.
The Run handler only validates and plans; the run itself is on a background thread, so the
kernel stays free while answers stream. Stop sets an event that the runner checks between
short waits, and cancels every request in flight the way a kernel interrupt does.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

try:
    import ipywidgets as w
except ImportError as exc:  # an optional extra: say how to get it
    raise ImportError("llm_magic.Panel needs ipywidgets: pip install 'llm_magic[widgets]'") from exc
from traitlets import Bool

from . import _api as api
from . import _ranges as ranges
from ._checks import notebook_namespace
from ._config import resolve_setting
from ._panel_models import ALWAYS_OFFERED, ModelDiscovery
from ._panel_run import LiveRun
from ._panel_view import chart_png, header_html, metrics_html, note_html, status_html
from ._plan import Plan, make_plan
from ._records import RunRecord
from ._redaction import redact
from ._request import Request
from ._schema import schema_named
from ._session import Session
from ._session import session as kernel_session
from ._version import __version__
from .errors import LLMMagicError, RunInterrupted, UsageProblem, one_line

__all__ = ["Panel"]

# Answers per target the panel lays out; more belong in %%llm -r or compare().
PANEL_REPEAT_MAX = 50
_FULL = w.Layout(width="100%")
_LABELLED = {"description_width": "initial"}


class Panel(w.VBox):
    """A prompt, a set of targets and options; Run streams every target in its own column,
    then shows a metrics table and a chart. `result` holds the last run's DataFrame."""

    running = Bool(False, help="True while a run is in flight (observable).")

    def __init__(
        self,
        targets: Sequence[str] | str | None = None,
        prompt: str = "",
        *,
        system: str = "",
        temperature: float = 0.7,
        max_tokens: int = 256,
        repeat: int = 1,
        deadline: float | None = None,
        checks: Sequence[str] = (),
        judge: str = "",
        embed: str = "",
        schema: str = "",
        discover: bool = True,
        session: Session | None = None,
    ) -> None:
        self._session = session or kernel_session
        # Refused like the API's arguments, never clamped quietly by the widgets' bounds.
        for name, value in (
            ("temperature", temperature),
            ("max_tokens", max_tokens),
            ("deadline", deadline),
        ):
            ranges.check(name, value, "Panel")
        if not 1 <= repeat <= PANEL_REPEAT_MAX:
            raise UsageProblem(
                f"Panel: repeat {repeat} is out of range; the panel shows 1 to {PANEL_REPEAT_MAX}"
                " answers per target (%%llm -r and compare() take up to 1000)"
            )
        if targets is None:
            configured = self._session.settings().get("default_target")
            targets = [str(resolve_setting("default_target", None, configured).value)]
        elif isinstance(targets, str):
            targets = targets.split()
        self.result: Any = None  # pandas.DataFrame after the first run
        self.records: list[RunRecord] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._build(list(targets), prompt, system, temperature, max_tokens, repeat)
        self.deadline.value = "" if deadline is None else f"{deadline:g}"
        self.checks.value = "\n".join([checks] if isinstance(checks, str) else checks)
        self.judge.value = judge
        self.embed.value = embed
        self.schema.value = schema
        super().__init__(
            children=self._layout(),
            layout=w.Layout(
                border="1px solid var(--jp-border-color2, rgba(128,128,128,.35))",
                padding="10px 12px",
                width="100%",
                grid_gap="6px",
            ),
        )
        self.add_class("llm-panel")
        self.discovery = ModelDiscovery(self._models_changed)
        if discover:
            self.refresh_models()
        else:
            self.discovery_note.value = note_html("models: not listed (discover=False)")

    # ---- construction ---------------------------------------------------------------------
    def _build(
        self,
        targets: list[str],
        prompt: str,
        system: str,
        temperature: float,
        max_tokens: int,
        repeat: int,
    ) -> None:
        self.header = w.HTML(header_html(__version__))
        self.prompt = w.Textarea(
            value=prompt, placeholder="Ask every target the same thing…", rows=4, layout=_FULL
        )
        self.picker = w.Combobox(
            options=[ALWAYS_OFFERED],
            ensure_option=False,
            continuous_update=False,
            placeholder="add a target: pick one or type provider:model",
            layout=w.Layout(width="24em"),
        )
        self.add_button = w.Button(
            description="Add", icon="plus", tooltip="add this target", layout=w.Layout(width="auto")
        )
        self.refresh_button = w.Button(
            icon="refresh", tooltip="list the models again", layout=w.Layout(width="36px")
        )
        self.targets = w.TagsInput(
            value=targets,
            allow_duplicates=False,
            layout=w.Layout(flex="1 1 auto", min_width="12em"),
        )
        self.discovery_note = w.HTML(note_html("models: asking…"))
        self.temperature = w.FloatSlider(
            value=temperature,
            min=0.0,
            max=2.0,
            step=0.05,
            description="temperature",
            style=_LABELLED,
            readout_format=".2f",
            layout=w.Layout(width="20em"),
        )
        self.max_tokens = w.BoundedIntText(
            value=max_tokens,
            min=1,
            max=131072,
            description="max tokens",
            style=_LABELLED,
            layout=w.Layout(width="11em"),
        )
        self.repeat = w.BoundedIntText(
            value=repeat,
            min=1,
            max=PANEL_REPEAT_MAX,
            description="repeat",
            style=_LABELLED,
            layout=w.Layout(width="8em"),
        )
        self.system = w.Textarea(
            value=system, placeholder="optional system prompt", rows=2, layout=_FULL
        )
        # Text, not a number box: empty means "the setting" (%config, env, file, 600 s).
        self.deadline = _text_box(
            "deadline (s)",
            "seconds in all for one answer, retries included; 0: none",
            placeholder="the setting (600)",
            width="16em",
        )
        self.checks = w.Textarea(
            placeholder="one check a line, e.g. contains:Paris, json, correct=py:grade",
            rows=2,
            layout=_FULL,
        )
        self.judge = _target_box("judge", "the target that judges judge: checks (--judge)")
        self.embed = _target_box("embed", "the target that embeds for similar: checks (--embed)")
        self.schema = _text_box(
            "schema",
            "structured output (--schema VAR): every answer held to it and read",
            placeholder="a notebook variable: a JSON Schema dict or a Pydantic model class",
            width="36em",
        )
        # Images sent with the prompt (--image): checked by the planner like any other input.
        self.images = w.FileUpload(
            accept="image/png,image/jpeg,image/gif,image/webp",
            multiple=True,
            description="images",
            tooltip="images sent with the prompt (--image); PNG, JPEG, GIF or WEBP",
        )
        self.run_button = w.Button(
            description="Run",
            icon="play",
            button_style="primary",
            tooltip="send the prompt to every target",
        )
        self.stop_button = w.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            tooltip="cancel every request in flight",
        )
        self.status = w.HTML(
            status_html("ready", "pick targets, write a prompt, press Run"),
            layout=w.Layout(flex="1 1 auto"),
        )
        self.columns: list[w.HTML] = []
        self.outputs = w.GridBox([], layout=w.Layout(width="100%", grid_gap="8px"))
        self.metrics = w.HTML("")
        self.chart = w.Image(format="png", layout=w.Layout(display="none", max_width="100%"))

        self.picker.observe(self._picked, names="value")
        self.add_button.on_click(lambda _: self._add(self.picker.value))
        self.refresh_button.on_click(lambda _: self.refresh_models())
        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())

    def _layout(self) -> list[w.Widget]:
        checks = w.VBox(
            [self.checks, w.HBox([self.judge, self.embed]), self.schema], layout=_FULL
        )
        system_box = w.Accordion(
            [self.system, self.deadline, checks],
            titles=("System prompt", "Advanced", "Checks"),
            selected_index=None,
            layout=_FULL,
        )
        row = w.Layout(width="100%", align_items="center", flex_flow="row wrap", grid_gap="6px")
        return [
            self.header,
            self.prompt,
            w.HBox([self.picker, self.add_button, self.refresh_button, self.targets], layout=row),
            self.discovery_note,
            w.HBox([self.temperature, self.max_tokens, self.repeat, self.images], layout=row),
            system_box,
            w.HBox([self.run_button, self.stop_button, self.status], layout=row),
            self.outputs,
            self.metrics,
            self.chart,
        ]

    # ---- targets ------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """List the models of the configured providers again, in the background."""
        self.discovery.start()
        self._models_changed()

    def _models_changed(self) -> None:  # called from discovery threads
        self.picker.options = self.discovery.targets()
        self.discovery_note.value = note_html(self.discovery.summary())

    def _picked(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._add(change["new"])

    def _add(self, text: str) -> None:
        """Add a target word (provider:model, an alias or a chain a|b) after checking it."""
        word = (text or "").strip()
        if not word:
            return
        try:
            self._session.specs([word])
        except LLMMagicError as exc:
            self._problem(exc.message)
            return
        if word not in self.targets.value:
            self.targets.value = [*self.targets.value, word]
        self.picker.value = ""

    # ---- running ------------------------------------------------------------------------
    def _problem(self, message: str) -> None:
        self.status.value = status_html("problem", message)

    def _plan(self) -> Plan | None:
        """The plan for the current inputs; None (and the reason in the status line) when
        they are not runnable. Nothing is sent before this passes."""
        prompt = self.prompt.value.strip()
        if not prompt:
            self._problem("write a prompt first")
            return None
        if not self.targets.value:
            self._problem("add at least one target (e.g. local:smollm2)")
            return None
        try:
            deadline = _seconds(self.deadline.value, "deadline")
            named = self.schema.value.strip()
            schema = schema_named(named, notebook_namespace()) if named else None
        except UsageProblem as exc:
            self._problem(exc.message)
            return None
        request = Request(
            prompts=(prompt,),
            deadline=deadline,
            targets=tuple(self.targets.value),
            system=self.system.value.strip() or None,
            temperature=float(self.temperature.value),
            max_tokens=int(self.max_tokens.value),
            repeat=int(self.repeat.value),
            checks=tuple(line.strip() for line in self.checks.value.splitlines() if line.strip()),
            judge=self.judge.value.strip() or None,
            embed=self.embed.value.strip() or None,
            images=tuple(bytes(upload["content"]) for upload in self.images.value),
            schema=schema,
        )
        try:
            return make_plan(request, self._session)
        except LLMMagicError as exc:
            self._problem(exc.message)
            return None

    def start(self) -> bool:
        """What Run does: start a run in the background; False if one is going or the inputs
        are not runnable (the reason is in the status line)."""
        if self.running:
            return False
        plan = self._plan()
        if plan is None:
            return False
        labels = plan.labels
        self.columns = [w.HTML("", layout=w.Layout(min_width="0")) for _ in labels]
        for column in self.columns:
            column.add_class("llm-panel-column")
        self.outputs.children = self.columns
        self.outputs.layout.grid_template_columns = f"repeat({len(labels)}, minmax(16em, 1fr))"
        self.metrics.value = ""
        self.chart.layout.display = "none"
        live = LiveRun(plan.jobs, labels, self.columns, self.status)
        self._stop = threading.Event()
        self.running = True
        self.run_button.disabled, self.stop_button.disabled = True, False
        live.start()
        self._thread = threading.Thread(
            target=self._run, args=(plan, live), daemon=True, name="llm-magic-panel-run"
        )
        self._thread.start()
        return True

    def stop(self) -> None:
        """What Stop does: cancel every request in flight; rows so far are kept."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run (if any) has finished; True if it has."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _run(self, plan: Plan, live: LiveRun) -> None:
        phase, note = "done", ""
        records: list[RunRecord] = []
        try:
            records = api.run(plan, live, self._session, stop=self._stop)
        except RunInterrupted as exc:
            records, phase = exc.records, "stopped"
        except Exception as exc:  # a bug here must show, not kill the thread silently
            phase, note = "failed", one_line(f"{type(exc).__name__}: {redact(str(exc))}")
        try:
            self._finish(plan, records, live, phase, note)
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True
            self.running = False

    def _finish(
        self, plan: Plan, records: list[RunRecord], live: LiveRun, phase: str, note: str
    ) -> None:
        # The runner has reported every job to `live`, those never started included.
        elapsed = live.close()
        self.records = records
        from .results import run_frame

        frame = run_frame(records, plan)
        self.result = frame
        errors = sum(r.error is not None for r in records)
        passed = f" · {int(frame['passed'].sum())} passed every check" if plan.checks else ""
        if plan.schema is not None:
            passed += f" · {int(frame['schema_valid'].sum())} fit the schema"
        message = note or (
            f"{elapsed:.1f} s · {len(records)} answer{'s' if len(records) != 1 else ''}"
            + (f" · {errors} with errors" if errors else "")
            + passed
            + " · the rows are in panel.result"
        )
        if phase == "done" and records and errors == len(records):
            phase = "all failed"  # a green tick would read as success
        # The status first: the chart can take a moment (matplotlib's first import).
        live.render_status(phase, message)
        if records:
            repeated = plan.request.repeat > 1  # not the widget: it may have changed
            self.metrics.value = metrics_html(records, show_repeat=repeated)
            png = chart_png(frame)
            if png is not None:
                self.chart.value = png
                self.chart.layout.display = "block"


def _seconds(text: str, name: str) -> float | None:
    """A number typed in a text box; empty is None (the setting applies)."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageProblem(f"{name}: {text!r} is not a number of seconds") from None


def _text_box(description: str, tooltip: str, placeholder: str, width: str) -> w.Text:
    """A labelled one-line text box."""
    return w.Text(
        placeholder=placeholder,
        description=description,
        tooltip=tooltip,
        style=_LABELLED,
        layout=w.Layout(width=width),
    )


def _target_box(description: str, tooltip: str) -> w.Text:
    """A target typed, not picked: empty means the default target, as --judge or --embed
    left out does."""
    return _text_box(description, tooltip, placeholder="the default target", width="24em")
