"""Kubernetes manifests refer only to things that exist: commands, settings, probes, ports."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import K8S_DIR, check_argv, load_yaml_documents, setting_variables
from web.settings import WebSettings


SECRET_EXAMPLE = K8S_DIR / "secret.yaml.example"


@pytest.fixture(scope="module")
def documents():
    """Every manifest, plus the example secret (the keys the real one must hold)."""
    docs = []
    for path in [*sorted(K8S_DIR.glob("*.yaml")), SECRET_EXAMPLE]:
        docs.extend(load_yaml_documents(path))
    return docs


def test_applying_the_directory_creates_no_secret_with_placeholder_values():
    """`kubectl apply -f deploy/k8s/` takes every .yaml/.yml/.json file: none may hold a Secret."""
    for path in sorted(K8S_DIR.iterdir()):
        if path.suffix in (".yaml", ".yml", ".json"):
            kinds = {doc.get("kind") for doc in load_yaml_documents(path)}
            assert "Secret" not in kinds, f"{path.name} would install the example secret"
    assert {doc["kind"] for doc in load_yaml_documents(SECRET_EXAMPLE)} == {"Secret"}


def of_kind(documents, kind):
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def containers(documents):
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in of_kind(documents, kind).items():
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield name, container


def test_manifests_parse_and_live_in_one_namespace(documents):
    kinds = {doc["kind"] for doc in documents}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "StatefulSet", "Service",
            "HorizontalPodAutoscaler"} <= kinds
    namespace = next(iter(of_kind(documents, "Namespace")))
    for doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]


def test_contrail_containers_run_real_commands(documents):
    seen = set()
    for name, container in containers(documents):
        if container["image"].startswith("contrail"):
            assert check_argv(container["command"]) == "contrail"
            seen.add(container["command"][1])
    assert {"collector", "web"} <= seen


def test_every_contrail_variable_is_a_real_setting(documents):
    known = setting_variables()
    configmaps, secrets = of_kind(documents, "ConfigMap"), of_kind(documents, "Secret")
    for configmap in configmaps.values():
        for key in configmap["data"]:
            assert key in known, f"ConfigMap key {key} is not a setting"
        WebSettings.load(env=configmap["data"])
    for secret in secrets.values():
        for key in secret["stringData"]:
            assert key in known or not key.startswith("CONTRAIL_"), key
    for name, container in containers(documents):
        for env in container.get("env", []):
            if env["name"].startswith("CONTRAIL_"):
                assert env["name"] in known, f"{name}: {env['name']}"
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]["stringData"], f"{name}: secret key {ref['key']}"
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps


def test_web_probes_hit_real_routes_on_the_settings_port(documents, web_routes):
    default_port = WebSettings.load(env={}).web_port
    web = of_kind(documents, "Deployment")["contrail-web"]
    container = web["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == default_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in web_routes
        assert get["port"] in ports
    service = of_kind(documents, "Service")["contrail-web"]
    assert service["spec"]["ports"][0]["port"] == default_port
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]


def test_contrail_containers_have_requests_and_limits(documents):
    for name, container in containers(documents):
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
        assert resources["limits"]["memory"], name


def test_collector_scales_horizontally(documents):
    deployments = of_kind(documents, "Deployment")
    hpa = of_kind(documents, "HorizontalPodAutoscaler")["contrail-collector"]
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] in deployments
    assert deployments[target["name"]]["spec"]["template"]["spec"]["containers"][0]["command"][1] == "collector"
    assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_services_select_existing_workloads(documents):
    workloads = {**of_kind(documents, "Deployment"), **of_kind(documents, "StatefulSet")}
    labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads.values()]
    for name, service in of_kind(documents, "Service").items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= label.items() for label in labels), f"Service {name} selects nothing"


def _bytes(quantity: str, units: dict[str, int]) -> int:
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if quantity.endswith(suffix):
            return int(float(quantity[:-len(suffix)]) * factor)
    return int(quantity)


K8S_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}
REDIS_UNITS = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "k": 1000, "m": 1000**2, "g": 1000**3}


def test_redis_persists_and_refuses_writes_before_its_memory_limit(documents):
    """AOF on; maxmemory with noeviction below the container limit, so Redis says 'full' instead of being OOM-killed."""
    redis = of_kind(documents, "StatefulSet")["contrail-redis"]["spec"]["template"]["spec"]["containers"][0]
    args = redis["args"]

    def arg(name):
        assert name in args, f"redis-server has no {name}"
        return args[args.index(name) + 1]

    assert arg("--appendonly") == "yes"
    assert arg("--maxmemory-policy") == "noeviction"
    limit = _bytes(redis["resources"]["limits"]["memory"], K8S_UNITS)
    assert 0 < _bytes(arg("--maxmemory").lower(), REDIS_UNITS) <= 0.8 * limit


def test_contrail_pods_meet_the_restricted_pod_security_standard(documents):
    """Non-root, no privilege escalation, every capability dropped, the runtime's seccomp profile."""
    for kind in ("Deployment",):
        for name, doc in of_kind(documents, kind).items():
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] != 0, name
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
            for container in pod["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"]["drop"] == ["ALL"], name
                assert not context.get("privileged"), name
