"""Group-aware splits: identities that share a video share a group, and a group one split.

Seeded splits are *stable*: each group's split is a function of its name and the seed alone, so
adding or removing videos never moves the other groups (the one exception, lending a group to an
otherwise empty split, is described in `seeded_group_split`). The price is that fractions hold
only approximately, as for any independent draw (see `seeded_group_split`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

from ffx.pipeline.recipe.schema import SPLITS

# How seeded splits are assigned. index.json records it; a build made with another method is not
# re-indexed in place (its videos would move between splits under its later stages).
SPLIT_METHOD = "hash-v1"


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


def group_position(seed: int, group: str) -> float:
    """A group's seeded point in [0, 1): sha256 of "seed:group", 52 bits, exact in a float.

    The same on every machine and Python version, and independent of the other groups."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def split_regions(fractions: Sequence[float]) -> list[tuple[int, float, float]]:
    """(split index, start, end) of each split with a non-zero fraction: consecutive intervals
    that cover [0, 1) in split order, each as wide as its fraction (renormalised to sum 1)."""
    nonzero = [index for index, fraction in enumerate(fractions) if fraction > 0]
    if not nonzero:
        raise ValueError("at least one split fraction must be > 0")
    total = sum(fractions[index] for index in nonzero)
    regions, start = [], 0.0
    for number, index in enumerate(nonzero):
        end = 1.0 if number == len(nonzero) - 1 else min(1.0, start + fractions[index] / total)
        regions.append((index, start, end))
        start = end
    return regions


def _region_of(position: float, regions: list[tuple[int, float, float]]) -> int:
    for index, _start, end in regions:
        if position < end:
            return index
    return regions[-1][0]


def _gap(position: float, start: float, end: float) -> float:
    """Distance from a point to the interval [start, end)."""
    return start - position if position < start else max(0.0, position - end)


def _lend_to_empty_splits(
    members: list[str], positions: dict[str, float], chosen: dict[str, int], regions
) -> None:
    """While a split of this pool has no group and another split has two or more, move the
    group nearest (by position) to an empty split's interval into it; ties by position, name."""
    counts = Counter(chosen[group] for group in members)
    while True:
        empty = [(index, start, end) for index, start, end in regions if counts[index] == 0]
        donors = [group for group in members if counts[chosen[group]] >= 2]
        if not empty or not donors:
            return
        _, _, group, index = min(
            (_gap(positions[group], start, end), positions[group], group, index)
            for index, start, end in empty
            for group in donors
        )
        counts[chosen[group]] -= 1
        chosen[group] = index
        counts[index] += 1


def seeded_group_split(
    groups: Iterable[str],
    fractions: Sequence[float],
    seed: int,
    splits: Sequence[str] = SPLITS,
    pool_of: Mapping[str, Hashable] | None = None,
) -> dict[str, str]:
    """Assign whole groups to splits by a seeded hash of each group's name (`SPLIT_METHOD`).

    Each group's `group_position` in [0, 1) falls into one of the consecutive intervals
    train [0, f_train), val [f_train, f_train + f_val), test [.., 1) (`split_regions`), so a
    group never straddles splits, the result does not depend on input order or on the other
    groups, and adding or removing groups never moves the others.

    Fractions therefore hold only approximately: the number of groups a split with fraction f
    gets out of n is binomial, f*n +- sqrt(n*f*(1-f)) (one standard deviation); in 99.7 % of
    seeds the group share is within 3*sqrt(f*(1-f)/n) of f, e.g. for f = 0.1 within 12.7 points
    at 50 groups, 5.2 at 300, 1.3 at 5000 (for f = 0.8: 17, 6.9, 1.7). Video shares also vary
    with group sizes (the split counts groups, not videos).

    Minimum rule: groups are pooled (`pool_of`, e.g. by label composition; one pool when None).
    Where, in a pool, a split with a non-zero fraction got no group while another split got two
    or more, the group nearest to the empty split's interval is lent to it (repeatedly, nearest
    first). So a pool with at least as many groups as non-zero splits has a group in every such
    split, and a smaller pool has its groups in distinct splits. This is the only exception to
    stability, and only in a pool where a split got no group by hash (a split of fraction f
    does with probability (1-f)**n for n groups: under 1 % from 44 groups at f = 0.1): there,
    adding or removing groups may move a lent group back or lend another one.
    """
    regions = split_regions(fractions)
    members = sorted(set(groups))
    positions = {group: group_position(seed, group) for group in members}
    chosen = {group: _region_of(positions[group], regions) for group in members}
    pools: dict[Hashable, list[str]] = {}
    for group in members:
        pools.setdefault(None if pool_of is None else pool_of[group], []).append(group)
    for pool_members in pools.values():
        _lend_to_empty_splits(pool_members, positions, chosen, regions)
    return {group: splits[chosen[group]] for group in members}
