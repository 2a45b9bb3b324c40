"""Matrix expansion of a benchmark entry: the cartesian product of its axes' lists, `exclude`
then `include` with GitHub Actions matrix semantics, settings merged job < spec < entry <
include, and each combination checked as a whole (generative rules, capacity-search plan,
paired mode) before it becomes a Cell."""

from __future__ import annotations

import itertools
import json
from typing import Annotated

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..core.capacity_plan import plan_problem
from ..core.errors import SpecError, did_you_mean
from .ab import ab_section, check_ab_cell
from .axes import AXES, AXIS_DEFAULTS, MAPPING_AXES, AxisResolver, check_matrix_size, model_label
from .cell import Cell
from .document import Document, check_keys, check_name
from .followers import parse_placement
from .gate import Gate, gate_section
from .generative import cell_problem
from .model import CheckSpec
from .runtime import RuntimeSpec, Threads
from .search_plan import search_cell
from .serving import Serving
from .settings import SETTINGS_FIELDS, Settings
from .workload import Workload
from .yaml_lines import line_for

_SHORTHAND = {"runtime": "name", "workload": "scenario", "serving": "system", "threads": "intra"}
ENTRY_KEYS = AXES + SETTINGS_FIELDS + ("name", "include", "exclude", "marks", "gate", "ab",
                                       "placement", "check", "search")


def _as_list(value):
    return list(value) if isinstance(value, list) else [value]


def _canon(value) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, default=str)


def _axis_key(axis, value) -> str:
    if axis == "model":
        value = value[0]
    return _canon(value)


def _matches(combo: dict, cond: dict, cond_raw: dict) -> bool:
    for axis, value in cond.items():
        have = combo[axis]
        if axis in MAPPING_AXES and isinstance(cond_raw[axis], dict):
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


class SpecContext:
    def __init__(self, doc: Document, defaults: dict, spec_rel: str, spec_name: str,
                 gate: Gate | None = None, cost=None):
        self.doc = doc
        self.gate = gate
        self.cost = cost                  # the job's prices (a cost_per_million search)
        self.defaults = defaults          # merged settings + axis defaults (raw)
        self.spec_rel = spec_rel
        self.spec_name = spec_name
        self.axes = AxisResolver(doc)


def check_defaults(doc: Document, defaults, path) -> dict:
    if defaults is None:
        return {}
    check_keys(doc, defaults, SETTINGS_FIELDS + AXES[1:] + ("placement",), path, "defaults")
    if defaults.get("placement") is not None:     # checked here: its errors point at defaults
        parse_placement(defaults["placement"], doc.path, doc.lines, path + ("placement",))
    settings = {k: v for k, v in defaults.items() if k in SETTINGS_FIELDS}
    # Validate field by field so each error points at its own line; the min/max order is
    # checked per cell, after every level has been merged.
    unordered = {"min_duration": {"max_duration": 1e18}, "max_duration": {"min_duration": 0}}
    for key, value in settings.items():
        try:
            Settings.model_validate({key: value, **unordered.get(key, {})})
        except ValidationError as exc:
            raise doc._from_pydantic(exc, Settings, path) from None
    axes = AxisResolver(doc)
    for axis in AXES[1:]:
        if axis in defaults:
            for i, v in enumerate(_as_list(defaults[axis])):
                axes.expand(axis, v, path + (axis,) + ((i,) if isinstance(defaults[axis], list) else ()))
    return dict(defaults)


def expand_entry(ctx: SpecContext, entry, index: int) -> list[Cell]:
    doc = ctx.doc
    path = ("benchmarks", index)
    check_keys(doc, entry, ENTRY_KEYS, path, "a benchmark entry")
    values = _axis_values(ctx, entry, path)
    check_matrix_size(doc, [len(values[a]) for a in AXES], path)
    combos = [(dict(zip(AXES, c)), {}) for c in itertools.product(*(values[a] for a in AXES))]
    combos = _exclude(ctx, entry, path, combos)
    _include(ctx, entry, path, combos, values)
    if not combos:
        raise doc.error("the matrix is empty: exclude removed every combination", path)
    common = _entry_sections(ctx, entry, path)
    inline = {k: v for k, v in entry.items() if k in SETTINGS_FIELDS}
    cells = [_cell(ctx, entry, index, combo, {**inline, **extra}, common)
             for combo, extra in combos]
    if entry.get("search") is not None:     # one item that searches these candidates
        return [search_cell(doc, entry, path, cells, ctx.cost)]
    return cells


def _axis_values(ctx: SpecContext, entry, path) -> dict[str, list]:
    """Each axis's values: the entry's, else the spec's defaults, else the axis default."""
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
            raise ctx.doc.error("an empty list leaves nothing to benchmark", apath)
        vals = []
        for i, item in enumerate(items):
            ipath = apath + ((i,) if isinstance(raw, list) else ())
            vals.extend(ctx.axes.expand(axis, item, ipath))
        values[axis] = vals
    return values


def _exclude(ctx: SpecContext, entry, path, combos: list) -> list:
    for j, excl in enumerate(_as_list(entry.get("exclude") or [])):
        cond, raw = _condition(ctx, excl, path + ("exclude", j), allow_settings=False)
        combos = [(c, s) for c, s in combos if not _matches(c, cond, raw)]
    return combos


