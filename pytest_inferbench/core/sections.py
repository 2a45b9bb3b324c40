"""The typed sections of a Result (core/result.py): one pydantic model per section.

Each model names the keys its writers set (workload/, run/, measure/, serving/, optimize/)
and rejects any other, so that a misspelt or renamed key fails where it is written instead
of reading as None in the report or the gate. Assignments are validated too: a writer that
assigns a plain dict (`result.load = samples.extra`) gets the typed model. Units are in the
field names (`_ms`, `_s`, `_mb`, `_w`, `_j`, `_per_s`) or in the comment beside them.

Where a value's shape belongs to a system outside this package (a server's statistics, the
resolved spec entry, what another revision's side reported), the field stays a dict and its
comment says why.

Why one module: together these models are the run file's schema (`python -m pytest_inferbench
schema`); read side by side, a key's name and unit is the same wherever it appears.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A Result section: unknown keys rejected, assignments validated."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Dict-style access to a DECLARED field, for writers in workload/ and run/ that still build
    # and patch sections as dicts (`result.serving["server"] = ...`) while they move to
    # attributes; an undeclared key raises KeyError, so it never reads as None.
    def _field(self, key: str) -> str:
        if key not in type(self).model_fields:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        return key

    def __getitem__(self, key: str):
        return getattr(self, self._field(key))

    def __setitem__(self, key: str, value) -> None:
        setattr(self, self._field(key), value)

    def get(self, key: str, default=None):
        value = getattr(self, self._field(key))
        return default if value is None else value

    def __contains__(self, key) -> bool:
        # `"max_rate" in load` would test the model's (name, value) pairs: always False
        raise TypeError(f"`in` on {type(self).__name__}: read the attribute instead")

    def update(self, other: dict | None = None, **more) -> None:
        for key, value in {**(other or {}), **more}.items():
            self[key] = value


# ----------------------------------------------------------------------------- measurement

class Warmup(Section):
    queries: int | None = None           # warm-up queries before the window (None: timed only)
    seconds: float | None = None


class ServerProcess(Section):
    pid: int
    command: str | None = None
    why: str | None = None               # how it was found to be the server (port, launch)
    cpu_cores: float | None = None       # cores busy over the window


class OtherProcess(Section):
    pid: int
    name: str | None = None
    cpu_cores: float | None = None


class Process(Section):
    """The process and host over the measured window (measure/monitors.py)."""
    cpu_cores_used: float | None = None       # this process, cores busy on average
    cpu_percent_system: float | None = None   # whole host, percent of all CPUs
    peak_rss_mb: float | None = None
    peak_rss_scope: str | None = None         # "window" | "process"
    cpu_freq_mhz: float | None = None
    tree_cpu_cores_used: float | None = None  # with launched servers (child processes)
    server_cpu_cores: float | None = None     # an endpoint's server on this host
    server_processes: list[ServerProcess] | None = None
    other_cpu_cores: float | None = None      # everything else on the host: noise
    other_processes: list[OtherProcess] | None = None
    host_contended: bool | None = None


class FreshProcess(Section):
    """Which of a cell's fresh worker processes measured this result (run/fresh_process.py)."""
    index: int                                # 1-based
    of: int
    pid: int | None = None
    wall_s: float | None = None               # start to report: start-up and loading included


class Stat3(Section):
    """mean/min/max of a sampled quantity (GPU monitor)."""
    mean: float | None = None
    min: float | None = None
    max: float | None = None


class Gpu(Section):
    """NVML over the window (measure/gpu_monitor.py); `available: false` with a reason."""
    available: bool = False
    reason: str | None = None
    name: str | None = None
    driver: str | None = None
    samples: int | None = None
    interval_s: float | None = None
    utilization_pct: Stat3 | None = None
    memory_used_mb: Stat3 | None = None
    power_w: Stat3 | None = None
    sm_clock_mhz: Stat3 | None = None
    throttle_reasons: list[str] | None = None
    energy_j: float | None = None
    energy_source: str | None = None
    energy_per_sample_j: float | None = None


class SpanStats(Section):
    mean: float | None = None            # ms
    p50: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None


class DeviceTime(Section):
    """CUDA events on sampled queries and a held-launch probe (measure/device_timer.py)."""
    available: bool = False
    reason: str | None = None
    every: int | None = None             # one query in `every` is timed with events
    sampled: int | None = None
    span_ms: SpanStats | None = None     # event span per sampled query
    span_share: float | None = None      # event span / wall time of those queries
    overlapped: bool | None = None       # several threads: spans include others' kernels
    device_ms: SpanStats | None = None   # device time per query from the probe
    device_reason: str | None = None
    probes: int | None = None
    hold_ms: float | None = None
    busy_share: float | None = None      # device_ms.mean x queries / duration_s
    busy_share_basis: str | None = None
    launch_bound: bool | None = None
    launch_bound_note: str | None = None


