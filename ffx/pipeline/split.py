"""Group-aware splits: identities that share a video share a group, and a group one split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from ffx.pipeline.schema import SPLITS


def identity_groups(identity_sets: Sequence[Iterable[str]]) -> list[str]:
    """For each item, its group: the smallest identity of its connected component."""
    parent: dict[str, str] = {}

    def find(identity: str) -> str:
        parent.setdefault(identity, identity)
        while parent[identity] != identity:
            parent[identity] = parent[parent[identity]]
            identity = parent[identity]
        return identity

    for identities in identity_sets:
        first, *others = list(identities)
        for other in others:
            root_a, root_b = find(first), find(other)
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    return [find(next(iter(identities))) for identities in identity_sets]


def _rank(seed: int, group: str) -> str:
    """Order groups by a seeded hash: stable across machines, Python versions and subsets."""
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def seeded_group_split(
    group_sizes: dict[str, int],
    fractions: Sequence[float],
    seed: int,
    splits: Sequence[str] = SPLITS,
) -> dict[str, str]:
    """Assign whole groups to splits so that video counts come close to `fractions`.

    Groups are taken in seeded-hash order; each goes to the split furthest below its target,
    so a group never straddles splits and the result does not depend on input order.
    """
    total = sum(group_sizes.values())
    targets = [fraction * total for fraction in fractions]
    filled = [0] * len(splits)
    assignment = {}
    for group in sorted(group_sizes, key=lambda name: _rank(seed, name)):
        open_splits = [i for i, target in enumerate(targets) if target > 0]
        chosen = min(open_splits, key=lambda i: (filled[i] / targets[i], i))
        assignment[group] = splits[chosen]
        filled[chosen] += group_sizes[group]
    return assignment
