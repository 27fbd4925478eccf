"""The one planner: a `Request` plus the session become a `Plan` (jobs, policy, columns).

Every entry point — `%%llm`, `compare()`, `complete()`, the panel — goes through `make_plan`,
so every check happens here, once, and raises `UsageProblem` before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import _ranges as ranges
from . import providers
from ._batch_plan import check_batch
from ._checks import CheckPlan, compile_checks, notebook_namespace, plan_checks
from ._config import load_file_config, resolve_setting
from ._images import load_images
from ._judge import VERDICT_SCHEMA, Judge
from ._records import RunRecord
from ._request import Request
from ._runner import Job, Policy, new_run_id
from ._schema import StructuredSchema, compile_schema
from ._session import Session
from ._similar import Embedder
from ._targets import TargetSpec
from ._template import check_over_fields, expand_over, render
from ._tools import ToolBox, make_toolbox
from ._utf8 import utf8_safe
from .errors import UsageProblem
from .providers.base import Image, Message, Options

__all__ = ["Plan", "make_embedder", "make_judge", "make_plan", "plan_jobs", "plan_of_run"]


@dataclass(frozen=True, eq=False)
class Plan:
    request: Request
    jobs: tuple[Job, ...]
    policy: Policy
    labels: tuple[str, ...]  # one per target as written: the columns of the views
    checks: CheckPlan | None = None  # scores added to each row (--check)
    judge: Judge | None = None  # asked after the answers, when a check is judge:
    embedder: Embedder | None = None  # asked after the answers, when a check is similar:
    schema: StructuredSchema | None = None  # --schema: answers held to it, read against it
    pooled: bool = False  # a target has several servers (providers/_pool.py)
    run_id: str = field(default_factory=new_run_id)  # a resumed run keeps its own
    # A resumed run's answers from the run log, by job index: those jobs are not sent again.
    answered: Mapping[int, RunRecord] = field(default_factory=dict)
    resumed: bool = False  # the run and its plan are in the log already

    def todo(self) -> list[Job]:
        """The jobs to send: all, or a resumed run's without an answer."""
        return [job for job in self.jobs if job.index not in self.answered]

    def merged(self, sent: Sequence[RunRecord]) -> list[RunRecord]:
        """Every row in job order: the answers kept from the log, and `sent` (in todo order)."""
        if not self.answered or len(sent) != len(self.jobs) - len(self.answered):
            return list(sent)  # nothing kept, or an interrupt before any row was made
        new = iter(sent)
        return [self.answered.get(i) or next(new) for i in range(len(self.jobs))]

    @property
    def columns(self) -> tuple[str, ...]:
        """The optional columns of its frame: `tool_calls` when it has tools, `endpoint`
        when a target has several servers."""
        tools = ("tool_calls",) if self.jobs and self.jobs[0].tools is not None else ()
        return (*tools, *(("endpoint",) if self.pooled else ()))

    def job_label(self, job: Job) -> str:
        """A live column's header; the repeats of one target share it and stack in it."""
        several = len({j.prompt_no for j in self.jobs}) > 1
        return f"{job.spec.label} · prompt {job.prompt_no + 1}" if several else job.spec.label


def make_plan(request: Request, session: Session) -> Plan:
    """Check everything and lay out the jobs: prompt x target x repeat, in that order."""
    if not request.prompts:
        raise UsageProblem("no prompt: nothing to send")
    if request.chat and request.over is not None:
        raise UsageProblem("--chat cannot be combined with --over: a chat continues one prompt")
    if request.chat and request.repeat > 1:
        raise UsageProblem(
            "--chat cannot be combined with -r/--repeat: which answer would continue?"
        )
    from ._html import check_format

    check_format(request.format)
    images = load_images(request.images)  # read and checked before anything is sent
    specs = session.specs(request.targets)
    check_batch(request, specs)
    prompts, systems, scopes, items = _render(request)
    # Text UTF-8 cannot carry (a lone surrogate from a notebook string) would fail the send.
    prompts = [utf8_safe(p)[0] for p in prompts]
    systems = [utf8_safe(s)[0] if s else s for s in systems]
    checks = judge = embedder = None
    configured = session.settings()  # read at each run: %config may have changed
    options = _options(request, configured)
    tools = make_toolbox(request.tools, request.run_tools, request.max_steps)
    if tools is not None:
        options = replace(options, tools=tools.specs)
    schema = None
    if request.schema is not None:  # Options.json_schema carries it to every provider
        schema = compile_schema(request.schema, "schema=")
        options = replace(options, json_schema=schema.text)
    policy = _policy(request, specs, configured)
    if request.checks:  # looked up and filled now: a bad check stops the run before it starts
        names = request.variables if request.variables is not None else notebook_namespace()
        checks = plan_checks(compile_checks(request.checks, names), scopes, items)
        kinds = {check.kind for check in checks.checks}
        if "judge" in kinds:
            judge = make_judge(request, session)
        if "similar" in kinds:
            embedder = make_embedder(request, session)
    conversations = session.conversations if request.chat else None
    jobs = plan_jobs(
        prompts,
        specs,
        options,
        system=systems,
        repeat=request.repeat,
        conversations=conversations,
        images=images,
        tools=tools,
    )
    pooled = providers.pool_capacity(_providers_of(specs)) > 0
    labels = tuple(s.label for s in specs)
    plan = Plan(
        request, tuple(jobs), policy, labels, checks, judge, embedder, schema=schema, pooled=pooled
    )
    if request.resume:
        from ._resume import resumed

        plan = resumed(plan)
    return plan


