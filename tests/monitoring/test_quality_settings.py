"""Quality and retraining settings: from the environment, to the workers, and refused when
wrong."""

from __future__ import annotations

import pytest

from modelport.config import Settings
from modelport.errors import ConfigError
from modelport.server.monitoring import build_monitoring


def test_settings_come_from_the_environment_and_survive_the_trip_to_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_QUALITY_WINDOWS", "1h, 500")
    monkeypatch.setenv("MODELPORT_RETRAIN_TOKEN", "s3cret")
    monkeypatch.setenv("MODELPORT_RETRAIN_STYLE", "github")
    settings = Settings()
    assert settings.quality_windows == ["1h", "500"]
    env = settings.to_env()
    assert env["MODELPORT_QUALITY_WINDOWS"] == "1h,500"
    assert env["MODELPORT_RETRAIN_TOKEN"] == "s3cret"  # workers need the value, not stars
    assert "s3cret" not in repr(settings)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = Settings()
    assert again.quality_windows == settings.quality_windows
    assert again.retrain_token is not None and again.retrain_token.get_secret_value() == "s3cret"


def test_a_bad_window_stops_the_start_naming_it() -> None:
    with pytest.raises(ConfigError, match="'2 weeks'"):
        build_monitoring(Settings(quality_windows=["1000", "2 weeks"]))


def test_without_a_webhook_there_is_no_trigger_and_without_a_log_no_realized_quality() -> None:
    mon = build_monitoring(Settings())
    assert mon.retrain is None
    assert mon.retrain_status() == {"enabled": False, "calls": []}
    assert mon.quality.status("heart") is None
