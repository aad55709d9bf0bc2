"""`contrail doctor --settings`: the effective settings and where each came from."""

from __future__ import annotations

import json


def test_doctor_lists_settings_with_their_source(run_cli, redis_url, sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contrail.toml").write_text('[collector]\nquiet_period = "4s"\n[web]\napi_token = "hunter2"\n')
    result = run_cli("doctor", "--json", "--settings", "--redis-url", redis_url, "--database-url", sqlite_url,
                     env={"CONTRAIL_SAMPLE_RATE": "0.5"})
    rows = {row["name"]: row for row in json.loads(result.stdout)["settings"]}
    assert rows["redis_url"]["source"] == "kwarg"
    assert (rows["sample_rate"]["value"], rows["sample_rate"]["source"]) == (0.5, "env CONTRAIL_SAMPLE_RATE")
    assert rows["quiet_period"] == {"name": "quiet_period", "value": 4.0,
                                    "source": f"file {tmp_path / 'contrail.toml'} [collector]"}
    assert rows["api_token"]["value"] == "***" and rows["retention"]["source"] == "default"
    text = run_cli("doctor", "--settings", "--redis-url", redis_url, "--database-url", sqlite_url).stdout
    assert "quiet_period" in text and "[collector]" in text and "hunter2" not in text


def test_doctor_names_the_bad_key_and_file(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contrail.toml").write_text("[collector]\nquiet_perod = 4\n")
    result = run_cli("doctor")
    assert result.exit_code == 2
    assert "unknown key 'quiet_perod' in [collector]" in result.stderr and "contrail.toml" in result.stderr


def test_doctor_never_shows_forwarding_credentials(run_cli, redis_url, sqlite_url, tmp_path, monkeypatch):
    """Header values (API keys, bearer tokens) and the endpoint's password stay out of both outputs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contrail.toml").write_text(
        '[collector]\nforward_mode = "kept"\nforward_headers = {x-api-key = "k3y-from-file"}\n')
    env = {"CONTRAIL_FORWARD_ENDPOINT": "https://user:pa55word@backend.example/v1/traces"}
    result = run_cli("doctor", "--json", "--settings", "--redis-url", redis_url, "--database-url", sqlite_url,
                     env=env)
    rows = {row["name"]: row for row in json.loads(result.stdout)["settings"]}
    assert rows["forward_headers"]["value"] == "x-api-key=***"
    assert rows["forward_headers"]["source"] == f"file {tmp_path / 'contrail.toml'} [collector]"
    assert rows["forward_mode"]["value"] == "kept"
    assert rows["forward_endpoint"]["value"] == "https://user:***@backend.example/v1/traces"
    env["CONTRAIL_FORWARD_HEADERS"] = "authorization=Bearer%20s3cret-token,x-team=a"
    for args in (("--json",), ()):
        out = run_cli("doctor", *args, "--settings", "--redis-url", redis_url, "--database-url", sqlite_url,
                      env=env).stdout
        assert "authorization=***" in out and "x-team=***" in out
        assert not any(secret in out for secret in ("s3cret", "k3y-from-file", "pa55word"))
