"""Deploy you can trust (docs/DEPLOY.md 5): the on-board self-test boots the deployed config as
far as opening every input, the network and the broker login, and fails with the agent's own
error when it cannot; a secret the config names is copied or the deploy stops before the port
is opened, naming the key. Against the virtual board with the real mpremote."""

import json
import os

import pytest

from host_tools import cli
from host_tools.backend import broker as broker_mod
from host_tools.board import deploy as dp
from tests.conftest import ROOT, run_mp
from tests.test_vboard import VBoard

MODBUS = {
    "type": "modbus",
    "uart": "appliance",
    "slave": 1,
    "reads": [{"fn": 3, "addr": 0, "count": 1, "map": {"0": 1}}],
}


def device(tmp_path, port, **extra):
    cfg = {
        "device_id": "st-0001",
        "board": "unix-sim",
        "mqtt": {"host": "127.0.0.1", "port": port},
        "channels": [{"id": 1, "name": "flow_cC", "category": "essential"}],
        "sim": {"enabled": True},  # where no inputs are given, the simulated fridge runs
        **extra,
    }
    path = tmp_path / "dev" / "device.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(cfg))
    return path


def deploy_cli(vb, dev, *more):
    argv = ["deploy", "--board", "unix-sim", "--port", str(vb.link), "--device", str(dev)]
    return cli.main(argv + list(more))


@pytest.fixture
def vboard(tmp_path):
    vb = VBoard(tmp_path).start()
    yield vb
    vb.stop()


def lines_of(out, prefix):
    return [line for line in out.splitlines() if line.startswith(prefix)]


def test_selftest_fails_on_an_input_the_board_cannot_open(vboard, tmp_path, capsys, broker):
    """The board file has the UART, so the host check passes; on this board nothing is
    attached to it. The old self-test said `pass`; the agent then died at boot."""
    dev = device(tmp_path, broker.port, inputs=[MODBUS])
    assert deploy_cli(vboard, dev) == 2
    cap = capsys.readouterr()
    (line,) = lines_of(cap.out, "self-test inputs:")
    assert line.startswith(
        "self-test inputs: FAIL: ConfigError: config key 'inputs[0].uart': uart 'appliance' "
        "is not bridged on this virtual board"
    ), cap.out
    assert "edgectl: on-board self-test failed" in cap.err and cap.err.count("\n") == 1


def test_selftest_fails_without_inputs_or_simulator(vboard, tmp_path, capsys):
    """No inputs and no `sim.enabled`: the agent would stop at boot, so the self-test fails
    with its error (it used to say the simulated fridge runs: made-up readings)."""
    dev = device(tmp_path, 1883, sim={"enabled": False})
    assert deploy_cli(vboard, dev, "--offline") == 2
    out = capsys.readouterr().out
    (line,) = lines_of(out, "self-test inputs:")
    assert line.startswith("self-test inputs: FAIL: ConfigError: no data source"), out
    assert "'sim.enabled'" in line


def test_selftest_catches_a_config_the_host_check_missed(vboard, tmp_path, capsys, monkeypatch):
    """A Modbus `slave: 300` that reached the board anyway (an older edgectl, a config edited
    on the board) fails the self-test with the agent's own message, not `OSError: 25`."""
    bad = dict(MODBUS, slave=300)
    dev = device(tmp_path, 1883, inputs=[bad])
    monkeypatch.setattr(dp, "problems", lambda cfg, board: [])  # the host check is bypassed
    assert deploy_cli(vboard, dev, "--offline") == 2
    out = capsys.readouterr().out
    (line,) = lines_of(out, "self-test config:")
    assert "FAIL: ConfigError: config key 'inputs[0].slave' must be an integer 1..247" in line
    assert not lines_of(out, "self-test inputs:")  # nothing is opened with a refused config


