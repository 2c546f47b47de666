"""A progress display: a tqdm bar if tqdm (the optional extra ``progress``) is installed and
the output is a terminal, otherwise a plain line every few percent or every few seconds.

Plain lines are made for log files: each one carries the rate and an estimate of the time left,
and shows a metric (say the validation log-likelihood) only when it has a new value since the
previous line, so a log never repeats a stale number as if it were fresh.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in metrics.items())


def _duration(seconds: float) -> str:
    """``42s``, ``7m05s`` or ``3h12m``: short enough for a log line, exact enough for an ETA."""
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress of ``total`` steps, starting at ``initial`` (non-zero after a resume).

    Args:
        total: the last step. initial: steps already done.
        enabled: ``False`` shows nothing (non-zero ranks, quiet runs).
        desc: a short label. stream: where plain lines go (default stderr).
        use_tqdm: ``None`` uses tqdm when installed and ``stream`` is a terminal; ``True``
            requires it; ``False`` forces plain lines.
        min_interval_s: plain lines are at least this far apart; :meth:`close` prints the
            final one.

    A plain line reads ``desc: step 400/2000 (20%) 1m05s, 6.15 steps/s, ETA 4m20s loss=1.02
    val=-0.81``; ``val`` (like any metric) appears only on the first line after it changed.
    """

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True, desc: str = "train",
                 stream: TextIO | None = None, use_tqdm: bool | None = None,
                 min_interval_s: float = 10.0) -> None:
        self.total, self.step, self.enabled, self.desc = total, initial, enabled, desc
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval_s = min_interval_s
        self.metrics: dict[str, float] = {}
        # Metrics given since the last plain line: only these are printed on the next one.
        self._fresh: dict[str, float] = {}
        self._initial = initial
        self._bar = None
        self._start = time.monotonic()
        self._last_line = -float("inf")
        self._last_printed = initial
        self._every = max(total // 20, 1)
        if use_tqdm is None:
            # A bar redrawn with carriage returns only makes sense on a terminal, not in logs.
            use_tqdm = None if _isatty(self.stream) else False
        if enabled and use_tqdm is not False:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if use_tqdm:
                    raise ImportError(
                        "progress bars need tqdm: pip install 'approxeq[progress]'") from None
            else:
                self._bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream,
                                 dynamic_ncols=True, leave=True)

    def update(self, step: int, **metrics: float) -> None:
        """Move to ``step`` and show ``metrics`` (e.g. ``loss=``, ``val=``)."""
        if not self.enabled:
            return
        advanced, self.step = step - self.step, step
        self.metrics.update(metrics)
        self._fresh.update(metrics)
        if self._bar is not None:
            self._bar.update(advanced)
            if metrics:
                self._bar.set_postfix_str(_format(self.metrics), refresh=False)
            return
        now = time.monotonic()
        # One line per step at most: a validation score reported at the step just printed
        # waits for the next line (or the final one) instead of repeating the step.
        due = (step % self._every == 0 and step != self._last_printed
               and now - self._last_line >= self.min_interval_s)
        if due and step < self.total:
            self._print_line(now)

    def _print_line(self, now: float) -> None:
        self._last_line, self._last_printed = now, self.step
        elapsed = now - self._start
        # The rate counts only the steps of this process, not those done before a resume.
        done = self.step - self._initial
        percent = f" ({100 * self.step / self.total:.0f}%)" if self.total > 0 else ""
        line = f"{self.desc}: step {self.step}/{self.total}{percent} {_duration(elapsed)}"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            line += f", {rate:.3g} steps/s"
            if self.step < self.total:
                line += f", ETA {_duration((self.total - self.step) / rate)}"
        fresh = {k: v for k, v in self.metrics.items() if k in self._fresh}  # a stable order
        print(f"{line} {_format(fresh)}".rstrip(), file=self.stream, flush=True)
        self._fresh = {}

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar, or print the final plain line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and (self._last_printed != self.step or self._fresh):
            self._print_line(time.monotonic())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Progress"]
