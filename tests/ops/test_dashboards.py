"""Grafana: provisioning and dashboards are well formed, every query is valid PromQL, and every
metric a panel or an alert names is one the running services (or the NATS exporter) export."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from genimage_devstack.processes import LOOPBACK, NatsServer
from genimage_devstack.stack import ServiceProcess
from tests.api import generated, signup, wait_credits
from tests.ops.conftest import ROOT
from tests.ops.promql import all_names, exposed_series, for_promtool, selector_labels

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
NATS_EXPORTER = ROOT / "deploy" / "prometheus" / "nats-exporter-metrics.txt"

# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
# Labels Prometheus attaches to every series of a target (deploy/prometheus/prometheus.yml).
TARGET_LABELS = {"job", "instance"}


def _dashboard(path: Path) -> dict:
    return json.loads(path.read_text())


def _panels(board: dict) -> list[dict]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _panel_exprs() -> dict[str, str]:
    """``"<dashboard> / <panel> / <refId>"`` → PromQL."""
    exprs = {}
    for path in DASHBOARDS:
        board = _dashboard(path)
        for panel in _panels(board):
            for target in panel.get("targets", []):
                exprs[f"{path.stem} / {panel['title']} / {target['refId']}"] = target["expr"]
    return exprs


def _alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {f"alert {r['alert']}": r["expr"] for g in rules["groups"] for r in g["rules"]}


def _nats_exporter_names() -> set[str]:
    return {line.strip() for line in NATS_EXPORTER.read_text().splitlines() if line.strip() and line[0] != "#"}


# --- structure -------------------------------------------------------------------------------


def test_the_four_dashboards_exist() -> None:
    uids = {_dashboard(p)["uid"] for p in DASHBOARDS}
    assert uids == {"genimage-overview", "genimage-generation", "genimage-credits", "genimage-nats"}


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    prometheus = {d["uid"] for d in datasources["datasources"] if d["type"] == "prometheus"}
    assert prometheus == {"prometheus"}
    for path in DASHBOARDS:
        board = _dashboard(path)
        assert board["title"] and board["schemaVersion"] >= 36, path.name
        panels = _panels(board)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, (path.name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] in prometheus, (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])
            for target in panel["targets"]:
                assert target["expr"].strip() and target["refId"], (path.name, panel["title"])
                assert target.get("datasource", panel["datasource"])["uid"] in prometheus


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "genimage.yaml").read_text())
    [entry] = provider["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./")}
    assert mounts[entry["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"


def test_every_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses each query as a recording rule: syntax, functions, argument types.
    exprs = _panel_exprs()
    rules = [{"record": f"dashboard:query_{i}:check", "expr": for_promtool(e)} for i, e in enumerate(exprs.values())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_panels_cover_the_metric_contract() -> None:
    """The metrics of interfaces.md (issue 7) each have a panel, and each alert concern a metric."""
    used = all_names(_panel_exprs().values())
    contract = {
        "genimage_http_requests_total",
        "genimage_http_request_duration_seconds_bucket",
        "genimage_generations_total",
        "genimage_generation_duration_seconds_bucket",
        "genimage_provider_requests_total",
        "genimage_credits_total",
        "genimage_holds_pending",
        "genimage_projection_lag_seconds",
        "genimage_outbox_backlog",
        "genimage_dead_letters_total",
        "genimage_build_info",
        "faststream_received_processed_messages_total",
        "nats_consumer_num_pending",
        "nats_consumer_num_ack_pending",
    }
    assert contract <= used, sorted(contract - used)


# --- the names are real ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(services: dict[str, ServiceProcess]) -> dict[str, set[str]]:
    """Series (with label names) on /metrics of the four services after one generation went through."""
    with httpx.Client(base_url=services["gateway"].url, timeout=30) as api:
        user = signup(api)
        generated(api, user, "metrics for the dashboards", width=256, height=256)
        wait_credits(api, user, {"available": 15, "reserved": 0}, what="credits committed")
    series: dict[str, set[str]] = {}
    for proc in services.values():
        page = httpx.get(f"{proc.url}/metrics", timeout=10)
        assert page.status_code == 200, proc.name
        for name, labels in exposed_series(page.text).items():
            series.setdefault(name, set()).update(labels)
    return series


def test_dashboards_and_alerts_name_only_exported_metrics(exported: dict[str, set[str]]) -> None:
    known = set(exported) | _nats_exporter_names() | PROMETHEUS_SYNTHETIC
    queries = {**_panel_exprs(), **_alert_exprs()}
    missing: dict[str, list[str]] = {}
    for where, expr in queries.items():
        for name in sorted(all_names([expr]) - known):
            missing.setdefault(name, []).append(where)
    assert not missing, "metrics named by panels or alerts that nothing exports yet:\n" + "\n".join(
        f"  {name}: {', '.join(places[:3])}{' ...' if len(places) > 3 else ''}" for name, places in missing.items()
    )


def test_queries_match_on_labels_the_metrics_have(exported: dict[str, set[str]]) -> None:
    queries = {**_panel_exprs(), **_alert_exprs()}
    wrong = []
    for where, expr in queries.items():
        for name, labels in selector_labels(expr).items():
            seen = exported.get(name)
            if not seen:  # not exported yet, or no sample to learn its labels from
                continue
            unknown = labels - seen - TARGET_LABELS
            if unknown:
                wrong.append(f"{where}: {name} has no label {sorted(unknown)} (it has {sorted(seen)})")
    assert not wrong, "\n".join(wrong)


def test_nats_exporter_varz_names_are_fields_of_a_real_nats_server(private_nats: NatsServer) -> None:
    """The exporter makes one nats_varz_<field> gauge per numeric field of /varz (with -prefix=nats)."""
    varz = httpx.get(f"http://{LOOPBACK}:{private_nats.monitor_port}/varz", timeout=5).json()
    numeric = {k for k, v in varz.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    listed = {n.removeprefix("nats_varz_") for n in _nats_exporter_names() if n.startswith("nats_varz_")}
    assert listed and listed <= numeric, sorted(listed - numeric)
    used = {n for n in all_names({**_panel_exprs(), **_alert_exprs()}.values()) if n.startswith("nats_")}
    assert used <= _nats_exporter_names(), sorted(used - _nats_exporter_names())