def plan_of_run(run_id: str, session: Session) -> Plan:
    """Run `run_id`'s plan rebuilt from the run log alone (`%llm resume RUN_ID`, any kernel),
    with its answers: only the rows without one are sent."""
    from ._resume import stored_run, with_answers

    request, specs, options, systems = stored_run(run_id)
    jobs = plan_jobs(request.prompts, specs, options, system=systems, repeat=request.repeat)
    policy = _policy(request, specs, session.settings())
    pooled = providers.pool_capacity(_providers_of(specs)) > 0
    labels = tuple(spec.label for spec in specs)
    return with_answers(Plan(request, tuple(jobs), policy, labels, pooled=pooled))


def make_judge(request: Request, session: Session) -> Judge:
    """The judge of judge: checks: `request.judge` (default: the default target), asked at
    temperature 0 under the run's retries, concurrency, cache and deadline."""
    what = "the judge (--judge, judge=)"
    spec, policy, options = _side_target(request, session, request.judge, what)
    options = replace(options, temperature=0.0, stream=False, json_schema=VERDICT_SCHEMA)
    return Judge(spec, policy, options, providers.get_provider)


def make_embedder(request: Request, session: Session) -> Embedder:
    """Who embeds for similar: checks: `request.embed` (default: the default target), one
    target whose provider can embed, asked under the run's retries, concurrency, cache and
    deadline."""
    what = "the embedding target (--embed, embed=)"
    spec, policy, options = _side_target(request, session, request.embed, what)
    if len(spec.chain) > 1:
        raise UsageProblem(
            f"{what} is one target, not a fallback chain: two models' vectors do not compare"
        )
    problem = providers.embedding_problem(spec.primary.provider)
    if problem:
        which = "--embed" if request.embed else "the default target"
        raise UsageProblem(
            f"similar: needs embeddings and {which} {spec.primary} cannot give them ({problem});"
            " name one that can with --embed TARGET (embed=), e.g. --embed local:smollm2"
        )
    return Embedder(spec, policy, replace(options, stream=False), providers.get_provider)


def _side_target(
    request: Request, session: Session, target: str | None, what: str
) -> tuple[TargetSpec, Policy, Options]:
    """A target asked on the run's behalf (a judge, an embedder), its default the default
    target: its spec, the run's policy for it, and the run's timeouts."""
    try:
        (spec,) = session.specs([target] if target else [])
    except UsageProblem as exc:
        raise UsageProblem(f"{what}: {exc.message}") from None
    configured = session.settings()
    policy = _policy(request, [spec], configured)
    options = _options(Request(prompts=request.prompts, timeout=request.timeout), configured)
    return spec, policy, options


Scope = Mapping[str, Any]


