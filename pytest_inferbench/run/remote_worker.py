"""The remote end of a baseline side in another interpreter or git revision (run/remote.py):
measure the cell in-process there, as LocalSide, on the leader's commands over the channel."""

from __future__ import annotations

import json
import os
import sys
from array import array

from ..core.result import Result
from ..measure.provenance import versions
from ..models.cache import ArtifactCache
from ..spec import Cell
from ..workload.failures import ErrorLog
from .sides import LocalSide


def serve(channel, cell_json: str, cache_root: str) -> None:
    """Load the side, report its info, then warm/run on request until told to stop."""
    try:
        side = LocalSide(Cell.model_validate(json.loads(cell_json)), ArtifactCache(cache_root))
        info = side.info()
        info.update(process=f"{sys.executable} (pid {os.getpid()})", pid=os.getpid(),
                    python=sys.version.split()[0], versions=versions())
        described = Result(scenario=side.cell.workload.scenario, batch_size=side.batch_size)
        side.describe(described)
        channel.send(json.dumps({"ok": True, "info": info, "batch_size": side.batch_size,
                                 "described": described.model_dump(
                                     mode="json", include={"runtime", "model"})}, default=str))
    except BaseException as exc:  # noqa: BLE001 - reported to the caller as one line
        channel.send(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return
    try:
        while True:
            msg = channel.receive()
            if msg[0] == "run":
                out = array("q")
                side.errors = ErrorLog()
                busy = side.run(msg[1], out)
                channel.send((out.tobytes(), busy, json.dumps(side.errors.to_json(len(out)))))
            elif msg[0] == "warm":
                side.warm(msg[1])
                channel.send(True)
            else:
                break
    finally:
        side.close()
        channel.send(True)
