"""The ``approxeq`` command.

::

    approxeq                                          # the help
    approxeq models [NAME]                            # the model zoo: symmetries and options
    approxeq demo --out DIR [--steps N] [--threads N] # the main job, in minutes on a CPU
    approxeq experiment NAME --out DIR [--size S]     # a shipped experiment, or a YAML path
    approxeq train CONFIG --out DIR [--size S]        # any experiment YAML
    (both default to the quick size and take --steps N: every model's step count, and
    --jobs N: the (model, seed) units in up to N worker processes, each model on its
    configured thread count: a run's thread count is part of its identity)
    approxeq eval RUN_DIR [--data FILE] [--out FILE]  # re-evaluate a finished run

Every command that trains or evaluates writes ``metrics.json`` (one entry per model with at
least ``loglik`` and ``loglik_se``) in its output directory; ``eval`` writes into
``RUN_DIR/eval/<name>/`` and never over the run's own results. See
:mod:`approxeq.train.rundir` for the files of a run directory.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path


class CLIError(Exception):
    """An error to report to the user as one line, without a traceback."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def check_device(device: str | None, arg: str = "--device") -> None:
    """Refuse a device this machine does not have, in one line, before anything runs."""
    if device is None or device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"{arg}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got "
                       f"{device!r}") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CLIError(f"{arg}: {device!r} is not available: this machine has no CUDA "
                           "device (or this PyTorch build has no CUDA); use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise CLIError(f"{arg}: {device!r} is not available: this machine has {count} CUDA "
                           f"device(s), cuda:0 to cuda:{count - 1}")
        return
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise CLIError(f"{arg}: 'mps' is not available on this machine; use --device cpu")
        return
    raise CLIError(f"{arg}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")


def check_out_dir(out: str, arg: str = "--out") -> Path:
    """``out`` as a run directory: refused when it exists and is not a directory (a file, a
    device node), so nothing that is not ours is ever replaced."""
    from approxeq.experiments.outputs import check_output_dir

    try:
        return check_output_dir(out, arg=arg)
    except ValueError as err:
        raise CLIError(str(err)) from None


def resolve_experiment(name: str) -> Path:
    """The YAML file of an experiment: ``name`` itself if it is a file (a user's own
    experiment), else the shipped experiment of that name (package data of
    :mod:`approxeq.experiments`). Raises :class:`CLIError` listing the shipped experiments
    otherwise."""
    from approxeq.experiments import find_experiment

    try:
        return find_experiment(name)
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None


def _figures(enabled: bool, experiment):
    """The function that draws ``experiment``'s figures, or ``None`` when figures are off, the
    experiment draws none, or matplotlib is missing (said in one line)."""
    draw = experiment.figures() if enabled else None
    if draw is None:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("approxeq: matplotlib is not installed, so no figures are drawn "
              "(pip install 'approxeq[plot]')", file=sys.stderr)
        return None
    return draw


def _run(config, args) -> int:
    from approxeq.experiments import experiment_for
    from approxeq.experiments.launch import launch
    from approxeq.train.rundir import METRICS, RESULTS

    check_device(args.device)
    out = check_out_dir(args.out)
    experiment = experiment_for(config)
    config = experiment.override_steps(config, getattr(args, "steps", None))
    start = time.monotonic()
    result, main = launch(experiment, config, out, seeds=getattr(args, "seeds", None),
                          jobs=getattr(args, "jobs", None) or 1, progress=not args.quiet,
                          device=args.device, only=args.only,
                          figures=_figures(not args.no_figures, experiment),
                          log=(lambda m: None) if args.quiet else None,
                          restart=getattr(args, "restart", False))
    if main:
        print()
        print(experiment.summary(result))
        print()
        print(f"wrote {out / METRICS}, {out / RESULTS}")
        for p in result.figures:
            print(f"wrote {p}")
        print(f"wall time {time.monotonic() - start:.0f} s")
    return 0


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def _symmetries(name: str) -> str:
    """The group a model is exactly equivariant to, for each input dimension it builds with
    its default options (the symmetry can depend on ``dim_x`` and the grid density)."""
    from approxeq.np import build_model

    found = []
    for dim_x in (1, 2):
        try:
            model = build_model(name, dim_x, 1)
        except (TypeError, ValueError):
            continue  # this model does not support that dim_x
        found.append(f"{getattr(model, 'symmetry', None)!r} (dim_x={dim_x})")
    return "; ".join(found) or "?"


