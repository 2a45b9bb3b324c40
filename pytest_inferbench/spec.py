"""The YAML spec: schema (pydantic), defaults, matrix expansion (include/exclude), Cell.

A spec file:  name, defaults (settings and axis values), benchmarks (list of entries).
A job file (--infer-config): the same, where `benchmarks` is optional and `defaults` apply to
every collected spec.  Every axis field may be a list; an entry is the cartesian product of its
lists, adjusted by `exclude` then `include` with GitHub Actions matrix semantics.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError,
                      field_validator, model_validator)

from .errors import SpecError, did_you_mean, format_field_path
from .models.families import (FAMILIES, PRESETS, DecoderSpec, MLPSpec, ResNetSpec,
                              TransformerSpec)
from .workload.prompts import Prompts
from .runtimes import RUNTIMES
from .schedule.inventory import Follower, Placement, parse_followers, parse_placement
from .units import parse_duration
from .yaml_lines import line_for, load_yaml

# ----------------------------------------------------------------------------- settings

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _warmup(value):
    """An int is a count of queries; a string or float is a duration in seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration ('1s') or a count of queries (50)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a warm-up count cannot be negative")
        return value
    return parse_duration(value)


class Settings(BaseModel):
    """How long and how precisely to measure one cell."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    warmup: Annotated[Union[StrictInt, float], BeforeValidator(_warmup)] = 1.0
    min_duration: Duration = 5.0
    max_duration: Duration = 60.0
    min_queries: int = Field(100, ge=1)
    max_queries: int | None = Field(None, ge=1)
    percentiles: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)
    target_percentile: float | None = Field(None, gt=0, lt=100)
    ci_width: float = Field(0.05, gt=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    # share of failed queries (errors + timeouts) a cell may have and still pass
    max_error_rate: float = Field(0.0, ge=0, lt=1)

    @field_validator("percentiles")
    @classmethod
    def _percentiles_in_range(cls, value):
        if not value:
            raise ValueError("list at least one percentile")
        for p in value:
            if not 0 < p < 100:
                raise ValueError(f"percentile {p} is outside (0, 100)")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _durations_ordered(self):
        if self.max_duration < self.min_duration:
            raise ValueError(f"max_duration ({self.max_duration:g}s) is shorter than "
                             f"min_duration ({self.min_duration:g}s)")
        return self


SETTINGS_FIELDS = tuple(Settings.model_fields)

# ----------------------------------------------------------------------------- axes

SCENARIOS = ("offline", "single_stream", "server", "concurrency", "ramp", "capacity")
SERVING_SYSTEMS = ("inprocess", "triton", "http", "endpoint", "openai")
ARRIVALS = ("constant", "poisson", "gamma", "onoff", "trace")
_SLO_KEY = re.compile(r"^p(\d+(\.\d+)?)$")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_slo(value):
    """An SLO is one latency bound on one percentile: {p99: 50ms}."""
    if value is None:
        return value
    if len(value) != 1:
        raise ValueError("give one latency bound, e.g. {p99: 50ms}")
    (key,) = value
    m = _SLO_KEY.match(key)
    if not m or not 0 < float(m.group(1)) < 100:
        raise ValueError(f"SLO key '{key}' should name a percentile, e.g. p99 or p99.9")
    return value


class Workload(BaseModel):
    """What load the system under test sees. Lists in a workload mapping are sweeps."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    scenario: Literal[SCENARIOS]
    arrival: Literal[ARRIVALS] = "poisson"           # server: when queries are sent
    rate: float | None = Field(None, gt=0)            # server: queries/s; ramp/capacity: start
    step: float | None = Field(None, gt=0)            # ramp: added to the rate each step
    max_rate: float | None = Field(None, gt=0)        # ramp: stop after this rate
    burstiness: float = Field(1.0, gt=0)              # gamma: shape (1 = Poisson, <1 burstier)
    on: Duration = 1.0                                # onoff: seconds on ...
    off: Duration = 1.0                               # ... and off
    trace: str | None = None                          # trace: CSV of timestamps (seconds)
    concurrency: int | None = Field(None, ge=1)       # concurrency: clients in closed loop
    slo: dict[str, Duration] | None = None            # e.g. {p99: 50ms}: a pass/fail verdict
    timeout: Duration = 2.0                           # per query (open loop: drain deadline)
    send_lag_bound: Duration = 0.001                  # sends later than this count as late
    step_min_duration: Duration = 2.0                 # ramp/capacity: shortest step
    step_max_duration: Duration | None = None         # ramp/capacity: longest (default: ample)
    # generative serving (system openai; workload/generative.py, workload/prompts.py)
    prompts: Prompts | None = None                    # input/output lengths, prefix, dataset
    keep_requests: bool = False                       # raw per-request records in the run file
    # open loop's client: 0 = in-process (issuer thread + event-loop thread), N = N processes
    # each sending its share of the schedule; None = chosen by the expected chunk rate
    client_processes: int | None = Field(None, ge=0)

    @field_validator("slo")
    @classmethod
    def _slo_keys(cls, value):
        from .workload.generative import parse_slo_key
        if value and any(parse_slo_key(k) for k in value):   # {ttft_p99: 2s, tpot_p99: 200ms}
            return value
        return check_slo(value)

    @model_validator(mode="after")
    def _fields_fit_the_scenario(self):
        if self.scenario == "server":
            if self.arrival != "trace" and self.rate is None:
                raise ValueError("the server scenario needs a `rate` (queries per second)")
            if self.arrival == "trace" and not self.trace:
                raise ValueError("arrival trace needs `trace: file.csv`")
        elif self.scenario == "concurrency":
            if self.concurrency is None:
                raise ValueError("the concurrency scenario needs `concurrency` (clients)")
        elif self.scenario == "ramp":
            if self.rate is None or self.step is None:
                raise ValueError("the ramp scenario needs `rate` (start) and `step`")
        elif self.scenario == "capacity":
            if not self.slo:
                raise ValueError("the capacity scenario needs an `slo`, e.g. {p99: 50ms}")
            if self.arrival in ("trace",):
                raise ValueError("the capacity scenario draws its own arrivals: not trace")
        for name in ("rate", "trace", "concurrency", "step", "max_rate", "step_max_duration"):
            if getattr(self, name) is not None and name not in _SCENARIO_FIELDS[self.scenario]:
                raise ValueError(f"`{name}` does not apply to the {self.scenario} scenario")
        return self

    def slo_target(self) -> tuple[float, float] | None:
        """(percentile, bound in seconds) or None."""
        if not self.slo or len(self.slo) != 1 or not _SLO_KEY.match(next(iter(self.slo))):
            return None     # none, or a generative SLO (several metrics, judged apart)
        ((key, bound),) = self.slo.items()
        return float(key[1:]), bound

    def label(self) -> str:
        base = self._scenario_label()
        if self.client_processes is not None:
            base += f"-clients{self.client_processes}"
        return f"{base}-{self.prompts.label()}" if self.prompts is not None else base

    def _scenario_label(self) -> str:
        if self.scenario == "server":
            what = f"{self.arrival}" + (f"{self.rate:g}" if self.rate else "")
            if self.arrival == "gamma":
                what += f"b{self.burstiness:g}"
            return f"server-{what}"
        if self.scenario == "concurrency":
            return f"concurrency{self.concurrency}"
        if self.scenario == "ramp":
            return f"ramp{self.rate:g}+{self.step:g}"
        if self.scenario == "capacity":     # a generative SLO bounds several metrics
            return "capacity-" + "-".join(f"{k}-{b * 1e3:g}ms" for k, b in self.slo.items())
        return self.scenario


