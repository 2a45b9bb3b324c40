"""Measure one cell of a spec: the one entry point the plugin and the benchmarks use. A cell
is measured by the pipeline of its system under test:

    in-process runner      run/inprocess.py
    a server or endpoint   run/served.py      (KServe v2 over HTTP/gRPC)
    an OpenAI endpoint     run/generative.py  (streamed tokens: TTFT, ITL, goodput)
    paired A/B (`ab:`)     run/paired.py      (two systems under test, interleaved)
      ... in processes     run/paired_processes.py (pairs of fresh processes)
"""

from __future__ import annotations

from ..core.result import Result
from ..workload.samples import Progress
from .generative import run_generative_cell
from .inprocess import run_inprocess_cell
from .paired import run_paired_cell
from .paired_processes import run_process_pairs
from .served import run_served_cell


def run_cell(cell, cache, progress: Progress | None = None, servers=None,
             paired_cells: int = 1, rootdir=None) -> Result:
    """Measure one cell. Raises RuntimeUnavailable (-> skip) or any error (-> failed).

    The runner's outputs are checked against the source model (once per artifact) before any
    time is spent measuring: numbers for a model that computes something else are worthless.
    servers: a ServerPool to reuse launched servers across consecutive cells (the session's).
    A cell with `ab` is measured in paired mode (run/paired.py) against its baseline;
    paired_cells: how many such cells the session judges; rootdir: where a git baseline's
    repository is.
    """
    if cell.ab is not None:
        if servers is not None:
            servers.release_unless(cell)
        if cell.settings.processes:     # pairs of fresh processes
            return run_process_pairs(cell, cache, progress, cells=paired_cells,
                                     rootdir=rootdir)
        return run_paired_cell(cell, cache, progress, cells=paired_cells, rootdir=rootdir)
    if servers is not None:
        servers.release_unless(cell)      # no idle server beside another cell's measurement
    if cell.serving.system == "openai":     # generative serving: TTFT, ITL, TPOT, goodput
        return run_generative_cell(cell, cache, progress, servers)
    if cell.serving.system != "inprocess":
        return run_served_cell(cell, cache, progress, servers)
    return run_inprocess_cell(cell, cache, progress)
