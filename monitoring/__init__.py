"""Monitoring: Prometheus rules, Grafana dashboards, a GPU exporter and PNG panels, generated from one SLO file.

``python -m monitoring --help`` lists the commands. Everything that encodes a threshold (alert rules, their promtool
tests, the dashboards' SLO lines) is generated from ``monitoring/slo.toml`` by ``python -m monitoring generate``;
see ``monitoring/README.md`` for where every latency percentile comes from and why it is correct across servers.
"""