_SCENARIO_FIELDS = {"offline": (), "single_stream": (), "server": ("rate", "trace"),
                    "concurrency": ("concurrency",),
                    "ramp": ("rate", "step", "max_rate", "step_max_duration"),
                    "capacity": ("rate", "max_rate", "step_max_duration")}


class InputDecl(BaseModel):
    """A tensor's per-sample shape (no batch axis), dtype, and integer range [0, high)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    shape: tuple[Annotated[int, Field(ge=1)], ...]
    dtype: str | None = None
    high: int | None = Field(None, ge=1)


def _input_decl(value):
    return {"shape": value} if isinstance(value, (list, tuple)) else value


class Serving(BaseModel):
    """Where the model runs: in the pytest process, behind a server the harness launches
    (Triton through PyTriton, or FastAPI on uvicorn), or behind an existing KServe v2 endpoint."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    system: Literal[SERVING_SYSTEMS] = "inprocess"
    instances: int = Field(1, ge=1)             # inprocess worker threads; triton instances
    protocol: Literal["http", "grpc"] = "http"  # triton, endpoint
    max_batch_size: int = Field(32, ge=0)       # triton
    dynamic_batching: bool = True               # triton
    max_queue_delay: Duration = 0.0001          # triton dynamic batcher
    url: str | None = None                      # endpoint: "127.0.0.1:8000" or "http://..."
    model: str | None = None                    # endpoint: the served model's name
    # endpoint: shapes for dynamic dimensions / integer ranges, as perf_analyzer's --shape
    inputs: dict[str, Annotated[InputDecl, BeforeValidator(_input_decl)]] | None = None
    data: str | None = None                     # endpoint: real inputs from a .npz or .json file
    pin_cpus: bool = True                       # triton, http: server and generator on disjoint CPUs
    api: Literal["chat", "completions"] = "chat"  # openai: /v1/chat/completions or /v1/completions
    stream: bool = True                         # openai: streamed (SSE) responses
    api_key_env: str | None = None              # openai: environment variable holding the key
    # triton, http, endpoint: tensors as JSON lists or in Triton's binary extension; auto:
    # binary where the server's metadata lists `binary_tensor_data`, else JSON (HTTP only)
    tensor_format: Literal["auto", "json", "binary"] = "auto"
    # endpoint: HTTP headers (gRPC metadata) sent with every request, the statistics API's
    # too; a value "${VAR}" is read from the environment at run time. Never dumped (results
    # record the names only).
    headers: dict[str, str] | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _fields_fit_the_system(self):
        allowed = _SERVING_FIELDS[self.system]
        for name, field in type(self).model_fields.items():
            if name != "system" and getattr(self, name) != field.default and name not in allowed:
                raise ValueError(f"`{name}` does not apply to serving system {self.system}")
        if self.system == "endpoint" and (not self.url or not self.model):
            raise ValueError("serving system endpoint needs `url` and `model`")
        if self.system == "http" and self.protocol != "http":
            raise ValueError("serving system http speaks HTTP only")
        if self.protocol == "grpc" and self.tensor_format != "auto":
            raise ValueError("`tensor_format` applies to HTTP: gRPC carries tensors as raw bytes")
        for name in self.headers or {}:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"header name {name!r} is not an HTTP header name")
        return self

    def label(self) -> str:
        if self.system == "inprocess":
            return self.system + (f"x{self.instances}" if self.instances != 1 else "")
        if self.system == "triton":
            parts = [self.protocol, f"mbs{self.max_batch_size}"]
            parts.append(f"db{self.max_queue_delay * 1e6:g}us" if self.dynamic_batching
                         else "nodb")
            if self.instances != 1:
                parts.append(f"x{self.instances}")
            if self.tensor_format != "auto":
                parts.append(self.tensor_format)
            return f"triton({','.join(parts)})"
        if self.system == "endpoint":
            fmt = f",{self.tensor_format}" if self.tensor_format != "auto" else ""
            return f"endpoint({self.protocol},{self.model}{fmt})"
        if self.system == "http" and self.tensor_format != "auto":
            return f"http({self.tensor_format})"
        if self.system == "openai":
            parts = [self.api] + ([self.model] if self.model else []) + \
                ([] if self.stream else ["nostream"])
            return f"openai({','.join(parts)})"
        return self.system


_SERVING_FIELDS = {"inprocess": ("instances",),
                   "triton": ("instances", "protocol", "max_batch_size", "dynamic_batching",
                              "max_queue_delay", "pin_cpus", "tensor_format"),
                   "http": ("pin_cpus", "tensor_format"),
                   "endpoint": ("protocol", "url", "model", "inputs", "data", "tensor_format",
                                "headers"),
                   "openai": ("url", "model", "api", "stream", "api_key_env", "pin_cpus",
                              "max_batch_size")}


# Options a runtime mapping may carry, per runtime (`runtime: {name: onnxruntime, ...}`).
RUNTIME_OPTIONS = {
    "torch": ("include_copies", "cuda_graphs"),
    "torchscript": ("include_copies", "cuda_graphs"),
    "torch_compile": ("include_copies", "mode"),
    "onnxruntime": ("include_copies", "graph_optimization", "provider", "quantization"),
}
_OPTION_ALIASES = {"graph_optimization": "opt", "provider": "ep", "mode": "mode",
                   "include_copies": "copies", "cuda_graphs": "graphs", "quantization": "quant"}


class RuntimeSpec(BaseModel):
    """A runtime and its options; a plain name is {name: NAME} with every option at its default."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    include_copies: bool = False   # time host<->device copies of inputs/outputs with each query
    cuda_graphs: bool = False      # torch/torchscript on cuda: capture once, replay per query
    graph_optimization: Literal["disabled", "basic", "extended", "all"] | None = None
    provider: Literal["cpu", "cuda", "tensorrt"] | None = None
    # onnxruntime int8: dynamic (default) or static QDQ calibrated on generated inputs
    quantization: Literal["dynamic", "static"] | None = None
    mode: Literal["default", "reduce-overhead", "max-autotune",
                  "max-autotune-no-cudagraphs"] | None = None

    @model_validator(mode="after")
    def _options_fit_the_runtime(self):
        allowed = RUNTIME_OPTIONS.get(self.name, ())
        for key in self.options():
            if key not in allowed:
                hint = ("; torch.compile captures CUDA graphs itself with mode: reduce-overhead"
                        if key == "cuda_graphs" and self.name == "torch_compile" else "")
                raise ValueError(f"option '{key}' does not apply to runtime {self.name} (its "
                                 f"options: {', '.join(allowed) or 'none'}){hint}")
        return self

    def options(self) -> dict:
        return {k: v for k, v in self.model_dump(exclude={"name"}).items()
                if v != type(self).model_fields[k].default}

    def label(self) -> str:
        opts = self.options()
        if not opts:
            return self.name
        inner = ",".join(_OPTION_ALIASES[k] if v is True else f"{_OPTION_ALIASES[k]}={v}"
                         for k, v in opts.items())
        return f"{self.name}({inner})"


class Threads(BaseModel):
    """Thread counts for the runtime: `threads: 4` (intra-op) or {intra: 4, inter: 1}."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    intra: int | None = Field(None, ge=1)
    inter: int | None = Field(None, ge=1)

    def label(self) -> str:
        return f"t{self.intra or 'auto'}" + (f"x{self.inter}" if self.inter else "")


