"""jetson/: the set-up script, the systemd unit and the Dockerfile, checked without a Jetson.

setup.sh reads the release from under $WBC_EDGE_ROOT, so each test lays out a fake L4T tree
(release file and/or dpkg database) and runs the script with --dry-run.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JETSON = REPO / "jetson"
SETUP = JETSON / "setup.sh"

RELEASE_LINES = {
    "35.4.1": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023",
    "36.3.0": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
    "DATE: Mon May  6 17:34:21 UTC 2024",
    "36.4.3": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Tue Jan  7 17:54:31 UTC 2025",
    "32.7.4": "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, "
    "DATE: Fri Jun  9 04:25:08 UTC 2023",
}


def release_line(release: str) -> str:
    if release in RELEASE_LINES:
        return RELEASE_LINES[release]
    major, minor, patch = release.split(".")
    return (
        f"# R{major} (release), REVISION: {minor}.{patch}, GCID: 1, BOARD: generic, "
        "EABI: aarch64, DATE: Mon Jan  1 00:00:00 UTC 2026"
    )


def fake_root(tmp_path: Path, release: str | None, package: str | None = None) -> Path:
    """A fake filesystem root with an L4T release file and/or an nvidia-l4t-core package."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    if release is not None:
        (root / "etc" / "nv_tegra_release").write_text(release_line(release) + "\n")
    if package is not None:
        dpkg = root / "var" / "lib" / "dpkg"
        dpkg.mkdir(parents=True)
        (dpkg / "status").write_text(
            "Package: nvidia-l4t-core\nStatus: install ok installed\nPriority: standard\n"
            "Section: misc\nInstalled-Size: 1000\nMaintainer: NVIDIA Corporation\n"
            f"Architecture: arm64\nVersion: {package}\nDescription: NVIDIA Core Package\n\n"
        )
    return root