def test_selftest_needs_the_broker_and_the_login(vboard, tmp_path, capsys):
    dev = device(tmp_path, 9)  # nothing listens on port 9 here
    assert deploy_cli(vboard, dev) == 2
    out = capsys.readouterr().out
    (line,) = lines_of(out, "self-test broker:")
    assert "FAIL: OSError: cannot reach the broker at 127.0.0.1:9" in line, out
    assert lines_of(out, "self-test network: pass: the host's network (unix port)")
    # --offline: the same deploy passes without the network checks, and says it skipped them
    assert deploy_cli(vboard, dev, "--offline") == 0
    out = capsys.readouterr().out
    assert "self-test network, broker: skipped (--offline)" in out and "self-test: pass" in out
    assert not lines_of(out, "self-test broker:")


def test_selftest_reports_a_refused_login(vboard, tmp_path, capsys):
    if not broker_mod.mosquitto_path():
        pytest.skip("needs mosquitto for a password file")
    from host_tools.backend.provision import write_password_file

    pw = tmp_path / "passwd"
    write_password_file(pw, {"st-0001": "right"})
    # `user root`: pytest tmp dirs are 0700 and mosquitto drops to its own user
    conf = f"user root\nallow_anonymous false\npassword_file {pw}\n"
    with broker_mod.start(prefer="mosquitto", conf_extra=conf) as brk:
        dev = device(tmp_path, brk.port)
        cfg = json.loads(dev.read_text())
        cfg["mqtt"].update(user="st-0001", password="wrong")
        dev.write_text(json.dumps(cfg))
        assert deploy_cli(vboard, dev) == 2
        out = capsys.readouterr().out
        (line,) = lines_of(out, "self-test broker:")
        assert "FAIL: MQTTError: connection refused" in line and "code 5" in line, out
        cfg["mqtt"]["password"] = "right"
        dev.write_text(json.dumps(cfg))
        assert deploy_cli(vboard, dev) == 0
        out = capsys.readouterr().out
        (line,) = lines_of(out, "self-test broker:")
        assert f"pass: 127.0.0.1:{brk.port} accepted st-0001" in line, out


def test_selftest_warns_about_a_silent_input(vboard, tmp_path, capsys):
    """Opened but nothing answered within the listen window: a warning, not a failure (the
    board may be deployed before it is wired to the appliance)."""
    from host_tools.captures.appliances import Pty

    pty = Pty(str(tmp_path / "ttySILENT"))  # a UART with nobody on the other end
    vboard.stop()
    vb = VBoard(tmp_path, uarts=(f"appliance={pty.path}",)).start()
    try:
        dev = device(tmp_path, 1883, inputs=[MODBUS])
        assert deploy_cli(vb, dev, "--offline") == 0
    finally:
        vb.stop()
        pty.close()
    out = capsys.readouterr().out
    (line,) = lines_of(out, "self-test inputs:")
    assert line.startswith(
        "self-test inputs: warn: inputs[0] modbus: opened, no reading in 3000 ms"
    )
    assert '"timeout"' in line, line  # the source's own counters say why


