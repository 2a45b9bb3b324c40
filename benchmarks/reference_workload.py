"""Does a reference workload measured alongside take the machine's speed out of a session
value? (issue 26, item 6: build it where this shows it helps, and only then)

    python benchmarks/reference_workload.py                       # 24 sessions, ~6 min
    python benchmarks/reference_workload.py --sessions 40 --neighbour-every 0

Each session is a fresh process, as each pytest session is. It builds gate_quality.py's
model (20 x (256x256 matmul + tanh), torch, its default threads or --threads), warms
everything up, then runs --rounds rounds; each round times, in a fresh random order, a
--slice of single queries back to back of each of:
  bs1     the model at batch 1 (the single-stream cell)
  bs8     the model at batch 8 (the offline cell)
  spin    a pure-Python loop: the interpreter and the core's clock
  matmul  NumPy's 256x256 float32 matmul: the vector units and caches, outside torch
  twin    a second model of the same shape with other weights: torch's own state (thread
          pool, allocator), everything but the model's own buffers
  ort     the same model (its weights, its 20 layers) in ONNX Runtime: the same arithmetic
          outside torch, to tell a torch-only drift from one of the machine
  l3      4,096 random reads from a 64 MiB array: the shared last-level cache, which other
          tenants of the host use too
  mem     4,096 random reads from a 2 GiB array: memory latency beyond that cache
A cell's raw session value is the median over rounds of its slice medians; normalised by a
reference, the median over rounds of the cell's slice median over the reference's slice
median in the same round (so a slow stretch of a few seconds hits both).

One session in --neighbour-every runs beside a process keeping one core busy (a CI runner's
neighbour). Printed per cell and reference: the between-session sd of the log value over
the quiet sessions, raw and normalised, their ratio with a 95% percentile-bootstrap interval
(sessions resampled, 10,000 times, fixed seed), and the busy sessions' mean shift from the
quiet ones, raw and normalised. A reference "helps" only when the whole interval of the sd
ratio lies below 1 (or the busy shift shrinks by more than its noise); else it proves
nothing and is not worth building. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CELLS = ("bs1", "bs8")
REFERENCES = ("spin", "matmul", "twin", "ort", "l3", "mem")
RESAMPLES, SEED = 10_000, 20261207


# ----------------------------------------------------------------------------- the child

def _spin():
    total = 0
    for i in range(2_000):
        total += i * i
    return total


def _ort(model, batch: int):
    """The model as an ONNX graph of its own MatMul and Tanh nodes, in ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    nodes, x = [], "x"
    for i in range(model.reps):
        nodes += [helper.make_node("MatMul", [x, "w"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        x = f"t{i}"
    graph = helper.make_graph(
        nodes, "work", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 256])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [None, 256])],
        [numpy_helper.from_array(model.w.detach().numpy(), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(0).standard_normal((batch, 256), dtype=np.float32)}
    return lambda: session.run(None, feed)


def _gather(mib: int):
    """Random reads from an array of `mib` MiB, new positions each call."""
    table = np.ones(mib << 18, dtype=np.float32)
    rng = np.random.default_rng(0)
    positions = rng.integers(0, table.size, size=(64, 4096))
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % 64
        return table[positions[state["i"]]].sum()
    return call


def _calls(model_py: str) -> dict:
    import importlib.util

    import torch
    spec = importlib.util.spec_from_file_location("gq_models", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.base()[0].eval()
    twin = module.Work(model.reps).eval()
    with torch.no_grad():
        twin.w.copy_(torch.randn(twin.w.shape, generator=torch.Generator().manual_seed(1))
                     / twin.w.shape[0] ** 0.5)
    rng = np.random.default_rng(0)
    x1 = torch.from_numpy(rng.standard_normal((1, 256), dtype=np.float32))
    x8 = torch.from_numpy(rng.standard_normal((8, 256), dtype=np.float32))
    a = rng.standard_normal((256, 256), dtype=np.float32)
    b = rng.standard_normal((256, 256), dtype=np.float32)
    return {"bs1": lambda: model(x1), "bs8": lambda: model(x8), "spin": _spin,
            "matmul": lambda: a @ b, "twin": lambda: twin(x1), "ort": _ort(model, 1),
            "l3": _gather(64), "mem": _gather(2048)}


def _slice_median(call, seconds: float) -> float:
    from session_effect import time_queries     # back to back, the garbage collector off
    return float(np.median(time_queries(call, seconds)))


def child(cfg: dict) -> None:
    import torch
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    calls = _calls(cfg["model_py"])
    order = random.Random(cfg["seed"])
    names = list(calls)
    rounds = []
    with torch.inference_mode():
        for name in names:                      # warm-up, each in turn
            _slice_median(calls[name], cfg["warmup_s"])
        for _ in range(cfg["rounds"]):
            order.shuffle(names)
            rounds.append({n: _slice_median(calls[n], cfg["slice_s"]) for n in names})
    print(json.dumps({"rounds": rounds, "threads": torch.get_num_threads()}), flush=True)


# ----------------------------------------------------------------------------- the parent

def session_values(rounds: list[dict]) -> dict:
    """Raw log values per cell and, per (cell, reference), the normalised log value."""
    out, refs = {}, [r for r in REFERENCES if r in rounds[0]]   # older files have fewer
    for cell in CELLS:
        out[cell] = math.log(np.median([r[cell] for r in rounds]))
        for ref in refs:
            out[f"{cell}/{ref}"] = math.log(np.median([r[cell] / r[ref] for r in rounds]))
    for ref in refs:
        out[ref] = math.log(np.median([r[ref] for r in rounds]))
    return out


def _sd(values) -> float:
    return float(np.std(values, ddof=1))


def sd_ratio(raw: np.ndarray, norm: np.ndarray) -> tuple[float, float, float]:
    """sd(norm)/sd(raw) over the same sessions, with a 95% percentile-bootstrap interval."""
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, len(raw), size=(RESAMPLES, len(raw)))
    ratios = np.std(norm[idx], axis=1, ddof=1) / np.std(raw[idx], axis=1, ddof=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return _sd(norm) / _sd(raw), float(lo), float(hi)


def _pct(log_sd: float) -> str:
    return f"±{100 * math.expm1(log_sd):.1f}%"


def report(sessions: list[dict]) -> None:
    quiet = [s for s in sessions if not s["busy"]]
    busy = [s for s in sessions if s["busy"]]
    refs = [r for r in REFERENCES if r in sessions[0]["v"]]
    print(f"\n{len(sessions)} sessions ({len(busy)} beside a busy neighbour), "
          f"torch threads {sessions[0]['threads']}")
    print("references' own session sd (quiet): " + ", ".join(
        f"{r} {_pct(_sd([s['v'][r] for s in quiet]))}" for r in refs))
    print("| cell | reference | session sd, raw | normalised | ratio [95% CI] | verdict | "
          "busy shift raw | normalised |")
    print("|---|---|---|---|---|---|---|---|")
    for cell in CELLS:
        raw = np.array([s["v"][cell] for s in quiet])
        for ref in refs:
            norm = np.array([s["v"][f"{cell}/{ref}"] for s in quiet])
            ratio, lo, hi = sd_ratio(raw, norm)
            verdict = "helps" if hi < 1 else "hurts" if lo > 1 else "proves nothing"
            shift = ""
            if busy:
                b_raw = np.mean([s["v"][cell] for s in busy]) - raw.mean()
                b_norm = np.mean([s["v"][f"{cell}/{ref}"] for s in busy]) - norm.mean()
                shift = f" {100 * math.expm1(b_raw):+.1f}% | {100 * math.expm1(b_norm):+.1f}%"
            print(f"| {cell} | {ref} | {_pct(_sd(raw))} | {_pct(_sd(norm))} | "
                  f"x{ratio:.2f} [{lo:.2f}, {hi:.2f}] | {verdict} |{shift or ' | '} |")
    print("per session (quiet / BUSY), us: " + "; ".join(
        ("BUSY " if s["busy"] else "") + " ".join(
            f"{n} {math.exp(s['v'][n]) / 1e3:.1f}" for n in ("bs1", *refs)) for s in sessions))


def _drop_page_cache():
    """Forget the page cache (as root): the next process reads torch's libraries into new
    physical pages."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def layout_report(sessions: list[dict]) -> None:
    """Sessions grouped by the page cache they shared (a group starts at each drop): the
    session sd within a group against the sd between the groups' means (one-way ANOVA)."""
    groups, quiet = [], [s for s in sessions if not s["busy"]]
    for s in quiet:
        if s.get("dropped") or not groups:
            groups.append([])
        groups[-1].append(s)
    groups = [g for g in groups if len(g) > 1]
    if len(groups) < 3:
        return
    print(f"\n{len(groups)} groups of sessions that shared one page cache (a drop before each)")
    print("| value | sd within a group | sd between groups' means | F | p |")
    print("|---|---|---|---|---|")
    from scipy import stats
    for name in ("bs1", "bs8", "twin", "ort", "spin"):
        if name not in quiet[0]["v"]:
            continue
        values = [[s["v"][name] for s in g] for g in groups]
        within = math.sqrt(np.mean([np.var(v, ddof=1) for v in values]))
        between = _sd([np.mean(v) for v in values])
        f, p = stats.f_oneway(*values)
        print(f"| {name} | {_pct(within)} | {_pct(between)} | {f:.1f} | {p:.2g} |")


def _neighbour():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(args) -> list[dict]:
    from gate_quality import MODELS
    work = Path(tempfile.mkdtemp(prefix="reference_workload-"))
    (work / "gq_models.py").write_text(MODELS)
    sessions = []
    for i in range(args.sessions):
        busy = bool(args.neighbour_every) and i % args.neighbour_every == \
            args.neighbour_every - 1
        cfg = {"model_py": str(work / "gq_models.py"), "rounds": args.rounds,
               "slice_s": args.slice, "warmup_s": args.warmup, "seed": i,
               "threads": args.threads}
        dropped = bool(args.drop_caches) and i % args.drop_caches == 0
        if dropped:
            _drop_page_cache()
        neighbour = _neighbour() if busy else None
        t0 = time.monotonic()
        try:
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)],
                                 capture_output=True, text=True, check=True).stdout
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
        doc = json.loads(out.strip().splitlines()[-1])
        s = {"busy": busy, "dropped": dropped, "threads": doc["threads"],
             "v": session_values(doc["rounds"]), "rounds": doc["rounds"]}
        sessions.append(s)
        print(f"session {i + 1}/{args.sessions}{' BUSY' if busy else ''}: "
              f"bs1 {math.exp(s['v']['bs1']) / 1e6:.3f} ms, bs8 "
              f"{math.exp(s['v']['bs8']) / 1e6:.3f} ms ({time.monotonic() - t0:.0f}s)",
              flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(s) for s in sessions))
    return sessions


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=24)
    ap.add_argument("--neighbour-every", type=int, default=4, metavar="K")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default: torch's own choice)")
    ap.add_argument("--slice", type=float, default=0.1, help="seconds per slice (0.1)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds per call (0.5)")
    ap.add_argument("--drop-caches", type=int, default=0, metavar="K",
                    help="drop the page cache before every K-th session (root)")
    ap.add_argument("--out", help="write the sessions' rounds here (JSON lines)")
    ap.add_argument("--from", dest="src", help="analyse a file --out wrote, run nothing")
    args = ap.parse_args()
    if args.src:
        sessions = [json.loads(line) for line in Path(args.src).read_text().splitlines()]
    else:
        sys.path.insert(0, str(HERE))
        sessions = run(args)
    report(sessions)
    layout_report(sessions)


if __name__ == "__main__":
    main()
