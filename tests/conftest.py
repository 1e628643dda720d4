"""Shared test fixtures. Reference fixtures live in ../shared/fixtures and tests fail (never skip) without them."""

from __future__ import annotations

# --- Local Hub-API test server (tests/hub_server.py): the client environment. It must be set before
# huggingface_hub is first imported (its endpoint and download URL template are read at import time).
import atexit
import os
import shutil
import socket
import tempfile


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


HUB_PORT = _free_local_port()
HUB_HOME = tempfile.mkdtemp(prefix="overlock-hf-test-home-")
atexit.register(shutil.rmtree, HUB_HOME, ignore_errors=True)
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_PORT}",
    HF_HUB_DISABLE_XET="1",  # with hf_xet installed, large uploads would otherwise go to Xet endpoints
    HF_HOME=HUB_HOME,
    HF_TOKEN="hf_local_test_token",  # any token: the test server accepts every bearer token
)
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HUB_DISABLE_TELEMETRY", "KERNELS_CACHE"):
    os.environ.pop(_name, None)
# --- end of the Hub client environment

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures"


def fixture_path(name: str) -> Path:
    """Path of a reference fixture; raises (so the test fails) when it is missing."""
    path = FIXTURES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"reference fixture missing: {path} (the parity tests need ../shared/fixtures)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES_DIR.is_dir():
        raise FileNotFoundError(f"reference fixtures folder missing: {FIXTURES_DIR}")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def hub_server():
    """The local Hub-API server (tests/hub_server.py) on HUB_PORT, the endpoint the clients were pointed at.

    Organization "trusted-org" is reported as a trusted kernel publisher; use ``inject_failure`` for failure tests
    and ``clear_failures`` afterwards.
    """
    import huggingface_hub

    from hub_server import HubServer

    if huggingface_hub.constants.ENDPOINT != os.environ["HF_ENDPOINT"]:
        raise RuntimeError("huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT")
    server = HubServer(port=HUB_PORT, trusted_publishers=("trusted-org",)).start()
    yield server
    server.stop()
