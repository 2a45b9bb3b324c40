"""Clocks and monitors around a measured window (process CPU/RSS, the system under test's
processes, NVML GPU counters, CUDA-event device time), and the provenance of the machine."""
