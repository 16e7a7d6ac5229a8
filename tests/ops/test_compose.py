"""docker-compose.yml, the Dockerfile and the configs they mount, checked without a Docker engine:
the compose-spec JSON schema (as vendored by check-jsonschema), then the rules that make the stack
start in order and run safely."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from genimage_devstack.processes import _bin_dir
from genimage_devstack.stack import DEFAULT_PORTS
from tests.ops.conftest import ROOT
from tests.ops.settings_env import load_settings, secret_variables

COMPOSE = ROOT / "docker-compose.yml"
APPS = tuple(DEFAULT_PORTS)  # gateway, billing, generation, gallery
WITH_SCHEMA = ("gateway", "billing", "gallery")
_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """What compose does with no variables set: ``${X:-default}`` → default, ``$$`` → ``$``."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: m.group(2) or "", value).replace("$$", "$")
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    return value


@cache
def _compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))


def _services() -> dict[str, Any]:
    return _compose()["services"]


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def test_compose_file_matches_the_compose_specification() -> None:
    schema_text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    schema = yaml.safe_load(schema_text)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])


def test_the_whole_stack_is_there() -> None:
    assert {
        *APPS,
        "nats",
        "nats-exporter",
        "postgres",
        "minio",
        "minio-setup",
        "migrate-gateway",
        "migrate-billing",
        "migrate-gallery",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
    } <= set(_services())


def test_dependencies_exist_wait_for_health_and_have_no_cycle() -> None:
    services = _services()
    for name, service in services.items():
        for dep, condition in _depends(service).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is a one-shot job, it must not restart"

    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in visiting, f"depends_on cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        visiting.add(name)
        for dep in _depends(services[name]):
            visit(dep, (*path, name))
        visiting.discard(name)
        done.add(name)

    for name in services:
        visit(name, ())


def test_services_start_after_their_infrastructure_and_migrations() -> None:
    services = _services()
    for name in APPS:
        deps = _depends(services[name])
        assert deps.get("nats") == "service_healthy", name
        env = services[name]["environment"]
        if name in WITH_SCHEMA:
            assert deps.get("postgres") == "service_healthy", name
            assert deps.get(f"migrate-{name}") == "service_completed_successfully", name
            migrate = services[f"migrate-{name}"]
            assert migrate["command"] == ["python", "-m", name, "migrate"]
            assert migrate["image"] == f"genimage-{name}" and migrate["build"]["args"]["SERVICE"] == name
            assert _depends(migrate).get("postgres") == "service_healthy"
        if name in ("gateway", "generation"):  # they write the media bucket
            assert deps.get("minio-setup") == "service_completed_successfully", name
        assert env["NATS_URL"] == "nats://nats:4222"
        assert env["S3_ENDPOINT"] == "http://minio:9000"
    setup = services["minio-setup"]
    assert _depends(setup) == {"minio": "service_healthy"}
    assert "mb --ignore-existing local/genimage-media" in " ".join(setup["entrypoint"])


def test_each_service_is_built_from_the_dockerfile_runs_hardened_and_is_probed() -> None:
    services = _services()
    for name, port in DEFAULT_PORTS.items():
        service = services[name]
        assert service["build"] == {"context": ".", "args": {"SERVICE": name}}, name
        assert service["image"] == f"genimage-{name}"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert any(t.startswith("/tmp") for t in service["tmpfs"]), name
        assert service["environment"]["PROBE_PORT"] == str(port)
        probe = " ".join(service["healthcheck"]["test"])
        assert "/readyz" in probe and "PROBE_PORT" in probe, name
        assert service["restart"] == "unless-stopped"


@pytest.mark.e2e  # loads the settings in fresh interpreters
def test_every_secret_can_be_set_from_outside_and_the_settings_load() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in APPS:
        env = {k: str(v) for k, v in _services()[name]["environment"].items()}
        for variable in secret_variables(name):
            assert variable in env, f"{name}: no way to set {variable} (production refuses its default)"
            assert "${" in str(raw[name]["environment"][variable]), f"{name}: {variable} is hard-coded"
        done = load_settings(name, env)
        assert done.returncode == 0, f"{name}: {done.stderr.strip().splitlines()[-3:]}"


def test_services_export_traces_to_the_collector_which_feeds_the_trace_store() -> None:
    services = _services()
    for name in APPS:
        env = services[name]["environment"]
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] in ("http/protobuf", "grpc")
    collector = yaml.safe_load((ROOT / "deploy" / "otel" / "collector.yaml").read_text())
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http.endswith(":4318")
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert set(pipeline["processors"]) <= set(collector["processors"])
    for exporter in pipeline["exporters"]:
        host = collector["exporters"][exporter]["endpoint"].split(":")[0]
        assert host in services, f"collector exports to {host}, which is not a compose service"
    assert "jaeger" in services and "16686:16686" in services["jaeger"]["ports"]


@pytest.mark.e2e  # runs nats-server -t on the configuration
def test_nats_runs_jetstream_with_fsync_always_and_monitoring(tmp_path: Path) -> None:
    nats = _services()["nats"]
    mounts = dict(v.split(":")[:2] for v in nats["volumes"] if v.startswith("./"))
    conf_path = ROOT / next(host for host, ctr in mounts.items() if ctr == "/etc/nats/nats.conf")
    conf = conf_path.read_text()
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, flags=re.M), "JetStream must fsync every write"
    assert re.search(r"^\s*http_port:\s*8222\s*$", conf, flags=re.M)
    assert re.search(r"^jetstream\s*\{", conf, flags=re.M)
    assert "8222" in nats["healthcheck"]["test"][-1]
    # The same server version the tests run validates the file.
    binary = shutil.which("nats-server", path=str(_bin_dir())) or "nats-server"
    done = subprocess.run([binary, "-c", str(conf_path), "-t"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    exporter = _services()["nats-exporter"]["command"]
    assert {"-varz", "-jsz=all", "-prefix=nats"} <= set(exporter) and exporter[-1] == "http://nats:8222"


def test_every_mounted_file_exists_and_images_are_pinned() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (ROOT / host).exists(), f"{name} mounts missing {host}"
        image = service.get("image", "")
        if "build" not in service:
            assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), f"{name}: pin {image!r}"


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_and_runs_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    stages = [i for i, (ins, _) in enumerate(dockerfile) if ins == "FROM"]
    assert len(stages) >= 2, "build and runtime stages"
    runtime = dockerfile[stages[-1] :]
    users = [args for ins, args in runtime if ins == "USER"]
    assert users, "the runtime stage must switch user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"numeric non-root user (for runAsNonRoot), got {users[-1]}"
    copies = [args for ins, args in runtime if ins == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), "the runtime stage takes only built wheels"
    cmd = next(args for ins, args in reversed(runtime) if ins == "CMD")
    assert "exec python -m" in cmd, "the service must be PID 1 to receive SIGTERM"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".data"} <= set(ignored)
