"""Load a cell's model inside a server process: the same runner the in-process path uses,
called on each request's tensors."""

from __future__ import annotations

import json

import numpy as np

from ..models.cache import ArtifactCache
from ..runtimes import runner_class
from ..runtimes.base import LoadContext
from ..spec import Cell, Threads


class HostedModel:
    def __init__(self, cell_path: str, cache_dir: str):
        self.cell = Cell.model_validate(json.loads(open(cell_path).read()))
        cell = self.cell
        self.runner = runner_class(cell.runtime)()
        threads = cell.threads
        if threads is None and cell.device == "cpu":
            # as many intra-op threads as the cores this server was given (see affinity.py)
            import os

            threads = Threads(intra=len(os.sched_getaffinity(0)))
        self.context = LoadContext(cache=ArtifactCache(cache_dir), seed=cell.settings.seed,
                                   options=cell.runtime_options, threads=threads)
        self.runner.load(cell.model, cell.device, cell.precision, self.context)
        self.signature = self.context.signature
        unbatched = [t.name for t in self.signature.inputs if t.batch_axis != 0]
        if unbatched:   # a KServe server batches every input along its first axis
            raise ValueError(f"input(s) {', '.join(unbatched)} have no batch axis at 0 "
                             f"(batch_axis): a served model's inputs are batched along their "
                             f"first axis; benchmark this model in-process")
        probe = self.signature.generate(1, seed=0)
        self.output_shapes = [o.shape[1:] for o in self.runner.infer(probe)]
        self.output_names = [f"output{i}" if i else "output" for i in range(len(self.output_shapes))]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.runner.infer(inputs)
        return dict(zip(self.output_names, outs))
