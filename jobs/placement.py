"""Resource requests sized from the nodes that will run them, and a clear error where none fits.

Ray waits, silently and forever, for an actor no node can host (the autoscaler logs "No
available node types can fulfill resource request" and Ray Data keeps waiting for its
minimum pool). A scheduled job must not hang, so every actor pool (embed's encoders, rerank's
shard workers, Ray Train's workers) is planned here against the nodes alive now: a request
is capped at the smallest node that may run it, and a pool that cannot be placed is an
error naming what was asked and what the nodes have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A GPU actor needs a few cores to feed its GPU (tokenisation, I/O), not all of a node's.
GPU_ACTOR_CPUS = (1.0, 4.0)


class PlacementError(RuntimeError):
    """No node (or not enough of them) can host the requested actors."""


@dataclass(frozen=True)
class NodeResources:
    """What one alive Ray node offers."""

    address: str
    cpus: float
    gpus: float


def cluster_nodes() -> list[NodeResources]:
    """The alive nodes of the connected Ray cluster and their total CPUs and GPUs."""
    import ray

    return [NodeResources(n.get("NodeManagerAddress", "?"), float(n["Resources"].get("CPU", 0.0)),
                          float(n["Resources"].get("GPU", 0.0)))
            for n in ray.nodes() if n.get("Alive")]


def this_node() -> str:
    """The Ray node this code runs on (short id), for logs of which node did what."""
    import ray

    return ray.get_runtime_context().get_node_id()[:8]


def eligible_nodes(nodes: list[NodeResources], gpus_per_actor: float = 0.0) -> list[NodeResources]:
    """Nodes that can host one actor (a CPU, and the GPUs it asks for)."""
    return [n for n in nodes if n.cpus >= 1 and n.gpus >= gpus_per_actor]


def describe(nodes: list[NodeResources]) -> str:
    return ", ".join(f"{n.address} ({n.cpus:g} CPU, {n.gpus:g} GPU)" for n in nodes) or "none"


def cpus_per_actor(nodes: list[NodeResources], what: str, actors: int, gpus_per_actor: float = 0.0,
                   cpus: float | None = None) -> float:
    """CPUs each of ``actors`` actors asks for (``cpus`` if given), checked to fit the cluster.

    Default: an even share of the eligible nodes' CPUs, capped at the smallest eligible node
    (so every node can host one); a GPU actor gets 1 to 4. Raises :class:`PlacementError`
    when no node can host one actor, or the nodes cannot host ``actors`` of them at once.
    """
    eligible = eligible_nodes(nodes, gpus_per_actor)
    if not eligible:
        need = f"{gpus_per_actor:g} GPU and 1 CPU" if gpus_per_actor else "1 CPU"
        raise PlacementError(f"{what}: no node has {need} for one actor; nodes: {describe(nodes)}")
    smallest, largest = min(n.cpus for n in eligible), max(n.cpus for n in eligible)
    if cpus is None:
        if gpus_per_actor:
            cpus = max(GPU_ACTOR_CPUS[0], min(GPU_ACTOR_CPUS[1], smallest))
        else:
            cpus = max(1.0, min(float(sum(n.cpus for n in eligible) // actors), smallest))
    elif cpus > largest:
        raise PlacementError(f"{what}: each actor asks for {cpus:g} CPUs, but the largest node that could run it "
                             f"has {largest:g}; nodes: {describe(nodes)}. Ask for fewer CPUs per actor.")
    fits = sum(min(math.floor(n.cpus / cpus), math.floor(n.gpus / gpus_per_actor) if gpus_per_actor else math.inf)
               for n in eligible)
    if fits < actors:
        raise PlacementError(f"{what}: {actors} actors x ({cpus:g} CPU, {gpus_per_actor:g} GPU) do not fit the "
                             f"cluster at once (room for {fits}); nodes: {describe(nodes)}. Ask for fewer actors.")
    return cpus
