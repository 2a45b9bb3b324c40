"""A controlled system under test shared by the gate, history and store tests: the source of
a module (written into each test's directory as spinmods.py) whose callable busy-waits a known
time per query, scaled by SPIN_FACTOR. It runs on runtime python: no process that measures it
imports torch (~1.8 s of CPU each, in every session and fresh process these tests start)."""

SPIN = '''
import os, time

class Spin:
    """Busy-waits a fixed time per query: its work is scaled by a known factor."""
    def __init__(self, us):
        self.s = us * 1e-6
    def __call__(self, x):
        end = time.perf_counter() + self.s
        while time.perf_counter() < end:
            pass
        return x * 2.0

def current():
    return Spin(400 * float(os.environ.get("SPIN_FACTOR", "1"))), {"x": [4]}
def base():
    return Spin(400), {"x": [4]}
def slow10():
    return Spin(440), {"x": [4]}
def other():
    return Spin(200), {"x": [4]}
'''