# ----------------------------------------------------------------------------- load

class Lag(Section):
    """Send lag in ms (actual minus scheduled send)."""
    p50: float | None = None
    p99: float | None = None
    max: float | None = None
    # paired mode pools sub-slices: the worst and the median slice's p99
    p99_worst_slice: float | None = None
    p99_median_slice: float | None = None


class Offered(Section):
    """What the arrival schedule offered against its target (workload/arrivals.py)."""
    target_rate: float | None = None     # queries/s
    offered_rate: float | None = None
    departure: float | None = None       # relative: offered / target - 1
    tolerance: float | None = None
    arrival: str | None = None
    stratified: bool | None = None
    block_s: float | None = None
    queries: int | None = None
    expected_queries: float | None = None
    window_s: float | None = None
    flagged: bool | None = None          # departure over the tolerance
    note: str | None = None


class Step(Section):
    """One rate of a ramp or capacity search (workload/search.py)."""
    rate: float                          # offered queries/s
    runs: int | None = None
    achieved_rate: float | None = None
    seconds: float | None = None
    completed: int | None = None
    completed_per_s: float | None = None
    p99_ms: float | None = None
    valid: bool | None = None
    invalid_reasons: list[str] = Field(default_factory=list)
    send_lag_p99_ms: float | None = None
    errors: int | None = None
    timeouts: int | None = None
    verdict: str | None = None           # pass | fail | undetermined
    generator_limited: bool | None = None  # failed while the generator lagged
    confirming: float | None = None      # this step re-runs a failed rate to confirm it


class Bracket(Section):
    passed: float | None = None          # highest rate proven within the SLO (queries/s)
    failed: float | None = None          # lowest rate proven over it
    failure_confirmed: bool | None = None


class Stalls(Section):
    """Where the open loop's issuer was not run (workload/open_loop.py's issuer_stalls): its
    polls and wake-ups came late, or its own stretches took more wall than CPU time (the
    host, or a thread holding the GIL), not the client's work."""
    count: int = 0
    max_ms: float = 0.0
    total_ms: float = 0.0
    late_sends: int = 0                  # sends over late_ms late
    late_in_stalls: int = 0              # of those, due while a stall held the issuer
    late_ms: float = 0.25


class Load(Section):
    """Open loop, concurrency, ramp and capacity (workload/open_loop.py, concurrency.py,
    search.py; generative serving's in workload/generative.py). Rates in queries/s."""
    scenario: str | None = None          # generative cells only
    concurrency: int | None = None       # closed-loop clients
    arrival: str | None = None           # paired mode: the arrival process
    slices: int | None = None            # paired mode: sub-slices pooled
    target_rate: float | None = None
    scheduled_rate: float | None = None
    achieved_rate: float | None = None
    offered_rate: float | None = None
    offered: Offered | None = None
    issued: int | None = None
    completed: int | None = None
    errors: int | None = None
    timeouts: int | None = None
    send_lag_ms: Lag | None = None
    send_time: str | None = None         # what "sent" means: "write" | "handoff" | ...
    writes_reported: int | None = None
    send_lag_issuer_ms: Lag | None = None
    client_lag_ms: Lag | None = None
    issuer_stalls: Stalls | None = None
    late_sends: int | None = None
    late_fraction: float | None = None
    send_lag_bound_ms: float | None = None
    lag_effect: float | None = None      # reported percentile / from actual sends - 1
    lag_effect_client: float | None = None
    client_processes: int | None = None
    client_cpu_s: list[float] | None = None
    # who sent a generative open loop in this process: "lean-stream" (serving/lean_stream.py)
    # or "aiohttp"
    open_loop_client: str | None = None
    wall_s: float | None = None
    valid: bool = True
    invalid_reasons: list[str] = Field(default_factory=list)
    # ramp / capacity search
    steps: list[Step] | None = None
    knee_rate: float | None = None
    max_rate: float | None = None
    bracket: Bracket | None = None
    search_stop: str | None = None
    pruned: bool | None = None
    search_failure: str | None = None


class Slo(Section):
    """The SLO verdict: LoadGen's early stopping on one percentile (core/early_stopping.py),
    or, for generative cells, one verdict per metric (`metrics`, each of the first kind)."""
    verdict: str                         # pass | fail | undetermined
    percentile: float | None = None
    bound_ms: float | None = None
    confidence: float | None = None
    queries: int | None = None
    overlatency: int | None = None       # queries over the bound
    queries_needed: int | None = None
    values: str | None = None            # generative: "requests" | "gaps" (ITL)
    reason: str | None = None
    metrics: dict[str, Slo] | None = None