_AUTO = "auto"


class ModelInput(BaseModel):
    """One input of a file or factory model: per-sample shape (an axis may be a name bound by
    the model's `dims`), dtype, and how values are generated. For an ONNX file every field is
    optional: the file gives dtypes and shapes, and symbolic axes are bound by name."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    shape: tuple[Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=r"^[A-Za-z_][\w.-]*$")],
                 ...] | None = None
    dtype: str | None = None
    high: int | None = None        # integers in [low, high)
    low: float | None = None       # integers from low (default 0); floats uniform [low, low+1)
    value: float | None = None     # every element this value (e.g. an attention mask of ones)
    # where the batch axis goes: 0 (default), another axis, or null (fed as declared);
    # "auto" for ONNX files: the first symbolic axis not bound by `dims`
    batch_axis: int | None | Literal["auto"] = _AUTO

    @model_validator(mode="after")
    def _values_fit(self):
        if self.value is not None and (self.high is not None or self.low is not None):
            raise ValueError("give either `value` or a range (`low`/`high`), not both")
        if self.high is not None and self.low is not None and self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be above low ({self.low:g})")
        if isinstance(self.batch_axis, int) and self.batch_axis < 0:
            raise ValueError("batch_axis counts axes from 0")
        return self


def _model_input(value):
    return {"shape": value} if isinstance(value, (list, tuple)) else value


class CheckSpec(BaseModel):
    """The numerical check of a benchmark entry: `check: {tolerance: 0.05}` replaces the
    precision's default tolerance (max error relative to the reference's largest value)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    tolerance: float | None = Field(None, gt=0)


class _ExternalModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    inputs: dict[str, Annotated[ModelInput, BeforeValidator(_model_input)]] | None = None
    # symbolic axes bound by name: {sequence: 128}; a list is a sweep (one cell per value)
    dims: dict[str, Annotated[int, Field(ge=1)]] | None = None
    data: str | None = None        # real inputs from a .npz or .json file (arrays by name)
    dtype: str = "float32"
    name: str | None = None

    def dims_label(self) -> str:
        return "".join(f"-{k}{v}" for k, v in (self.dims or {}).items())

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value):
        import numpy as np
        try:
            np.dtype(value)
        except TypeError:
            raise ValueError(f"unknown dtype '{value}' (expected e.g. float32, float16, int64)")
        return value


class FileModel(_ExternalModel):
    kind: Literal["file"] = "file"
    path: str
    format: Literal["onnx", "torchscript"] | None = None

    def label(self) -> str:
        return (self.name or Path(self.path).stem) + self.dims_label()


class FactoryModel(_ExternalModel):
    kind: Literal["factory"] = "factory"
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

    def label(self) -> str:
        return (self.name or self.factory.rpartition(":")[2].rpartition(".")[2]) + \
            self.dims_label()


GeneratedModel = Annotated[Union[MLPSpec, ResNetSpec, TransformerSpec, DecoderSpec],
                          Field(discriminator="family")]
ModelSpec = Union[GeneratedModel, FileModel, FactoryModel]

_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

AXES = ("model", "runtime", "device", "precision", "batch_size", "threads", "workload", "serving")
AXIS_DEFAULTS = {"runtime": "onnxruntime", "device": "cpu", "precision": "fp32", "batch_size": 1,
                 "threads": None, "workload": {"scenario": "offline"},
                 "serving": {"system": "inprocess"}}
_MAPPING_AXES = ("runtime", "threads", "workload", "serving")   # matched on the keys written
_SHORTHAND = {"runtime": "name", "workload": "scenario", "serving": "system", "threads": "intra"}
ENTRY_KEYS = AXES + SETTINGS_FIELDS + ("name", "include", "exclude", "marks", "gate", "ab",
                                       "placement", "check")
JOB_KEYS = ("name", "defaults", "benchmarks", "report", "cost", "gate", "baseline", "followers")
SPEC_KEYS = ("name", "defaults", "benchmarks", "gate")


class Gate(BaseModel):
    """Regression thresholds (metric -> tolerated change, a positive fraction in the metric's
    worse direction), the confidence of every verdict, and the between-run noise assumed where
    none was learnt. Written flat: {p99: "+10%", throughput: "-5%", confidence: 0.95}; see
    gate/thresholds.py."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    thresholds: dict[str, float]
    confidence: float = 0.95
    noise: float | None = None


AB_SCENARIOS = ("offline", "single_stream", "server")
AB_CLOSED_LOOP = ("offline", "single_stream")
AB_BASELINE_KEYS = ("model", "runtime", "precision", "threads", "serving", "python", "git")


class ABBaseline(BaseModel):
    """What the baseline side of a paired A/B cell changes; the candidate is the cell as
    written. Nothing changed: an A/A pair (a calibration of the noise)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: ModelSpec | None = None
    model_label: str | None = None
    runtime: str | None = None
    runtime_options: dict[str, Any] | None = None
    precision: str | None = None
    threads: Threads | None = None
    serving: Serving | None = None  # another serving configuration (or inprocess vs served)
    python: str | None = None      # another interpreter (venv): an execnet popen gateway
    git: str | None = None         # a revision of the rootdir's repository (a worktree)

    def label(self) -> str:
        runtime = (RuntimeSpec(name=self.runtime, **(self.runtime_options or {})).label()
                   if self.runtime is not None else None)
        changes = (("model", self.model_label if self.model is not None else None),
                   ("runtime", runtime), ("precision", self.precision),
                   ("threads", self.threads.label() if self.threads is not None else None),
                   ("serving", self.serving.label() if self.serving is not None else None),
                   ("python", self.python), ("git", self.git))
        parts = [f"{what} {value}" for what, value in changes if value is not None]
        return ", ".join(parts) or "the same cell (A/A)"


