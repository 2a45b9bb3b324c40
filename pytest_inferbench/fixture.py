"""The `inferbench` fixture's callable: one engine for YAML cells and hand-written tests."""

from __future__ import annotations

from typing import Callable

from pydantic import ValidationError

from .core.errors import format_field_path
from .runtimes.base import Runner
from .spec import SCENARIOS, Settings, Workload
from .workload.engine import measure_callable, measure_runner


def make_bench(item, state):
    def bench(target, inputs=None, *, scenario: str = "single_stream", batch_size: int = 1,
              name: str | None = None, **settings):
        if scenario not in SCENARIOS:
            raise ValueError(f"inferbench: unknown scenario '{scenario}'; expected one of "
                             f"{', '.join(SCENARIOS)}")
        load = {k: settings.pop(k) for k in list(settings) if k in Workload.model_fields}
        instances = settings.pop("instances", 1)
        try:
            resolved = Settings.model_validate(settings)
            workload = Workload.model_validate({"scenario": scenario, **load})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = format_field_path(err["loc"]) or "workload"
            raise ValueError(f"inferbench: {where}: {err['msg']}") from None
        progress = state.progress_for(item)
        try:
            if isinstance(target, Runner) and not callable(target):
                if inputs is None:
                    raise ValueError("inferbench: a Runner needs `inputs` (dict of arrays)")
                result = measure_runner(target, inputs, resolved, workload, batch_size, progress,
                                        instances=instances)
            elif callable(target):
                fn: Callable[[], object] = target
                result = measure_callable(fn, resolved, workload, batch_size, progress,
                                          instances=instances)
            else:
                raise TypeError("inferbench: expected a zero-argument callable or a Runner")
        finally:
            if progress is not None:
                progress.clear()
        result.id = item.nodeid + (f"::{name}" if name else "")
        result.cell = {"model_label": name or item.name,
                       "workload": workload.model_dump(mode="json", exclude_defaults=True),
                       "batch_size": batch_size, "settings": resolved.model_dump(mode="json")}
        if not hasattr(item, "inferbench_results"):
            item.inferbench_results = []
        item.inferbench_results.append(result)
        if result.status == "failed":    # errors or nothing measured: the test cannot pass
            import pytest
            pytest.fail(f"inferbench{f' {name}' if name else ''}: {result.reason}",
                        pytrace=False)
        return result
    return bench
