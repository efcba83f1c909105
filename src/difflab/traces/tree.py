"""The search tree: complete traces (root-to-leaf paths) and reward backpropagation.

The tree is a networkx DiGraph (parent -> child). A forest is fine (one trace set per root). A row
whose parent is missing from the rows read (another run's program, a deleted one) is an *orphan*: it
and its whole subtree are reported and skipped. A cycle in `parent_id` is an error naming its ids.

Backpropagation, exactly (r = a program's own reward, the `value` column; gamma = `discount`):

    V(n) = r(n)                                   for a leaf
    V(n) = r(n) + gamma * A({V(c) : c child of n}) otherwise, where A is
           max    the best continuation (default: V(n) is the best discounted return of any trace
                  from n on, the Bellman optimality backup over the tree)
           mean   the mean continuation (a uniformly random child)
           visits the visits-weighted mean over children, with N(c) below (the MCTS estimate)
    N(n) = visits(n) + sum of N(c) over children  (backed-up visits)

A trace t = (n_0 root, ..., n_T leaf) gets

    return      sum_k gamma^k r(n_k), its discounted return from the root (the default trace value;
                with A = max, V(root) is the largest return among the root's traces)
    leaf_reward r(n_T); max_reward and mean_reward over the path; root_value V(n_0); leaf_visits N(n_T)

Any of return / leaf_reward / max_reward / mean_reward can be the value that selection ranks by.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp

from difflab.errors import DifflabError

AGGREGATES = ("max", "mean", "visits")
TRACE_VALUES = ("return", "leaf_reward", "max_reward", "mean_reward")


@dataclass
class Forest:
    """The kept programs in breadth-first order (parents before children), with what was skipped."""

    graph: nx.DiGraph
    ids: np.ndarray            # program ids, BFS order from the roots
    parent: np.ndarray         # index into ids of each program's parent, -1 for a root
    depth: np.ndarray          # 0 for a root
    rows: np.ndarray           # row of each kept program in the input table
    roots: list[int] = field(default_factory=list)
    orphans: list[dict] = field(default_factory=list)   # {id, parent_id, skipped (subtree size)}

    @property
    def n_skipped(self) -> int:
        return sum(o["skipped"] for o in self.orphans)

    def leaves(self) -> np.ndarray:
        has_child = np.zeros(len(self.ids), dtype=bool)
        has_child[self.parent[self.parent >= 0]] = True
        return np.flatnonzero(~has_child)


def build_forest(programs: pd.DataFrame, *, source: str = "programs") -> Forest:
    """Programs (columns id, parent_id) -> Forest; orphans reported, cycles and duplicate ids are errors."""
    ids = programs["id"].to_numpy(dtype=np.int64)
    parents = programs["parent_id"]
    has_parent = parents.notna().to_numpy()
    parent_ids = parents.fillna(0).to_numpy(dtype=np.int64)
    index = pd.Index(ids)
    if not index.is_unique:
        dup = index[index.duplicated()][0]
        raise DifflabError(f"{source}: field 'id': program {dup} appears more than once")
    present = np.zeros(len(ids), dtype=bool)
    present[has_parent] = index.get_indexer(parent_ids[has_parent]) >= 0
    orphan_rows = np.flatnonzero(has_parent & ~present)

    graph = nx.DiGraph()
    graph.add_nodes_from(ids.tolist())
    linked = has_parent & present
    graph.add_edges_from(zip(parent_ids[linked].tolist(), ids[linked].tolist()))
    roots = ids[~has_parent].tolist()

    orphans, skipped = [], set()
    for row in orphan_rows:
        subtree = nx.descendants(graph, int(ids[row])) | {int(ids[row])}
        if int(ids[row]) in skipped:
            continue
        skipped |= subtree
        orphans.append({"id": int(ids[row]), "parent_id": int(parent_ids[row]), "skipped": len(subtree)})

    order, depth = [], []
    for level, layer in enumerate(nx.bfs_layers(graph, roots) if roots else []):
        order.extend(layer)
        depth.extend([level] * len(layer))
    if len(order) + len(skipped) < len(ids):
        reached = set(order) | skipped
        rest = graph.subgraph(n for n in ids.tolist() if n not in reached)
        try:
            cycle = nx.find_cycle(rest)
            nodes = [edge[0] for edge in cycle]
        except nx.NetworkXNoCycle:  # pragma: no cover - unreachable nodes always hang off a cycle here
            nodes = sorted(rest.nodes)[:10]
        raise DifflabError(f"{source}: field 'parent_id': programs {' -> '.join(map(str, nodes + nodes[:1]))} "
                           f"form a cycle")
    order_ids = np.asarray(order, dtype=np.int64)
    rows = index.get_indexer(order_ids)
    kept_index = pd.Index(order_ids)
    parent = np.full(len(order_ids), -1, dtype=np.int64)
    child_has_parent = has_parent[rows]
    parent[child_has_parent] = kept_index.get_indexer(parent_ids[rows][child_has_parent])
    return Forest(graph, order_ids, parent, np.asarray(depth, dtype=np.int64), rows, roots, orphans)


def trace_paths(forest: Forest) -> tuple[np.ndarray, np.ndarray]:
    """Every root-to-leaf path: (leaf positions sorted by leaf id, CSR-style offsets, flat positions root first)."""
    leaves = forest.leaves()
    leaves = leaves[np.argsort(forest.ids[leaves], kind="stable")]
    lengths = forest.depth[leaves] + 1
    offsets = np.zeros(len(leaves) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.empty(offsets[-1], dtype=np.int64)
    cur, slot = leaves.copy(), offsets[1:] - 1      # fill each path from its end (the leaf) backwards
    alive = np.arange(len(leaves))
    while alive.size:
        flat[slot[alive]] = cur[alive]
        cur[alive] = forest.parent[cur[alive]]
        slot[alive] -= 1
        alive = alive[cur[alive] >= 0]
    return leaves, offsets, flat


def incidence(offsets: np.ndarray, flat: np.ndarray, n_programs: int, weights: np.ndarray | None = None) -> sp.csr_matrix:
    """traces x programs sparse matrix with a 1 (or `weights`, per path entry) where a trace passes a program."""
    data = np.ones(len(flat), dtype=np.float64) if weights is None else weights
    return sp.csr_matrix((data, flat, offsets), shape=(len(offsets) - 1, n_programs))


def path_arrays(traces: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(offsets [n_traces + 1], program ids of all paths, root first) from a traces table."""
    lengths = traces["length"].to_numpy(dtype=np.int64)
    offsets = np.zeros(len(traces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat_ids = np.concatenate([np.asarray(p, dtype=np.int64) for p in traces["program_ids"]]) \
        if len(traces) else np.zeros(0, dtype=np.int64)
    return offsets, flat_ids


def extract_traces(programs: pd.DataFrame, *, source: str = "programs") -> tuple[pd.DataFrame, dict]:
    """All complete traces -> (one row per trace: trace_id (= leaf id), root_id, leaf_id, length,
    program_ids root first) and a report (roots, orphans skipped, counts)."""
    forest = build_forest(programs, source=source)
    leaves, offsets, flat = trace_paths(forest)
    ids = forest.ids
    path_ids = ids[flat]
    paths = [path_ids[offsets[i]:offsets[i + 1]] for i in range(len(leaves))]  # views of one array
    traces = pd.DataFrame({
        "trace_id": ids[leaves],
        "root_id": ids[flat[offsets[:-1]]] if len(leaves) else np.zeros(0, dtype=np.int64),
        "leaf_id": ids[leaves],
        "length": np.diff(offsets),
        "program_ids": paths,
    })
    report = {
        "programs": int(len(programs)),
        "programs_in_traces": int(len(ids)),
        "roots": len(forest.roots),
        "traces": int(len(leaves)),
        "max_length": int(traces["length"].max()) if len(traces) else 0,
        "mean_length": round(float(traces["length"].mean()), 3) if len(traces) else 0.0,
        "orphans": forest.orphans,
        "skipped_programs": forest.n_skipped,
    }
    return traces, report


def backpropagate(programs: pd.DataFrame, *, discount: float = 0.95, aggregate: str = "max",
                  source: str = "programs") -> pd.DataFrame:
    """Backed-up value V and visits N of every program in a trace (rule in the module docstring)."""
    if aggregate not in AGGREGATES:
        raise DifflabError(f"traces: aggregate must be one of {', '.join(AGGREGATES)}, got '{aggregate}'")
    if not 0.0 <= discount <= 1.0:
        raise DifflabError(f"traces: discount must be in [0, 1], got {discount}")
    forest = build_forest(programs, source=source)
    reward = programs["value"].to_numpy(dtype=np.float64)[forest.rows]
    visits = programs["visits"].to_numpy(dtype=np.float64)[forest.rows]
    value, total_visits = reward.copy(), visits.copy()
    n = len(forest.ids)
    levels = np.argsort(forest.depth, kind="stable")
    bounds = np.searchsorted(forest.depth[levels], np.arange(forest.depth.max(initial=0) + 2))
    for d in range(forest.depth.max(initial=0), 0, -1):
        nodes = levels[bounds[d]:bounds[d + 1]]
        parents = forest.parent[nodes]
        np.add.at(total_visits, parents, total_visits[nodes])
        if aggregate == "max":
            best = np.full(n, -np.inf)
            np.maximum.at(best, parents, value[nodes])
            agg = best
        elif aggregate == "mean":
            sums, counts = np.zeros(n), np.zeros(n)
            np.add.at(sums, parents, value[nodes])
            np.add.at(counts, parents, 1.0)
            agg = sums / np.maximum(counts, 1.0)
        else:  # visits-weighted; children with no visits at all fall back to the plain mean
            w = total_visits[nodes]
            sums, weights, plain, counts = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
            np.add.at(sums, parents, w * value[nodes])
            np.add.at(weights, parents, w)
            np.add.at(plain, parents, value[nodes])
            np.add.at(counts, parents, 1.0)
            agg = np.where(weights > 0, sums / np.maximum(weights, 1e-300), plain / np.maximum(counts, 1.0))
        touched = np.unique(parents)
        value[touched] = reward[touched] + discount * agg[touched]
    return pd.DataFrame({"id": forest.ids, "parent_id": forest.ids[np.maximum(forest.parent, 0)],
                         "depth": forest.depth, "reward": reward, "value": value,
                         "visits": visits.astype(np.int64), "visits_total": total_visits.astype(np.int64)}) \
        .assign(parent_id=lambda f: f["parent_id"].where(forest.parent >= 0).astype("Int64"))


def trace_values(programs: pd.DataFrame, nodes: pd.DataFrame, traces: pd.DataFrame, *,
                 discount: float = 0.95) -> pd.DataFrame:
    """Per trace: return, leaf/max/mean reward, backed-up value of its root and visits of its leaf."""
    position = pd.Index(nodes["id"].to_numpy())
    offsets, flat_ids = path_arrays(traces)
    lengths = np.diff(offsets)
    flat = position.get_indexer(flat_ids)
    if (flat < 0).any():
        missing = flat_ids[flat < 0][0]
        raise DifflabError(f"traces: program {missing} of a trace has no backed-up value (stale inputs?)")
    reward = nodes["reward"].to_numpy()[flat]
    step = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)
    discounted = reward * discount ** step
    starts = offsets[:-1]
    nonempty = lengths > 0
    ret = np.add.reduceat(discounted, starts[nonempty]) if len(flat) else np.zeros(0)
    best = np.maximum.reduceat(reward, starts[nonempty]) if len(flat) else np.zeros(0)
    total = np.add.reduceat(reward, starts[nonempty]) if len(flat) else np.zeros(0)
    leaf_pos = position.get_indexer(traces["leaf_id"].to_numpy())
    root_pos = position.get_indexer(traces["root_id"].to_numpy())
    return pd.DataFrame({
        "trace_id": traces["trace_id"].to_numpy(),
        "return": ret,
        "leaf_reward": nodes["reward"].to_numpy()[leaf_pos],
        "max_reward": best,
        "mean_reward": total / np.maximum(lengths, 1),
        "root_value": nodes["value"].to_numpy()[root_pos],
        "leaf_visits": nodes["visits_total"].to_numpy()[leaf_pos],
        "length": lengths,
    })