class ABSpec(BaseModel):
    """Paired mode: baseline and candidate measured interleaved in this session, `rounds`
    rounds (more, up to `max_rounds`, while undecided), each side `slice` seconds a round in
    sub-slices of `switch` seconds that alternate between the sides. Defaults depend on the
    scenario (see `for_scenario`): closed loop 0.5 s in 10 ms sub-slices; open loop 2 s in
    0.5 s sub-slices, since a sub-slice must hold enough arrivals at the cell's rate."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    rounds: int = Field(10, ge=3, le=10_000)
    max_rounds: int | None = Field(None, ge=3, le=10_000)
    slice: Duration | None = Field(None, gt=0)
    switch: Duration | None = Field(None, gt=0)
    baseline: ABBaseline = ABBaseline()

    def for_scenario(self, scenario: str) -> "ABSpec":
        """slice and switch filled with the scenario's defaults."""
        closed = scenario in AB_CLOSED_LOOP
        slice_s = self.slice if self.slice is not None else (0.5 if closed else 2.0)
        switch = self.switch if self.switch is not None else (0.01 if closed else 0.5)
        return self.model_copy(update={"slice": slice_s, "switch": min(switch, slice_s)})

    @model_validator(mode="after")
    def _ordered(self):
        if self.max_rounds is not None and self.max_rounds < self.rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) is below rounds ({self.rounds})")
        if self.switch is not None and self.slice is not None and self.switch > self.slice:
            raise ValueError(f"switch ({self.switch:g}s) is longer than slice ({self.slice:g}s)")
        return self

    @property
    def cap(self) -> int:
        return self.max_rounds if self.max_rounds is not None else 4 * self.rounds


class Cell(BaseModel):
    """One benchmark: a point of the matrix, fully resolved. Plain JSON through model_dump()."""
    model_config = ConfigDict(frozen=True)
    id: str
    spec: str
    spec_name: str
    entry: int
    line: int | None = None
    model: ModelSpec | None        # None: an endpoint benchmarked from its metadata alone
    model_label: str
    runtime: str
    runtime_options: dict[str, Any] = {}
    device: str
    precision: str
    batch_size: int
    threads: Threads | None = None
    workload: Workload
    serving: Serving
    settings: Settings
    marks: tuple[str, ...] = ()
    gate: Gate | None = None        # job < spec < entry gate, merged key by key
    ab: ABSpec | None = None        # paired mode
    placement: Placement | None = None  # where it may run (not part of the id)
    check: CheckSpec | None = None  # the numerical check's tolerance, when the entry sets it

    def params_label(self) -> str:
        runtime = RuntimeSpec(name=self.runtime, **self.runtime_options).label()
        parts = [runtime, self.device, self.precision, f"bs{self.batch_size}"]
        if self.model is None:      # an endpoint without a source model: the server decides
            parts = [f"bs{self.batch_size}"]
        if self.serving.system == "openai":    # generative: no runtime or batch size to name
            parts = [self.device] if self.model is not None else []
        if self.threads is not None:
            parts.append(self.threads.label())
        parts.append(self.workload.label())
        if self.serving.label() != "inprocess":
            parts.append(self.serving.label())
        return "-".join(parts)


# ----------------------------------------------------------------------------- loading

class _Doc:
    """A parsed YAML file with its line map; raises SpecErrors that point into it."""

    def __init__(self, path: Path):
        self.path = path
        self.data, self.lines = load_yaml(path)

    def error(self, message, field_path=()):
        return SpecError(message, file=self.path, line=line_for(self.lines, field_path),
                         field=format_field_path(field_path) or None)

    def validate(self, model_cls, value, field_path):
        try:
            return model_cls.model_validate(value)
        except ValidationError as exc:
            raise self._from_pydantic(exc, model_cls, field_path) from None

    def _from_pydantic(self, exc: ValidationError, model_cls, field_path):
        err = exc.errors()[0]
        loc = _strip_union_tags(err["loc"])
        full = tuple(field_path) + loc
        if err["type"] == "extra_forbidden":
            key = loc[-1] if loc else "?"
            allowed = _allowed_keys(model_cls, err, loc)
            msg = f"unknown key '{key}'{did_you_mean(key, allowed)}"
            if allowed:
                msg += f"; expected one of: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = "this field is required"
        elif err["type"] in ("literal_error", "union_tag_invalid"):
            msg = err["msg"].replace("Input should be", "expected")
            bad = err.get("input")
            if isinstance(bad, dict):
                bad = bad.get("family")
            expected = re.findall(r"'([^']+)'", msg)
            msg = f"got '{bad}', {msg}{did_you_mean(bad, expected)}"
        else:
            msg = err["msg"].replace("Value error, ", "")
            if ("input" in err and not isinstance(err["input"], (dict, list))
                    and repr(err["input"]) not in msg):
                msg += f" (got {err['input']!r})"
        return self.error(msg, full)


def _strip_union_tags(loc):
    """Drop pydantic's union-member tags (e.g. 'resnet', 'function-before[...]') from a loc."""
    out = []
    for part in loc:
        if isinstance(part, str) and (part in FAMILIES or "[" in part):
            continue
        out.append(part)
    return tuple(out)


def _allowed_keys(model_cls, err, loc):
    target = model_cls
    if model_cls is dict or not hasattr(model_cls, "model_fields"):
        return []
    # Walk nested models to find the class that rejected the key.
    for part in loc[:-1]:
        field = target.model_fields.get(part) if hasattr(target, "model_fields") else None
        if field is None:
            break
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            target = ann
    return [k for k in target.model_fields if k not in ("kind",)]


def _as_list(value):
    return list(value) if isinstance(value, list) else [value]


def _canon(value) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, default=str)


