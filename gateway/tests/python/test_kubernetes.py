"""The Kubernetes routing source against a real API server (the local control plane:
`e2e/cluster/up.sh NAME` prints a kubeconfig). Skipped unless BUD_TEST_KUBECONFIG is set and
`kubectl` is on PATH. Status is written directly, as the controllers would."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO_GATEWAY, Gateway, wait_until

KUBECONFIG = os.environ.get("BUD_TEST_KUBECONFIG")
pytestmark = pytest.mark.skipif(not KUBECONFIG or not shutil.which("kubectl"), reason="BUD_TEST_KUBECONFIG or kubectl missing")
CRDS = REPO_GATEWAY.parent / "charts" / "bud" / "crds"
SECRET = "sk-kube-" + uuid.uuid4().hex[:8]


def kubectl(*args, stdin: str | None = None):
    subprocess.run(["kubectl", *args], input=stdin, text=True, check=True, capture_output=True, env={**os.environ, "KUBECONFIG": KUBECONFIG})


def patch_status(kind: str, ns: str, name: str, status: dict):
    kubectl("-n", ns, "patch", kind, name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


@pytest.fixture
def namespace():
    ns = "gw-" + uuid.uuid4().hex[:8]
    kubectl("apply", "-f", str(CRDS / "modeldeployments.bud.studio.yaml"), "-f", str(CRDS / "apikeys.bud.studio.yaml"))
    kubectl("create", "namespace", ns)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false")


def test_routes_follow_the_cluster(namespace, mock_factory, tmp_path):
    engine, external = mock_factory(name="engine"), mock_factory(name="external")
    ns = namespace
    kubectl("apply", "-f", "-", stdin=f"""
apiVersion: v1
kind: Secret
metadata: {{name: ext-creds, namespace: {ns}}}
stringData: {{apiKey: ext-secret}}
---
apiVersion: bud.studio/v1alpha1
kind: ModelDeployment
metadata: {{name: qwen, namespace: {ns}}}
spec: {{model: {{uri: "hf://Qwen/Qwen3-8B"}}, servedName: qwen3-8b}}
---
apiVersion: bud.studio/v1alpha1
kind: ModelDeployment
metadata: {{name: ext, namespace: {ns}}}
spec:
  provider: {{type: OpenAICompatible, model: ext-model, baseUrl: "{external.base_url}", credentialsSecretRef: {{name: ext-creds, key: apiKey}}}}
  servedName: ext
---
apiVersion: bud.studio/v1alpha1
kind: ApiKey
metadata: {{name: app, namespace: {ns}}}
spec: {{models: []}}
""")
    patch_status("modeldeployment", ns, "qwen", {
        "route": {"servedName": "qwen3-8b", "provider": "Engine", "upstreamModel": "Qwen/Qwen3-8B", "weight": 100, "priority": 0},
        "endpoints": [{"address": "127.0.0.1", "port": engine.port, "ready": True, "pod": "qwen-0"}]})
    patch_status("modeldeployment", ns, "ext", {
        "route": {"servedName": "ext", "provider": "OpenAICompatible", "upstreamModel": "ext-model", "baseUrl": external.base_url,
                  "credentialsSecretRef": {"name": "ext-creds", "key": "apiKey"}, "weight": 100, "priority": 0}})
    patch_status("apikey", ns, "app", {"keyHash": "sha256:" + hashlib.sha256(SECRET.encode()).hexdigest(), "keyId": "kid"})

    # The Kubernetes source, not a file: the routes file is unused.
    gw = Gateway({}, tmp_path, [], env={"KUBECONFIG": KUBECONFIG}, kubernetes=True)
    try:
        client = gw.openai(SECRET)

        def code(model: str) -> int:
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
            return gw.post("/v1/chat/completions", body, {"Authorization": f"Bearer {SECRET}"})[0]

        wait_until(lambda: code("qwen3-8b") == 200 and code("ext") == 200, message="routes from status")
        assert sorted(m.id for m in client.models.list()) == ["ext", "qwen3-8b"]
        assert external.posts()[-1]["headers"]["authorization"] == "Bearer ext-secret"
        patch_status("modeldeployment", ns, "qwen", {"endpoints": [{"address": "127.0.0.1", "port": engine.port, "ready": False}]})
        wait_until(lambda: code("qwen3-8b") == 503, message="no ready endpoint")
        kubectl("-n", ns, "delete", "modeldeployment", "qwen")
        wait_until(lambda: code("qwen3-8b") == 404, message="deployment deleted")
        kubectl("-n", ns, "delete", "secret", "ext-creds")
        kubectl("-n", ns, "create", "secret", "generic", "ext-creds", "--from-literal=apiKey=rotated")
        wait_until(lambda: code("ext") == 200 and external.posts()[-1]["headers"]["authorization"] == "Bearer rotated", message="rotated secret")
        kubectl("-n", ns, "patch", "apikey", "app", "--type=merge", "-p", '{"spec":{"disabled":true}}')
        wait_until(lambda: code("ext") == 401, message="key disabled")
    finally:
        gw.close()
