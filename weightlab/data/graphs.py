"""A synthetic node-classification graph: a stochastic block model (SBM) with Gaussian
node features, drawn from one seed.

``sbm_graph`` draws ``n_nodes`` nodes split as evenly as possible into ``n_classes``
blocks; an edge joins two nodes of one block with probability ``p_in`` and of different
blocks with ``p_out`` (Holland, Laskey & Leinhardt 1983). Node ``i`` of class ``c`` has
features ``x_i = signal · μ_c + ε_i``, ``ε_i ~ N(0, I_d)``, with ``μ_c`` a random unit
vector per class, so the features alone are weakly informative and the graph helps.

The adjacency is the GCN's renormalized one, ``Â = D̃^{-1/2}(A + I)D̃^{-1/2}`` with
``D̃ = diag((A + I)1)`` (Kipf & Welling 2017, Eq. 2), dense.

``load_sbm`` returns the graph as a transductive :class:`~weightlab.data.task.TaskData`:
each split's inputs are node indices (a float column, exact below 2^24), its labels the
nodes' classes; ``info`` holds ``adjacency`` and ``features`` (the whole graph, which
a GCN keeps as buffers, :class:`weightlab.models.gcn.GCN`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator


@dataclass(frozen=True)
class Graph:
    """A graph with node features and labels: ``adjacency`` (N, N) float (normalized
    unless stated), ``features`` (N, d) float, ``labels`` (N,) int64."""

    adjacency: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.adjacency.shape[0])


def normalized_adjacency(a: torch.Tensor) -> torch.Tensor:
    """``D̃^{-1/2}(A + I)D̃^{-1/2}`` of a symmetric 0/1 adjacency ``a`` without self-loops
    (Kipf & Welling 2017, Eq. 2: the renormalization trick)."""
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise DataError(f"an adjacency must be square, got shape {tuple(a.shape)}")
    a_tilde = a + torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    d = a_tilde.sum(1).rsqrt()
    return d[:, None] * a_tilde * d[None, :]


def sbm_graph(
    n_nodes: int = 600,
    n_classes: int = 4,
    p_in: float = 0.04,
    p_out: float = 0.01,
    n_features: int = 32,
    signal: float = 1.0,
    seed: int = 0,
) -> Graph:
    """Draw an SBM graph with Gaussian node features from ``seed`` (float32 tensors;
    ``adjacency`` normalized as in :func:`normalized_adjacency`)."""
    if n_nodes < 2 * n_classes or n_classes < 2:
        raise DataError(
            f"an SBM needs >= 2 classes and >= 2 nodes per class; got n_nodes={n_nodes}, "
            f"n_classes={n_classes}"
        )
    if not (0 <= p_out <= 1 and 0 <= p_in <= 1):
        raise DataError(f"edge probabilities must lie in [0, 1]; got p_in={p_in}, p_out={p_out}")
    g = generator(derive_seed("sbm", int(seed)))
    labels = torch.arange(n_nodes) % n_classes
    labels = labels[torch.randperm(n_nodes, generator=g)]
    same = labels[:, None] == labels[None, :]
    p = torch.where(same, torch.tensor(float(p_in)), torch.tensor(float(p_out)))
    draw = torch.rand((n_nodes, n_nodes), generator=g, dtype=torch.float64)
    upper = torch.triu((draw < p.double()).double(), diagonal=1)
    a = upper + upper.T
    means = torch.randn((n_classes, n_features), generator=g, dtype=torch.float64)
    means = means / means.norm(dim=1, keepdim=True)
    x = signal * means[labels] + torch.randn(
        (n_nodes, n_features), generator=g, dtype=torch.float64
    )
    return Graph(normalized_adjacency(a).float(), x.float(), labels.long())


def load_sbm(
    n_nodes: int = 600,
    n_classes: int = 4,
    p_in: float = 0.04,
    p_out: float = 0.01,
    n_features: int = 32,
    signal: float = 1.0,
    train_per_class: int = 20,
    val_size: int = 120,
    seed: int = 0,
) -> TaskData:
    """The SBM graph of :func:`sbm_graph` as a transductive node-classification task:
    ``train_per_class`` labelled nodes per class (the Planetoid protocol of Kipf &
    Welling 2017, Sec. 5.1), ``val_size`` validation nodes, the rest test."""
    graph = sbm_graph(n_nodes, n_classes, p_in, p_out, n_features, signal, seed)
    if n_classes * train_per_class + val_size >= n_nodes:
        raise DataError(
            f"train ({n_classes}x{train_per_class}) + val ({val_size}) nodes leave no test "
            f"nodes out of {n_nodes}; lower train_per_class or val_size"
        )
    g = generator(derive_seed("sbm-split", int(seed)))
    order = torch.randperm(n_nodes, generator=g)
    train = torch.cat([order[graph.labels[order] == c][:train_per_class] for c in range(n_classes)])
    if len(train) < n_classes * train_per_class:
        raise DataError("an SBM class has fewer nodes than train_per_class; lower it")
    rest = order[~torch.isin(order, train)]
    val, test = rest[:val_size], rest[val_size:]

    def split(idx: torch.Tensor) -> Split:
        idx = idx.sort().values
        return Split(idx.float()[:, None], graph.labels[idx])

    return TaskData(
        "sbm",
        split(train),
        split(val),
        split(test),
        n_classes,
        info={"adjacency": graph.adjacency, "features": graph.features},
    )


SBM_PARAMS = (
    Param("n_nodes", "int", 600, "nodes of the SBM graph", min=8, max=20000),
    Param("n_classes", "int", 4, "blocks (classes) of the SBM", min=2, max=100),
    Param("p_in", "float", 0.04, "edge probability within a block", min=0, max=1),
    Param("p_out", "float", 0.01, "edge probability between blocks", min=0, max=1),
    Param("n_features", "int", 32, "Gaussian node-feature dimension", min=1, max=4096),
    Param("signal", "float", 1.0, "norm of the class mean in the node features", min=0),
    Param("train_per_class", "int", 20, "labelled training nodes per class", min=1),
    Param("val_size", "int", 120, "validation nodes", min=1),
    Param("seed", "int", 0, "seed of the graph, features and split", min=0),
)

__all__ = ["SBM_PARAMS", "Graph", "load_sbm", "normalized_adjacency", "sbm_graph"]
