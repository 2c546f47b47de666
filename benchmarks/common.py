"""Shared helpers of the benchmark scripts: timing, peak memory, fresh worker processes, machine
information, tables and JSON results.

Every configuration of a benchmark runs in its own Python process (:func:`run_worker`), so that
the peak resident set size (RSS) of one configuration is not hidden by an earlier, larger one:
the kernel's high-water mark only ever grows within a process.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

#: the line prefix a worker process puts before its JSON result on stdout
RESULT_MARKER = "@@BENCH_RESULT@@ "
MIB = 2.0**20


# --------------------------------------------------------------------------------------------
# timing


@dataclass
class Timing:
    """Wall-clock times of the timed calls of one configuration, in milliseconds.

    ``q25_ms``/``q75_ms`` are the quartiles and ``iqr_ms = q75_ms - q25_ms``; with fewer than two
    repeats the IQR is 0. ``warmup`` is the number of untimed calls made first.
    """

    median_ms: float
    iqr_ms: float
    q25_ms: float
    q75_ms: float
    times_ms: list[float]
    warmup: int
    repeats: int


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """``(q25, median, q75)`` of ``values`` (linear interpolation between order statistics)."""
    if not values:
        raise ValueError("values: expected at least one value, got an empty sequence")
    v = sorted(values)
    if len(v) == 1:
        return v[0], v[0], v[0]
    q25, q50, q75 = statistics.quantiles(v, n=4, method="inclusive")
    return q25, q50, q75


def synchronize(device: str) -> None:
    """Wait for queued device work, so that wall-clock times include it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5, min_repeats: int = 1,
               budget_s: float | None = None, device: str = "cpu",
               warmup_fn: Callable[[], Any] | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeats`` timed calls.

    Args:
        fn: the call to time.
        warmup: untimed calls made first (thread pools, allocator caches, lazy initialisation).
        repeats: timed calls at most.
        min_repeats: timed calls at least, whatever the budget.
        budget_s: stop repeating once the timed calls have taken this long in total (after
            ``min_repeats``), so that slow configurations keep the whole run short.
        device: ``"cpu"`` or ``"cuda[:i]"``; CUDA work is synchronised around every call.
        warmup_fn: what the warm-up calls run instead of ``fn`` (e.g. the same model on a
            smaller input, when one call of ``fn`` takes minutes; first-call costs do not
            depend on the input size).
    """
    if repeats < 1 or min_repeats < 1:
        raise ValueError(f"repeats, min_repeats: expected >= 1, got {repeats}, {min_repeats}")
    for _ in range(warmup):
        (warmup_fn or fn)()
    synchronize(device)
    times: list[float] = []
    total = 0.0
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        elapsed = time.perf_counter() - start
        times.append(1000.0 * elapsed)
        total += elapsed
        if budget_s is not None and i + 1 >= min_repeats and total >= budget_s:
            break
    q25, med, q75 = quartiles(times)
    return Timing(median_ms=med, iqr_ms=q75 - q25, q25_ms=q25, q75_ms=q75, times_ms=times,
                  warmup=warmup, repeats=len(times))


# --------------------------------------------------------------------------------------------
# peak memory


def _status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or ``None`` where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_bytes() -> int:
    """The process's peak RSS from ``getrusage`` (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); ``False`` where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _current_rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


class PeakMemory:
    """Peak memory of the code run between :meth:`start` and :meth:`stop`, above what was in use
    at :meth:`start`.

    On CPU this is the peak resident set size of the process (``getrusage``), whose high-water
    mark is reset at :meth:`start` where the kernel allows it (Linux); elsewhere it is the peak
    RSS of the whole process minus the RSS at :meth:`start`, which overstates the delta if the
    process peaked earlier, so run one configuration per process (:func:`run_worker`). On CUDA it
    is ``torch.cuda.max_memory_allocated`` (tensors only, not the caching allocator's slack).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.method = ""
        self.baseline_bytes = 0

    def start(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_bytes = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
            return
        reset = _reset_peak_rss()
        current = _current_rss_bytes()
        self.baseline_bytes = current if current is not None else _maxrss_bytes()
        self.method = ("getrusage ru_maxrss (high-water mark reset via /proc/self/clear_refs)"
                       if reset else "getrusage ru_maxrss (process peak, not reset)")

    def stop(self) -> dict[str, float | str]:
        """``peak_mb`` (MiB above the start), ``peak_total_mb`` (absolute), ``baseline_mb``,
        ``method``."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _maxrss_bytes()
        return {"peak_mb": max(0, peak - self.baseline_bytes) / MIB, "peak_total_mb": peak / MIB,
                "baseline_mb": self.baseline_bytes / MIB, "method": self.method}


