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
