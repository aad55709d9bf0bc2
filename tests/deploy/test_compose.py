"""docker-compose.yml refers only to things that exist: commands, settings, ports, health routes."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.conftest import (
    COMPOSE,
    CONTRAIL_IMAGE,
    ROOT,
    bind_port,
    check_argv,
    health_urls,
    resolve_object,
    routes_of,
    setting_variables,
)
from web.settings import WebSettings


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def contrail_services(compose):
    return {name: svc for name, svc in compose["services"].items() if svc.get("image") == CONTRAIL_IMAGE}


def test_stack_has_the_promised_services(compose):
    services = compose["services"]
    for name in ("redis", "postgres", "collector", "web", "demo-gateway", "demo-retrieval",
                 "demo-worker-retrieval", "demo-worker-rerank", "demo-loadgen"):
        assert name in services, name
    assert services["collector"]["deploy"]["replicas"] == 2
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    for name in ("redis", "postgres"):
        assert any(volume.split(":")[1] in ("/data", "/var/lib/postgresql/data")
                   for volume in services[name]["volumes"])
        assert set(services[name]["volumes"][0].split(":")[0:1]) <= set(compose["volumes"])


def test_every_contrail_image_service_builds_from_the_dockerfile(compose):
    for name, service in contrail_services(compose).items():
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).exists(), name


def test_every_command_exists_in_the_project(compose):
    kinds = {}
    for name, service in contrail_services(compose).items():
        kinds[name] = check_argv(service["command"])
    assert kinds["collector"] == kinds["web"] == "contrail"
    assert kinds["demo-worker-retrieval"] == kinds["demo-worker-rerank"] == "celery"


def test_the_two_demo_workers_consume_different_queues(compose):
    services = compose["services"]
    queues = [services[name]["command"][services[name]["command"].index("--queues") + 1]
              for name in ("demo-worker-retrieval", "demo-worker-rerank")]
    assert sorted(queues) == ["rerank", "retrieval"]


def test_every_contrail_variable_is_a_real_setting_with_a_valid_value(compose):
    known = setting_variables()
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        contrail_env = {key: str(value) for key, value in env.items() if key.startswith("CONTRAIL_")}
        for key in contrail_env:
            assert key in known, f"{name}: {key} is not a Contrail setting"
        literal = {k: v for k, v in contrail_env.items() if "${" not in v}
        WebSettings.load(env=literal)  # raises ValueError naming a bad variable


def test_database_is_postgres_and_redis_is_the_compose_service(compose):
    env = compose["services"]["collector"]["environment"]
    assert env["CONTRAIL_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["CONTRAIL_DATABASE_URL"]
    assert env["CONTRAIL_REDIS_URL"].startswith("redis://redis:6379/")
    assert compose["services"]["web"]["environment"]["CONTRAIL_DATABASE_URL"] == env["CONTRAIL_DATABASE_URL"]


def test_web_port_matches_the_settings_default(compose):
    web = compose["services"]["web"]
    default = WebSettings.load(env={}).web_port
    assert bind_port(web["command"]) == default
    assert any(port.endswith(f"{default}:{default}") for port in web["ports"])


def test_web_healthcheck_hits_a_real_route_on_the_served_port(compose, web_routes):
    web = compose["services"]["web"]
    urls = health_urls(web["healthcheck"]["test"])
    assert urls
    for port, path in urls:
        assert port == bind_port(web["command"])
        assert path in web_routes, f"{path} is not a route of the web app"


@pytest.mark.parametrize("name", ["demo-gateway", "demo-retrieval"])
def test_demo_healthchecks_hit_real_routes(compose, name):
    service = compose["services"][name]
    app = resolve_object(service["command"][-1])
    urls = health_urls(service["healthcheck"]["test"])
    assert urls
    for port, path in urls:
        assert port == bind_port(service["command"])
        assert path in routes_of(app)


def test_demo_urls_point_at_demo_services_and_their_ports(compose):
    services = compose["services"]
    for service in contrail_services(compose).values():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_URL") and str(value).startswith("http://"):
                host, port = str(value)[len("http://"):].split(":")
                assert host in services, f"{key} points at unknown service {host}"
                assert bind_port(services[host]["command"]) == int(port)


def test_depends_on_refers_to_services_with_healthchecks(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_web_binding_all_interfaces_has_a_token_or_says_insecure(compose):
    from web.server import is_loopback

    web = compose["services"]["web"]
    command = web["command"]
    host = command[command.index("--host") + 1]
    token = str((web.get("environment") or {}).get("CONTRAIL_API_TOKEN", ""))
    if not is_loopback(host):
        assert "--insecure" in command or (token and not token.endswith(":-}")), \
            "contrail web refuses a non-loopback bind without a token"
    if "--insecure" in command:  # then only this machine may reach the published port
        assert all(str(port).startswith("127.0.0.1:") for port in web["ports"])


def test_every_contrail_service_other_than_web_overrides_the_image_healthcheck(compose):
    """The image's HEALTHCHECK polls the web app's /healthz: a collector or worker inheriting it is never healthy."""
    for name, service in contrail_services(compose).items():
        if service["command"][:2] == ["contrail", "web"]:
            continue
        check = service.get("healthcheck")
        assert check, f"{name} inherits the image's web healthcheck; give it its own or disable it"
        if not check.get("disable"):
            urls = health_urls(check["test"])
            port = bind_port(service["command"])
            assert all(p == port for p, _ in urls), f"{name}'s healthcheck polls a port it does not serve"


def test_web_is_safe_by_default_a_token_is_required_and_nothing_is_open(compose):
    """An open app on 0.0.0.0 can be read by any web page through DNS rebinding: the shipped file makes
    `docker compose up` fail without CONTRAIL_API_TOKEN instead of running open."""
    web = compose["services"]["web"]
    assert "--insecure" not in web["command"]
    token = str(web["environment"]["CONTRAIL_API_TOKEN"])
    assert token.startswith("${CONTRAIL_API_TOKEN:?"), "the token must be required, not defaulted to empty"
    assert all(str(port).startswith("127.0.0.1:") for port in web["ports"])
