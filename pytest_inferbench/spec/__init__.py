"""The YAML spec: one schema module per section, the matrix, and loading.

A spec file:  name, defaults (settings and axis values), benchmarks (list of entries).
A job file (--infer-config): the same, where `benchmarks` is optional and `defaults` apply to
every collected spec. Every axis field may be a list; an entry is the cartesian product of its
lists, adjusted by `exclude` then `include` with GitHub Actions matrix semantics.

    settings.py   defaults: durations, query counts, percentiles, stopping
    workload.py   the workload axis (scenario, arrivals, SLO); prompts.py, generative.py
    serving.py    the serving axis;  runtime.py  runtimes (and their registry), threads
    families.py   generated model families and presets;  model.py  files and factories;
    inputs.py     a model's input signature from what the spec declares
    gate.py, ab.py, followers.py, job.py   the gate, paired mode, followers, the job file
    axes.py       validating one written axis value;  matrix.py  expanding an entry
    document.py   positions and errors (yaml_lines.py reads the YAML with a line map)
    cell.py       the resolved Cell;  loading.py  load_job, load_spec

The spec is the bottom of the system above core/: it imports nothing above it. What it must
know of the layers above (runtime names, model families, the generative cell rules, the
capacity search's plan) is declared here or in core/.
"""

from .ab import AB_BASELINE_KEYS, AB_CLOSED_LOOP, AB_SCENARIOS, ABBaseline, ABSpec
from .axes import AXES, AXIS_DEFAULTS, MAX_CELLS, PRECISIONS
from .cell import Cell
from .families import FAMILIES, PRESETS, DecoderSpec, MLPSpec, ResNetSpec, TransformerSpec
from .followers import Follower, Placement, load_followers
from .gate import Gate
from .job import BaselineSection, CostSection, Job, ReportSection
from .loading import JOB_KEYS, SPEC_KEYS, importable, load_job, load_spec
from .matrix import ENTRY_KEYS
from .model import CheckSpec, FactoryModel, FileModel, ModelInput, ModelSpec
from .runtime import RUNTIME_OPTIONS, RUNTIMES, RuntimeSpec, Threads
from .serving import SERVING_SYSTEMS, InputDecl, Serving
from .settings import SETTINGS_FIELDS, Settings
from .workload import ARRIVALS, SCENARIOS, Workload, check_slo

__all__ = ["AB_BASELINE_KEYS", "AB_CLOSED_LOOP", "AB_SCENARIOS", "ABBaseline", "ABSpec", "AXES",
           "AXIS_DEFAULTS", "ARRIVALS", "BaselineSection", "Cell", "CheckSpec", "CostSection",
           "DecoderSpec", "ENTRY_KEYS", "FAMILIES", "FactoryModel", "FileModel", "Follower",
           "Gate", "InputDecl", "JOB_KEYS", "Job", "MAX_CELLS", "MLPSpec", "ModelInput",
           "ModelSpec", "PRECISIONS", "PRESETS", "Placement", "RUNTIMES", "RUNTIME_OPTIONS",
           "ReportSection", "ResNetSpec", "RuntimeSpec", "SCENARIOS", "SERVING_SYSTEMS",
           "SETTINGS_FIELDS", "SPEC_KEYS", "Serving", "Settings", "Threads", "TransformerSpec",
           "Workload", "check_slo", "importable", "load_followers", "load_job", "load_spec"]
