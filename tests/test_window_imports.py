"""Nothing is imported inside a measured window. An import holds the GIL for as long as it
runs (scipy.stats: ~0.4 s), so the first cell of a fresh process that imported lazily inside
its window stalled the open loop's issuer (issuer lag max ~390 ms, INVALID, four of four
first cells; later cells were clean because the module was loaded by then)."""

import json
import subprocess
import sys

import pytest

SCRIPT = r'''
import json, sys, time
from pytest_inferbench.spec import Settings, Workload
from pytest_inferbench.workload import engine

seen = {}
enter, leave = engine.Window.__enter__, engine.Window.__exit__

def entered(self):
    out = enter(self)
    seen["before"] = set(sys.modules)
    return out

def left(self, *exc):
    seen["during"] = sorted(set(sys.modules) - seen["before"])
    return leave(self, *exc)

engine.Window.__enter__, engine.Window.__exit__ = entered, left
workload = Workload(**json.loads(sys.argv[1]))
settings = Settings(warmup=5, min_duration=0.3, max_duration=0.6, min_queries=20,
                    ci_width=0.5)
result = engine.measure_callable(lambda: time.sleep(0.0005), settings, workload)
print(json.dumps({"n": result.latency_ms.n, "during": seen["during"]}))
'''


@pytest.mark.parametrize("workload", [
    {"scenario": "offline"}, {"scenario": "single_stream"},
    {"scenario": "server", "rate": 200}, {"scenario": "concurrency", "concurrency": 2}])
def test_a_fresh_process_imports_nothing_inside_its_first_window(workload):
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(workload)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["n"] > 0
    during = seen["during"]
    assert during == [], f"{len(during)} modules imported inside the window: {during[:8]}"
