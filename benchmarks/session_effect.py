"""What makes one fresh process faster than another? The "session effect" on 2-core machines.

    python benchmarks/session_effect.py                          # all conditions, ~9 min
    python benchmarks/session_effect.py --processes 4 --conditions baseline,pinned --window 0.3
    python benchmarks/session_effect.py --from /tmp/session_effect-....jsonl   # analyse again

On one 2-core machine the single-stream bs1 p50 of a tiny model differed between fresh
processes, with two modes (about 0.16 and 0.25 ms). This script launches many fresh child
processes; each builds the same model (gate_quality.py's: 20 x (matmul 256x256 + tanh) at
batch 1, fixed weights; the onnxruntime children run the same module exported to ONNX once),
warms up, times single queries back to back with time.perf_counter_ns (the garbage collector
off, as the harness does) and prints one JSON line: p50, p90, p99, mean, and facts about the
process: start and end CPU (/proc/self/stat 'processor', sched_getaffinity), the main thread's
migrations and voluntary/involuntary context switches during the timed window
(/proc/self/sched, /proc/self/status), involuntary switches of all its threads, steal time and
the cores other processes used during the window (/proc/stat, 1/CLK_TCK resolution), torch
threads or the ORT session's intra-op setting and the OS threads the process holds, the
addresses of the input array, the weight (torch) and the runtime library's mapping, modulo
4 KiB and 2 MiB, PYTHONHASHSEED, whether ASLR was off, THP mode and the process's
AnonHugePages, the CPU frequency governor and clock where readable. Nothing on the machine is
written to.

Conditions (each a group of --processes children per runtime), in randomised blocks: each
round runs one child of every (condition, runtime) group in a fresh random order, so slow
drift of the machine and the neighbours hit all groups alike:
  baseline         nothing set, as a user would run it
  pinned           the child process is pinned to one CPU before it starts (round r: the
                   r-th allowed CPU, cycling), so all its threads inherit that CPU; torch
                   sizes its pool from the affinity, so a pinned torch child runs 1 thread
  threads1         torch.set_num_threads(1) / ORT intra_op_num_threads=1
  pinned+threads1  both
  hashseed0        PYTHONHASHSEED=0
  noaslr           under `setarch $(uname -m) -R` (skipped, with the reason, if unavailable)
  malloc           MALLOC_ARENA_MAX=1 and a fixed MALLOC_MMAP_THRESHOLD_ (131072)
  longwarm         3 s of warm-up instead of 0.3 s

Printed per condition and runtime: n, the geometric mean p50, the between-process sd of
log p50 (as %), max/min, the median p90/p50 inside a process, and a bimodality check: the
largest gap between neighbouring sorted p50s relative to the median and how many processes
lie below it ("2 modes" when the gap is >= 10% with at least 2 processes on each side;
between-process sd on quiet machines is ~2.5%), and how many processes had a busy neighbour
(other processes used >= 0.5 core during the timed window). Then the Spearman correlation
of log p50 with each fact that varies: per group, and pooled per runtime over all groups
(log p50 minus its group's mean, so the conditions' own effects do not count). Groups with
two modes list their processes. Last a verdict per factor and runtime: the sd of log p50
divided by the baseline's, with a 95% percentile-bootstrap interval (10,000 resamples, fixed
seed) and an F interval (which assumes normal log p50s, wrong when there are two modes); the
verdict uses the union of both intervals. A factor "reduces the spread" only when that whole
interval lies below 1; an interval that includes 1 proves nothing either way, and with 12
processes per group it is wide (the F interval alone is x0.54 to x1.86 around the estimate),
so only a large effect is ever resolved. The p50 ratio to baseline (geometric means,
bootstrap interval) says whether the factor moves the level, e.g. forces the fast mode.

The raw JSON lines (one per child, after one line describing the machine) go to --out.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUNTIMES = ("torch", "onnxruntime")
LIBRARY = {"torch": "libtorch_cpu.so", "onnxruntime": "libonnxruntime.so"}
CONTROLLED_ENV = ("PYTHONHASHSEED", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
MODE_GAP = 0.10
BUSY = 0.5          # other processes used at least this many cores during the timed window
RESAMPLES, SEED = 10_000, 20240611
TWO_MIB = 2 << 20


@dataclass(frozen=True)
class Condition:
    name: str
    env: dict = field(default_factory=dict)
    pin: bool = False
    threads: int | None = None
    long_warmup: bool = False
    no_aslr: bool = False


CONDITIONS = {c.name: c for c in (
    Condition("baseline"),
    Condition("pinned", pin=True),
    Condition("threads1", threads=1),
    Condition("pinned+threads1", pin=True, threads=1),
    Condition("hashseed0", env={"PYTHONHASHSEED": "0"}),
    Condition("noaslr", no_aslr=True),
    Condition("malloc", env={"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}),
    Condition("longwarm", long_warmup=True),
)}

# Facts correlated with p50: (label, record key).
FACTS = (("start cpu", "cpu_start"), ("end cpu", "cpu_end"), ("migrations", "migrations"),
         ("invol. switches", "involuntary"), ("vol. switches", "voluntary"),
         ("all threads invol.", "threads_involuntary"), ("os threads", "os_threads"),
         ("other cores busy", "other_cores"), ("steal jiffies", "steal"),
         ("weight addr %4K", "param_4k"), ("weight addr %2M", "param_2m"),
         ("input addr %4K", "input_4k"), ("input addr %2M", "input_2m"),
         ("library base %2M", "library_2m"), ("AnonHugePages kB", "anon_huge_kb"))


# ----------------------------------------------------------------------------- /proc readers

def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def current_cpu() -> int | None:
    """/proc/self/stat field 39 ('processor'); the fields after the ')' of comm start at 3."""
    text = _read("/proc/self/stat")
    return int(text.rsplit(")", 1)[1].split()[36]) if text else None


def _own_cpu_jiffies() -> int:
    fields = _read("/proc/self/stat").rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])          # utime + stime (fields 14, 15)


def _sched(path: str) -> dict[str, int]:
    """Migrations and switches of one thread (/proc/.../sched; empty if not readable)."""
    out = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("se.nr_migrations", "nr_voluntary_switches", "nr_involuntary_switches"):
            out[key] = int(float(value))
    return out


def _status_switches() -> dict[str, int]:
    out = {}
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            key, value = line.split(":")
            out[key] = int(value)
    return out


def _threads_involuntary() -> int:
    total = 0
    for tid in os.listdir("/proc/self/task"):
        total += _sched(f"/proc/self/task/{tid}/sched").get("nr_involuntary_switches", 0)
    return total


def _proc_stat() -> tuple[int, int]:
    """(busy jiffies of all CPUs, steal jiffies) from /proc/stat's first line."""
    v = [int(x) for x in _read("/proc/stat").split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return user + nice + system + irq + softirq, steal


def counters() -> dict:
    """What the timed window's deltas are taken of."""
    sched = _sched("/proc/self/sched")
    status = _status_switches()
    busy, steal = _proc_stat()
    return {"migrations": sched.get("se.nr_migrations"),
            "involuntary": status.get("nonvoluntary_ctxt_switches",
                                      sched.get("nr_involuntary_switches")),
            "voluntary": status.get("voluntary_ctxt_switches",
                                    sched.get("nr_voluntary_switches")),
            "threads_involuntary": _threads_involuntary(), "busy": busy, "steal": steal,
            "own": _own_cpu_jiffies(), "t": time.perf_counter()}


def window_deltas(before: dict, after: dict) -> dict:
    out = {}
    for key in ("migrations", "involuntary", "voluntary", "threads_involuntary", "steal"):
        a, b = before.get(key), after.get(key)
        out[key] = None if a is None or b is None else b - a
    hz = os.sysconf("SC_CLK_TCK")
    others = (after["busy"] - before["busy"]) - (after["own"] - before["own"])
    out["other_cores"] = round(others / hz / (after["t"] - before["t"]), 3)
    return out


def library_base(name: str) -> int | None:
    for line in (_read("/proc/self/maps") or "").splitlines():
        if name in line:
            return int(line.split("-", 1)[0], 16)
    return None


def machine_facts(cpu: int | None) -> dict:
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled") or ""
    selected = thp[thp.find("[") + 1:thp.find("]")] if "[" in thp else None
    rollup = _read("/proc/self/smaps_rollup") or ""
    huge = next((int(line.split()[1]) for line in rollup.splitlines()
                 if line.startswith("AnonHugePages:")), None)
    out = {"thp": selected, "anon_huge_kb": huge,
           "aslr_off": bool(int(_read("/proc/self/personality") or "0", 16) & 0x0040000),
           "hashseed": os.environ.get("PYTHONHASHSEED")}
    if cpu is not None:
        freq = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/"
        out["governor"] = (_read(freq + "scaling_governor") or "").strip() or None
        out["freq_khz"] = (_read(freq + "scaling_cur_freq") or "").strip() or None
        out["cpuinfo_mhz"] = _cpuinfo_mhz(cpu)
    return out


def _cpuinfo_mhz(cpu: int) -> float | None:
    for block in (_read("/proc/cpuinfo") or "").split("\n\n"):
        fields = {k.strip(): v.strip() for k, _, v in
                  (line.partition(":") for line in block.splitlines())}
        if fields.get("processor") == str(cpu) and "cpu MHz" in fields:
            return float(fields["cpu MHz"])
    return None


# ----------------------------------------------------------------------------- the child

def _load_models(path: str):
    spec = importlib.util.spec_from_file_location("gq_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setup_torch(cfg: dict, x: np.ndarray):
    """(call, facts, context to measure in)."""
    import torch
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    model = _load_models(cfg["model_py"]).base()[0].eval()
    xt = torch.from_numpy(x)
    ptr = model.w.data_ptr()
    facts = {"torch_threads": torch.get_num_threads(), "param_4k": ptr % 4096,
             "param_2m": ptr % TWO_MIB}
    return (lambda: model(xt)), facts, torch.inference_mode()


def setup_onnxruntime(cfg: dict, x: np.ndarray):
    """(call, facts, context to measure in)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if cfg["threads"]:
        opts.intra_op_num_threads = cfg["threads"]
    sess = ort.InferenceSession(cfg["onnx"], opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    intra = sess.get_session_options().intra_op_num_threads
    return (lambda: sess.run(None, feed)), {"ort_intra_threads": intra}, nullcontext()


def run_for(call, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        call()


def time_queries(call, seconds: float) -> np.ndarray:
    """Single queries back to back for `seconds`: per-query nanoseconds."""
    clock = time.perf_counter_ns
    times = []
    end = clock() + int(seconds * 1e9)
    gc.disable()
    try:
        while True:
            t0 = clock()
            call()
            t1 = clock()
            times.append(t1 - t0)
            if t1 >= end:
                return np.array(times, dtype=np.float64)
    finally:
        gc.enable()


def child(cfg: dict) -> None:
    """Build, warm up, time; print one JSON line."""
    record = {"cpu_start": current_cpu(), "affinity_start": sorted(os.sched_getaffinity(0))}
    x = np.random.default_rng(0).standard_normal((1, 256), dtype=np.float32)
    setup = setup_torch if cfg["runtime"] == "torch" else setup_onnxruntime
    call, facts, context = setup(cfg, x)
    with context:
        run_for(call, cfg["warmup_s"])
        before = counters()
        ns = time_queries(call, cfg["window_s"])
        after = counters()
    p50, p90, p99 = np.percentile(ns, [50, 90, 99]) / 1e6
    base = library_base(LIBRARY[cfg["runtime"]])
    record.update(
        p50_ms=round(p50, 5), p90_ms=round(p90, 5), p99_ms=round(p99, 5),
        mean_ms=round(ns.mean() / 1e6, 5), queries=len(ns), **window_deltas(before, after),
        cpu_end=current_cpu(), affinity_end=sorted(os.sched_getaffinity(0)),
        os_threads=len(os.listdir("/proc/self/task")), **facts,
        input_4k=x.ctypes.data % 4096, input_2m=x.ctypes.data % TWO_MIB,
        library_2m=None if base is None else base % TWO_MIB)
    record.update(machine_facts(record["cpu_end"]))
    print(json.dumps(record), flush=True)


def export(workdir: Path) -> None:
    """gate_quality's model as a Python module and as ONNX (batch 1), for the children."""
    import torch
    from gate_quality import MODELS
    (workdir / "gq_models.py").write_text(MODELS)
    model = _load_models(str(workdir / "gq_models.py")).base()[0].eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 256), dtype=np.float32))
    with warnings.catch_warnings():     # the TorchScript-based exporter is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(workdir / "model.onnx"), input_names=["x"],
                          output_names=["output"], opset_version=17, dynamo=False)


