"""GPU monitor through NVML (nvidia-ml-py, imported as pynvml) for the measured window.

A daemon thread samples utilisation, memory used, power, SM clock and clock-event (throttle)
reasons ten times a second; NVML calls go through ctypes, which releases the GIL, so the thread
barely touches the measured loop. Energy comes from the driver's total-energy counter where the
GPU has one (Volta and newer), else from integrating the power samples. Without NVML the result
says "not available" and why; it never raises.
"""

from __future__ import annotations

import os
import threading
import time

INTERVAL_S = 0.1

_REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap",
            0x8: "hw_slowdown", 0x10: "sync_boost", 0x20: "sw_thermal_slowdown",
            0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown",
            0x100: "display_clock_setting"}


def _nvml():
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py not installed: pip install 'pytest-inferbench[gpu]'"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError and driver load failures alike
        return None, f"NVML could not start: {exc}"
    return pynvml, None


def physical_handle(pynvml, device: str):
    """NVML handle for a torch-style device ('cuda:N' counts visible devices only)."""
    index = int(device.split(":")[1]) if ":" in device else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        entries = [v.strip() for v in visible.split(",") if v.strip()]
        if index < len(entries):
            entry = entries[index]
            if entry.isdigit():
                return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
            return pynvml.nvmlDeviceGetHandleByUUID(entry if entry.startswith("GPU-")
                                                    else f"GPU-{entry}")
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_inventory() -> dict:
    """GPUs NVML sees, for provenance: name, driver, memory, max SM clock."""
    pynvml, why = _nvml()
    if pynvml is None:
        return {"available": False, "reason": why}
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append({"index": i, "name": _text(pynvml.nvmlDeviceGetName(h)),
                         "memory_total_mb": pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20,
                         "sm_clock_max_mhz": _safe(pynvml.nvmlDeviceGetMaxClockInfo, h,
                                                   pynvml.NVML_CLOCK_SM)})
        return {"available": True, "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": gpus}
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "reason": f"NVML query failed: {exc}"}


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - a metric this GPU does not support
        return None


class GpuMonitor:
    def __init__(self, device: str):
        self.device = device
        self.unavailable = None
        self._thread = None

    def start(self) -> None:
        pynvml, why = _nvml()
        if pynvml is None:
            self.unavailable = why
            return
        try:
            self.handle = physical_handle(pynvml, self.device)
        except Exception as exc:  # noqa: BLE001
            self.unavailable = f"no NVML handle for {self.device}: {exc}"
            return
        self.nvml = pynvml
        self.samples: list[tuple] = []
        self.reasons = 0
        self._stop = threading.Event()
        self.energy0 = _safe(pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="inferbench-nvml", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        nvml, h = self.nvml, self.handle
        reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons")
        while not self._stop.is_set():
            util = _safe(nvml.nvmlDeviceGetUtilizationRates, h)
            mem = _safe(nvml.nvmlDeviceGetMemoryInfo, h)
            self.samples.append((time.perf_counter(),
                                 util.gpu if util else None,
                                 mem.used / 2**20 if mem else None,
                                 _safe(nvml.nvmlDeviceGetPowerUsage, h),
                                 _safe(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM)))
            self.reasons |= _safe(reasons_fn, h) or 0
            self._stop.wait(INTERVAL_S)

    def stop(self) -> dict:
        if self.unavailable is not None or self._thread is None:
            return {"available": False, "reason": self.unavailable or "monitor not started"}
        self._stop.set()
        self._thread.join()
        t1 = time.perf_counter()
        nvml, h = self.nvml, self.handle
        energy1 = _safe(nvml.nvmlDeviceGetTotalEnergyConsumption, h)

        def col(i):
            return [s[i] for s in self.samples if s[i] is not None]
        util, mem, power, clock = col(1), col(2), col(3), col(4)
        out = {"available": True, "name": _text(nvml.nvmlDeviceGetName(h)),
               "driver": _text(nvml.nvmlSystemGetDriverVersion()),
               "samples": len(self.samples), "interval_s": INTERVAL_S,
               "utilization_pct": _summary(util), "memory_used_mb": _summary(mem),
               "power_w": _summary([p / 1000 for p in power]),
               "sm_clock_mhz": _summary(clock),
               "throttle_reasons": [n for bit, n in _REASONS.items() if self.reasons & bit]}
        if self.energy0 is not None and energy1 is not None:
            out["energy_j"] = (energy1 - self.energy0) / 1000.0
            out["energy_source"] = "nvml_total_energy_counter"
        elif len(power) >= 2:
            times = [s[0] for s in self.samples if s[3] is not None]
            joules = sum((times[i + 1] - times[i]) * (power[i] + power[i + 1]) / 2000.0
                         for i in range(len(power) - 1))
            out["energy_j"] = joules * (t1 - self.t0) / max(times[-1] - times[0], 1e-9)
            out["energy_source"] = "power_samples"
        else:
            out["energy_j"] = None
            out["energy_source"] = "none: no energy counter and too few power samples"
        return out


def _summary(values):
    if not values:
        return None
    return {"mean": round(sum(values) / len(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}
