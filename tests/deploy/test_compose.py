"""deploy/compose.yaml against the Compose Specification's JSON schema (the copy check-jsonschema ships and
keeps current, with its Apache-2.0 licence), read with jsonschema; and the gateway config each replica is
given, loaded by Lifeline's own loader with the environment compose gives that replica."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from lifeline.config.load import load_config
from tests.deploy.support import DEPLOY, compose_interpolate

COMPOSE = DEPLOY / "compose.yaml"
#: what the operator exports before `docker compose up` (docs/scaling.md)
SHELL = {"LIFELINE_MASTER_KEY": "a-master-key-for-the-replicas", "POSTGRES_PASSWORD": "a-database-password"}


def _schema() -> dict[str, Any]:
    text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _validator() -> jsonschema.protocols.Validator:
    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(_compose())]
    assert errors == []


def test_the_schema_refuses_a_compose_file_with_a_mistake() -> None:
    # the schema really judges: a misspelt key and a command of the wrong shape are refused
    data = _compose()
    data["services"]["proxy"]["port"] = data["services"]["proxy"].pop("ports")
    data["services"]["redis"]["command"] = {"redis-server": True}
    errors = list(_validator().iter_errors(data))
    assert {tuple(e.absolute_path) for e in errors} >= {("services", "proxy"), ("services", "redis", "command")}


def test_two_gateway_replicas_stand_behind_the_proxy_with_the_shared_stores() -> None:
    services = _compose()["services"]
    gateways = sorted(name for name, service in services.items() if service.get("image") == "lifeline:local")
    assert gateways == ["gateway-1", "gateway-2"]
    upstreams = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    for name in gateways:
        assert f"server {name}:4000" in upstreams
        assert set(services[name]["depends_on"]) == {"postgres", "redis", "otel-collector"}
    mounted = [
        Path(volume.split(":")[0]).name for service in services.values() for volume in service.get("volumes", [])
    ]
    for shipped in ("gateway.yaml", "nginx.conf", "prometheus.yml", "otel-collector.yaml"):
        assert shipped in mounted and (DEPLOY / shipped).is_file()


def test_prometheus_scrapes_every_replica() -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert sorted(t for group in job["static_configs"] for t in group["targets"]) == [
        "gateway-1:4000",
        "gateway-2:4000",
    ]


def test_the_collector_receives_what_the_gateways_send() -> None:
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text(encoding="utf-8"))
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


def _replica_env(name: str) -> dict[str, str]:
    service = _compose()["services"][name]
    return {key: compose_interpolate(str(value), SHELL) for key, value in service["environment"].items()}


@pytest.mark.parametrize("replica", ["gateway-1", "gateway-2"])
def test_each_replica_config_loads_with_the_environment_compose_gives_it(replica: str) -> None:
    service = _compose()["services"][replica]
    (mount,) = service["volumes"]
    source, target, mode = mount.split(":")
    assert target == "/etc/lifeline/lifeline.yaml" and mode == "ro"  # where the image's LIFELINE_CONFIG points
    config = load_config(DEPLOY / source, _replica_env(replica))
    assert config.server.host == "0.0.0.0"
    assert config.admin.master_key is not None
    assert config.admin.master_key.get_secret_value() == SHELL["LIFELINE_MASTER_KEY"]
    assert config.accounting.database_url is not None
    assert config.accounting.database_url.get_secret_value().startswith("postgresql://lifeline:")
    assert config.accounting.redis_url is not None
    assert config.accounting.redis_url.get_secret_value() == "redis://redis:6379/0"
    assert config.tracing.enabled and config.tracing.endpoint == "http://otel-collector:4318/v1/traces"
    # Prometheus asks each replica by its service name
    assert {"gateway-1", "gateway-2"} <= set(config.server.allowed_hosts)


def test_compose_refuses_to_start_without_the_secrets() -> None:
    with pytest.raises(AssertionError, match="LIFELINE_MASTER_KEY"):
        compose_interpolate(_compose()["services"]["gateway-1"]["environment"]["LIFELINE_MASTER_KEY"], {})
