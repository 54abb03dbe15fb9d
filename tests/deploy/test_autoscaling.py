"""The HPA's recommendation formula and scale-down stabilisation, as Kubernetes documents them."""
from __future__ import annotations

from deploy.autoscaling import Bounds, recommend, stabilized

BOUNDS = Bounds(2, 6)


def test_recommendation_follows_the_ratio_to_the_target():
    # the Kubernetes docs' example: 1 replica at 200m against a 100m target -> 2
    assert recommend(1, [0.2], 0.1, Bounds(1, 10)) == 2
    assert recommend(2, [0.05, 0.07], 0.02, BOUNDS) == 6         # ceil(2 * 0.06 / 0.02) = 6
    assert recommend(3, [0.021, 0.020, 0.022], 0.02, BOUNDS) == 3  # within the 10 % tolerance: no change
    assert recommend(4, [0.0, 0.0, 0.0, 0.0], 0.02, BOUNDS) == 2   # idle: down to minReplicas
    assert recommend(2, [1.0, 1.0], 0.02, BOUNDS) == 6             # clamped to maxReplicas


def test_scale_down_waits_for_the_stabilisation_window():
    recs = [(0, 2), (10, 5), (20, 2), (400, 2)]
    assert stabilized(recs, 300) == [(0, 2), (10, 5), (20, 5), (400, 2)]
