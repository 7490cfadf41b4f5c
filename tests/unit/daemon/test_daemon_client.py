"""Where the API server and credentials come from: kubeconfig, --master, in-cluster; node name."""
import base64

import pytest
import yaml

from proxyd.k8s.client import KINDS, ApiError, ConfigError, KubeClient, build_configuration, resolve_node_name


def write_kubeconfig(path, server, token="s3cret", ca=None):
    cluster = {"server": server}
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    return str(path)


def test_kubeconfig_server_and_token(tmp_path):
    conf = build_configuration(kubeconfig=write_kubeconfig(tmp_path / "kc", "https://10.0.0.1:6443"))
    assert conf.host == "https://10.0.0.1:6443"
    assert conf.get_api_key_with_prefix("BearerToken") == "Bearer s3cret"


def test_master_overrides_kubeconfig_server_but_keeps_credentials(tmp_path):
    kc = write_kubeconfig(tmp_path / "kc", "https://10.0.0.1:6443")
    conf = build_configuration(kubeconfig=kc, master="http://127.0.0.1:8080/")
    assert conf.host == "http://127.0.0.1:8080"
    assert conf.get_api_key_with_prefix("BearerToken") == "Bearer s3cret"
    # the token refresh that runs before each request must not bring the old server back
    assert conf.host == "http://127.0.0.1:8080"


def test_master_alone_https_has_no_credentials():
    conf = build_configuration(master="https://api.example:6443", environ={})
    assert conf.host == "https://api.example:6443" and not conf.api_key


def test_in_cluster_from_service_account(tmp_path):
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("not checked until a request")
    conf = build_configuration(environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                        "KUBERNETES_SERVICE_PORT": "443"},
                               token_file=str(tmp_path / "token"), cert_file=str(tmp_path / "ca.crt"))
    assert conf.host == "https://10.96.0.1:443"
    assert conf.get_api_key_with_prefix("BearerToken").lower() == "bearer sa-token"


def test_nothing_configured_is_a_clear_error():
    with pytest.raises(ConfigError, match="no --kubeconfig or --master given and not running in a cluster"):
        build_configuration(environ={})


def test_missing_kubeconfig_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--kubeconfig .*nope"):
        build_configuration(kubeconfig=str(tmp_path / "nope"))


def test_node_name_order():
    assert resolve_node_name("over", {"NODE_NAME": "env"}, lambda: "host") == "over"
    assert resolve_node_name("", {"NODE_NAME": "env"}, lambda: "host") == "env"
    assert resolve_node_name("", {}, lambda: "host") == "host"


def test_list_through_master_url_sends_bearer_token(api, tmp_path):
    seen = []
    api.put(KINDS["nodes"].path, "n1")
    kc = write_kubeconfig(tmp_path / "kc", "https://unused:1", token="tok")
    client = KubeClient(build_configuration(kubeconfig=kc, master=api.url))
    import fakeapi
    orig = fakeapi._Handler.do_GET

    def spy(self):
        seen.append(self.headers.get("Authorization"))
        return orig(self)
    fakeapi._Handler.do_GET = spy
    try:
        items, rv = client.list(KINDS["nodes"])
    finally:
        fakeapi._Handler.do_GET = orig
        client.close()
    assert [i["metadata"]["name"] for i in items] == ["n1"] and rv == str(api.rv)
    assert seen == ["Bearer tok"]


def test_list_error_carries_status(api, kube):
    api.fail_lists = 1
    with pytest.raises(ApiError) as err:
        kube.list(KINDS["pods"])
    assert err.value.status == 500
