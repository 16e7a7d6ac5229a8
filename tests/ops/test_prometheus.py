"""deploy/prometheus: promtool accepts the config and the rules, the rules' unit tests pass, and the
scrape config, alerts and runbooks agree with the stack."""

from __future__ import annotations

import re
import subprocess

import yaml

from genimage_devstack.stack import DEFAULT_PORTS
from tests.ops.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
OPERATIONS = ROOT / "docs" / "operations.md"


def _promtool(promtool: str, *args: str) -> str:
    done = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _rules() -> list[dict]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_config_and_its_rule_files(promtool: str) -> None:
    out = _promtool(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "alerts.yml" in out


def test_promtool_accepts_the_rules_without_lint_findings(promtool: str) -> None:
    out = _promtool(promtool, "check", "rules", "--lint=all", "--lint-fatal", "alerts.yml")
    assert f"SUCCESS: {len(_rules())} rules found" in out


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    out = _promtool(promtool, "test", "rules", "alerts.test.yml")
    assert "SUCCESS" in out


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == {rule["alert"] for rule in _rules()}


def test_the_alerts_issue_7_asks_for_exist() -> None:
    names = {rule["alert"] for rule in _rules()}
    assert {
        "GenerationFailureRatioHigh",
        "ProviderErrorRateHigh",
        "ConsumerLagHigh",
        "OutboxBacklogHigh",
        "ProjectionLagHigh",
        "HoldsExpiring",
        "MessagesDeadLettered",
    } <= names


def test_every_alert_has_severity_summary_and_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), flags=re.M)
    }
    for rule in _rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{rule['alert'].lower()}", runbook
        assert rule["alert"].lower() in anchors, f"docs/operations.md has no section {rule['alert']}"


def test_scrape_jobs_reach_every_compose_service_on_its_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service, port in DEFAULT_PORTS.items():
        [sd] = jobs[service]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["port"] == port and service in compose
        assert compose[service]["environment"]["PROBE_PORT"] == str(port)
    [static] = jobs["nats"]["static_configs"]
    host, _, port = static["targets"][0].partition(":")
    assert host in compose and f"-port={port}" in compose[host]["command"]
    assert config["rule_files"] == ["alerts.yml"]