def _include(ctx: SpecContext, entry, path, combos: list, values: dict) -> None:
    """Apply `include` to the combinations, in place. GitHub rules: an include extends every
    original combination whose written values it does not overwrite (values added by earlier
    includes may be overwritten); one that extends none becomes a combination of its own,
    which later includes leave alone."""
    written = {a for a in AXES if a in entry}
    originals = [dict(c) for c, _ in combos]
    for j, inc in enumerate(_as_list(entry.get("include") or [])):
        ipath = path + ("include", j)
        cond, raw = _condition(ctx, inc, ipath, allow_settings=True)
        inc_settings = {k: v for k, v in inc.items() if k in SETTINGS_FIELDS}
        added = False
        for (combo, settings), orig in zip(combos[:len(originals)], originals):
            clash = any(axis in written and not _matches(orig, {axis: v}, {axis: raw[axis]})
                        for axis, v in cond.items())
            if clash:
                continue
            combo.update(cond)
            settings.update(inc_settings)
            added = True
        if not added:
            combos.append((_new_combination(ctx.doc, cond, values, ipath), dict(inc_settings)))


def _new_combination(doc: Document, cond: dict, values: dict, ipath) -> dict:
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
    return new


def _entry_sections(ctx: SpecContext, entry, path) -> dict:
    """What every cell of the entry shares: marks, name, gate, ab, placement, check."""
    doc = ctx.doc
    marks = tuple(_as_list(entry.get("marks") or []))
    for m in marks:
        if not isinstance(m, str) or not m.isidentifier() or m.startswith("_"):
            raise doc.error(f"a mark must be a Python identifier not starting with '_', "
                            f"got {m!r}", path + ("marks",))
    name = check_name(doc, entry.get("name"), path + ("name",))
    gate = gate_section(doc, entry["gate"], path + ("gate",), ctx.gate) if "gate" in entry else ctx.gate
    ab = ab_section(ctx, entry["ab"], path + ("ab",)) if entry.get("ab") is not None else None
    placement = _placement(ctx, entry, path)
    check = (doc.validate(CheckSpec, entry["check"], path + ("check",))
             if entry.get("check") is not None else None)
    return {"name": name, "marks": marks, "gate": gate, "ab": ab, "placement": placement,
            "check": check}


def _placement(ctx: SpecContext, entry, path):
    """The entry's `placement`, else the spec's `defaults.placement` (whole, not merged)."""
    if entry.get("placement") is not None:
        return parse_placement(entry["placement"], ctx.doc.path, ctx.doc.lines,
                               path + ("placement",))
    if ctx.defaults.get("placement") is not None:
        return parse_placement(ctx.defaults["placement"], ctx.doc.path, ctx.doc.lines,
                               ("defaults", "placement"))
    return None


def _cell(ctx: SpecContext, entry, index: int, combo: dict, entry_settings: dict,
          common: dict) -> dict:
    """One combination as a cell (a dict Cell validates), checked as a whole."""
    doc, path = ctx.doc, ("benchmarks", index)
    merged = {k: v for k, v in ctx.defaults.items() if k in SETTINGS_FIELDS}
    merged.update(entry_settings)
    settings = doc.validate(Settings, merged, path)
    _check_combination(doc, entry, path, combo, settings)
    model_spec, _ = combo["model"]
    name = common["name"]
    label = str(name) if name else (combo["serving"].model if model_spec is None
                                    else model_label(combo["model"]))
    cell = dict(spec=ctx.spec_rel, spec_name=ctx.spec_name, entry=index,
                line=line_for(doc.lines, path), model=model_spec, model_label=label,
                runtime=combo["runtime"].name, runtime_options=combo["runtime"].options(),
                device=combo["device"], precision=combo["precision"],
                batch_size=combo["batch_size"], threads=combo["threads"],
                workload=combo["workload"], serving=combo["serving"], settings=settings,
                marks=common["marks"], gate=common["gate"], ab=common["ab"],
                placement=common["placement"], check=common["check"])
    if common["ab"] is not None:
        check_ab_cell(doc, cell, path + ("ab",))
    return cell


def _check_combination(doc: Document, entry, path, combo: dict, settings) -> None:
    """The rules that hold for a combination as a whole (generative, capacity plan, model)."""
    problem = cell_problem(combo["workload"], combo["serving"], combo["model"][0])
    if problem:
        raise doc.error(problem, path)
    if combo["workload"].scenario_def.rate_search:
        problem = plan_problem(settings, combo["workload"])
        if problem:
            raise doc.error(problem, path + ("workload",) if "workload" in entry else path)
    if combo["model"][0] is None and combo["serving"].system not in ("endpoint", "openai"):
        raise doc.error("each benchmark needs a 'model' (only `serving: {system: endpoint}` "
                        "can do without one: it reads the inputs from the server's "
                        "metadata)", path)


def _condition(ctx: SpecContext, mapping, path, allow_settings):
    allowed = AXES + (SETTINGS_FIELDS if allow_settings else ())
    check_keys(ctx.doc, mapping, allowed, path, "an include/exclude entry")
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
        if axis in MAPPING_AXES and isinstance(value, dict):
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
            check_defaults(ctx.doc, settings, path)
    if not cond and not allow_settings:
        raise ctx.doc.error("an exclude entry must name at least one axis", path)
    return cond, raw


def _partial(doc, model_cls, value: dict, path):
    """A model holding only the written fields, each validated alone (for exclude matching)."""
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
