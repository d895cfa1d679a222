"""The simulator is its own package: a stand-in for the service that shares no code with the
daemon's session or transport, and that the product imports only on demand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main, simulator_module
from appliance.errors import ApplianceError

DAEMON_SIDE = ("appliance.core.session", "appliance.core.protocol", "appliance.transport",
               "appliance.daemon")


def test_the_simulator_imports_nothing_of_the_daemons_session_or_transport() -> None:
    code = (
        "import sys\n"
        "import realtime_sim, realtime_sim.server, realtime_sim.webrtc, realtime_sim.voicesdk\n"
        "import realtime_sim.faults, realtime_sim.profiles\n"
        f"print(sorted(m for m in sys.modules if m.startswith({DAEMON_SIDE!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_the_product_does_not_import_the_simulator_until_asked() -> None:
    code = ("import sys, appliance.cli, appliance.demo, appliance.daemon\n"
            "print(sorted(m for m in sys.modules if m.startswith('realtime_sim')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv", [["simulate", "--port", "0"], ["demo", "--out", "OUT"]])
def test_without_the_simulator_simulate_and_demo_fail_in_one_line(
    tmp_path: Path, argv: list[str]
) -> None:
    out = tmp_path / "demo"
    argv = [str(out) if arg == "OUT" else arg for arg in argv]
    code = ("import sys\n"
            "sys.modules['realtime_sim'] = None  # as if the package were not installed\n"
            "from appliance.cli import main\n"
            f"sys.exit(main({argv!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "appliance: the realtime simulator (package realtime_sim) is not installed; it ships "
        "with the source tree: run `make setup-test` or `pip install -e .` there"]
    assert not out.exists()  # the demo checks before it writes anything


def test_other_import_errors_inside_the_simulator_are_not_hidden() -> None:
    with pytest.raises(ApplianceError, match="is not installed"):
        simulator_module("no_such_part")
    assert simulator_module("profiles").resolve("fast").reply_pace == 4.0


def test_simulate_rejects_an_unknown_profile_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--profile", "fast,loud"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "unknown simulator profile 'loud'" in err
    assert "keeps-turn-detection" in err
