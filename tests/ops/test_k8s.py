"""deploy/k8s, without a cluster: the Kustomize base builds, every built-in resource validates
against the Kubernetes schemas (kubernetes-validate, strict), and the rules that make the services
safe to run and scale hold — probes, resources, security contexts, the gateway's HPA, the KEDA
ScaledObject of the generation workers and the 3-node, R3 NATS values."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from typing import Any

import kubernetes_validate
import nats
import pytest
import yaml

from genimage_common.settings import CommonSettings
from genimage_common.streams import stream_configs
from genimage_devstack.infra import Endpoints
from genimage_devstack.stack import DEFAULT_PORTS, ServiceProcess
from tests.aio import run_sync
from tests.ops.conftest import ROOT
from tests.ops.settings_env import load_settings, secret_variables

# The manifests are built by kubectl (kustomize), in a process of its own.
pytestmark = pytest.mark.e2e

K8S = ROOT / "deploy" / "k8s"
# The oldest and the newest Kubernetes minor the manifests are checked against.
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
# What the Secret genimage-secrets holds (docs/operations.md, "Scaling out on Kubernetes").
SECRET_KEYS = {
    "DATABASE_URL",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "GATEWAY_JWT_SECRET",
    "GATEWAY_WEBHOOK_SIGNING_KEY",
    "GATEWAY_STRIPE_WEBHOOK_SECRET",
}


@cache
def _built() -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to build deploy/k8s/base"
    done = subprocess.run([kubectl, "kustomize", str(K8S / "base")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def _of(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in _built() if r["kind"] == kind}


def _values() -> dict[str, Any]:
    return yaml.safe_load((K8S / "nats" / "values.yaml").read_text())


def test_the_base_builds_with_everything_in_one_namespace() -> None:
    kinds = {(r["kind"], r["metadata"]["name"]) for r in _built()}
    for name in DEFAULT_PORTS:
        assert {("Deployment", name), ("Service", name), ("PodDisruptionBudget", name)} <= kinds
    assert {("HorizontalPodAutoscaler", "gateway"), ("ScaledObject", "generation")} <= kinds
    assert ("ConfigMap", "genimage-config") in kinds and ("Namespace", "genimage") in kinds
    namespaced = [r for r in _built() if r["kind"] != "Namespace"]
    assert {r["metadata"].get("namespace") for r in namespaced} == {"genimage"}


@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_resources_match_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for resource in _built():
        if resource["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked below
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(map(str, exc.absolute_path))
            raise AssertionError(f"{resource['kind']}/{resource['metadata']['name']} {path}: {exc.message}") from None
        checked += 1
    assert checked >= 15


def _pods() -> dict[str, dict[str, Any]]:
    return {name: d["spec"]["template"]["spec"] for name, d in _of("Deployment").items()}


def test_containers_are_probed_on_named_ports_with_the_service_routes() -> None:
    for name, pod in _pods().items():
        [container] = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": DEFAULT_PORTS[name]}, name
        paths = {}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["port"] in ports, (name, probe)
            paths[probe] = get["path"]
        # Liveness must not depend on NATS/PostgreSQL (a restart would not fix them); readiness does.
        assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        assert pod["terminationGracePeriodSeconds"] > int(container["lifecycle"]["preStop"]["exec"]["command"][1])


def test_every_container_has_requests_limits_and_a_locked_down_security_context() -> None:
    for name, pod in _pods().items():
        assert pod["enableServiceLinks"] is False, f"{name}: service env vars would clash with {name.upper()}_PORT"
        assert pod["automountServiceAccountToken"] is False
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001 == security["runAsGroup"]
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{name}/{container['name']}"
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            assert "memory" in resources["limits"], where
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["runAsNonRoot"] is True and ctx["capabilities"]["drop"] == ["ALL"], where
            image = container["image"]
            assert image.startswith(f"genimage-{name}:") and not image.endswith(":latest"), where
        # A read-only root: Python and the video encoder write temporary files to /tmp only.
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_configuration_and_secrets_come_from_references() -> None:
    config = _of("ConfigMap")["genimage-config"]["data"]
    for name, pod in _pods().items():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert container["envFrom"] == [{"configMapRef": {"name": "genimage-config"}}], name
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "genimage-secrets" and ref["key"] == var["name"] in SECRET_KEYS
                else:
                    assert not any(word in var["name"] for word in ("SECRET", "PASSWORD", "DATABASE_URL")), var
        env = {v["name"]: v for v in pod["containers"][0]["env"]}
        assert env["OTEL_SERVICE_NAME"]["value"] == name
    assert not SECRET_KEYS & config.keys()
    assert config["ENVIRONMENT"] == "production"  # development secrets are refused
    # The migrations run before each schema-owning service, as an init container.
    for name in ("gateway", "billing", "gallery"):
        [init] = _pods()[name]["initContainers"]
        assert init["command"] == ["python", "-m", name, "migrate"]
    assert "initContainers" not in _pods()["generation"]


def test_every_pod_gets_its_production_secrets_and_its_settings_load() -> None:
    """The settings of each service, fed exactly what its pod gets, start in production."""
    config = _of("ConfigMap")["genimage-config"]["data"]
    for name, pod in _pods().items():
        [container] = pod["containers"]
        refs = {v["name"] for v in container["env"] if "secretKeyRef" in v.get("valueFrom", {})}
        missing = secret_variables(name) - refs
        assert not missing, f"{name}: production refuses to start without {sorted(missing)}"
        plain = {v["name"]: v["value"] for v in container["env"] if "value" in v and "$(" not in v["value"]}
        secrets = {ref: f"k8s-secret-{ref.lower()}-0123456789abcdef0123456789" for ref in refs}
        secrets["DATABASE_URL"] = "postgresql+asyncpg://genimage:pw@postgres.db.svc:5432/genimage"
        done = load_settings(name, {**config, **plain, **secrets})
        assert done.returncode == 0, f"{name}: {done.stderr.strip().splitlines()[-3:]}"


def test_autoscaled_deployments_leave_replicas_to_their_autoscaler() -> None:
    deployments = _of("Deployment")
    hpa = _of("HorizontalPodAutoscaler")["gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    for name in ("gateway", "generation"):
        assert "replicas" not in deployments[name]["spec"], f"kubectl apply would reset {name}'s replicas"
    for name in ("billing", "gallery"):
        assert deployments[name]["spec"]["replicas"] >= 2
    for name, pdb in _of("PodDisruptionBudget").items():
        assert pdb["spec"]["selector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"]


def test_services_select_their_deployment_by_the_named_port() -> None:
    deployments = _of("Deployment")
    for name, service in _of("Service").items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        assert service["spec"]["ports"] == [{"name": "http", "port": DEFAULT_PORTS[name], "targetPort": "http"}]


def test_keda_scales_generation_workers_on_their_consumer_lag() -> None:
    scaled = _of("ScaledObject")["generation"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "generation" and "generation" in _of("Deployment")
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    assert meta["stream"] == "GENERATION" and meta["account"] == "$G"
    assert int(meta["lagThreshold"]) >= 1 and int(meta["activationLagThreshold"]) >= 0
    # KEDA reaches the consumer's leader through the headless service of the NATS release.
    host, port = meta["natsServerMonitoringEndpoint"].split(":")
    assert host == "nats-headless.nats.svc.cluster.local"
    assert int(port) == _values()["config"]["monitor"]["port"]


def test_keda_watches_the_durable_consumer_the_generation_worker_really_uses(
    services: dict[str, ServiceProcess], infra: Endpoints
) -> None:
    consumer = _of("ScaledObject")["generation"]["spec"]["triggers"][0]["metadata"]["consumer"]

    async def consumers() -> dict[str, str]:
        nc = await nats.connect(infra.nats_url)
        try:
            infos = await nc.jetstream().consumers_info("GENERATION")
            return {i.name: i.config.filter_subject or "" for i in infos}
        finally:
            await nc.close()

    found = run_sync(consumers())
    assert consumer in found, sorted(found)
    assert found[consumer].startswith("generation.requested."), found[consumer]


def test_nats_values_make_a_three_node_jetstream_cluster_that_fsyncs() -> None:
    config = _values()["config"]
    assert config["cluster"]["enabled"] is True
    replicas = config["cluster"]["replicas"]
    assert replicas >= 3 and replicas % 2 == 1, "an odd Raft group of at least three"
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True and jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert jetstream["merge"]["sync_interval"] == "always"
    assert config["monitor"]["enabled"] is True
    values = _values()
    assert values["promExporter"]["enabled"] is True
    assert values["podDisruptionBudget"]["enabled"] is True
    assert values["podTemplate"]["topologySpreadConstraints"]["kubernetes.io/hostname"]["whenUnsatisfiable"] == (
        "DoNotSchedule"
    )


def test_streams_are_created_with_three_replicas_on_that_cluster() -> None:
    config = _of("ConfigMap")["genimage-config"]["data"]
    assert config["NATS_URL"] == "nats://nats.nats.svc.cluster.local:4222"
    settings = CommonSettings(**{k.lower(): v for k, v in config.items()})
    streams = stream_configs(settings)
    assert streams and {s.num_replicas for s in streams} == {3}
    assert int(config["STREAM_REPLICAS"]) <= _values()["config"]["cluster"]["replicas"]