# --------------------------------------------------------------------------------------------
# machine information


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPUs, torch and its threads, the device."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        **_cpuinfo(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    total = _meminfo_total_mb()
    if total is not None:
        info["memory_total_mb"] = total
    return info


#: the vector instruction sets that decide which kernels oneDNN and MKL run
_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo() -> dict[str, Any]:
    """The CPU's model name and vector instruction sets (Linux): ratios between libraries
    differ between CPUs, so a run records which one it had."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return {"cpu_model": model, "cpu_simd": [f for f in _SIMD_FLAGS if f in flags]}


def _meminfo_total_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """``os.getloadavg()`` (1, 5, 15 minutes), or ``None`` where it is not available."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


@dataclass
class RunRecord:
    """A benchmark run: what ran, on what, under what load, and the results."""

    benchmark: str
    command: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    started_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))
    load_average_start: list[float] | None = field(default_factory=load_average)
    load_average_end: list[float] | None = None
    finished_utc: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> None:
        self.load_average_end = load_average()
        self.finished_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def load_note(self) -> str:
        """A warning when the 1-minute load average exceeded the usable CPUs (others were
        running), else an empty string."""
        cpus = self.machine.get("cpus_usable") or self.machine.get("cpu_count") or 1
        loads = [la[0] for la in (self.load_average_start, self.load_average_end) if la]
        if loads and max(loads) > cpus:
            return (f"note: load average up to {max(loads):.2f} on {cpus} CPUs: other processes "
                    "were running concurrently, timings are noisy")
        return ""


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON atomically (a temporary file renamed over ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file private (0600); results are meant to be shared.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, allow_nan=False, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN/inf: map them to ``None``."""
    return None if value is None or not math.isfinite(value) else value


# --------------------------------------------------------------------------------------------
# worker processes


def run_worker(script: str | Path, configs: Sequence[dict[str, Any]], *,
               timeout_s: float | None = None, threads: int = 1) -> list[dict[str, Any]]:
    """Run ``script --worker CONFIGS_JSON`` in a fresh Python process and return the JSON
    results it prints after :data:`RESULT_MARKER`, one per configuration.

    Pass one configuration per call for per-configuration peak memory; several share one
    process (and its retained heap), which is only good enough for smoke runs.

    A configuration that fails (exception, non-zero exit, time-out) comes back with ``status``
    ``"error"``/``"timeout"`` and an ``error`` message, so that it does not lose the others.
    """
    env = dict(os.environ)
    # Set before torch is imported: intra-op threads of torch and of its BLAS.
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(script), "--worker", json.dumps(list(configs))]
    results: list[dict[str, Any]] = []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        stdout, failure = proc.stdout, f"worker exited with code {proc.returncode}"
        stderr = proc.stderr
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr, failure = "", f"no result within {timeout_s} s"
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            results.append(json.loads(line[len(RESULT_MARKER):]))
    if len(results) < len(configs):
        tail = " | ".join((stderr or stdout).strip().splitlines()[-3:])
        status = "timeout" if failure.startswith("no result") else "error"
        results += [{**c, "status": status, "error": f"{failure}: {tail}" if tail else failure}
                    for c in configs[len(results):]]
    return results


def worker_main(configs_json: str, run_one: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The worker side of :func:`run_worker`: run each configuration and print its result; an
    exception becomes a result with ``status: "error"``."""
    for config in json.loads(configs_json):
        try:
            result = {**config, "status": "ok", **run_one(config)}
        except Exception as exc:  # noqa: BLE001 -- reported in the results, not lost
            result = {**config, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
        print(RESULT_MARKER + json.dumps(result, default=_json_default, allow_nan=False),
              flush=True)


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def keep_freed_memory(limit_bytes: int = 256 << 20) -> bool:
    """Make glibc's malloc keep freed memory for reuse in this process, instead of returning
    it to the kernel; returns whether it could (False off glibc).

    By default glibc serves every allocation above a moving threshold (from 128 KiB) with fresh
    pages from the kernel and gives them back when it is freed, and trims its heap whenever
    enough memory at its top is free. A training step that allocates megabyte-sized
    activations then page-faults thousands of times per step, and how often depends on what
    else the process allocated before: in one process, one library's step can run on the heap
    that another's left behind. With both thresholds raised (allocations up to
    ``limit_bytes`` come from the heap, which is never trimmed) and one arena for all threads
    (the per-thread arenas of a multi-threaded step live in separately mapped heaps that glibc
    unmaps when they empty), neither does.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, limit_bytes)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 4 * limit_bytes)
                    and libc.mallopt(_M_ARENA_MAX, 1))
    except (OSError, AttributeError, TypeError):
        return False


def minor_page_faults() -> int:
    """Minor page faults of this process so far (all its threads)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def worker_setup(config: dict[str, Any]) -> str:
    """Threads and seed of a worker; returns the device."""
    torch.set_num_threads(int(config.get("threads", 1)))
    torch.manual_seed(int(config.get("seed", 0)))
    device = config.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device: {device!r} asked for, but CUDA is not available")
    return device


def random_inputs(batch: int, n: int, dim_x: int, dim_y: int, generator: torch.Generator,
                  device: str, low: float = -2.0, high: float = 2.0) -> tuple[torch.Tensor,
                                                                              torch.Tensor]:
    """Random task inputs ``x [batch, n, dim_x]`` uniform on ``[low, high]`` and outputs
    ``y [batch, n, dim_y]`` standard normal (speed and memory do not depend on the values)."""
    x = low + (high - low) * torch.rand(batch, n, dim_x, generator=generator)
    y = torch.randn(batch, n, dim_y, generator=generator)
    return x.to(device), y.to(device)


# --------------------------------------------------------------------------------------------
# tables and scaling fits


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A Markdown table (right-aligned numbers), readable in a terminal too."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in cells:
        lines.append("| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w)
                                         for c, w in zip(r, widths)) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def loglog_slope(sizes: Sequence[float], times: Sequence[float]) -> float | None:
    """Least-squares slope of ``log(time)`` against ``log(size)``: ``time ∝ size^slope``.
    ``None`` with fewer than two distinct sizes."""
    pts = [(math.log(s), math.log(t)) for s, t in zip(sizes, times) if s > 0 and t > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    return sxy / sxx


def settings_of(args: Any) -> dict[str, Any]:
    """A benchmark's command-line arguments as JSON-ready settings (paths as strings; the
    worker hand-off and the output path left out)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if k not in ("worker", "out")}


def command_line() -> str:
    """The command that started this run, as a user would type it from the repository root."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def run_one_config(script: str | Path, benchmark: str, args: Any, config: dict[str, Any], *,
                   timeout_s: float = 900) -> tuple[RunRecord, dict[str, Any] | None]:
    """Run ``config`` in one worker of ``script`` and record it as benchmark ``benchmark``
    (settings from ``args``); the result is ``None`` after printing why, when the worker failed."""
    record = RunRecord(benchmark=benchmark, command=command_line(), machine=machine_info("cpu"),
                       settings=settings_of(args))
    (result,) = run_worker(script, [config], threads=args.threads, timeout_s=timeout_s)
    record.results.append(result)
    record.finish()
    if result.get("status") != "ok":
        print(f"{result.get('status')}: {result.get('error')}", file=sys.stderr)
        return record, None
    return record, result
