"""The official Python `kubernetes` client against skiff-control: list, create, patch, watch with
resume from a resourceVersion, delete — over HTTPS, as the admin of the kubeconfig it is given. Prints one line per check; exits non-zero on the first failure."""

import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main(kubeconfig: str) -> None:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    api = client.ApiClient(configuration)
    core = client.CoreV1Api(api)

    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert "default" in names and "kube-system" in names, names
    print("list namespaces ok")

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "python"}), data={"k": "1"})
    created = core.create_namespaced_config_map("default", cm)
    start_rv = created.metadata.resource_version
    print("create ok", start_rv)

    try:
        core.create_namespaced_config_map("default", cm)
        raise AssertionError("a duplicate create succeeded")
    except ApiException as e:
        assert e.status == 409, e.status
    print("duplicate refused ok")

    patched = core.patch_namespaced_config_map("py", "default", {"data": {"k": "2"}})
    assert patched.data["k"] == "2", patched.data
    print("patch ok")

    listed = core.list_namespaced_config_map("default", label_selector="from=python")
    assert [c.metadata.name for c in listed.items] == ["py"], listed.items
    print("list with selector ok")

    core.delete_namespaced_config_map("py", "default")
    # Resume a watch from the creation's resourceVersion: the patch and the delete follow.
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", resource_version=start_rv, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            w.stop()
    assert seen == [("MODIFIED", "py"), ("DELETED", "py")], seen
    print("watch resume ok")

    try:
        core.read_namespaced_config_map("py", "default")
        raise AssertionError("the deleted object is still there")
    except ApiException as e:
        assert e.status == 404, e.status
    print("delete ok")


if __name__ == "__main__":
    main(sys.argv[1])
