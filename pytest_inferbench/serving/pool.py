"""One launched server per configuration: consecutive served cells that need the same server
(same model, runtime, precision, device, threads and serving knobs) reuse it.

The pool holds at most one server. It is stopped when a cell needs another one (or none: an
in-process cell must not share the host with an idle server's threads), when a cell on it
fails (its state is unknown), and at the end of the session; stopping it stops every process
it started (launcher.py), and a launch that fails half-way is stopped the same way.
"""

from __future__ import annotations

import json

from .launcher import LaunchedServer


def server_key(cell) -> str | None:
    """What a launched server depends on; None for cells that launch nothing."""
    launched = cell.serving.system in ("triton", "http") or (
        cell.serving.system == "openai" and not cell.serving.url)   # the plugin's own server
    if not launched:
        return None
    data = cell.model_dump(mode="json", include={"model", "runtime", "runtime_options",
                                                  "device", "precision", "threads", "serving"})
    data["seed"] = cell.settings.seed
    if cell.serving.system == "openai":    # one server answers every API and stream mode
        for client_side in ("api", "stream", "api_key_env"):
            data["serving"].pop(client_side, None)
    return json.dumps(data, sort_keys=True)


class ServerPool:
    def __init__(self):
        self._key = None
        self._server = None

    def get(self, cell, cache_dir):
        """(server, reused): the running server for this cell's configuration, launched if
        needed; any other server is stopped first."""
        key = server_key(cell)
        if self._server is not None and key == self._key and self._server.alive():
            return self._server, True
        self.close()
        server = LaunchedServer(cell, cache_dir)
        try:
            server.__enter__()
        except BaseException:
            server.__exit__(None, None, None)   # whatever it started is stopped (idempotent)
            raise
        self._key, self._server = key, server
        return server, False

    def release_unless(self, cell) -> None:
        """Stop the server unless this cell runs on it."""
        if self._server is not None and server_key(cell) != self._key:
            self.close()

    def close(self) -> None:
        if self._server is not None:
            server, self._server, self._key = self._server, None, None
            server.__exit__(None, None, None)


def group_by_server(cells: list) -> list:
    """The same cells, those sharing a launched server brought together (in the order each
    server first appears), so that one launch serves them all; other cells keep their place
    relative to the groups."""
    order: dict[object, list] = {}
    for i, cell in enumerate(cells):
        order.setdefault(server_key(cell) or i, []).append(cell)
    return [cell for group in order.values() for cell in group]
