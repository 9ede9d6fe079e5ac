"""The toy of the attention's collapse (issue 13): eq. 3 alone saturates the sigmoid; what the remedies change."""

from __future__ import annotations

from avaga_lib.models.avaga.collapse import TOY_COLUMNS, toy_collapse


def test_literal_sigmoid_saturates_by_scaling_the_raw_map() -> None:
    rows = toy_collapse("sigmoid", "literal", steps=200)
    assert set(rows) == set(TOY_COLUMNS) and rows["step"][-1] == 200
    assert rows["attn_mean"][0] < 0.6 and rows["attn_mean"][-1] > 0.999  # A -> 1 on every pixel
    assert rows["amap_frac"][-1] == 0.0  # 1 - A never crosses 0.5
    assert rows["raw_mean"][-1] > 50 * rows["raw_mean"][0]  # by scaling the fixed projection up


def test_size_barrier_stops_near_the_constraint_when_something_resists() -> None:
    """With a weight penalty standing in for the other terms, the barrier settles lower than eq. 3, above 1 - p."""
    literal = toy_collapse("sigmoid", "literal", steps=200, anchor=0.1)["attn_mean"][-1]
    barrier = toy_collapse("sigmoid", "size_barrier", steps=200, anchor=0.1)["attn_mean"][-1]
    assert 0.8 <= barrier < literal - 0.03


def test_max_norm_still_drifts_to_a_flat_map() -> None:
    """Remedy (a) is scale-free but not drift-free: eq. 3 flattens the map until A = r / max(r) is about 1."""
    rows = toy_collapse("max", "literal", steps=200)
    assert rows["attn_mean"][-1] > 0.95 and rows["amap_frac"][-1] == 0.0