class ErrorKind(Section):
    type: str
    message: str | None = None
    count: int = 0


class Errors(Section):
    """Failed queries (workload/failures.py)."""
    errors: int = 0
    timeouts: int = 0
    attempted: int = 0
    error_rate: float = 0.0              # (errors + timeouts) / attempted
    kinds: list[ErrorKind] = Field(default_factory=list)
    other_kinds: int = 0                 # kinds past the first few kept


# ----------------------------------------------------------------------------- what ran

class Conversion(Section):
    step: str
    cache_hit: bool | None = None
    seconds: float | None = None


class ModelInfo(Section):
    """The model as loaded and checked (models/, run/inprocess.py, run/served.py)."""
    label: str | None = None
    source: str | None = None            # a model file's path
    artifact: str | None = None          # what the runtime ran (a cached conversion's path)
    cache_hit: bool | None = None
    conversion_s: float | None = None
    conversions: list[Conversion] = Field(default_factory=list)
    intermediates: list[Conversion] | None = None
    conversion_notes: list[str] | None = None
    outputs: list[str] | None = None
    parameters: int | None = None
    digest: str | None = None
    # the calling convention, the check, the conversions' own notes: their keys are the
    # model loader's and converters' (models/), recorded as they report them
    call: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    fp16: dict[str, Any] | None = None
    preprocess: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    inputs: dict[str, dict[str, Any]] | None = None   # name -> {shape, dtype, ...}
    inputs_source: str | None = None     # "generated" or the data file
    inputs_declared: str | None = None


class RuntimeInfo(Section):
    """The runner's own report (runtimes/*.info()), or for a served cell who served it."""
    name: str | None = None
    version: str | None = None
    served_by: str | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    threads_note: str | None = None
    include_copies: bool | None = None
    first_call_s: float | None = None
    providers: list[str] | None = None   # onnxruntime
    graph_optimization: str | None = None
    io_binding: bool | None = None
    compile_mode: str | None = None      # torch.compile
    cuda_graphs: bool | None = None
    capture_s: float | None = None
    graphs_captured: int | None = None
    device_name: str | None = None
    conversions: list[Conversion] | None = None


class WarmupErrors(Section):
    count: int
    first: str | None = None


class Serving(Section):
    """A served cell: the system, where it ran, the server-side split (run/served.py,
    run/sides.py, run/generative.py)."""
    system: str | None = None
    protocol: str | None = None
    url: str | None = None
    model: str | None = None             # openai: the served model's name
    api: str | None = None
    stream: bool | None = None
    tensor_format: str | None = None
    tensor_format_reason: str | None = None
    # who sent an open loop's queries: "lean-http" / "lean-grpc" (prepared requests sent by
    # the issuer, serving/lean_http.py, serving/lean_grpc.py) or "tritonclient-aio-<protocol>"
    open_loop_client: str | None = None
    # who sent a closed loop's queries: "lean-http" / "lean-grpc" (the same prepared requests,
    # one connection or channel per client thread) or "tritonclient-<protocol>"
    closed_loop_client: str | None = None
    # the server's statistics split (queue/compute/...) and how the server runs the model:
    # keys follow what each server reports (serving/statistics.py)
    breakdown: dict[str, Any] | None = None
    breakdown_note: str | None = None
    overhead: dict[str, Any] | None = None
    server: dict[str, Any] | None = None
    headers: list[str] | None = None     # names only, never values
    warmup_errors: WarmupErrors | None = None
    reused: bool | None = None
    launch_s: float | None = None
    cpu_affinity: dict[str, Any] | None = None   # {"server": [cpus], "client": [cpus]}


# ----------------------------------------------------------------------------- generative

class TokenStats(Section):
    mean: float | None = None
    stdev: float | None = None
    min: int | None = None
    max: int | None = None
    total: int | None = None


class PromptCheck(Section):
    requests: int | None = None
    offset_median: float | None = None
    offset_min: int | None = None
    offset_max: int | None = None
    exact: float | None = None


class Tokens(Section):
    input: TokenStats | None = None
    output: TokenStats | None = None
    output_source: str | None = None
    usage_missing: int | None = None
    chunks_differ: int | None = None
    chunks_differ_max: int | None = None
    shorter_than_max_tokens: int | None = None
    prompt_check: PromptCheck | None = None


