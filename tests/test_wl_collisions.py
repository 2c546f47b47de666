"""The 1-WL floor quoted beside the graph-separation tables (scripts/wl_collisions.py)."""
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("networkx")
import networkx as nx  # noqa: E402

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "wl_collisions.py"
_spec = importlib.util.spec_from_file_location("wl_collisions", _SCRIPT)
wl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wl)


def test_colliding_pairs_counts_all_pairs_or_the_given_ones():
    assert wl.colliding_pairs(["a", "b", "a", "a"], None) == 3
    assert wl.colliding_pairs(["a", "b", "a", "a"], [(0, 1), (0, 2)]) == 1


@pytest.mark.filterwarnings("ignore:The hashes produced")
def test_regular_graphs_collide_and_a_path_and_star_do_not():
    # two 2-regular graphs on 6 nodes (a hexagon, two triangles): 1-WL never separates them
    hexagon, triangles = nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    path, star = nx.path_graph(4), nx.star_graph(3)
    hashes = [nx.weisfeiler_lehman_graph_hash(g, iterations=5)
              for g in (hexagon, triangles, path, star)]
    assert wl.colliding_pairs(hashes, [(0, 1), (2, 3)]) == 1


def test_sr25_is_entirely_confused(tmp_path):
    out = tmp_path / "wl.json"
    wl.main(["--dataset", "sr25", "--rounds", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["pairs"] == 105
    assert result["colliding_pairs_by_rounds"] == {"2": 105}
