"""Command line: ``appliance run|check|devices|simulate|demo`` and, for the running daemon
through its control socket, ``appliance status|say|ask|mute|volume``.

Exit codes: 0 success, 1 ``check`` found a problem or a device test failed, 2 bad usage,
78 (EX_CONFIG) invalid config or no API key. Expected failures print one line naming what was wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Literal

from appliance.core.listen import GateMode
from appliance.errors import ApplianceError, ConfigError, CredentialError

EX_CONFIG = 78
log = logging.getLogger("appliance.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance", description="Raspberry Pi realtime voice appliance"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, type=Path, help="TOML config file")
    check = sub.add_parser("check", help="validate the config and the environment")
    check.add_argument("--config", required=True, type=Path, help="TOML config file")
    devices = sub.add_parser(
        "devices",
        help="list sound cards and PCMs; test a speaker or microphone; write them to the config",
    )
    devices.add_argument("--test-speaker", metavar="DEVICE", help="play a short tone on DEVICE")
    devices.add_argument(
        "--test-mic", metavar="DEVICE", help="show DEVICE's level for a few seconds"
    )
    devices.add_argument(
        "--seconds", type=float, default=5.0, help="how long --test-mic listens (default 5)"
    )
    devices.add_argument(
        "--write",
        action="store_true",
        help="after the tests pass, set [audio] playback_device / capture_device in --config",
    )
    devices.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/appliance/appliance.toml"),
        help="the config --write edits (default /etc/appliance/appliance.toml)",
    )
    sim = sub.add_parser("simulate", help="run the loopback realtime simulator")
    sim.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (default 8765)")
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault,
        metavar="NAME[:ARG][@N]",
        help="switch a fault on (repeatable), e.g. drop, refuse:401@3, malformed:bad-base64, "
        "error, silent@0; see realtime_sim/faults.py or the README's Reliability section",
    )
    sim.add_argument(
        "--profile",
        type=_profile,
        default=None,
        metavar="NAME[,NAME...]",
        help="behave like a variant of the real service: keeps-turn-detection, "
        "auto-tool-response, param-less-errors, slow-first-audio, text-and-audio, strict, "
        "fast (default realistic; see realtime_sim/profiles.py)",
    )
    _control_parsers(sub)
    demo = sub.add_parser("demo", help="one voice turn offline: simulator + ALSA file devices")
    demo.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="where to write the demo files"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config)
        if args.command == "check":
            return _check(args.config)
        if args.command == "devices":
            return _devices(args)
        if args.command == "simulate":
            server = simulator_module("server")
            server.run_simulator(args.port, _simulator_key(), args.fault, profile=args.profile)
            return 0
        if args.command in CONTROL_COMMANDS:
            return _control(args)
        if args.command == "demo":
            from appliance.demo import run_demo

            return run_demo(args.out)
    except (ConfigError, CredentialError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return EX_CONFIG
    except ApplianceError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


CONTROL_COMMANDS = ("status", "say", "ask", "mute", "volume")


def _control_parsers(sub: Any) -> None:
    """The commands that talk to the running daemon (``appliance.control``)."""
    from appliance.settings_home import DEFAULT_CONTROL_SOCKET

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        p.add_argument(
            "--socket",
            default=DEFAULT_CONTROL_SOCKET,
            help=f"the daemon's control socket ([control] socket; default {DEFAULT_CONTROL_SOCKET})",
        )
        return p

    add("status", "the running daemon's state, session, last turn and settings")
    add("say", "speak an announcement (after a cue, at the next quiet moment)").add_argument(
        "text", nargs="+", help="what to say"
    )
    add("ask", "start a conversation with a text prompt; answer by voice").add_argument(
        "text", nargs="+", help="the prompt"
    )
    add("mute", "the microphone's privacy mute").add_argument("on", choices=("on", "off"))
    add("volume", "set the speaker volume").add_argument(
        "percent", type=_percent, help="0 to 100"
    )


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 100, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 100, got {value}")
    return value


def _control(args: argparse.Namespace) -> int:
    from appliance.control import request

    command = args.command
    req: dict[str, Any] = {"command": command}
    if command in ("say", "ask"):
        req["text"] = " ".join(args.text)
    elif command == "mute":
        req["on"] = args.on == "on"
    elif command == "volume":
        req["percent"] = args.percent
    answer = request(args.socket, req)
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else None
        print(f"appliance: {error or 'the daemon refused the request'}", file=sys.stderr)
        return 1
    if command == "status":
        _print_status(answer.get("status", {}))
    elif command in ("say", "ask"):
        print(f"{command}: {answer.get('outcome')}")
    elif command == "mute":
        print(f"mute: {'on' if answer.get('muted') else 'off'}")
    else:
        print(f"volume: {answer.get('volume')}%")
    return 0


def _print_status(status: dict[str, Any]) -> None:
    detail = f" ({status['detail']})" if status.get("detail") else ""
    print(f"state: {status.get('state')}{detail}")
    print(f"session: {status.get('session_id') or '-'}")
    print(f"turns: {status.get('turn', 0)}")
    last = status.get("last_turn")
    if last:
        print(f"last turn: #{last.get('turn')}, first reply audio after {last.get('latency_ms')} ms")
    print(f"mute: {'on' if status.get('muted') else 'off'}")
    volume = status.get("volume")
    print(f"volume: {'-' if volume is None else f'{volume}%'}")
    if status.get("announcements_waiting"):
        print(f"announcements waiting: {status['announcements_waiting']}")
    listing = status.get("timers") or {}
    for name in listing.get("ringing", []):
        print(f"ringing: {name}")
    for timer in listing.get("timers", []):
        print(f"timer: {_timer_name(timer, 'timer')}, {timer.get('remaining')} left")
    for alarm in listing.get("alarms", []):
        repeat = ", every " + ", ".join(alarm["repeat"]) if alarm.get("repeat") else ""
        print(f"alarm: {_timer_name(alarm, 'alarm')}, rings {alarm.get('rings')}{repeat}")


def _timer_name(entry: dict[str, Any], kind: str) -> str:
    """"tea timer" (``list_timers`` gives the label; the core names it so)."""
    return f"{entry['label']} {kind}" if entry.get("label") else kind


def _fault(spec: str) -> Any:
    """argparse type for ``simulate --fault``: a clear one-line usage error when it is bad."""
    try:
        faults = simulator_module("faults")
    except ApplianceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        return faults.Fault.parse(spec)
    except faults.FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _profile(name: str) -> str:
    """argparse type for ``simulate --profile``: names the simulator knows, comma-separated."""
    try:
        profiles = simulator_module("profiles")
    except ApplianceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        profiles.resolve(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name


def simulator_module(name: str) -> Any:
    """``realtime_sim.<name>``, imported on demand: the simulator is a development tool
    installed from the source tree (``pip install -e .``), not part of the product, so its
    absence is a one-line error rather than a traceback."""
    import importlib

    try:
        return importlib.import_module(f"realtime_sim.{name}")
    except ModuleNotFoundError as exc:
        if exc.name is None or not (exc.name == "realtime_sim" or exc.name.startswith("realtime_sim.")):
            raise
        raise ApplianceError(
            "the realtime simulator (package realtime_sim) is not installed; it ships with the "
            "source tree: run `make setup-test` or `pip install -e .` there"
        ) from None


def _simulator_key() -> str:
    return os.environ.get("INWORLD_API_KEY", "simulator-key")


def _run(config_path: Path) -> int:
    from appliance.audio.devices import forget_alsa_config, quiet_alsa_lib
    from appliance.config import load_config
    from appliance.credentials import load_api_key
    from appliance.daemon import Daemon
    from appliance.logs import setup_logging

    config = load_config(config_path)
    key = load_api_key()
    setup_logging(config.logging.level, keys=[key])
    quiet_alsa_lib()  # alsa-lib's raw lines would hit the journal on every reopen retry

    async def reload_on_hup(daemon: Daemon, hup: asyncio.Event) -> None:
        """SIGHUP (``systemctl reload``): re-read the file; an invalid one changes nothing."""
        while True:
            await hup.wait()
            hup.clear()
            forget_alsa_config()  # PCMs defined in /etc/asound.conf since the start
            try:
                new = load_config(config_path)
            except ConfigError as exc:
                log.error(
                    "reload: %s; keeping the running config", exc, extra={"ERROR_CODE": "config"}
                )
                continue
            await daemon.reload(new)

    async def main() -> None:
        stop = asyncio.Event()
        hup = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, hup.set)
        log.info("starting with %s", config.source)
        daemon = Daemon(config, key)
        async with asyncio.TaskGroup() as tg:
            reloader = tg.create_task(reload_on_hup(daemon, hup), name="reload")
            await daemon.run(stop)
            reloader.cancel()

    asyncio.run(main())
    return 0


def _check(config_path: Path) -> int:
    from appliance.audio.devices import check_device, quiet_alsa_lib
    from appliance.config import load_config
    from appliance.credentials import load_api_key

    config = load_config(config_path)
    quiet_alsa_lib()  # the problem lines below say what alsa-lib's raw lines would
    problems: list[str] = []
    try:
        key = load_api_key()
        print(f"ok: API key from {key.source}")
    except CredentialError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return EX_CONFIG
    a = config.audio
    checks: list[tuple[str, Literal["capture", "playback"], int, int, str]] = [
        (a.capture_device, "capture", a.capture_rate, a.capture_channels, "audio.capture_device"),
        (
            a.playback_device,
            "playback",
            a.playback_rate,
            a.playback_channels,
            "audio.playback_device",
        ),
    ]
    for name, direction, rate, channels, key_path in checks:
        problem = check_device(name, direction, rate, channels)
        if problem:
            problems.append(f"{key_path}: {problem}")
        else:
            print(f"ok: {direction} device {name!r} opens at {rate} Hz, {channels} channel(s)")
    if config.gate.mode is GateMode.WAKE:
        from appliance.audio.wake import WakeWordDetector

        try:
            wake = WakeWordDetector(config.gate.wake_word, cutoff=config.gate.wake_cutoff or None)
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            print(f"ok: wake word {wake.name!r} loads (probability cutoff {wake.cutoff:g})")
            wake.close()
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"config {config.source}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def _devices(args: argparse.Namespace) -> int:
    from appliance import device_setup

    if args.write and not (args.test_speaker or args.test_mic):
        print("appliance: --write needs --test-speaker and/or --test-mic", file=sys.stderr)
        return 2
    if not (args.test_speaker or args.test_mic):
        device_setup.print_devices(sys.stdout)
        return 0
    if args.test_speaker:
        device_setup.test_speaker(args.test_speaker, sys.stdout)
    if args.test_mic:
        device_setup.test_mic(args.test_mic, args.seconds, sys.stdout)
    if args.write:
        for done in device_setup.write_devices(
            args.config, capture=args.test_mic, playback=args.test_speaker
        ):
            print(f"{args.config}: {done}")
        print("Apply it: sudo systemctl reload appliance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
