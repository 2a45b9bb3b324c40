"""The axes of the matrix and how one value written for an axis is validated: names, presets,
model files (relative to the spec's directory), runtimes and their options, sweeps inside
mappings (`workload: {rate: [10, 20]}`, `dims: {sequence: [128, 512]}`)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from ..core.errors import did_you_mean
from .document import Document
from .families import FAMILIES, PRESETS
from .inputs import InputsProblem, declared_signature, onnx_file_signature
from .model import FactoryModel, FileModel
from .runtime import RUNTIMES, RuntimeSpec, Threads
from .serving import Serving
from .workload import Workload

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

AXES = ("model", "runtime", "device", "precision", "batch_size", "threads", "workload", "serving")
AXIS_DEFAULTS = {"runtime": "onnxruntime", "device": "cpu", "precision": "fp32", "batch_size": 1,
                 "threads": None, "workload": {"scenario": "offline"},
                 "serving": {"system": "inprocess"}}
MAPPING_AXES = ("runtime", "threads", "workload", "serving")   # matched on the keys written


# A cell is measured for seconds at least, so a bigger matrix is a mistake (or an alias bomb)
# and would take long even to expand.
MAX_CELLS = 10_000


def check_matrix_size(doc: Document, sizes, path):
    total = 1
    for n in sizes:
        total *= n
    if total > MAX_CELLS:
        raise doc.error(f"this sweep makes {total} cells; a spec may have at most {MAX_CELLS}",
                        path)


def model_label(resolved) -> str:
    spec, label = resolved
    return label or spec.label()


class AxisResolver:
    """Validates one axis value written in a file; knows where relative paths resolve."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.base = doc.path.parent

    def resolve(self, axis, value, path):
        fn = getattr(self, f"_{axis}")
        return fn(value, path)

    def expand(self, axis, value, path):
        """A written axis value -> list of (validated value, label override) after nested lists."""
        if axis in MAPPING_AXES + ("model",) and isinstance(value, dict):
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
            check_matrix_size(self.doc, [len(options) for _, options in sweeps], path)
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
        if not isinstance(value, str) or not DEVICE.match(value):
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
            trace = self.existing_file(value["trace"], "trace", path + ("trace",))
            value = {**value, "trace": str(trace)}
        prompts = value.get("prompts")
        if isinstance(prompts, dict) and prompts.get("dataset"):
            data = self.existing_file(prompts["dataset"], "prompts dataset", path + ("prompts", "dataset"))
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
            value = {**value, "data": str(self.existing_file(data, "input data", path + ("data",)))}
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
            p = self.existing_file(value["path"], "model", path)
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
            value["data"] = str(self.existing_file(data, "input data", path + ("data",)))
        return value

    def _check_inputs(self, spec, path):
        """Inputs that cannot be built are a spec error now, not a failure mid-sweep: an ONNX
        file's axes are checked against the file, declared shapes against `dims`."""
        try:
            if spec.kind == "file" and spec.format == "onnx":
                onnx_file_signature(spec.path, spec)
            elif spec.inputs:
                declared_signature(spec)
        except InputsProblem as exc:
            raise self.doc.error(str(exc), path + (exc.field,)) from None
        except Exception:  # noqa: BLE001 - a file that does not parse fails its cells, saying
            pass           # so, when they load it; collection lists them all the same

    def existing_file(self, value, what, path) -> Path:
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
