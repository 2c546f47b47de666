"""What an approximate model's fixed inputs add, read from a multi-seed run.

For every model of a run written with ``--seeds N`` (``RUN/seed-*/metrics.json``) it prints the
in-region log-likelihood (mean over seeds and its standard error over seeds) and, for an
approximate model, its equivariant component's, the fixed inputs' own share (full model minus
component, per seed, then mean and s.e. over seeds), the correlation of the learned correction
with the known symmetry break where the run records one, and every out-of-region or transfer
block with the component's gap to the exact twin in combined standard errors. It writes the
same numbers as JSON::

    python scripts/fixed_input_share.py runs/era5-fi --exact ConvCNP~=ConvCNP E-TNP~=E-TNP \
        --json docs/results/era5-uk-quick-fixed-inputs/share.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from approxeq.experiments.aggregate import mean_and_se
from approxeq.files import write_json_atomic

#: the per-model numbers that name the correlation of a correction with the true break
CORRELATIONS = ("correction_elevation_corr", "correction_break_corr", "correction_oracle_corr")


def blocks(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The entry's evaluation blocks by name: ``id``, ``ood`` and each transfer set."""
    found = {k: entry[k] for k in ("id", "ood") if isinstance(entry.get(k), dict)}
    for name, block in (entry.get("transfer") or {}).items():
        found[name] = block
    return found


def component_loglik(block: dict[str, Any]) -> float | None:
    if isinstance(block.get("component"), dict):
        return block["component"]["loglik"]
    return block.get("component_loglik")


def summarise(run: Path, exact: dict[str, str]) -> dict[str, Any]:
    seeds = sorted(run.glob("seed-*/metrics.json"), key=lambda p: int(p.parent.name[5:]))
    if not seeds:
        raise SystemExit(f"{run}: no seed-*/metrics.json (a run written with --seeds N)")
    per_seed = [json.loads(p.read_text()) for p in seeds]
    labels = [k for k, v in per_seed[0].items() if isinstance(v, dict) and "failed" not in v]
    out: dict[str, Any] = {"seeds": len(per_seed), "models": {}}
    for label in labels:
        entries = [m[label] for m in per_seed if label in m]
        row: dict[str, Any] = {}
        for name in blocks(entries[0]):
            bs = [blocks(e)[name] for e in entries]
            ll = [b["loglik"] for b in bs]
            block: dict[str, Any] = dict(zip(("loglik", "loglik_se_seeds"), mean_and_se(ll)))
            block["loglik_seeds"] = ll
            if all(b.get("coverage95") is not None for b in bs):
                block["coverage95"] = mean_and_se([b["coverage95"] for b in bs])[0]
            comps = [component_loglik(b) for b in bs]
            if all(c is not None for c in comps):
                block["component"] = dict(zip(("loglik", "loglik_se_seeds"), mean_and_se(comps)))
                share = [a - c for a, c in zip(ll, comps)]
                block["share"] = dict(zip(("mean", "se_seeds"), mean_and_se(share)))
                block["share"]["seeds"] = share
            row[name] = block
        # the parameterisation is chosen on validation: the best validation check of each seed
        vals = [json.loads(h.read_text()).get("best_val")
                for h in sorted(run.glob(f"seed-*/{label}/history.json"))]
        if vals and all(v is not None for v in vals):
            row["validation"] = dict(zip(("mean", "se_seeds"), mean_and_se(vals)))
        for key in CORRELATIONS:
            values = [e.get(key, (e.get("id") or {}).get(key)) for e in entries]
            if all(v is not None for v in values):
                row[key] = dict(zip(("mean", "se_seeds"), mean_and_se(values)))
        out["models"][label] = row
    for approx, twin in exact.items():
        a, t = out["models"].get(approx), out["models"].get(twin)
        if a is None or t is None:
            raise SystemExit(f"--exact {approx}={twin}: no such model in {run}")
        for name, block in a.items():
            if not isinstance(block, dict) or "component" not in block or name not in t:
                continue
            diff = block["component"]["loglik"] - t[name]["loglik"]
            se = math.hypot(block["component"]["loglik_se_seeds"], t[name]["loglik_se_seeds"])
            block["component_minus_exact"] = {"mean": diff, "combined_se": se,
                                              "in_se": diff / se if se > 0 else float("nan")}
    return out


def table(summary: dict[str, Any]) -> str:
    lines = ["| model | block | log-lik (s.e. over seeds) | component | share | coverage 95 % "
             "| component − exact (in s.e.) |", "|---|---|---|---|---|---|---|"]
    for label, row in summary["models"].items():
        for name, b in row.items():
            if not isinstance(b, dict) or "loglik" not in b:
                continue
            comp = b.get("component")
            share = b.get("share")
            gap = b.get("component_minus_exact")
            cov = b.get("coverage95")
            lines.append(
                f"| {label} | {name} | {b['loglik']:.3f} ({b['loglik_se_seeds']:.3f}) | "
                + (f"{comp['loglik']:.3f} | " if comp else "– | ")
                + (f"{share['mean']:+.3f} ({share['se_seeds']:.3f}) | " if share else "– | ")
                + (f"{cov:.3f} | " if cov is not None else "– | ")
                + (f"{gap['mean']:+.3f} ({gap['in_se']:+.1f}) |" if gap else "– |"))
        for key in ("validation", *CORRELATIONS):
            if key in row:
                lines.append(f"| {label} | {key} | {row[key]['mean']:.2f} "
                             f"({row[key]['se_seeds']:.2f}) | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory written with --seeds N")
    parser.add_argument("--exact", nargs="*", default=[], metavar="APPROX=EXACT",
                        help="pairs whose component is compared with the exact twin")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    pairs = dict(p.split("=", 1) for p in args.exact)
    summary = summarise(args.run, pairs)
    print(table(summary))
    if args.json is not None:
        write_json_atomic(args.json, summary)


if __name__ == "__main__":
    main()