class _AxisResolver:
    """Validates one axis value written in a file; knows where relative paths resolve."""

    def __init__(self, doc: _Doc):
        self.doc = doc
        self.base = doc.path.parent

    def resolve(self, axis, value, path):
        fn = getattr(self, f"_{axis}")
        return fn(value, path)

    def expand(self, axis, value, path):
        """A written axis value -> list of (validated value, label override) after nested lists."""
        if axis in _MAPPING_AXES + ("model",) and isinstance(value, dict):
            keep = {"inputs"} if axis == "model" else set()
            keys = [k for k, v in value.items() if isinstance(v, list) and k not in keep]
            sweeps = [((k,), value[k]) for k in keys]
            dims = value.get("dims") if axis == "model" else None
            if isinstance(dims, dict):       # `dims: {sequence: [128, 512]}` sweeps an axis
                sweeps += [(("dims", k), v) for k, v in dims.items() if isinstance(v, list)]
            for where, options in sweeps:
                if not options:
                    raise self.doc.error("an empty list leaves nothing to benchmark",
                                         path + where)
            _check_matrix_size(self.doc, [len(options) for _, options in sweeps], path)
            out = []
            for combo in itertools.product(*(options for _, options in sweeps)):
                resolved = {**value}
                if isinstance(dims, dict):
                    resolved["dims"] = dict(dims)
                for (where, _), choice in zip(sweeps, combo):
                    if len(where) == 1:
                        resolved[where[0]] = choice
                    else:
                        resolved["dims"][where[1]] = choice
                out.append(self.resolve(axis, resolved, path))
            return out
        return [self.resolve(axis, value, path)]

    def _runtime(self, value, path):
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or "name" not in value:
            raise self.doc.error("expected a runtime name or a mapping with 'name' and options",
                                 path)
        name = value["name"]
        if not isinstance(name, str):
            raise self.doc.error(f"expected a runtime name ({', '.join(RUNTIMES)}), got {name!r}",
                                 path + ("name",))
        if name not in RUNTIMES:
            where = path + ("name",) if len(value) > 1 else path
            raise self.doc.error(f"unknown runtime '{name}'{did_you_mean(name, RUNTIMES)}; "
                                 f"expected one of: {', '.join(RUNTIMES)}", where)
        return self.doc.validate(RuntimeSpec, value, path)

    def _threads(self, value, path):
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"intra": value}
        if not isinstance(value, dict):
            raise self.doc.error("expected a thread count or {intra: N, inter: M}", path)
        return self.doc.validate(Threads, value, path)

    def _device(self, value, path):
        if not isinstance(value, str) or not _DEVICE.match(value):
            raise self.doc.error(f"unknown device {value!r}; expected cpu, cuda or cuda:N", path)
        return value

    def _precision(self, value, path):
        if value not in PRECISIONS:
            raise self.doc.error(f"unknown precision {value!r}{did_you_mean(value, PRECISIONS)}; "
                                 f"expected one of: {', '.join(PRECISIONS)}", path)
        return value

    def _batch_size(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.doc.error(f"batch size must be a positive integer, got {value!r}", path)
        return value

    def _workload(self, value, path):
        if isinstance(value, str):
            value = {"scenario": value}
        if not isinstance(value, dict):
            raise self.doc.error("expected a scenario name or a mapping with 'scenario'", path)
        if value.get("trace"):
            trace = self._file(value["trace"], "trace", path + ("trace",))
            value = {**value, "trace": str(trace)}
        prompts = value.get("prompts")
        if isinstance(prompts, dict) and prompts.get("dataset"):
            data = self._file(prompts["dataset"], "prompts dataset", path + ("prompts", "dataset"))
            value = {**value, "prompts": {**prompts, "dataset": str(data)}}
        return self.doc.validate(Workload, value, path)

    def _serving(self, value, path):
        if isinstance(value, str):
            value = {"system": value}
        if not isinstance(value, dict):
            raise self.doc.error("expected a serving system name or a mapping with 'system'", path)
        if value.get("data") is not None:
            data = value["data"]
            if not isinstance(data, str) or Path(data).suffix not in (".npz", ".json"):
                raise self.doc.error(f"input data must be a .npz or .json file, got {data!r}",
                                     path + ("data",))
            value = {**value, "data": str(self._file(data, "input data", path + ("data",)))}
        return self.doc.validate(Serving, value, path)

    def _model(self, value, path):
        label = None
        if isinstance(value, str):
            value, label = self._model_from_string(value, path)
        if not isinstance(value, dict):
            raise self.doc.error("expected a preset name, a file path, 'package.module:function' "
                                 "or a mapping", path)
        if "family" in value:
            fam = value["family"]
            if not isinstance(fam, str):
                raise self.doc.error(f"expected a model family name ({', '.join(FAMILIES)}), "
                                     f"got {fam!r}", path + ("family",))
            if fam not in FAMILIES:
                raise self.doc.error(f"unknown model family '{fam}'{did_you_mean(fam, FAMILIES)}; "
                                     f"expected one of: {', '.join(FAMILIES)}", path + ("family",))
            spec = self.doc.validate(FAMILIES[value["family"]], value, path)
        elif "path" in value:
            value = self._model_data(dict(value), path)
            p = self._file(value["path"], "model", path)
            value["path"] = str(p)
            if "format" not in value:
                value["format"] = "onnx" if p.suffix == ".onnx" else "torchscript"
            spec = self.doc.validate(FileModel, value, path)
            if spec.format == "torchscript" and not spec.inputs:
                raise self.doc.error("a TorchScript file does not carry its input signature: give "
                                     "`inputs: {name: [per-sample shape]}` (and `dtype`)", path)
            self._check_inputs(spec, path)
        elif "factory" in value:
            spec = self.doc.validate(FactoryModel, self._model_data(dict(value), path), path)
            self._check_inputs(spec, path)
        else:
            raise self.doc.error("a model mapping needs one of 'family', 'path' or 'factory'", path)
        return spec, label

    def _model_data(self, value: dict, path):
        data = value.get("data")
        if data is not None:
            if not isinstance(data, str) or Path(data).suffix not in (".npz", ".json"):
                raise self.doc.error(f"input data must be a .npz or .json file, got {data!r}",
                                     path + ("data",))
            value["data"] = str(self._file(data, "input data", path + ("data",)))
        return value

    def _check_inputs(self, spec, path):
        """Inputs that cannot be built are a spec error now, not a failure mid-sweep: an ONNX
        file's axes are checked against the file, declared shapes against `dims`."""
        from .models.inputs import InputsProblem, declared_signature, onnx_file_signature
        try:
            if spec.kind == "file" and spec.format == "onnx":
                onnx_file_signature(spec.path, spec)
            elif spec.inputs:
                declared_signature(spec)
        except InputsProblem as exc:
            raise self.doc.error(str(exc), path + (exc.field,)) from None
        except Exception:  # noqa: BLE001 - a file that does not parse fails its cells, saying
            pass           # so, when they load it; collection lists them all the same

    def _file(self, value, what, path) -> Path:
        """An existing file named in the spec; a relative path starts at the spec's directory."""
        if not isinstance(value, str):
            raise self.doc.error(f"expected a path to a {what} file, got {value!r}", path)
        p = Path(value)
        try:
            if not p.is_absolute():
                p = (self.base / p).resolve()
            found, is_dir = p.exists(), p.is_dir()
        except (OSError, ValueError) as exc:   # a NUL character, a name too long for the OS
            raise self.doc.error(f"cannot use {value!r} as a {what} file path: "
                                 f"{getattr(exc, 'strerror', None) or exc}", path) from None
        if not found:
            raise self.doc.error(f"{what} file not found: {p} (relative paths resolve against "
                                 f"the spec file's directory)", path)
        if is_dir:
            raise self.doc.error(f"{p} is a directory; expected a {what} file", path)
        return p

    def _model_from_string(self, value, path):
        if value in PRESETS:
            return dict(PRESETS[value]), value
        if value.endswith(".onnx") or value.endswith(_TORCHSCRIPT_SUFFIXES):
            return {"path": value}, None
        if _FACTORY.match(value):
            return {"factory": value}, None
        raise self.doc.error(
            f"unknown model '{value}'{did_you_mean(value, PRESETS)}; expected a preset "
            f"({', '.join(PRESETS)}), a path to an .onnx or TorchScript .pt file, or "
            f"'package.module:function'", path)


def _model_label(resolved) -> str:
    spec, label = resolved
    return label or spec.label()


def _axis_key(axis, value) -> str:
    if axis == "model":
        value = value[0]
    return _canon(value)


def _matches(combo: dict, cond: dict, cond_raw: dict) -> bool:
    for axis, value in cond.items():
        have = combo[axis]
        if axis in _MAPPING_AXES and isinstance(cond_raw[axis], dict):
            # Compare only the keys the user wrote, so {scenario: offline} matches any offline
            # workload and `runtime: onnxruntime` matches it with any options.
            have_d = have.model_dump(mode="json") if have is not None else {}
            want_d = value.model_dump(mode="json") if value is not None else {}
            raw = cond_raw[axis]
            if any(have_d.get(k) != want_d.get(k) for k in raw):
                return False
        elif _axis_key(axis, have) != _axis_key(axis, value):
            return False
    return True


class _Context:
    def __init__(self, doc: _Doc, defaults: dict, spec_rel: str, spec_name: str,
                 gate: "Gate | None" = None):
        self.doc = doc
        self.gate = gate
        self.defaults = defaults          # merged settings + axis defaults (raw)
        self.spec_rel = spec_rel
        self.spec_name = spec_name
        self.axes = _AxisResolver(doc)


def _check_keys(doc: _Doc, mapping, allowed, path, what):
    if not isinstance(mapping, dict):
        raise doc.error(f"expected a mapping ({what})", path)
    for key in mapping:
        if key not in allowed:
            raise doc.error(f"unknown key '{key}'{did_you_mean(key, allowed)}; expected one of: "
                            f"{', '.join(allowed)}", path + (key,))


def _check_name(doc: _Doc, name, path):
    if isinstance(name, (dict, list)):
        raise doc.error("expected a name (text), not a " +
                        ("mapping" if isinstance(name, dict) else "list"), path)
    return name


# A cell is measured for seconds at least, so a bigger matrix is a mistake (or an alias bomb)
# and would take long even to expand.
MAX_CELLS = 10_000


def _check_matrix_size(doc: _Doc, sizes, path):
    total = 1
    for n in sizes:
        total *= n
    if total > MAX_CELLS:
        raise doc.error(f"this sweep makes {total} cells; a spec may have at most {MAX_CELLS}",
                        path)


def _check_defaults(doc: _Doc, defaults, path) -> dict:
    if defaults is None:
        return {}
    _check_keys(doc, defaults, SETTINGS_FIELDS + AXES[1:], path, "defaults")
    settings = {k: v for k, v in defaults.items() if k in SETTINGS_FIELDS}
    # Validate field by field so each error points at its own line.
    # Validate field by field so each error points at its own line; the min/max order is
    # checked per cell, after every level has been merged.
    unordered = {"min_duration": {"max_duration": 1e18}, "max_duration": {"min_duration": 0}}
    for key, value in settings.items():
        try:
            Settings.model_validate({key: value, **unordered.get(key, {})})
        except ValidationError as exc:
            raise doc._from_pydantic(exc, Settings, path) from None
    axes = _AxisResolver(doc)
    for axis in AXES[1:]:
        if axis in defaults:
            for i, v in enumerate(_as_list(defaults[axis])):
                axes.expand(axis, v, path + (axis,) + ((i,) if isinstance(defaults[axis], list) else ()))
    return dict(defaults)


def _expand_entry(ctx: _Context, entry, index: int) -> list[Cell]:
    doc = ctx.doc
    path = ("benchmarks", index)
    _check_keys(doc, entry, ENTRY_KEYS, path, "a benchmark entry")
    written = {a for a in AXES if a in entry}
    values: dict[str, list] = {}
    for axis in AXES:
        if axis == "model" and "model" not in entry:
            # only an existing endpoint can do without a source model (checked per cell below)
            values[axis] = [(None, None)]
            continue
        raw = entry[axis] if axis in entry else ctx.defaults.get(axis, AXIS_DEFAULTS.get(axis))
        apath = path + (axis,) if axis in entry else ("defaults", axis)
        items = _as_list(raw)
        if not items:
            raise doc.error("an empty list leaves nothing to benchmark", apath)
        vals = []
        for i, item in enumerate(items):
            ipath = apath + ((i,) if isinstance(raw, list) else ())
            vals.extend(ctx.axes.expand(axis, item, ipath))
        values[axis] = vals

    _check_matrix_size(doc, [len(values[a]) for a in AXES], path)
    combos = [dict(zip(AXES, c)) for c in itertools.product(*(values[a] for a in AXES))]
    combos = [(c, {}) for c in combos]

    for j, excl in enumerate(_as_list(entry.get("exclude") or [])):
        epath = path + ("exclude", j)
        cond, raw = _condition(ctx, excl, epath, allow_settings=False)
        combos = [(c, s) for c, s in combos if not _matches(c, cond, raw)]

    originals = [dict(c) for c, _ in combos]
    for j, inc in enumerate(_as_list(entry.get("include") or [])):
        ipath = path + ("include", j)
        cond, raw = _condition(ctx, inc, ipath, allow_settings=True)
        inc_settings = {k: v for k, v in inc.items() if k in SETTINGS_FIELDS}
        added = False
        # GitHub rules: an include extends every original combination whose written values it
        # does not overwrite (values added by earlier includes may be overwritten); one that
        # extends none becomes a combination of its own, which later includes leave alone.
        for (combo, settings), orig in zip(combos[:len(originals)], originals):
            clash = any(axis in written and not _matches(orig, {axis: v}, {axis: raw[axis]})
                        for axis, v in cond.items())
            if clash:
                continue
            combo.update(cond)
            settings.update(inc_settings)
            added = True
        if not added:
            new = {}
            for axis in AXES:
                if axis in cond:
                    new[axis] = cond[axis]
                elif len(values[axis]) == 1:
                    new[axis] = values[axis][0]
                else:
                    raise doc.error(f"this include matches no combination, so it adds a new one, "
                                    f"but it does not say which '{axis}' to use (the matrix has "
                                    f"{len(values[axis])} values for it)", ipath)
            combos.append((new, dict(inc_settings)))

    if not combos:
        raise doc.error("the matrix is empty: exclude removed every combination", path)

    inline = {k: v for k, v in entry.items() if k in SETTINGS_FIELDS}
    marks = tuple(_as_list(entry.get("marks") or []))
    for m in marks:
        if not isinstance(m, str) or not m.isidentifier() or m.startswith("_"):
            raise doc.error(f"a mark must be a Python identifier not starting with '_', "
                            f"got {m!r}", path + ("marks",))
    name = _check_name(doc, entry.get("name"), path + ("name",))
    gate = _gate(doc, entry["gate"], path + ("gate",), ctx.gate) if "gate" in entry else ctx.gate
    ab = _ab(ctx, entry["ab"], path + ("ab",)) if entry.get("ab") is not None else None
    placement = (parse_placement(entry["placement"], doc.path, doc.lines, path + ("placement",))
                 if entry.get("placement") is not None else None)
    check = (doc.validate(CheckSpec, entry["check"], path + ("check",))
             if entry.get("check") is not None else None)
    cells = []
    for combo, extra in combos:
        merged = {k: v for k, v in ctx.defaults.items() if k in SETTINGS_FIELDS}
        merged.update(inline)
        merged.update(extra)
        settings = doc.validate(Settings, merged, path)
        from .workload.generative import cell_problem
        problem = cell_problem(combo["workload"], combo["serving"], combo["model"][0])
        if problem:
            raise doc.error(problem, path)
        if combo["workload"].scenario in ("ramp", "capacity"):
            from .workload.search import plan_problem
            problem = plan_problem(settings, combo["workload"])
            if problem:
                raise doc.error(problem, path + ("workload",) if "workload" in entry else path)
        model_spec, _ = combo["model"]
        if model_spec is None and combo["serving"].system not in ("endpoint", "openai"):
            raise doc.error("each benchmark needs a 'model' (only `serving: {system: endpoint}` "
                            "can do without one: it reads the inputs from the server's "
                            "metadata)", path)
        label = str(name) if name else (combo["serving"].model if model_spec is None
                                          else _model_label(combo["model"]))
        cell = dict(spec=ctx.spec_rel, spec_name=ctx.spec_name, entry=index,
                    line=line_for(doc.lines, path), model=model_spec, model_label=label,
                    runtime=combo["runtime"].name, runtime_options=combo["runtime"].options(),
                    device=combo["device"], precision=combo["precision"],
                    batch_size=combo["batch_size"], threads=combo["threads"],
                    workload=combo["workload"],
                    serving=combo["serving"], settings=settings, marks=marks, gate=gate, ab=ab,
                    placement=placement, check=check)
        if ab is not None:
            _check_ab_cell(doc, cell, path + ("ab",))
        cells.append(cell)
    return cells


def _gate(doc: _Doc, raw, path, base: "Gate | None") -> "Gate":
    """A written gate over a wider one (job < spec < entry; keys override, off removes)."""
    from .gate.thresholds import GateConfig, GateError, parse_gate
    if not isinstance(raw, dict):
        raise doc.error("expected a mapping such as {p99: '+10%', throughput: '-5%'}", path)
    try:
        config = parse_gate(raw, GateConfig(**base.model_dump()) if base else None)
    except GateError as exc:
        raise doc.error(str(exc), path + ((exc.key,) if exc.key else ())) from None
    return Gate(**config.to_json())


def _ab(ctx: _Context, raw, path) -> ABSpec:
    doc = ctx.doc
    _check_keys(doc, raw, tuple(ABSpec.model_fields), path, "ab")
    base = raw.get("baseline") or {}
    bpath = path + ("baseline",)
    _check_keys(doc, base, AB_BASELINE_KEYS, bpath, "ab.baseline")
    resolved: dict[str, Any] = {}
    if "model" in base:
        model = ctx.axes.resolve("model", base["model"], bpath + ("model",))
        resolved["model"], resolved["model_label"] = model[0], _model_label(model)
    if "runtime" in base:
        runtime = ctx.axes.resolve("runtime", base["runtime"], bpath + ("runtime",))
        resolved["runtime"], resolved["runtime_options"] = runtime.name, runtime.options()
    if "precision" in base:
        resolved["precision"] = ctx.axes.resolve("precision", base["precision"],
                                                 bpath + ("precision",))
    if "threads" in base:
        resolved["threads"] = ctx.axes.resolve("threads", base["threads"], bpath + ("threads",))
    if "serving" in base:
        serving = base["serving"]
        if isinstance(serving, str):
            serving = {"system": serving}
        resolved["serving"] = ctx.axes.resolve("serving", serving, bpath + ("serving",))
    if "python" in base:
        resolved["python"] = str(ctx.axes._file(base["python"], "python interpreter",
                                                bpath + ("python",)))
    if "git" in base:
        rev = base["git"]
        if not isinstance(rev, str) or not rev.strip() or rev.startswith("-"):
            raise doc.error(f"expected a git revision (a commit, tag or branch), got {rev!r}",
                            bpath + ("git",))
        resolved["git"] = rev.strip()
    if "python" in resolved and "git" in resolved:
        raise doc.error("give python or git, not both", bpath)
    fields = {k: v for k, v in raw.items() if k != "baseline"}
    return doc.validate(ABSpec, {**fields, "baseline": ABBaseline(**resolved)}, path)


def _check_ab_cell(doc: _Doc, cell: dict, path) -> None:
    workload, ab = cell["workload"], cell["ab"]
    scenario = workload.scenario
    if scenario not in AB_SCENARIOS:
        raise doc.error(f"paired mode (ab) measures the scenarios {', '.join(AB_SCENARIOS)} "
                        f"(it cuts the load into alternating slices), not {scenario}", path)
    if scenario == "server" and workload.arrival == "trace":
        raise doc.error("paired mode (ab) draws a fresh schedule for every slice: a trace "
                        "replay cannot be cut into alternating slices (use poisson, gamma, "
                        "constant or onoff at the trace's rate)", path)
    servings = [cell["serving"]] + ([ab.baseline.serving] if ab.baseline.serving else [])
    if any(s.system == "openai" for s in servings):
        raise doc.error("paired mode (ab) does not interleave generative serving (openai) "
                        "cells yet: compare them against a stored baseline", path)
    if scenario in AB_CLOSED_LOOP and any(s.system == "inprocess" and s.instances != 1
                                          for s in servings):
        raise doc.error("paired mode (ab) runs closed-loop scenarios with one caller: "
                        "in-process instances must be 1 (use the server scenario for "
                        "several instances)", path)
    if (ab.baseline.python or ab.baseline.git) and (
            scenario not in AB_CLOSED_LOOP or any(s.system != "inprocess" for s in servings)):
        raise doc.error("a baseline in another interpreter or git revision runs in-process "
                        f"and closed loop: combine python/git with an in-process "
                        f"{' or '.join(AB_CLOSED_LOOP)} cell", path)
    b = ab.baseline
    changed = [k for k in ("model", "runtime", "precision", "threads") if getattr(b, k)]
    if cell["model"] is None and changed and (b.model is None or b.serving is None):
        raise doc.error(f"this endpoint has no source model, so the baseline cannot change "
                        f"its {changed[0]}: pair it with another serving configuration "
                        f"(ab.baseline.serving, with a model if that one needs one)", path)
    gate = cell.get("gate")
    if scenario == "server" and gate is not None and "throughput" in gate.thresholds:
        raise doc.error("the server scenario offers a fixed rate, so both sides' throughput "
                        "is that rate: gate open-loop pairs on latency (p50, p99, mean)",
                        path)


def _condition(ctx: _Context, mapping, path, allow_settings):
    allowed = AXES + (SETTINGS_FIELDS if allow_settings else ())
    _check_keys(ctx.doc, mapping, allowed, path, "an include/exclude entry")
    cond, raw = {}, {}
    for axis in AXES:
        if axis not in mapping:
            continue
        value = mapping[axis]
        if isinstance(value, list):
            raise ctx.doc.error("expected a single value here, not a list", path + (axis,))
        if axis in _SHORTHAND and not isinstance(value, dict) and value is not None:
            value = {_SHORTHAND[axis]: value}
        raw[axis] = value
        if axis in _MAPPING_AXES and isinstance(value, dict):
            # Partial mappings are allowed: fill the rest from defaults for validation only.
            base = {"workload": {"scenario": "offline"},
                    "runtime": {"name": "onnxruntime"}}.get(axis, {})
            try:
                resolved = ctx.axes.resolve(axis, {**base, **value}, path + (axis,))
            except SpecError:
                if allow_settings or axis not in ("workload", "serving"):
                    raise       # an include may add a combination: it must be whole
                # an exclude only matches on the keys written ({scenario: concurrency}), so a
                # mapping that is not a whole value on its own is fine: check key by key
                resolved = _partial(ctx.doc, _AXIS_MODELS[axis], value, path + (axis,))
        else:
            resolved = ctx.axes.resolve(axis, value, path + (axis,))
        cond[axis] = resolved
    if allow_settings:
        settings = {k: v for k, v in mapping.items() if k in SETTINGS_FIELDS}
        if settings:
            _check_defaults(ctx.doc, settings, path)
    if not cond and not allow_settings:
        raise ctx.doc.error("an exclude entry must name at least one axis", path)
    return cond, raw


def _partial(doc, model_cls, value: dict, path):
    """A model holding only the written fields, each validated alone (for exclude matching)."""
    from pydantic import TypeAdapter
    fields = {}
    for key, raw in value.items():
        field = model_cls.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            allowed = list(model_cls.model_fields)
            raise doc.error(f"unknown key '{key}'{did_you_mean(key, allowed)}; expected one "
                            f"of: {', '.join(allowed)}", path + (key,))
        try:
            kind = (Annotated[(field.annotation, *field.metadata)] if field.metadata
                    else field.annotation)
            fields[key] = TypeAdapter(kind).validate_python(raw)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].replace("Value error, ", "")
            raise doc.error(msg, path + (key,)) from None
    return model_cls.model_construct(**fields)


