"""A generative cell (`serving: {system: openai}`): the system under test is the server at
`url`, or the plugin's own OpenAI-compatible server (launched, or reused from the pool) serving
the cell's generated decoder; the driver is workload/generative.py's."""

from __future__ import annotations

from ..runtimes.base import require
from ..serving.affinity import pinned
from ..serving.pool import ServerPool
from ..workload.generative import measure_generative


def run_generative_cell(cell, cache, progress=None, servers=None):
    """A `serving: {system: openai}` cell: the server at `url`, or the plugin's own server
    (launched, or reused from the pool) serving the cell's generated decoder."""
    require("aiohttp", "pip install aiohttp (the OpenAI-compatible client)")
    serving = cell.serving
    launched = {"reused": False, "launch_s": None, "cpu_affinity": None}
    own_pool = None
    if serving.url:
        url, model_name = serving.url, serving.model
    else:
        require("fastapi", "pip install 'pytest-inferbench[serve]'")
        if servers is None:
            servers = own_pool = ServerPool()
        server, reused = servers.get(cell, cache.root)
        url, model_name = server.url, server.served_model
        launched = {"reused": reused, "launch_s": round(server.launch_s, 3)
                    if server.launch_s is not None else None,
                    "cpu_affinity": server.affinity}
    try:
        with pinned((launched["cpu_affinity"] or {}).get("client")):
            result = measure_generative(url, model_name, cell, progress)
    except BaseException:
        if servers is not None:
            servers.close()
        raise
    finally:
        if own_pool is not None:
            own_pool.close()
    if result.status == "failed" and servers is not None and not serving.url:
        servers.close()
    result.serving = {"system": "openai", "protocol": "http", "url": url, "model": model_name,
                      "api": serving.api, "stream": serving.stream, **launched}
    result.model = {"label": cell.model_label}
    result.runtime = {"name": None, "served_by": serving.label()}
    return result