class Goodput(Section):
    requests_per_s: float | None = None
    good: int | None = None
    share: float | None = None
    slo: dict[str, float] | None = None  # metric key -> bound in `unit`
    unit: str | None = None


class GenerativeLag(Section):
    issuer: Lag | None = None
    client: Lag | None = None


# ----------------------------------------------------------------------------- search, A/B

class SearchTrialRecord(Section):
    number: int
    id: str | None = None
    cell_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)   # axis -> value (the space's)
    state: str | None = None
    objective: float | None = None
    lower: float | None = None
    upper: float | None = None
    note: str | None = None
    seconds: float | None = None
    suggested: Any = None
    best_so_far: Any = None
    p99_ms: float | None = None
    entry: dict[str, Any] | None = None  # the trial's spec entry (the spec's own keys)


class SearchDim(Section):
    name: str
    choices: list[Any] = Field(default_factory=list)
    ordinal: bool | None = None


class SearchExcluded(Section):
    cell_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None


class Confirmation(Section):
    """The paired A/B of the two best (optimize/confirm.py)."""
    ran: bool
    why: str | None = None
    workload: str | None = None
    verdict: str | None = None
    meaning: str | None = None
    summary: str | None = None
    rounds: int | None = None
    candidate: str | None = None
    baseline: str | None = None


class Search(Section):
    """A configuration search's answer, on its own result (optimize/answer.py)."""
    objective: str | None = None
    direction: str | None = None
    unit: str | None = None
    sampler: str | None = None
    seed: int | None = None
    stop: str | None = None
    grid: int | None = None
    budget_trials: int | None = None
    budget_time_s: float | None = None
    measured: int | None = None
    seconds: float | None = None
    dims: list[SearchDim] = Field(default_factory=list)
    excluded: list[SearchExcluded] = Field(default_factory=list)
    trials: list[SearchTrialRecord] = Field(default_factory=list)
    winner: int | None = None            # trial number
    runner_up: int | None = None
    distinguishable: bool | None = None
    spec_entry: dict[str, Any] | None = None   # the winner as a spec entry (the spec's keys)
    pareto: list[Any] | None = None
    confirmation: Confirmation | None = None
    verdict: str | None = None


class SearchTrial(Section):
    """On each trial's result: which search and trial it is."""
    search: str
    number: int | None = None
    confirmation: bool | None = None     # the paired confirmation's result


class Window(Section):
    """The measured window, wall clock (epoch seconds): windows compare across processes."""
    start: float
    end: float


class Placement(Section):
    """Where the scheduler ran the cell (schedule/worker.py)."""
    follower: str | None = None
    slot: str | None = None              # the worker slot's id
    device: str | None = None
    lease_wait_s: float | None = None
    colocated_with: list[str] = Field(default_factory=list)   # result ids overlapping in time


class ABBaselineSide(Section):
    """Paired mode's baseline side. What it says about itself (model, runtime, serving,
    process, versions) is kept as that side reported it: it may be another interpreter or git
    revision of this package, whose sections need not match this version's."""
    changes: str | None = None           # what the baseline changes, e.g. "runtime=torch"
    model: str | None = None             # its model label
    runtime: dict[str, Any] | None = None  # its runner's info() (another revision's keys)
    serving: str | None = None           # its serving label
    process: str | None = None           # "in-process" | "server" | another interpreter
    python: str | None = None
    versions: dict[str, Any] | None = None
    url: str | None = None
    launch_s: float | None = None
    latency_ms: dict[str, Any] | None = None
    throughput: dict[str, Any] | None = None
    errors: Errors | None = None
    load: Load | None = None


class AB(Section):
    """Paired mode (run/paired.py): the verdict, the baseline side, the interleaving."""
    verdict: str | None = None           # None for a reference pair (judged by its history)
    reference: bool | None = None        # the baseline is a reference measured alongside
    baseline: ABBaselineSide | None = None
    rounds: int | None = None
    looks: int | None = None
    look_at: list[int | float] | None = None
    stopped: str | None = None
    cells: int | None = None
    slice_s: float | None = None
    switch_s: float | None = None
    sub_slices: int | None = None
    gate: dict[str, Any] | None = None           # the gate's own config (core/thresholds.py)
    unit: str | None = None              # what a ratio is of: "round" | "process pair"
    ratios: dict[str, list[Any]] | None = None   # metric -> each unit's ratio b/a (judged)
    pairs: list[dict[str, Any]] | None = None    # process pairs: pids, lead, ratios, log sd
    noise: dict[str, Any] | None = None  # metric -> the log ratios' split (core/noise.py)
    metrics: list[dict[str, Any]] | None = None  # judgements (core/verdicts.Judgement.to_json)

