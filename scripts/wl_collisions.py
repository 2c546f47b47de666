"""How many pairs of a graph-separation set 1-WL colour refinement cannot tell apart.

The plain GIN of the graph-separation tables is bounded by 1-WL, so this count is the floor its
"indistinguishable pairs" should be compared with. Refinement starts from uniform colours (the
GIN's input features are constant) and runs for each of ``--rounds`` iterations; ``n_max - 1``
rounds always reach the stable colouring of an ``n_max``-node graph.

    python scripts/wl_collisions.py --dataset graph8c --rounds 3 7 \
        --out docs/results/graph8c-quick/wl.json

Needs the ``graphs`` extra (networkx).
"""
from __future__ import annotations

import argparse
import warnings
from collections import Counter

import networkx as nx

from approxeq.data.graphs import GraphData, load_graph_dataset
from approxeq.train.checkpoint import write_json_atomic


def to_networkx(data: GraphData, i: int) -> nx.Graph:
    n = int(data.mask[i].sum())
    adj = data.adj[i, :n, :n]
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((int(a), int(b)) for a, b in adj.nonzero().tolist() if a < b)
    return graph


def colliding_pairs(hashes: list[str], pairs: list[tuple[int, int]] | None) -> int:
    """Pairs with equal hashes: among ``pairs`` if given, else among all pairs of graphs."""
    if pairs is not None:
        return sum(hashes[a] == hashes[b] for a, b in pairs)
    return sum(k * (k - 1) // 2 for k in Counter(hashes).values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="graph8c", choices=["graph8c", "exp", "sr25"])
    parser.add_argument("--rounds", type=int, nargs="+", default=[3, 7],
                        help="refinement rounds to count collisions after")
    parser.add_argument("--out", help="write the counts as JSON here")
    args = parser.parse_args(argv)

    data = load_graph_dataset(args.dataset)
    graphs = [to_networkx(data, i) for i in range(len(data))]
    pairs = None if data.pairs is None else [tuple(p) for p in data.pairs.tolist()]
    n_pairs = len(pairs) if pairs is not None else len(graphs) * (len(graphs) - 1) // 2
    counts = {}
    # networkx 3.5 changed the hash *strings* of unlabelled graphs; equal-or-not, all we count, is
    # the same under either version
    warnings.filterwarnings("ignore", message="The hashes produced for graphs without")
    for rounds in args.rounds:
        hashes = [nx.weisfeiler_lehman_graph_hash(g, iterations=rounds) for g in graphs]
        counts[str(rounds)] = colliding_pairs(hashes, pairs)
        print(f"{args.dataset}: {counts[str(rounds)]:,} of {n_pairs:,} pairs collide after "
              f"{rounds} rounds of 1-WL")
    result = {"dataset": args.dataset, "graphs": len(graphs), "pairs": n_pairs,
              "n_max": data.n_max, "colliding_pairs_by_rounds": counts,
              "networkx": nx.__version__}
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