def _render(request: Request) -> tuple[list[str], list[str | None], list[Scope], list[Scope]]:
    """The prompts to send, the system prompt of each (--over renders it per item), and for
    each the names its checks are filled from and its --over item's fields."""
    ns = request.variables
    if ns is None and request.over is not None:
        ns = {}  # compare(over=...): the prompts are templates of the items' fields alone
    if ns is None:
        count = len(request.prompts)
        return list(request.prompts), [request.system] * count, [{}] * count, [{}] * count
    rows: list[dict[str, Any]] = [{}]
    if request.over is not None:
        rows = expand_over(request.over, request.over_name)
        for template in request.prompts:  # the system prompt may use the items' fields too
            check_over_fields(template + "\n" + (request.system or ""), rows, request.over_name, ns)
    prompts, systems, scopes, items = [], [], [], []
    for row in rows:
        scope = {**ns, **row} if row else ns
        for template in request.prompts:
            prompts.append(render(template, scope))
            systems.append(render(request.system, scope) if request.system else None)
            scopes.append(scope)
            items.append(row)
    return prompts, systems, scopes, items


def _options(request: Request, configured: Mapping[str, Any]) -> Options:
    sampling = {
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "top_p": request.top_p,
        "seed": request.seed,
    }
    for name, value in sampling.items():
        ranges.check(name, value, "")  # the magic's parser has checked its own; the API's too
    return Options(
        **sampling,
        stop=tuple(request.stop) if request.stop else None,
        stream=request.stream,
        read_timeout=float(_setting("timeout", request.timeout, configured)),
        connect_timeout=float(_setting("connect_timeout", None, configured)),
    )


def _policy(request: Request, specs: Sequence[TargetSpec], configured: Mapping[str, Any]) -> Policy:
    file = load_file_config()
    deadline = float(_setting("deadline", request.deadline, configured))
    concurrency = int(_setting("concurrency", request.concurrency, configured))
    if request.concurrency is None:  # unless the run says how many, a pool gets its fill
        concurrency = _with_pools(concurrency, _providers_of(specs))
    return Policy(
        retries=int(_setting("retries", request.retries, configured)),
        concurrency=concurrency,
        # A provider's own limit (the embedded model answers one at a time) unless the config
        # file sets one: queued before the clock, so latency never includes the wait.
        limits={**providers.default_limits(_providers_of(specs)), **file.limits},
        prices=file.prices,
        cache=bool(_setting("cache", request.cache, configured)),
        deadline=deadline or None,
        max_log_chars=int(_setting("max_log_chars", None, configured)),
    )


def _with_pools(concurrency: int, names: Sequence[str]) -> int:
    """Requests at once for a run: every server of each pooled provider its per-server cap,
    and `concurrency` more for the other targets, if any (never fewer than `concurrency`)."""
    pooled = {name: providers.pool_capacity([name]) for name in dict.fromkeys(names)}
    capacity = sum(pooled.values())
    if not capacity:
        return concurrency
    others = concurrency if any(n == 0 for n in pooled.values()) else 0
    return max(concurrency, capacity + others)


def _providers_of(specs: Sequence[TargetSpec]) -> list[str]:
    return [target.provider for spec in specs for target in spec.chain]


def _setting(name: str, option: Any, configured: Mapping[str, Any]) -> Any:
    return resolve_setting(name, option, configured.get(name)).value


def plan_jobs(
    prompts: Sequence[str],
    specs: Sequence[TargetSpec],
    options: Options,
    *,
    system: str | Sequence[str | None] | None = None,
    repeat: int = 1,
    conversations: Mapping[str, Sequence[Message]] | None = None,
    images: tuple[Image, ...] = (),
    tools: ToolBox | None = None,
) -> list[Job]:
    """One job per prompt x target x repeat, in that order.

    `system` is one system prompt for all, or one per prompt (--over renders it per item).
    With `conversations` (--chat), each target's earlier turns go before the new prompt.
    `images` go with each prompt (its user message).
    `tools` (--tools) go with every job; their specs are in `options.tools`.
    An empty prompt (an empty field, a blank `--over` item) is a UsageProblem: never sent.
    """
    ranges.check("repeat", repeat, "")
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            which = f"prompt {i + 1} of {len(prompts)}" if len(prompts) > 1 else "the prompt"
            raise UsageProblem(f"{which} is empty once its fields are filled: nothing to send")
    systems = [system] * len(prompts) if system is None or isinstance(system, str) else system
    jobs: list[Job] = []
    for prompt_no, prompt in enumerate(prompts):
        said = systems[prompt_no]
        head = (Message("system", said),) if said else ()
        for spec in specs:
            prior = tuple(conversations.get(spec.label, ())) if conversations else ()
            messages = head + prior + (Message("user", prompt, images=images),)
            for r in range(repeat):
                jobs.append(Job(len(jobs), prompt, messages, spec, options, r, prompt_no, tools))
    return jobs
