"""Loading cluster credentials: the service-account token re-read when its file changes,
inline kubeconfig data kept in a private folder removed on close, exec tokens renewed
ahead of expiry. (Against a real API server: e2e/test_operator_auth.py.)"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import sys
from pathlib import Path

import pytest
import yaml

from swiftclaw_operator.failures import classify
from swiftclaw_operator.kube import Auth, Kube, KubeError, renew_at

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def read(path: Path) -> str:
    return path.read_text()


def exec_plugin(tmp_path: Path, fail_after_first: bool = False) -> Path:
    """A Python exec plugin printing token ``tok-N`` on its Nth run, valid for 1 s; with
    ``fail_after_first``, every run after the first exits non-zero with a message."""
    plugin = tmp_path / "plugin.py"
    runs = tmp_path / "runs"
    fail = "if p.exists():\n    sys.exit('plugin-output-kept-out-of-status')\n"
    plugin.write_text(
        "import datetime, json, pathlib, sys\n"
        f"p = pathlib.Path({str(runs)!r})\n"
        + (fail if fail_after_first else "")
        + "n = len(p.read_text().splitlines()) + 1 if p.exists() else 1\n"
        "p.open('a').write(f'{n}\\n')\n"
        "exp = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': {'token': f'tok-{n}',"
        " 'expirationTimestamp': exp.strftime('%Y-%m-%dT%H:%M:%SZ')}}))\n"
    )
    return plugin


def exec_kubeconfig(tmp_path: Path, plugin: Path, server: str | None = None) -> Path:
    """A kubeconfig whose user runs ``plugin`` (a Python script) as its exec plugin; with
    ``server``, that plain-HTTP address instead of an HTTPS one with an inline CA."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": server}
                        if server
                        else {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority-data": base64.b64encode(CA.encode()).decode(),
                        },
                    }
                ],
                "users": [
                    {
                        "name": "u",
                        "user": {
                            "exec": {
                                "apiVersion": "client.authentication.k8s.io/v1",
                                "command": sys.executable,
                                "args": [str(plugin)],
                            }
                        },
                    }
                ],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return kubeconfig


def test_renewal_is_ahead_of_expiry() -> None:
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    hour = datetime.timedelta(hours=1)
    assert renew_at(t0, t0 + hour) == t0 + hour - datetime.timedelta(minutes=5)
    minute = datetime.timedelta(seconds=60)
    assert renew_at(t0, t0 + minute) == t0 + datetime.timedelta(seconds=48)


async def test_service_account_token_is_reread_when_the_file_changes(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text(CA)
    (tmp_path / "token").write_text("first\n")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    auth = await Auth.load(tmp_path, env)
    assert auth.server == "https://127.0.0.1:6443"
    assert auth.configuration.api_key["BearerToken"] == "Bearer first"
    await auth.refresh()
    assert auth.renewals == 0
    new = tmp_path / ".token.new"  # as the kubelet does: write aside, rename over
    new.write_text("second")
    os.replace(new, tmp_path / "token")
    await auth.refresh()
    assert auth.configuration.api_key["BearerToken"] == "Bearer second"
    assert auth.renewals == 1
    login = auth.login()
    assert (login.scheme, login.token, login.expiration) == ("Bearer", "second", None)


async def test_exec_token_renewed_and_inline_data_cleaned_up(tmp_path: Path) -> None:
    plugin = exec_plugin(tmp_path)
    kubeconfig = exec_kubeconfig(tmp_path, plugin)
    auth = await Auth.load(tmp_path / "no-sa", {"KUBECONFIG": str(kubeconfig)})
    assert auth.configuration.api_key["BearerToken"] == "Bearer tok-1"
    ca_file = Path(auth.configuration.ssl_ca_cert)
    assert read(ca_file) == CA and ca_file.parent.name.startswith("swiftclaw-kube-")
    assert auth.login().expiration is not None
    await auth.refresh(force=True)  # as after a 401
    assert auth.configuration.api_key["BearerToken"] == "Bearer tok-2"
    auth.close()
    assert not ca_file.parent.exists()


async def test_a_failing_exec_plugin_is_transient_and_kept_out_of_status(tmp_path: Path) -> None:
    plugin = exec_plugin(tmp_path, fail_after_first=True)
    # A closed port on loopback: the request is never sent, the renewal fails first.
    kubeconfig = exec_kubeconfig(tmp_path, plugin, server="http://127.0.0.1:9")
    auth = await Auth.load(tmp_path / "no-sa", {"KUBECONFIG": str(kubeconfig)})
    kube = Kube(auth)
    try:
        await asyncio.sleep(1.2)  # the token (1 s of life) is due; the plugin now fails
        with pytest.raises(KubeError) as failed:
            await kube.get("v1", "ConfigMap", "default", "any")
    finally:
        await kube.close()
    failure = classify(failed.value)
    assert failed.value.status == 0 and "credentials could not be renewed" in str(failed.value)
    assert not failure.permanent
    assert "plugin-output-kept-out-of-status" not in failure.message