_AXIS_MODELS = {"workload": Workload, "runtime": RuntimeSpec, "serving": Serving,
                "threads": Threads}


# ----------------------------------------------------------------------------- public API

class ReportSection(BaseModel):
    """The job file's `report` section: where the HTML report goes and what it shows."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    html: str | Literal[False] | None = None   # path relative to rootdir, "{name}": the job's
    title: str | None = None                   # name; false: no report
    slo: dict[str, Duration] | None = None     # best configuration under it, e.g. {p99: 50ms}
    peak_flops: dict[str, Annotated[float, Field(gt=0)]] | None = None      # FLOP/s, roofline
    peak_bandwidth: dict[str, Annotated[float, Field(gt=0)]] | None = None  # bytes/s

    @field_validator("slo")
    @classmethod
    def _one_percentile(cls, value):
        return check_slo(value)


class CostSection(BaseModel):
    """The job file's `cost` section: prices per device-hour, keyed by device type (`cuda`),
    device (`cuda:1`) or host label."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    per_hour: dict[str, Annotated[float, Field(ge=0)]]
    currency: str = "$"


class BaselineSection(BaseModel):
    """The job file's `baseline` section: compare against `latest`, a saved baseline's name or
    a run file's path (relative to the job file); save this session under a name."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    compare: str | None = None
    save: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Job(BaseModel):
    """The --infer-config file: job-wide defaults, plus its own benchmarks if any."""
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    path: str
    name: str
    defaults: dict[str, Any] = {}
    has_benchmarks: bool = False
    report: ReportSection | None = None
    cost: CostSection | None = None
    gate: Gate | None = None
    baseline: "BaselineSection | None" = None
    followers: tuple[Follower, ...] | None = None   # schedule/inventory.py


def load_job(path: str | Path) -> Job:
    path = Path(path).resolve()
    if not path.exists():
        raise SpecError("job file not found", file=path)
    doc = _Doc(path)
    data = doc.data if doc.data is not None else {}
    _check_keys(doc, data, JOB_KEYS, (), "the top level of a job file")
    defaults = _check_defaults(doc, data.get("defaults"), ("defaults",))
    name = _check_name(doc, data.get("name"), ("name",))
    report = (doc.validate(ReportSection, data["report"], ("report",))
              if data.get("report") is not None else None)
    cost = doc.validate(CostSection, data["cost"], ("cost",)) if data.get("cost") is not None \
        else None
    gate = _gate(doc, data["gate"], ("gate",), None) if data.get("gate") is not None else None
    baseline = (doc.validate(BaselineSection, data["baseline"], ("baseline",))
                if data.get("baseline") is not None else None)
    if baseline is not None and baseline.compare and _is_path(baseline.compare):
        baseline = baseline.model_copy(update={"compare": str(
            (path.parent / baseline.compare).resolve())})
    followers = (parse_followers(data["followers"], path, doc.lines)
                 if data.get("followers") is not None else None)
    return Job(path=str(path), name=str(name or path.stem), defaults=defaults,
               has_benchmarks=bool(data.get("benchmarks")), report=report, cost=cost,
               gate=gate, baseline=baseline, followers=followers)


def _is_path(ref: str) -> bool:
    """A baseline reference that names a file rather than a saved baseline or `latest`."""
    return "/" in ref or ref.endswith((".json", ".jsonl"))


def importable(directory: Path) -> None:
    """Put a spec's directory first on the import path, as pytest does for a test's directory,
    so a factory module next to the spec imports; PYTHONPATH carries it to launched servers."""
    import os
    import sys
    where = str(directory)
    if where not in sys.path:
        sys.path.insert(0, where)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if where not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([where, *parts])


def load_spec(path: str | Path, job: Job | None = None, rootdir: str | Path | None = None
              ) -> list[Cell]:
    """Parse, validate and expand one spec file into its cells (in file order)."""
    path = Path(path).resolve()
    doc = _Doc(path)
    data = doc.data
    if data is None:
        raise doc.error("the file is empty; expected 'name' and 'benchmarks'")
    is_job = job is not None and Path(job.path) == path
    # the job file is collected as a spec too: its report/cost sections are the job's
    _check_keys(doc, data, JOB_KEYS if is_job else SPEC_KEYS, (), "the top level of a spec file")
    spec_defaults = _check_defaults(doc, data.get("defaults"), ("defaults",))
    defaults = {**(job.defaults if job else {}), **spec_defaults}
    benchmarks = data.get("benchmarks")
    if benchmarks is None and is_job:
        return []
    if not isinstance(benchmarks, list) or not benchmarks:
        raise doc.error("expected a non-empty list of benchmarks", ("benchmarks",))
    try:
        rel = str(path.relative_to(Path(rootdir).resolve())) if rootdir else str(path)
    except ValueError:
        rel = str(path)
    name = _check_name(doc, data.get("name"), ("name",))
    gate = job.gate if job else None
    if data.get("gate") is not None and not is_job:
        gate = _gate(doc, data["gate"], ("gate",), gate)
    ctx = _Context(doc, defaults, rel, str(name or path.stem), gate)
    raw_cells = []
    for index, entry in enumerate(benchmarks):
        raw_cells.extend(_expand_entry(ctx, entry, index))
        _check_matrix_size(doc, [len(raw_cells)], ("benchmarks", index))
    if any(getattr(raw["model"], "kind", None) == "factory" for raw in raw_cells):
        importable(path.parent)
    cells, seen = [], {}
    for raw in raw_cells:
        probe = Cell.model_construct(**raw)
        base_id = f"{raw['model_label']}[{probe.params_label()}]"
        seen[base_id] = seen.get(base_id, 0) + 1
        cell_id = base_id if seen[base_id] == 1 else f"{base_id[:-1]}#{seen[base_id]}]"
        cells.append(Cell(id=cell_id, **raw))
    return cells
