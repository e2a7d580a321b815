"""Group-aware seeded splits."""

from __future__ import annotations

from ffx.pipeline.split import identity_groups, seeded_group_split


def test_identity_groups_are_connected_components():
    groups = identity_groups([("a",), ("b",), ("a", "c"), ("d", "c"), ("e",), ("b", "f")])
    assert groups == ["a", "b", "a", "a", "e", "b"]


def test_seeded_split_fractions_whole_groups_and_stability():
    sizes = {f"g{number:03d}": 1 + number % 3 for number in range(300)}
    assignment = seeded_group_split(sizes, (0.8, 0.1, 0.1), seed=0)
    total = sum(sizes.values())
    per_split = {
        split: sum(sizes[g] for g, s in assignment.items() if s == split)
        for split in ("train", "val", "test")
    }
    assert abs(per_split["train"] / total - 0.8) < 0.02
    assert abs(per_split["val"] / total - 0.1) < 0.02
    # A subset keeps the relative order of groups: adding groups does not reshuffle the others' ranks.
    assert seeded_group_split(sizes, (0.8, 0.1, 0.1), seed=0) == assignment
    assert seeded_group_split(sizes, (0.8, 0.1, 0.1), seed=1) != assignment
    assert set(seeded_group_split({"only": 3}, (0.0, 0.0, 1.0), seed=0).values()) == {"test"}
