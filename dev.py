#!/usr/bin/env python3
"""Bootstrap and run gasp in a project-local virtual environment (needs only Python 3.10+ and pip).

    python3 dev.py demo [ARGS...]   # create/refresh .venv, install gasp, run `gasp demo`
    python3 dev.py test [ARGS...]   # same environment, run the test suite (pytest)
    python3 dev.py gasp ARGS...     # any gasp subcommand inside the environment

The environment is reinstalled only when pyproject.toml changes (a hash stamp in .venv).
Set GASP_VENV to use another location.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("GASP_VENV", ROOT / ".venv"))
# A CPU build of torch is what the quick start needs; where a local wheel of this version is on the
# pip find-links path it is taken from there, otherwise from PyPI.
TORCH_PIN = os.environ.get("GASP_TORCH", "torch==2.13.0")
LMMS_PIN = "lmms-eval==0.7.3"


def _bin(name: str) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return VENV / sub / (name + (".exe" if os.name == "nt" else ""))


def _run(cmd: list[str]) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


def ensure_env() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036  (dev.py may be run by an older system Python)
        sys.exit(f"gasp needs Python 3.10 or newer, this is {sys.version.split()[0]}")
    stamp = VENV / ".gasp-install-stamp"
    want = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (TORCH_PIN + LMMS_PIN).encode()
    ).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want and _bin("gasp").exists():
        return
    if not _bin("python").exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    py = str(_bin("python"))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    probe = subprocess.run([py, "-c", "import torch"], capture_output=True)
    if probe.returncode != 0:
        _run(pip + [TORCH_PIN])
    _run(pip + ["-e", f"{ROOT}[dev,lmms-test,deepspeed]"])
    # lmms-eval's declared requirements include torchvision/timm (a CUDA torch); the plugin tests need
    # only its registry and task loader, so it is installed without them.
    _run(pip + ["--no-deps", LMMS_PIN])
    stamp.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    ensure_env()
    env = dict(os.environ)
    shared = ROOT.parent / "shared" / "data"
    if "GASP_SHARED_DATA" not in env and shared.is_dir():
        env["GASP_SHARED_DATA"] = str(shared)
    if cmd == "test":
        full = [str(_bin("python")), "-m", "pytest", *rest]
    elif cmd == "demo":
        full = [str(_bin("gasp")), "demo", *rest]
    elif cmd == "gasp":
        full = [str(_bin("gasp")), *rest]
    else:
        print(f"unknown command {cmd!r}; use one of: demo, test, gasp", file=sys.stderr)
        return 2
    print("+", " ".join(full), flush=True)
    return subprocess.call(full, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
