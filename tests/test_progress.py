"""Plain progress lines (the output is a log file, not a terminal): rate, ETA, fresh metrics."""

from __future__ import annotations

import io
import re
import types

import pytest

from approxeq.train import progress as progress_module
from approxeq.train.progress import Progress


class _Clock:
    """A fake monotonic clock: each step takes ``dt`` seconds, so rate and ETA are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=c.monotonic))
    return c


class _LogFile(io.StringIO):
    """A stream that, like a redirected stderr, is not a terminal."""

    def isatty(self) -> bool:
        return False


def _run(clock: _Clock, total: int, *, initial: int = 0, dt: float = 0.5, val_every: int = 0,
         val_values=None) -> list[str]:
    stream = _LogFile()
    bar = Progress(total, initial, stream=stream, min_interval_s=0.0)
    assert bar._bar is None, "a non-terminal stream must get plain lines, not a tqdm bar"
    vals = iter(val_values or [])
    for step in range(initial + 1, total + 1):
        clock.now += dt
        bar.update(step, loss=1.0 / step)
        if val_every and step % val_every == 0:
            bar.update(step, val=next(vals))
    bar.close()
    return stream.getvalue().splitlines()


def test_plain_lines_carry_rate_and_eta(clock):
    lines = _run(clock, 100, dt=0.5)  # 2 steps/s
    assert len(lines) == 20
    first = lines[0]
    assert first.startswith("train: step 5/100 (5%) 2s")
    assert "2 steps/s" in first
    # 95 steps left at 2 steps/s
    assert "ETA 47s" in first or "ETA 48s" in first
    assert "ETA" not in lines[-1], "the final line has nothing left to estimate"
    assert lines[-1].startswith("train: step 100/100 (100%) 50s, 2 steps/s")


def test_eta_counts_only_the_steps_of_this_process_after_a_resume(clock):
    lines = _run(clock, 1000, initial=900, dt=0.1)  # 10 steps/s from the resume on
    line = next(ln for ln in lines if ln.startswith("train: step 950/1000"))
    assert "10 steps/s" in line and "ETA 5s" in line


def test_long_etas_use_minutes_and_hours(clock):
    lines = _run(clock, 40_000, dt=0.5)
    first = lines[0]
    assert first.startswith("train: step 2000/40000 (5%) 16m40s")
    assert "ETA 5h16m" in first  # 38 000 steps at 2 steps/s = 19 000 s = 5 h 16 min 40 s


def test_validation_is_printed_only_when_it_is_new(clock):
    # validation every 25 steps, lines every 5: a stale value would otherwise appear 4 times
    lines = _run(clock, 100, val_every=25, val_values=[-1.5, -1.25, -1.0, -0.75])
    with_val = [ln for ln in lines if "val=" in ln]
    assert [re.search(r"val=(\S+)", ln).group(1) for ln in with_val] == \
        ["-1.5", "-1.25", "-1", "-0.75"]
    # each value on the first line after it was reported (the last one on the final line)
    assert [int(re.search(r"step (\d+)/", ln).group(1)) for ln in with_val] == [30, 55, 80, 100]
    assert len({re.search(r"step (\d+)/", ln).group(1) for ln in lines}) == len(lines)
    # the loss is new at every step, so it is on every line but the final one, which only
    # reports the validation score given after the step-100 line
    assert all("loss=" in ln for ln in lines[:-1])


def test_an_unchanged_metric_given_again_is_fresh(clock):
    # "new" means reported since the last line, even if equal to the previous value
    lines = _run(clock, 20, val_every=5, val_values=[-1.0] * 4)
    assert sum("val=-1 " in ln + " " for ln in lines) == 4


def test_disabled_progress_prints_nothing(clock):
    stream = _LogFile()
    bar = Progress(10, stream=stream, enabled=False, min_interval_s=0.0)
    for step in range(1, 11):
        bar.update(step, loss=1.0)
    bar.write("hello")
    bar.close()
    assert stream.getvalue() == ""
