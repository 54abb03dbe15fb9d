"""The HPA's replica recommendation, applied to the queue-time series a real Prometheus recorded.

Kubernetes (autoscaling/v2, a Pods metric with an AverageValue target) recommends
``ceil(current_replicas * mean_over_pods(metric) / target)``, unchanged while the ratio is within the controller's
tolerance (0.1 by default), clamped to [minReplicas, maxReplicas]; the scale-down stabilisation window then holds the
highest recommendation of the last ``window`` seconds. The local multi-replica run applies exactly this to its own
Prometheus data, so the replica counts it prints are the ones a cluster with the same rule would choose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

TOLERANCE = 0.1     # kube-controller-manager --horizontal-pod-autoscaler-tolerance default


@dataclass(frozen=True)
class Bounds:
    min_replicas: int
    max_replicas: int


def recommend(current: int, per_pod: list[float], target: float, bounds: Bounds, tolerance: float = TOLERANCE) -> int:
    """Replicas the HPA recommends for ``current`` pods whose metric values are ``per_pod``."""
    if not per_pod or current < 1:
        return max(bounds.min_replicas, min(current, bounds.max_replicas))
    ratio = (sum(per_pod) / len(per_pod)) / target
    desired = current if abs(ratio - 1.0) <= tolerance else math.ceil(current * ratio)
    return max(bounds.min_replicas, min(desired, bounds.max_replicas))


def stabilized(recommendations: list[tuple[float, int]], window_s: float) -> list[tuple[float, int]]:
    """Scale-down stabilisation: at each time, the highest recommendation of the last ``window_s`` seconds."""
    out = []
    for t, _ in recommendations:
        out.append((t, max(r for u, r in recommendations if t - window_s <= u <= t)))
    return out