def _option_rows(name: str) -> list[tuple[str, str, str]]:
    """``(option, default, meaning)`` of every build option of ``name``."""
    import inspect

    from approxeq.np import model_options
    from approxeq.np.options import option_meaning
    from approxeq.np.registry import _REGISTRY

    params = inspect.signature(_REGISTRY[name]).parameters
    rows = []
    for opt in model_options(name):
        default = params[opt].default
        shown = "required" if default is inspect.Parameter.empty else repr(default)
        rows.append((opt, shown, option_meaning(opt)))
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    from approxeq.np import available_models

    zoo = available_models()
    if args.name is None:
        width = max(len(n) for n in zoo)
        for name, description in zoo.items():
            print(f"{name.ljust(width)}  {description}")
            print(f"{''.ljust(width)}  symmetry: {_symmetries(name)}")
        print("\napproxeq models NAME: a model's options, defaults and meanings")
        return 0
    if args.name not in zoo:
        import difflib

        close = difflib.get_close_matches(args.name, list(zoo), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CLIError(f"NAME: unknown model {args.name!r}{hint}; available: {', '.join(zoo)}")
    print(f"{args.name}: {zoo[args.name]}")
    print(f"symmetry: {_symmetries(args.name)}")
    print("options (build_model(name, dim_x, dim_y, **options), or a model's 'options' in a "
          "YAML):")
    rows = _option_rows(args.name)
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    for opt, default, meaning in rows:
        print(f"  {opt.ljust(w1)}  {default.ljust(w2)}  {meaning}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from approxeq.experiments import DEMO_STEPS, demo_config, estimate_seconds

    steps = args.steps or DEMO_STEPS
    check_device(args.device)
    config = demo_config(steps, test_tasks=args.test_tasks, device=args.device or "auto")
    # The numbers of a model depend on how many threads its reductions are split over, so
    # the demo pins the count: the same command gives the same table on any machine.
    threads = args.threads or 1
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        print(f"approxeq demo: {len(config.models)} models x {steps} steps on the 1-D Gibbs "
              f"task, evaluated ID and OOD against the GP oracle; output in {args.out}",
              file=sys.stderr)
        minutes = estimate_seconds(config) / 60
        when = f"about {minutes:.0f} min" if minutes >= 1 else "under a minute"
        print(f"approxeq demo: torch runs on {threads} thread(s) (--threads N to change; the "
              f"results depend on it); {when} on this machine, from timing the first steps",
              file=sys.stderr)
        args.only, args.steps = None, None  # the demo's own intervals already follow its steps
        return _run(config, args)
    finally:
        torch.set_num_threads(before)


def cmd_train(args: argparse.Namespace) -> int:
    from approxeq.experiments.schema import load_experiment

    path = Path(args.config)
    if not path.is_file():
        raise CLIError(f"CONFIG: no file {path} (a shipped experiment runs by name: "
                       "approxeq experiment NAME)")
    return _run(load_experiment(path, size=args.size), args)


def cmd_experiment(args: argparse.Namespace) -> int:
    from approxeq.experiments.schema import load_experiment

    if args.quick and args.size not in (None, "quick"):
        raise CLIError(f"--quick and --size {args.size} contradict each other")
    size = args.size or "quick"
    path = resolve_experiment(args.name)
    print(f"approxeq experiment: {path} (size {size})", file=sys.stderr)
    return _run(load_experiment(path, size=size), args)


def cmd_eval(args: argparse.Namespace) -> int:
    from approxeq.experiments import format_table
    from approxeq.experiments.run_eval import reevaluate_run

    start = time.monotonic()
    check_device(args.device)
    if (args.var is not None or args.aux is not None) and (args.data is None or args.var is None):
        raise CLIError("--var and --aux evaluate on a gridded data file: give --data FILE "
                       "and --var NAME (e.g. --data era5.nc --var t2m)")
    metrics, path, experiment = reevaluate_run(
        args.run_dir, data=args.data, var=args.var, aux=args.aux, out=args.out,
        checkpoint=args.checkpoint, device=args.device, skip_missing=args.skip_missing)
    print(format_table(experiment.results_table(metrics), markdown=False))
    failed = [label + (f" ({', '.join(e['failed_seeds'])})" if e.get("failed_seeds") else "")
              for label, e in metrics.items() if "failed" in e]
    if failed:
        print(f"\nfailed (--skip-missing): {', '.join(failed)}")
    print(f"\nwrote {path} ({time.monotonic() - start:.0f} s)")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

def _add_run_options(p: argparse.ArgumentParser, *, only: bool = True) -> None:
    p.add_argument("--out", required=True, metavar="DIR",
                   help="run directory (created; rerunning resumes unfinished models and skips "
                        "finished ones)")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="'cpu', 'cuda' or 'cuda:N' for every model (default: each model's "
                        "train.device, 'auto' = CUDA if available)")
    if only:
        p.add_argument("--only", nargs="+", metavar="LABEL",
                       help="train and evaluate only these model labels")
    p.add_argument("--restart", action="store_true",
                   help="train again from scratch every model whose directory in DIR another "
                        "configuration produced or whose checkpoint is unreadable (without it "
                        "such a rerun is refused, naming what changed)")
    p.add_argument("--no-figures", action="store_true", help="do not draw figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars or status messages")


def _add_steps_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="train every model for N steps (epochs for the graph and n-body "
                        "experiments), whatever the YAML says; validation and checkpoints "
                        "follow")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="train a neural-process experiment's (model, seed) units in up to N "
                        "worker processes, one line per finished unit (default 1: in turn, with "
                        "progress bars). A run's torch thread count is part of its identity: "
                        "each model keeps the train.num_threads its YAML sets (fewer workers "
                        "run if they would not fit the cores); an unset one becomes cores/N")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``approxeq`` command."""
    parser = argparse.ArgumentParser(
        prog="approxeq",
        description="Exact, learned and approximate equivariance for neural processes: train, "
                    "evaluate and compare models.",
        epilog="Each command that trains or evaluates writes metrics.json (one entry per model "
               "with loglik and loglik_se) in its output directory.")
    from approxeq import __version__

    parser.add_argument("--version", action="version", version=f"approxeq {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_models_command, _add_demo_command, _add_experiment_command,
                _add_train_command, _add_eval_command):
        add(sub)
    return parser


def _add_models_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo, or one model's options",
                       description="List the registered models (names for build_model and the "
                                   "'name' of a model in an experiment YAML) with the group "
                                   "each is exactly equivariant to; with NAME, that model's "
                                   "options, their defaults and what they mean.")
    p.add_argument("name", nargs="?", default=None, metavar="NAME",
                   help="a model name (e.g. convcnp): list its options")
    p.set_defaults(func=cmd_models)


def _add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train and compare non-, exactly and approximately equivariant NPs",
        description="Train a TNP (not equivariant), a ConvCNP (translation equivariant) and an "
                    "approximately equivariant ConvCNP (learned fixed inputs) on the 1-D Gibbs "
                    "switching-lengthscale GP task; evaluate in and out of distribution against "
                    "the GP oracle; print a table and write DIR/metrics.json, results.md and "
                    "figures/. Runs on one CPU thread (--threads) so that its numbers are "
                    "the same on every machine, and says how long it should take here.")
    _add_run_options(p, only=False)
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="torch threads (default 1; the results depend on the count)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="training steps per model (default 3000)")
    p.add_argument("--test-tasks", type=_positive_int, default=256,
                   help="tasks per test set, ID and OOD (default 256)")
    p.set_defaults(func=cmd_demo)


def _add_experiment_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment", help="run a shipped experiment by name, or any experiment YAML",
        description="Run the shipped experiment NAME (gp1d, era5-uk, graph8c, ...; NAME may "
                    "also be the path of your own YAML): train every model, evaluate, write "
                    "metrics.json, results.md and figures. The quick size runs by default; "
                    "--size paper asks for the paper's.")
    p.add_argument("name", metavar="NAME", help="experiment name (e.g. gp1d) or YAML path")
    p.add_argument("--size", default=None,
                   help="any size the YAML defines, e.g. paper (default quick: minutes on a "
                        "CPU)")
    p.add_argument("--quick", action="store_true", help="the quick size (the default)")
    _add_run_options(p)
    _add_steps_option(p)
    p.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                   help="train every model with N seeds (runs in DIR/seed-*); metrics.json "
                        "reports the mean over seeds and its standard error (default: the "
                        "YAML's extra.seeds, else 1)")
    p.set_defaults(func=cmd_experiment)


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train and evaluate the models of an experiment YAML",
        description="Train every model of an experiment YAML (e.g. a copy of a shipped one, "
                    "approxeq/experiments/configs/gp1d.yaml), "
                    "evaluate ID and OOD, write metrics.json, results.md and figures.")
    p.add_argument("config", metavar="CONFIG", help="experiment YAML file")
    p.add_argument("--size", default="quick",
                   help="any size the YAML defines, e.g. paper (default quick)")
    _add_run_options(p)
    _add_steps_option(p)
    p.set_defaults(func=cmd_train)


def _add_eval_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="re-evaluate a finished run from its checkpoints",
        description="Re-evaluate every model of RUN_DIR (written by train/experiment/demo) from "
                    "its checkpoints, on the experiment's own test sets (GP, terrain and smoke "
                    "runs; a terrain or smoke RUN_DIR of several seeds is evaluated per seed "
                    "and aggregated) or on a saved task file (--data: a .pt written by "
                    "approxeq.experiments.save_batches, a list of batches of xc, yc, xt, yt "
                    "tensors; GP runs), or a gridded-data run on any field (--data, --var).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="saved task file (.pt), or with --var a netCDF/zarr field (any file, "
                        "region, resolution or period)")
    p.add_argument("--var", default=None, metavar="NAME",
                   help="variable of the --data field to evaluate on (e.g. t2m)")
    p.add_argument("--aux", default=None, metavar="FILE",
                   help="auxiliary fields (e.g. elevation) for models trained with them")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="metrics file to write (default RUN_DIR/eval/checkpoint-best/"
                        "metrics.json, or RUN_DIR/eval/<FILE stem>[-<var>]/metrics.json with "
                        "--data); the run's own metrics.json is never overwritten")
    p.add_argument("--checkpoint", choices=("best.pt", "last.pt"), default="best.pt",
                   help="which checkpoint to evaluate (default best.pt)")
    p.add_argument("--skip-missing", action="store_true",
                   help="a missing or unreadable checkpoint marks its model as failed instead "
                        "of stopping with an error")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="'cpu', 'cuda' or 'cuda:N' (default: CUDA if available)")
    p.set_defaults(func=cmd_eval)


def _one_line(err: BaseException) -> str:
    """The first line of an error's message (some library messages run over many lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``approxeq`` command with ``argv`` (default ``sys.argv[1:]``); return the exit
    status. Argument errors exit with status 2 (argparse); errors in configurations, model
    options, files or data print one line (``--traceback``: the full traceback) and return 1."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a bare `approxeq` is a request for help, not a mistake
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    from approxeq.train.config import ConfigError
    from approxeq.train.rundir import RunDirError

    try:
        return int(args.func(args) or 0)
    except (CLIError, ConfigError, FileNotFoundError, ValueError, RunDirError,
            ImportError) as err:
        # bad configurations, options, files, data or a missing extra: told in one line
        if args.traceback:
            raise
        print(f"approxeq {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:
        # a full disk, a read-only or missing place to write: the environment, told in one line
        if args.traceback:
            raise
        from approxeq.experiments.outputs import no_space_message

        text = no_space_message(err) or (f"{err.strerror or err}: {err.filename}"
                                         if err.filename else str(err))
        print(f"approxeq {args.command}: error: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"approxeq {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
