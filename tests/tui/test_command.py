"""`planner tui` on the command line: options reach the app, bad input is a clear error, nothing runs a terminal."""

from __future__ import annotations

import pytest

from planner.cli import main
from planner.tui.app import PlannerApp


@pytest.fixture()
def launched(monkeypatch):  # type: ignore[no-untyped-def]
    """Replace App.run so the command builds the app and returns at once; collect the apps."""
    apps: list[PlannerApp] = []
    monkeypatch.setattr(PlannerApp, "run", lambda self, *a, **k: apps.append(self))
    return apps


def test_options_reach_the_app(launched):
    assert main(["tui", "--model", "70B", "--device", "4090", "--count", "2", "--context", "16384", "--no-probe"]) == 0
    (app,) = launched
    assert app.inputs.model_id == "llama-3.1-70b" and app.inputs.device_id == "rtx-4090"
    assert app.inputs.count == 2 and app.inputs.context == 16384
    assert app.host_provider is None and app.device_chosen


def test_default_probes_in_the_app_not_in_the_command(launched, monkeypatch):
    import planner.hardware.probe as probe

    def boom() -> dict:
        raise AssertionError("the command must not probe; the app does, in a worker")

    monkeypatch.setattr(probe, "read_raw", boom)
    assert main(["tui"]) == 0
    (app,) = launched
    assert callable(app.host_provider) and not app.device_chosen


def test_bad_input_is_a_clear_error(launched, capsys):
    assert main(["tui", "--count", "0"]) == 2  # an option out of range is invalid input
    assert "--count" in capsys.readouterr().err
    assert main(["tui", "--model", "no-such-model-xyz"]) != 0
    assert main(["tui", "--device", "no-such-device-xyz"]) != 0
    assert launched == []
