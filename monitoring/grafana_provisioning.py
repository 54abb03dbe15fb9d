"""Grafana provisioning files for docker compose: the Prometheus datasource and the dashboard folder.

The datasource uid is fixed (``prometheus``) because every generated panel refers to it by uid; Grafana would
otherwise invent one and the dashboards would show "datasource not found". Paths are the ones inside the Grafana
container: compose mounts ``monitoring/grafana/provisioning`` at ``/etc/grafana/provisioning`` and
``monitoring/grafana/dashboards`` at :data:`DASHBOARDS_MOUNT`.
"""
from __future__ import annotations

from monitoring.dashboards import DATASOURCE_UID

PROMETHEUS_URL = "http://prometheus:9090"
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"


def datasource_provisioning(scrape_interval: str) -> dict:
    return {
        "apiVersion": 1,
        "deleteDatasources": [{"name": "Prometheus", "orgId": 1}],
        "datasources": [{
            "name": "Prometheus",
            "uid": DATASOURCE_UID,
            "type": "prometheus",
            "access": "proxy",
            "url": PROMETHEUS_URL,
            "isDefault": True,
            "editable": False,
            # Grafana widens $__interval to at least one scrape interval, so rate windows never hold < 2 samples.
            "jsonData": {"timeInterval": scrape_interval, "httpMethod": "POST"},
        }],
    }


def dashboard_provisioning() -> dict:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "inference-platform",
            "orgId": 1,
            "folder": "Inference platform",
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,   # the JSON is generated: edits belong in monitoring/panels.py
            "updateIntervalSeconds": 30,
            "options": {"path": DASHBOARDS_MOUNT, "foldersFromFilesStructure": False},
        }],
    }
