"""A cell in this process: artifact (generate or load the model, convert it, check its outputs
against the source model) -> system under test (the runtime's prepared call on the device) ->
driver (the cell's scenario) -> Result with the model's and the runtime's record."""

from __future__ import annotations

from ..core.errors import CellStepError, RuntimeUnavailable
from ..core.result import Result
from ..measure.gpu_monitor import GpuMonitor
from ..models.check import OutputMismatch, check_cell
from ..models.inputs import model_inputs
from ..runtimes import runner_class
from ..runtimes.base import LoadContext
from ..serving.affinity import available
from ..spec import FactoryModel, FileModel, Threads
from ..workload.engine import measure_runner
from ..workload.samples import Progress


def run_inprocess_cell(cell, cache, progress: Progress | None = None) -> Result:
    """The runner in this process: load (converting, cached), check its outputs against the
    source model before any time is spent measuring, build seeded inputs from the model's
    signature, then measure the prepared call with the cell's scenario."""
    runner = runner_class(cell.runtime)()
    threads, threads_note = threads_for(cell)
    context = LoadContext(cache=cache, seed=cell.settings.seed, options=cell.runtime_options,
                          threads=threads)
    context.model = cell.model
    context.check_tolerance = cell.check.tolerance if cell.check is not None else None
    try:
        try:
            runner.load(cell.model, cell.device, cell.precision, context)
        except RuntimeUnavailable:
            raise                          # a skip, saying what is missing
        except Exception as exc:  # noqa: BLE001 - say which step failed, keep what it recorded
            raise CellStepError("loading the model", exc, context.model_info) from None
        try:
            check = check_cell(cell, runner, context, cache.root)
        except OutputMismatch as exc:      # recorded with the failed result, not lost
            result = Result(status="failed", reason=str(exc))
            result.model = model_record(cell, context, exc.check)
            result.runtime = runner.info()
            return result
        inputs = model_inputs(cell.model, context.signature, cell.batch_size,
                              cell.settings.seed)
        gpu = GpuMonitor(cell.device) if cell.device.startswith("cuda") else None
        result = measure_runner(runner, inputs, cell.settings, cell.workload,
                                cell.batch_size, progress, gpu, cell.serving.instances)
    finally:
        runner.close()
    if threads_note:
        result.runtime["threads_note"] = threads_note
    result.model = model_record(cell, context, check)
    return result


def model_record(cell, context, check) -> dict:
    signature = context.signature
    inputs = {} if signature is None else {
        t.name: {"shape": list(t.full_shape(cell.batch_size)), **t.describe()}
        for t in signature.inputs}
    return {"label": cell.model_label, **context.model_info, "check": check, "inputs": inputs,
            "inputs_source": _data_file(cell.model) or "generated"}


def _data_file(model) -> str | None:
    """The file of real inputs an external model names, None for generated inputs."""
    return model.data if isinstance(model, (FileModel, FactoryModel)) else None


def threads_for(cell):
    """In-process open-loop cells leave the load generator a core: unless the spec sets the
    threads, the runtime gets one intra-op thread fewer than the cores this process may use."""
    if cell.threads is not None or cell.workload.scenario_def.closed_loop \
            or not cell.device == "cpu":
        return cell.threads, None
    cores = len(available())
    if cores < 2:
        return None, None
    return Threads(intra=cores - 1), (f"intra-op threads {cores - 1} of {cores} cores: one "
                                      f"is left to the open-loop generator")
