"""Grafana dashboards as code: :mod:`monitoring.panels` turned into dashboard JSON with grafana-foundation-sdk.

Why the SDK and not hand-written JSON: its builders follow Grafana's schema (field names, grid layout, enum values), so
the JSON stays valid when panels are added, and reviewers read Python instead of thousands of JSON lines. The output is
deterministic (panel ids in order, no timestamps), so CI can tell a stale committed file from a fresh one.

Panels without data show a sentence naming the scrape jobs that feed them instead of Grafana's bare "No data".
"""
from __future__ import annotations

import json

from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ScaleDistributionConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import Dashboard, QueryVariable, ThresholdsConfig
from grafana_foundation_sdk.builders.dashboard import Row as RowBuilder
from grafana_foundation_sdk.builders.prometheus import Dataquery as PrometheusQuery
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    GraphTresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    ScaleDistribution,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from monitoring.panels import DashboardSpec, Panel
from monitoring.targets import JOBS_BY_NAME

DATASOURCE_UID = "prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
PANEL_HEIGHT = 8


def no_data_text(panel: Panel) -> str:
    """What an empty panel says: which jobs feed it, and the CPU-only explanation where one applies."""
    text = f"no data: is {' / '.join(panel.jobs)} scraped? (see 'Scrape targets up')"
    return f"{text}; {panel.cpu_note}" if panel.cpu_note else text


def _panel(spec: Panel, panel_id: int) -> TimeseriesPanel:
    builder = (
        TimeseriesPanel()
        .id(panel_id)
        .title(spec.title)
        .description(spec.description + " Fed by: " + ", ".join(JOBS_BY_NAME[j].what for j in spec.jobs) + ".")
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .height(PANEL_HEIGHT)
        .span(spec.width)
        .no_value(no_data_text(spec))
        .line_width(1)
        .fill_opacity(10)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM)
                .show_legend(True))
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    for index, query in enumerate(spec.queries):
        ref = chr(ord("A") + index)
        builder.with_target(PrometheusQuery().ref_id(ref).expr(query.expr).legend_format(query.legend)
                            .datasource(DATASOURCE).range())
        if query.slo_line:
            builder.override_by_query(ref, [
                DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
                DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
                DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            ])
    if spec.threshold is not None:
        builder.thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
            Threshold(value=None, color="green"), Threshold(value=spec.threshold.value, color="red")]))
        builder.thresholds_style(GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED))
    if spec.log_scale:
        builder.scale_distribution(ScaleDistributionConfig().type(ScaleDistribution.LOG).log(10))
    if spec.per_model:
        builder.repeat("model").repeat_direction("h")
    return builder


def _model_variable(query: str) -> QueryVariable:
    return (
        QueryVariable("model")
        .label("Model")
        .query(query)
        .datasource(DATASOURCE)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .current(VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def build_dashboard(spec: DashboardSpec) -> Dashboard:
    dashboard = (
        Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["inference-platform", "generated"])
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(_model_variable(spec.model_variable_query))
    )
    panel_id = 0
    for row in spec.rows:
        panel_id += 1
        dashboard.with_row(RowBuilder(row.title).id(panel_id))
        for panel in row.panels:
            panel_id += 1
            dashboard.with_panel(_panel(panel, panel_id))
    return dashboard


def dashboard_json(spec: DashboardSpec) -> str:
    """The dashboard as the text Grafana's file provisioning loads (stable for the same input)."""
    return json.dumps(build_dashboard(spec).build(), cls=JSONEncoder, indent=2) + "\n"


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in a rendered dashboard JSON, rows included."""
    out = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets") or []:
            out.append((panel.get("title", "?"), target["expr"]))
        for inner in panel.get("panels") or []:
            for target in inner.get("targets") or []:
                out.append((inner.get("title", "?"), target["expr"]))
    return out