# ----------------------------------------------------------------------------- the parent

def no_aslr_prefix() -> tuple[list[str] | None, str]:
    """(command prefix, reason when unavailable)."""
    setarch = shutil.which("setarch")
    if not setarch:
        return None, "setarch not found"
    prefix = [setarch, platform.machine(), "-R"]
    probe = subprocess.run(prefix + ["true"], capture_output=True, text=True)
    if probe.returncode:
        return None, f"`{' '.join(prefix)} true` failed: {probe.stderr.strip()[:200]}"
    return prefix, ""


def child_env() -> dict:
    """The parent's environment without the variables the conditions control."""
    return {k: v for k, v in os.environ.items() if k not in CONTROLLED_ENV}


def launch(cond: Condition, runtime: str, args, workdir: Path, cpu: int | None,
           prefix: list[str] | None) -> dict:
    cfg = {"runtime": runtime, "threads": cond.threads, "window_s": args.window,
           "warmup_s": args.long_warmup if cond.long_warmup else args.warmup,
           "model_py": str(workdir / "gq_models.py"), "onnx": str(workdir / "model.onnx")}
    cmd = (prefix if cond.no_aslr else []) + [sys.executable, __file__, "--child",
                                              json.dumps(cfg)]
    pin = partial(os.sched_setaffinity, 0, {cpu}) if cpu is not None else None
    t0 = time.perf_counter()
    head = {"record": "process", "condition": cond.name, "runtime": runtime, "pin": cpu,
            "warmup_s": cfg["warmup_s"]}
    try:
        proc = subprocess.run(cmd, env={**child_env(), **cond.env}, capture_output=True,
                              text=True, preexec_fn=pin,
                              timeout=120 + cfg["warmup_s"] + args.window)
    except subprocess.TimeoutExpired:
        return {**head, "error": "timed out"}
    head["wall_s"] = round(time.perf_counter() - t0, 2)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {**head, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return {**head, **json.loads(lines[-1])}


def machine_record(args) -> dict:
    siblings = _read("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
    model = next((line.split(":", 1)[1].strip() for line in
                  (_read("/proc/cpuinfo") or "").splitlines() if line.startswith("model name")),
                 None)
    return {"record": "machine", "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "kernel": platform.release(), "cpus": sorted(os.sched_getaffinity(0)),
            "cpu_model": model, "cpu0_siblings": (siblings or "").strip() or None,
            "randomize_va_space": (_read("/proc/sys/kernel/randomize_va_space") or "").strip(),
            "loadavg": (_read("/proc/loadavg") or "").strip(), "python": sys.version.split()[0],
            "args": vars(args), **machine_facts(None)}


def experiment(args, conditions: list[Condition], runtimes: list[str], out) -> list[dict]:
    prefix = None
    if any(c.no_aslr for c in conditions):
        prefix, why = no_aslr_prefix()
        if prefix is None:
            print(f"skipping noaslr: {why}")
            conditions = [c for c in conditions if not c.no_aslr]
    cpus = sorted(os.sched_getaffinity(0))
    groups = [(c, r) for c in conditions for r in runtimes]
    rng = random.Random(args.seed)
    records, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        subprocess.run([sys.executable, __file__, "--export", tmp], check=True)
        for r in range(args.processes):
            rng.shuffle(groups)
            for cond, runtime in groups:
                cpu = cpus[r % len(cpus)] if cond.pin else None
                rec = {**launch(cond, runtime, args, workdir, cpu, prefix), "round": r}
                records.append(rec)
                out.write(json.dumps(rec) + "\n")
                out.flush()
                if "error" in rec:
                    print(f"  {cond.name}/{runtime} failed: {rec['error']}")
            spent = time.perf_counter() - t0
            print(f"round {r + 1}/{args.processes}: {len(groups)} processes, {spent:.0f} s, "
                  f"~{spent / (r + 1) * (args.processes - r - 1):.0f} s left", flush=True)
    return records


# ----------------------------------------------------------------------------- analysis

def gap_check(p50: np.ndarray) -> tuple[float, int, str]:
    """(largest gap between neighbouring sorted p50s / median, processes below it, label)."""
    s = np.sort(p50)
    if len(s) < 2:
        return math.nan, 0, "-"
    gaps = np.diff(s)
    i = int(np.argmax(gaps))
    gap, below = gaps[i] / np.median(s), i + 1
    if gap < MODE_GAP:
        return gap, below, "one mode"
    return gap, below, "2 modes" if min(below, len(s) - below) >= 2 else "outlier"


def group_summary(recs: list[dict]) -> dict:
    p50 = np.array([r["p50_ms"] for r in recs])
    logs = np.log(p50)
    gap, below, label = gap_check(p50)
    return {"n": len(p50), "gmean": math.exp(logs.mean()),
            "sd": logs.std(ddof=1) if len(p50) > 1 else math.nan,
            "maxmin": p50.max() / p50.min(), "gap": gap, "below": below, "modes": label,
            "tail": float(np.median([r["p90_ms"] / r["p50_ms"] for r in recs])),
            "busy": sum((r.get("other_cores") or 0) >= BUSY for r in recs)}


def spearman(values, logs) -> tuple[float, float] | None:
    from scipy import stats   # lazy: children import this module too
    pairs = [(v, y) for v, y in zip(values, logs) if v is not None]
    if len(pairs) < 4 or len({v for v, _ in pairs}) < 2:
        return None
    rho, p = stats.spearmanr(*zip(*pairs))
    return float(rho), float(p)


def correlations(recs: list[dict], logs, keys=None) -> list[tuple[str, float, float, int]]:
    out = []
    for label, key in FACTS:
        if keys is not None and key not in keys:
            continue
        res = spearman([r.get(key) for r in recs], logs)
        if res is not None:
            out.append((label, res[0], res[1], sum(r.get(key) is not None for r in recs)))
    return out


def bootstrap_ratios(base: np.ndarray, other: np.ndarray, rng) -> dict:
    """Percentile-bootstrap 95% intervals of sd(other)/sd(base) and gmean(other)/gmean(base),
    of log p50s; each group resampled on its own."""
    b = base[rng.integers(0, len(base), (RESAMPLES, len(base)))]
    o = other[rng.integers(0, len(other), (RESAMPLES, len(other)))]
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = o.std(axis=1, ddof=1) / b.std(axis=1, ddof=1)
    level = np.exp(o.mean(axis=1) - b.mean(axis=1))
    sd = sd[~np.isnan(sd)]          # 0/0: both resamples constant; x/0 stays +inf
    return {"sd": tuple(np.percentile(sd, [2.5, 97.5], method="inverted_cdf")),
            "level": tuple(np.percentile(level, [2.5, 97.5]))}


def f_interval(base: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """95% interval of sd(other)/sd(base) from the F distribution (normal log p50s)."""
    from scipy import stats
    ratio = other.var(ddof=1) / base.var(ddof=1)
    d1, d2 = len(other) - 1, len(base) - 1
    return (math.sqrt(ratio / stats.f.ppf(0.975, d1, d2)),
            math.sqrt(ratio / stats.f.ppf(0.025, d1, d2)))


def sd_verdict(ratio: float, lo: float, hi: float) -> str:
    if hi < 1:
        return "removes most of the spread" if ratio <= 0.5 else "reduces the spread"
    if lo > 1:
        return "adds spread"
    wide = " - wide, proves nothing" if hi / max(lo, 1e-9) > 4 else ""
    return f"cannot tell (interval includes 1{wide})"


def _by_group(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("record") == "process" and "error" not in r:
            groups.setdefault((r["condition"], r["runtime"]), []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][1], list(CONDITIONS)
                                                       .index(kv[0][0]))))


def print_groups(groups, table) -> None:
    rows = []
    for (cond, runtime), recs in groups.items():
        s = group_summary(recs)
        rows.append([runtime, cond, s["n"], f"{s['gmean']:.4f}", f"{100 * s['sd']:.1f}",
                     f"{s['maxmin']:.3f}", f"{s['tail']:.2f}", f"{100 * s['gap']:.1f}",
                     s["below"], s["modes"], s["busy"]])
    print(table(["runtime", "condition", "n", "p50 ms (gmean)", "sd log p50 %", "max/min",
                 "p90/p50", "gap % of median", "below gap", "modes", "neighbour busy"],
                rows, left=2))
    print(f"neighbour busy: processes during whose timed window other processes used >= "
          f"{BUSY} core")


def print_correlations(groups, table) -> None:
    print("\nSpearman correlation of log p50 with the facts that vary (per group; |rho| >= 0.5 "
          "marked *):")
    for (cond, runtime), recs in groups.items():
        logs = np.log([r["p50_ms"] for r in recs])
        found = correlations(recs, logs)
        text = ", ".join(f"{label} {rho:+.2f}{'*' if abs(rho) >= 0.5 else ''}"
                         for label, rho, _, _ in found)
        empty = "fewer than 4 processes" if len(recs) < 4 else "no fact varies"
        print(f"  {runtime}/{cond}: {text or empty}")
    for runtime in RUNTIMES:
        recs, resid, varying = [], [], set()
        for (_, rt), g in groups.items():
            if rt == runtime:
                logs = np.log([r["p50_ms"] for r in g])
                recs += g
                resid += list(logs - logs.mean())
                varying |= {key for _, key in FACTS if len({r.get(key) for r in g}) > 1}
        if len(recs) < 4:
            continue
        rows = [[label, n, f"{rho:+.2f}", f"{p:.3g}"]
                for label, rho, p, n in correlations(recs, resid, varying)]
        print(f"\npooled over {runtime}'s groups (log p50 minus its group's mean):")
        print(table(["fact", "n", "rho", "p"], rows))


def print_modes(groups, table, verbose: bool) -> None:
    """The processes of each group with two modes (of every group with --verbose)."""
    keys = ("p50_ms", "p90_ms", "queries", "cpu_start", "cpu_end", "pin", "migrations",
            "involuntary", "threads_involuntary", "other_cores", "steal", "param_4k",
            "param_2m", "input_4k", "os_threads", "round")
    for (cond, runtime), recs in groups.items():
        if not verbose and group_summary(recs)["modes"] != "2 modes":
            continue
        print(f"\n{runtime}/{cond}, processes by p50:")
        rows = [["-" if r.get(k) is None else r[k] for k in keys]
                for r in sorted(recs, key=lambda r: r["p50_ms"])]
        print(table(keys, rows, left=0))


def print_verdicts(groups, table) -> None:
    rng = np.random.default_rng(SEED)
    rows = []
    for runtime in RUNTIMES:
        base = groups.get(("baseline", runtime))
        if not base or len(base) < 3:
            continue
        b = np.log([r["p50_ms"] for r in base])
        for (cond, rt), recs in groups.items():
            if rt != runtime or cond == "baseline" or len(recs) < 3:
                continue
            o = np.log([r["p50_ms"] for r in recs])
            ratio = o.std(ddof=1) / b.std(ddof=1)
            boot, f = bootstrap_ratios(b, o, rng), f_interval(b, o)
            lo, hi = min(boot["sd"][0], f[0]), max(boot["sd"][1], f[1])
            level = math.exp(o.mean() - b.mean())
            rows.append([runtime, cond, f"x{ratio:.2f}",
                         f"[{boot['sd'][0]:.2f}, {boot['sd'][1]:.2f}]",
                         f"[{f[0]:.2f}, {f[1]:.2f}]", sd_verdict(ratio, lo, hi),
                         f"x{level:.3f} [{boot['level'][0]:.3f}, {boot['level'][1]:.3f}]",
                         group_summary(recs)["modes"]])
    if not rows:
        print("\nverdict: needs a baseline group and another group of >= 3 processes each")
        return
    print("\nverdict: sd of log p50 relative to baseline (95% intervals: bootstrap; F, which "
          "assumes normal log p50s); p50 level relative to baseline (bootstrap)")
    print(table(["runtime", "factor", "sd ratio", "bootstrap", "F", "spread", "p50 ratio",
                 "modes"], rows, left=2))
    print("an interval that includes 1 proves nothing either way; more processes per group "
          "(--processes) narrow it")


def analyse(records: list[dict], verbose: bool) -> None:
    from _paired import table   # lazy: children import this module too
    failed = [r for r in records if "error" in r]
    if failed:
        print(f"\n{len(failed)} children failed (left out)")
    groups = _by_group(records)
    if not groups:
        print("no successful process to analyse")
        return
    print()
    print_groups(groups, table)
    print_correlations(groups, table)
    print_modes(groups, table, verbose)
    print_verdicts(groups, table)


# ----------------------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=12, help="children per group")
    ap.add_argument("--runtime", choices=("torch", "onnxruntime", "both"), default="both")
    ap.add_argument("--conditions", default=",".join(CONDITIONS),
                    help=f"comma-separated subset of {', '.join(CONDITIONS)}")
    ap.add_argument("--warmup", type=float, default=0.3, help="seconds of warm-up")
    ap.add_argument("--long-warmup", type=float, default=3.0, help="longwarm's warm-up, s")
    ap.add_argument("--window", type=float, default=1.0, help="seconds of timed queries")
    ap.add_argument("--seed", type=int, default=0, help="seed of the run order")
    ap.add_argument("--out", help="raw JSON lines (default: a new file in the temp directory)")
    ap.add_argument("--from", dest="source", help="analyse this JSON-lines file, run nothing")
    ap.add_argument("--verbose", action="store_true", help="list every group's processes")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--export", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.export:
        return export(Path(args.export))
    if args.source:
        records = [json.loads(line) for line in Path(args.source).read_text().splitlines()]
        return analyse(records, args.verbose)
    names = [n.strip() for n in args.conditions.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        sys.exit(f"unknown conditions: {', '.join(unknown)} (known: {', '.join(CONDITIONS)})")
    runtimes = list(RUNTIMES) if args.runtime == "both" else [args.runtime]
    set_vars = [v for v in THREAD_ENV if v in os.environ]
    if set_vars:
        print(f"note: {', '.join(set_vars)} set in the environment; every child inherits it")
    out_path = Path(args.out or Path(tempfile.gettempdir())
                    / f"session_effect-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    with out_path.open("w") as out:
        machine = machine_record(args)
        out.write(json.dumps(machine) + "\n")
        print(f"{machine['cpu_model']}, CPUs {machine['cpus']}, THP {machine['thp']}, "
              f"ASLR {machine['randomize_va_space']}, load {machine['loadavg']}")
        records = experiment(args, [CONDITIONS[n] for n in names], runtimes, out)
    print(f"raw JSON lines: {out_path}")
    analyse(records, args.verbose)


if __name__ == "__main__":
    main()
