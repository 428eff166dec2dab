"""Runs py-consul's own test suite against `cairn agent -dev`.

py-consul's conftest starts HashiCorp's Consul in Docker; this one replaces it
and starts a fresh cairn dev agent per test instead, on 127.0.0.1:8500 because
the suite's HTTP checks point at that address. The binary comes from CAIRN_BIN.
"""

from __future__ import annotations

import collections
import json
import os
import uuid
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import requests

ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])

HTTP_PORT = 8500


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_cairn(acl_token: str | None = None):
    binary = os.environ.get("CAIRN_BIN")
    if not binary:
        pytest.fail("set CAIRN_BIN to the cairn binary to test")
    deadline = time.time() + 10
    while not _port_free(HTTP_PORT):
        if time.time() > deadline:
            pytest.fail(f"127.0.0.1:{HTTP_PORT} is taken; stop whatever listens there")
        time.sleep(0.1)
    data_dir = tempfile.mkdtemp(prefix="cairn-py-consul-")
    log = open(os.path.join(data_dir, "agent.log"), "w", encoding="utf-8")
    # Exactly the configuration py-consul's own fixture hands Consul (its
    # CONSUL_LOCAL_CONFIG), and its command line, but for -client: the tests
    # listen on 127.0.0.1 only.
    config = {
        "ports": {
            "https": -1,
            "dns": -1,
            "grpc_tls": -1,
        },
        "performance": {"raft_multiplier": 1},
        "enable_script_checks": True,
    }
    if acl_token:
        config = {
            **config,
            "primary_datacenter": "dc1",
            "acl": {"enabled": True, "tokens": {"initial_management": acl_token}},
        }
    config_file = os.path.join(data_dir, "local.json")
    with open(config_file, "w", encoding="utf-8") as f:
        json.dump(config, f)
    args = [binary, "agent", "-dev", "-client=127.0.0.1", "-log-level", "trace"]
    args += ["-data-dir", data_dir, "-config-file", config_file]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{HTTP_PORT}/v1/"
    deadline = time.time() + 10
    while True:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            with open(os.path.join(data_dir, "agent.log"), encoding="utf-8") as f:
                pytest.fail("cairn agent -dev did not become ready:\n" + f.read())
        try:
            r = requests.get(base + "status/leader", timeout=2)
            if r.status_code == 200 and r.json():
                if not acl_token:
                    break
                # The leader writes the initial management token once it leads.
                r = requests.get(base + "acl/token/self", headers={"X-Consul-Token": acl_token}, timeout=2)
                if r.status_code == 200:
                    break
        except requests.RequestException:
            pass
        time.sleep(0.05)
    headers = {"X-Consul-Token": acl_token} if acl_token else {}
    version = requests.get(base + "agent/self", headers=headers, timeout=5).json()["Config"]["Version"]
    try:
        instance = ConsulInstance(proc, HTTP_PORT, version)
        yield instance if acl_token is None else (instance, acl_token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # pytest shows a test's captured output only when it fails.
        with open(os.path.join(data_dir, "agent.log"), encoding="utf-8") as f:
            print(f.read()[-20000:])
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _unset_consul_token(monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)


@pytest.fixture
def consul_instance():
    yield from _start_cairn()


@pytest.fixture
def acl_consul_instance():
    yield from _start_cairn(acl_token=str(uuid.uuid4()))


@pytest.fixture
def consul_port(consul_instance):
    return consul_instance.port, consul_instance.version