def run_setup(
    root: Path, *args: str, arch: str = "aarch64", **env_extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WBC_EDGE_")}
    env.pop("SUDO_USER", None)
    env.update(WBC_EDGE_ROOT=str(root), WBC_EDGE_ARCH=arch, **env_extra)
    return subprocess.run(
        ["bash", str(SETUP), "--dry-run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


# --- setup.sh -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "jetpack", "tensorrt"),
    [("36.3.0", "6.0", "8.6"), ("36.4.3", "6.2", "10.3")],
)
def test_setup_plans_jetpack6(tmp_path: Path, release: str, jetpack: str, tensorrt: str) -> None:
    res = run_setup(fake_root(tmp_path, release))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"L4T R{release} = JetPack {jetpack} (TensorRT {tensorrt}," in out
    assert "Python 3.10" in out
    # the venv sees JetPack's TensorRT, pycuda builds against the device's CUDA
    assert re.search(r"^\+ /usr/bin/python3 -m venv --system-site-packages ", out, re.M)
    assert "CUDA_ROOT=/usr/local/cuda" in out
    assert re.search(r"pip install numpy\\<2 \S+\\\[runtime\\,jetson\\\]", out)
    assert f"tensorrt ({tensorrt}.x) pycuda.driver" in out
    assert "nothing was changed" in out


def needs_dpkg() -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("dpkg-query is absent on this machine (Jetson images always have it)")


def test_setup_package_version_wins_over_release_file(tmp_path: Path) -> None:
    """An apt upgrade moves nvidia-l4t-core first; the script trusts it and says so."""
    needs_dpkg()
    res = run_setup(fake_root(tmp_path, "36.3.0", package="36.4.3-20250107174145"))
    assert res.returncode == 0, res.stderr
    assert "L4T R36.4.3 = JetPack 6.2 (TensorRT 10.3" in res.stdout
    assert "unfinished" in res.stderr


def test_setup_package_alone_is_enough(tmp_path: Path) -> None:
    needs_dpkg()
    res = run_setup(fake_root(tmp_path, None, package="36.4.0-20240912212859"))
    assert res.returncode == 0, res.stderr
    assert "L4T R36.4.0 = JetPack 6.1 (TensorRT 10.3" in res.stdout


def test_setup_jetpack5_refuses_gpu_install_with_the_reason(tmp_path: Path) -> None:
    res = run_setup(fake_root(tmp_path, "35.4.1"))
    assert res.returncode == 4
    assert "L4T R35.4.1 = JetPack 5.1.2 (TensorRT 8.5" in res.stdout
    assert "Python 3.8" in res.stderr and "--cpu-only" in res.stderr
    assert "+ apt-get" not in res.stdout  # refused before doing anything


def test_setup_jetpack5_cpu_only(tmp_path: Path) -> None:
    res = run_setup(fake_root(tmp_path, "35.4.1"), "--cpu-only")
    assert res.returncode == 0, res.stderr
    assert "python3.10 -m venv" in res.stdout
    assert re.search(r"^plan: .*wbc-edge\[runtime\]$", res.stdout, re.M)
    assert "nvidia-jetpack" not in res.stdout and "CUDA_ROOT" not in res.stdout


def test_setup_refuses_non_jetson(tmp_path: Path) -> None:
    res = run_setup(fake_root(tmp_path, None))
    assert res.returncode == 3
    assert "not a Jetson" in res.stderr and "pip install" in res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize(
    ("release", "jetpack"),
    [
        ("35.5.0", "5.1.3"),
        ("35.6.0", "5.1.4"),
        ("35.6.1", "5.1.5"),
        ("35.6.2", "5.1.5"),
        ("36.4.0", "6.1"),
        ("36.4.2", "6.1.1"),
        ("36.4.3", "6.2"),
        ("36.4.4", "6.2.1"),
        ("36.4.7", "6.2.1"),
    ],
)
def test_setup_names_the_jetpack_release(tmp_path: Path, release: str, jetpack: str) -> None:
    res = run_setup(fake_root(tmp_path, release), "--cpu-only")
    assert res.returncode == 0, res.stderr
    assert f"L4T R{release} = JetPack {jetpack} (" in res.stdout


def test_setup_refuses_a_pc_with_a_release_file(tmp_path: Path) -> None:
    """A copied /etc/nv_tegra_release does not make an x86 PC a Jetson."""
    res = run_setup(fake_root(tmp_path, "36.4.3"), arch="x86_64")
    assert res.returncode == 3
    assert "not a Jetson" in res.stderr and "x86_64" in res.stderr and "aarch64" in res.stderr
    assert res.stdout == ""


def test_setup_refuses_old_release(tmp_path: Path) -> None:
    res = run_setup(fake_root(tmp_path, "32.7.4"))
    assert res.returncode == 4
    assert "R32.7.4 is not supported" in res.stderr and "JetPack 6.2" in res.stderr


def test_setup_bad_option(tmp_path: Path) -> None:
    res = run_setup(fake_root(tmp_path, "36.4.3"), "--frobnicate")
    assert res.returncode == 2 and "unknown option --frobnicate" in res.stderr


def _env_example() -> dict[str, str]:
    text = (JETSON / "wbc-edge.env.example").read_text()
    return dict(re.findall(r"^(\w+)=(.*)$", text, re.M))


def folders_the_service_needs() -> set[str]:
    """Every folder the unit and the env file name: the state and working folder, the model's
    folder, a watched source folder and the results (--out)."""
    svc = _unit()["Service"]
    env = _env_example()
    folders = {svc["WorkingDirectory"], f"/var/lib/{svc['StateDirectory']}"}
    folders.add(str(Path(env["WBC_EDGE_MODEL"]).parent))
    if env["WBC_EDGE_SOURCE"].startswith("/") and not env["WBC_EDGE_SOURCE"].startswith("/dev"):
        folders.add(env["WBC_EDGE_SOURCE"].rstrip("/"))
    out = re.search(r"--out[= ](\S+)", env["WBC_EDGE_ARGS"])
    assert out, "the env example must name a results folder (--out)"
    folders.add(out.group(1))
    return folders


def test_setup_service_plan(tmp_path: Path) -> None:
    res = run_setup(
        fake_root(tmp_path, "36.4.3"),
        "--service",
        "--venv",
        str(tmp_path / "v"),
        SUDO_USER="labtech",
    )
    assert res.returncode == 0, res.stderr
    assert f"s#/opt/wbc-edge/venv#{tmp_path / 'v'}#g" in res.stdout
    assert "systemctl daemon-reload" in res.stdout
    assert "systemctl enable --now wbc-edge" in res.stdout
    planned = dict(
        (m.group(2), m.group(1))
        for m in re.finditer(
            r"^\+ install -d -o wbc-edge -g wbc-edge -m (\d+) (\S+)$", res.stdout, re.M
        )
    )
    needed = folders_the_service_needs()
    assert needed <= set(planned), f"setup.sh never makes {needed - set(planned)}"
    env = _env_example()
    results = re.search(r"--out[= ](\S+)", env["WBC_EDGE_ARGS"]).group(1)
    assert planned[results] == "2750"  # group-readable, group kept on new files
    assert planned[str(Path(env["WBC_EDGE_MODEL"]).parent)] == "2770"  # the lab user drops models
    assert "+ usermod -a -G wbc-edge labtech" in res.stdout
    # the next steps build the engine where the env file expects it
    assert f"--out {env['WBC_EDGE_MODEL']}" in res.stdout


def test_setup_service_without_a_lab_user_says_how_to_add_one(tmp_path: Path) -> None:
    res = run_setup(fake_root(tmp_path, "36.4.3"), "--service", "--venv", str(tmp_path / "v"))
    assert res.returncode == 0, res.stderr
    assert "usermod -a -G wbc-edge NAME" in res.stderr and "+ usermod" not in res.stdout
    res = run_setup(
        fake_root(tmp_path / "b", "36.4.3"), "--service", "--lab-user", "ana", "--venv", "v"
    )
    assert "+ usermod -a -G wbc-edge ana" in res.stdout


def test_setup_installing_needs_root(tmp_path: Path) -> None:
    """Without --dry-run it changes the system, so it refuses to start as a normal user."""
    cmd = ["bash", str(SETUP)]
    if os.geteuid() == 0:  # CI runs as root: drop to nobody for this one run
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot run setup.sh as a normal user")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    # nobody must be able to read the fake root (pytest's own tmp folder is private to root)
    shared = Path(tempfile.mkdtemp(prefix="wbc-edge-l4t-"))
    try:
        root = fake_root(shared, "36.4.3")
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        env = {**os.environ, "WBC_EDGE_ROOT": str(root), "WBC_EDGE_ARCH": "aarch64"}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    finally:
        shutil.rmtree(shared)
    assert res.returncode == 2, res.stderr
    assert "needs root" in res.stderr and "sudo" in res.stderr
    assert "+ apt-get" not in res.stdout


SCRIPTS = sorted([*JETSON.glob("*.sh"), *(REPO / "benchmarks" / "results").glob("*.sh")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (CI installs it: apt-get install shellcheck)")
    res = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


# --- wbc-edge.service -----------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    # systemd units allow repeated keys; strict=False keeps the last, which is what we check.
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # keys are case-sensitive in systemd
    cp.read_string((JETSON / "wbc-edge.service").read_text())
    return cp


def test_unit_sections_and_keys() -> None:
    unit = _unit()
    assert unit.sections() == ["Unit", "Service", "Install"]
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert svc["EnvironmentFile"] == "/etc/wbc-edge/wbc-edge.env"
    assert svc["User"] == "wbc-edge" and svc["User"] != "root"
    exec_start = svc["ExecStart"].split()
    assert exec_start[:2] == ["/opt/wbc-edge/venv/bin/wbc-edge", "run"]
    used = set(re.findall(r"\$\{?(\w+)", svc["ExecStart"]))
    env_example = (JETSON / "wbc-edge.env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", env_example, re.M))
    assert used <= defined, f"ExecStart uses {used - defined} that the env example lacks"
    assert "video" in svc["SupplementaryGroups"].split()
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # a configuration error (exit 2) stops the restarts; the journal has its one line
    assert "2" in svc["RestartPreventExitStatus"].split()
    assert svc["KillSignal"] == "SIGINT"  # the runtime drains on SIGINT


def test_unit_hardening_keeps_devices() -> None:
    """Hardened, but camera/GPU nodes and the CSI camera's /tmp/argus_socket stay reachable."""
    svc = _unit()["Service"]
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] in ("full", "strict")
    for blocks_devices in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert blocks_devices not in svc, f"{blocks_devices} would hide /dev/video* or the GPU"
    assert svc.get("PrivateTmp", "no") == "no"
    assert "MemoryDenyWriteExecute" not in svc


def test_env_example_is_systemd_syntax() -> None:
    for line in (JETSON / "wbc-edge.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
            assert " #" not in value, f"systemd does not strip trailing comments: {line}"


def test_unit_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is absent (the Python parse above still checks the unit)")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    exe = venv / "bin" / "wbc-edge"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    # what setup.sh --service does: point ExecStart at the venv actually installed
    unit = tmp_path / "wbc-edge.service"
    unit.write_text(
        (JETSON / "wbc-edge.service").read_text().replace("/opt/wbc-edge/venv", str(venv))
    )
    res = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify warns (and still exits 0) on an unknown value; any line about our unit is a failure
    problems = [line for line in res.stderr.splitlines() if "wbc-edge.service" in line]
    assert res.returncode == 0 and not problems, res.stderr


# --- Dockerfile -----------------------------------------------------------------------------------

DOCKER_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, args = line.partition(" ")
        out.append((word, args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def test_dockerfile_parses() -> None:
    ins = _instructions((JETSON / "Dockerfile").read_text())
    assert ins[0][0] == "FROM"
    assert re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+", ins[0][1])
    unknown = [w for w, _ in ins if w not in DOCKER_INSTRUCTIONS]
    assert not unknown, f"not Dockerfile instructions: {unknown}"
    # the build context is the repository root: every COPY source must exist there
    for word, args in ins:
        if word == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            for src in parts[:-1]:
                assert (REPO / src).exists(), f"COPY source {src} is not in the repository"
    # every package folder pyproject maps must be copied, or pip cannot build the package
    copied = {args.split()[0] for w, args in ins if w == "COPY"}
    for folder in ("wbc_edge", "runtime", "kd", "export", "benchmarks", "pyproject.toml"):
        assert folder in copied
    assert any(w == "USER" and a != "root" for w, a in ins)


def test_dockerfile_runtime_behaviour() -> None:
    """No GPU at build time, SIGINT on `docker stop`, a health check, /data checked."""
    ins = _instructions((JETSON / "Dockerfile").read_text())
    for word, args in ins:
        if word == "RUN":  # a build without --runtime nvidia has no GPU: import nothing GPU
            assert not re.search(r"import[^;\"]*\b(tensorrt|pycuda)\b", args), args
    last = dict(ins)
    assert last["STOPSIGNAL"] == "SIGINT"  # the runtime drains on SIGINT, as under systemd
    assert "tensorrt" in last["HEALTHCHECK"] and "cuda.init()" in last["HEALTHCHECK"]
    entry = json.loads(last["ENTRYPOINT"])
    copied = {args.split()[-1]: args.split()[0] for w, args in ins if w == "COPY"}
    script = REPO / copied[f"/usr/local/bin/{entry[0]}"]
    assert "exec wbc-edge" in script.read_text()


def test_docker_entrypoint_refuses_unwritable_data(tmp_path: Path) -> None:
    script = JETSON / "docker-entrypoint.sh"
    data = Path(tempfile.mkdtemp(prefix="wbc-edge-data-"))
    try:
        data.chmod(0o555)
        cmd = ["sh", str(script), "--help"]
        if os.geteuid() == 0:  # root may write anywhere: run as nobody
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot test a read-only /data")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        env = {**os.environ, "WBC_EDGE_DATA": str(data)}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    finally:
        data.chmod(0o755)
        shutil.rmtree(data)
    assert res.returncode == 2
    assert "not writable" in res.stderr and "chown" in res.stderr and "named volume" in res.stderr
    # a writable /data: it becomes wbc-edge itself
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "wbc-edge"
    fake.write_text('#!/bin/sh\necho "wbc-edge $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "WBC_EDGE_DATA": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    res = subprocess.run(["sh", str(script), "run", "x"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stdout == "wbc-edge run x\n"
