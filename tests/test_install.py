"""imgsim as a newcomer installs it: a wheel of this checkout in a fresh virtual environment, used from another folder.

The environment's dependencies come from the test's own environment (a path entry), not from the
network: what is tested is imgsim's own packaging — the command, the dashboard shipped beside the
core, where data goes — not pip's resolver. The new environment's site-packages is made
read-only, as a system-wide install is: anything imgsim wrote there would fail.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import TINY_FLAGS, free_port, wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("install")  # one worker builds the wheel and the environment, once


def run(command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh venv with a wheel of the checkout; yields its bin folder, site-packages and a clean environment."""
    work = tmp_path_factory.mktemp("install")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), str(ROOT)])
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(work.glob("imgsim-*.whl"))
    venv = work / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # without PYTHONPATH: a checkout on it would look like imgsim already installed, and pip would skip the wheel
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)], env=clean)
    assert done.returncode == 0, done.stderr[-2000:]
    # The dependencies: this environment's packages, after the new one's own (so imgsim is the installed copy).
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    for path in [site, *site.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    home = work / "user"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("IMGSIM_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"), PATH=f"{venv / 'bin'}:{env['PATH']}")
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    yield {"bin": venv / "bin", "site": site, "env": env, "cwd": elsewhere, "home": home}
    for path in [site, *site.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)  # so pytest can remove it


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (none where its name does not resolve)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({info[4][0] for info in infos if not info[4][0].startswith("127.")})


def test_the_installed_command_and_dashboard_come_from_the_wheel(installed):
    shown = run([str(installed["bin"] / "imgsim"), "--help"], env=installed["env"], cwd=installed["cwd"])
    assert shown.returncode == 0 and "serve" in shown.stdout and "train" in shown.stdout
    where = run([str(installed["bin"] / "python"), "-c", "import imgsim, imgsim.serve as s; print(imgsim.__file__); "
                 "print(s.dashboard_dir())"], env=installed["env"], cwd=installed["cwd"])
    package, dashboard = where.stdout.split()
    assert Path(package).is_relative_to(installed["site"]) and Path(dashboard) == installed["site"] / "imgsim_dashboard"
    assert (Path(dashboard) / "pages" / "search.py").is_file() and (Path(dashboard) / ".streamlit" / "config.toml").is_file()


@pytest.fixture(scope="module")
def trained(installed, tiny_collection) -> subprocess.CompletedProcess:
    """`imgsim train` from the installed command, in an unrelated folder: a first model in the user data folder."""
    return run([str(installed["bin"] / "imgsim"), "train", "--images", str(tiny_collection), "--image-size", "32",
                "--latent-dim", "16", "--epochs", "1", "--batch-size", "8", "--clusters", "3", *TINY_FLAGS],
               env=installed["env"], cwd=installed["cwd"])


def test_training_from_another_folder_writes_to_the_user_data_folder_only(installed, trained):
    assert trained.returncode == 0, (trained.stdout[-1500:], trained.stderr[-1500:])
    models = installed["home"] / ".local" / "share" / "imgsim" / "models"
    assert (models / "CURRENT").is_file()  # the documented place (platformdirs' user data folder on Linux)
    assert not any(installed["cwd"].iterdir())  # nothing in the folder it was started from


def test_serve_answers_on_loopback_only(installed, trained):
    assert trained.returncode == 0, trained.stderr[-1500:]
    port = free_port()
    server = subprocess.Popen([str(installed["bin"] / "imgsim"), "serve", "--port", str(port)], env=installed["env"],
                              cwd=installed["cwd"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server,
                           lambda: (server.kill(), server.stdout.read()[-3000:].decode())[1])
        listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     + Path("/proc/net/tcp6").read_text().splitlines()[1:]]
        bound = {local for local, state in ((f[1], f[3]) for f in listening) if state == "0A"
                 and int(local.rsplit(":", 1)[1], 16) == port}
        assert bound == {f"0100007F:{port:04X}"}  # 127.0.0.1 only: no 0.0.0.0, no ::
        for address in other_addresses():  # this machine's other addresses are refused
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2).close()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