@pytest.mark.parametrize(
    "tls, secrets, message",
    [
        (
            {"ca": "/secrets/ca.der"},
            [],
            "config key 'mqtt.tls.ca' names /secrets/ca.der, but {sdir}/ca.der does not exist",
        ),
        (
            {"ca": "/certs/ca.der"},
            ["ca.der"],
            "config key 'mqtt.tls.ca' names /certs/ca.der, but deploy copies secrets only to "
            "/secrets/NAME (put the file in {sdir}/)",
        ),
        (
            {"ca": "/secrets/ca.der", "cert": "/secrets/c.der", "key": "/secrets/k.der"},
            ["ca.der", "c.der"],
            "config key 'mqtt.tls.key' names /secrets/k.der, but {sdir}/k.der does not exist",
        ),
    ],
)
def test_missing_secret_stops_the_deploy_before_the_port(tmp_path, capsys, tls, secrets, message):
    dev = device(tmp_path, 8883, mqtt={"host": "127.0.0.1", "port": 8883, "tls": tls})
    sdir = dev.parent / "secrets"
    sdir.mkdir()
    for name in secrets:
        (sdir / name).write_bytes(b"\x30\x82")
    port = tmp_path / "no-such-port"
    argv = ["deploy", "--board", "unix-sim", "--port", str(port), "--device", str(dev)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(sdir=sdir) in err and "nothing was copied" in err, err
    assert err.count("\n") == 1 and "not found" not in err  # the port was never opened


def test_referenced_secrets_are_copied(tmp_path):
    dev = device(
        tmp_path,
        8883,
        mqtt={"host": "h", "port": 8883, "tls": {"ca": "/secrets/ca.der"}},
        consent={"key_file": "secrets/consent.key"},
    )
    sdir = dev.parent / "secrets"
    sdir.mkdir()
    (sdir / "ca.der").write_bytes(b"CA")
    (sdir / "consent.key").write_text("00" * 32)
    files = dp.build_files(None, dev, dp.board_file("unix-sim"))
    assert files["/secrets/ca.der"] == b"CA" and files["/secrets/consent.key"] == b"00" * 32


def test_provisioned_config_passes_check_and_keeps_added_keys(tmp_path, capsys):
    out = tmp_path / "prov"
    assert cli.main(["provision", "hp-0001", "--out", str(out)]) == 0
    dev = out / "devices" / "hp-0001" / "device.json"
    assert cli.main(["check", str(dev)]) == 0  # was: config key 'consent_key' is unknown
    cfg = json.loads(dev.read_text())
    cfg["channels"] = [{"id": 1, "name": "flow_cC", "category": "essential"}]
    dev.write_text(json.dumps(cfg))
    assert cli.main(["provision", "hp-0001", "--out", str(out)]) == 0
    again = json.loads(dev.read_text())
    assert again["channels"] == cfg["channels"] and again["mqtt"] == cfg["mqtt"]
    assert (
        dp.secret_files(dev, again)["/secrets/consent.key"]
        == (dev.parent / "secrets" / "consent.key").read_bytes()
    )
    capsys.readouterr()


@pytest.mark.parametrize(
    "wifi, refuse, network, broker_check",
    [
        (
            {"ssid": "home", "password": "pw"},
            0,
            [True, "associated with 'home', rssi -61"],
            [True, "127.0.0.1:{port} accepted st-0001"],
        ),
        (
            {"ssid": "home", "password": "pw", "timeout_ms": 1000},
            99,
            [False, "OSError: no association with 'home' within 1000 ms"],
            None,
        ),
        (
            None,
            0,
            [
                False,
                "OSError: no Wi-Fi configured: set config key 'wifi' or provision "
                "/secrets/wifi.json",
            ],
            None,
        ),
    ],
    ids=["associates", "ap-silent", "no-credentials"],
)
def test_selftest_on_an_esp32_brings_up_wifi_first(
    micropython, tmp_path, broker, wifi, refuse, network, broker_check
):
    """The ESP32 branch of the self-test (fake radio at the hardware edge, real broker)."""
    cfg = {
        "device_id": "st-0001",
        "board": "esp32-generic",
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "store": {"path": str(tmp_path / "store")},
        "sim": {"enabled": True},  # no appliance here: the inputs check passes on the simulator
    }
    if wifi:
        cfg["wifi"] = wifi
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    script = os.path.join(ROOT, "host_tools", "board", "mp", "deploy_selftest.py")
    driver = os.path.join(ROOT, "tests", "mp", "selftest_esp32.py")
    r = run_mp(driver, script, str(path), str(refuse), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c[0]: c[1:] for c in json.loads(r.stdout.strip().splitlines()[-1])["checks"]}
    assert checks["config"][0] is True and checks["inputs"][0] is True, checks
    assert checks["network"] == network, checks
    if broker_check is None:
        assert "broker" not in checks  # no login attempt without a network
    else:
        # the session broker may hold this client id's session from an earlier test
        ok, detail = checks["broker"]
        assert ok is broker_check[0], checks
        assert detail.startswith(broker_check[1].format(port=broker.port)), checks
