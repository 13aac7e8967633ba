#!/usr/bin/env python3
"""Writes schema.txt: the protobuf wire layout of the Kubernetes types skiff-control serves.

Kubernetes' protobuf encoding numbers each field; JSON names each field. This joins the two from
crates already in Cargo's registry: field numbers and wire types from k8s-pb (prost code
generated from Kubernetes' .proto files), JSON names from k8s-openapi (the types skiff uses).
Run it again after bumping either crate:

    python3 control/src/api/protobuf/generate.py > control/src/api/protobuf/schema.txt

Output, one block per message (k8s-pb module path + type name):

    message api.core.v1.ContainerPort
    1 name string
    3 containerPort int32
    ...

A field line is `<number> <json name> [repeated|map|inline] <type>`, where type is a scalar
(string, int32, int64, bool, bytes) or another message; maps are always keyed by string; an
inline message (a Go struct embedded in its parent) puts its fields in the parent's object.
"""

import glob
import os
import re
import sys

REGISTRY = os.path.expanduser("~/.cargo/registry/src")
PB = "k8s-pb-0.9.0"
OPENAPI = "k8s-openapi-0.29.0"
OPENAPI_VERSION = "v1_37"  # the `latest` feature

ROOTS = [
    "api.core.v1." + t
    for t in [
        "Namespace", "Node", "Pod", "Service", "ConfigMap", "Secret", "Event", "ServiceAccount",
        "Endpoints", "Binding", "LimitRange", "ResourceQuota",
    ]
] + [
    "api.apps.v1.Deployment", "api.apps.v1.ReplicaSet", "api.apps.v1.DaemonSet", "api.batch.v1.Job",
    "api.batch.v1.CronJob",
    "api.discovery.v1.EndpointSlice", "api.coordination.v1.Lease", "api.policy.v1.Eviction",
    "api.autoscaling.v1.Scale", "apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "api.authentication.v1.TokenRequest", "api.certificates.v1.CertificateSigningRequest",
    "api.authorization.v1.SubjectAccessReview", "api.authorization.v1.SelfSubjectAccessReview",
    "api.scheduling.v1.PriorityClass",
] + ["api.rbac.v1." + t for t in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]]

# Decoded by hand (their JSON form is not their message form): no fields listed.
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time", "apimachinery.pkg.apis.meta.v1.MicroTime",
    "apimachinery.pkg.apis.meta.v1.Duration", "apimachinery.pkg.api.resource.Quantity",
    "apimachinery.pkg.util.intstr.IntOrString", "apimachinery.pkg.runtime.RawExtension",
    "apimachinery.pkg.apis.meta.v1.FieldsV1",
}


def find(name):
    hits = glob.glob(os.path.join(REGISTRY, "*", name))
    if not hits:
        sys.exit(f"{name} is not in Cargo's registry: run `cargo fetch` in a project using it")
    return hits[0]


PB_SRC = os.path.join(find(PB), "src")
OA_SRC = os.path.join(find(OPENAPI), "src", OPENAPI_VERSION)

FIELD = re.compile(r"#\[prost\(([^\]]*?)tag = \"(\d+)\"\)\]\s*pub (?:r#)?(\w+):(.*?),\s*(?=///|#\[|$)", re.S)
STRUCT = re.compile(r"pub struct (\w+) \{(.*?)\n\}", re.S)


def module_source(module):
    return open(os.path.join(PB_SRC, *module.split("."), "mod.rs")).read()


_structs = {}


def structs(module):
    if module not in _structs:
        _structs[module] = {m.group(1): m.group(2) for m in STRUCT.finditer(module_source(module))}
    return _structs[module]


def resolve(module, rust_type):
    """The full name of a message type referenced from `module`."""
    parts = rust_type.split("::")
    here = module.split(".")
    while parts and parts[0] == "super":
        parts.pop(0)
        here.pop()
    return ".".join(here + parts)


def inner_type(text):
    """The message type inside Option<..> / Vec<..> / BTreeMap<String, ..>."""
    text = re.sub(r"\s+", "", text).replace(",>", ">")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<"):
        if text.startswith(wrapper):
            return text[len(wrapper):-1]
    m = re.match(r"::prost::alloc::collections::BTreeMap<::prost::alloc::string::String,(.*)>$", text)
    if m:
        return m.group(1)
    return text


_json_names = {}


def json_names(module, type_name):
    """JSON field names of the k8s-openapi type mirroring this message."""
    key = (module, type_name)
    if key not in _json_names:
        names = []
        directory = os.path.join(OA_SRC, *module.split("."))
        for path in glob.glob(os.path.join(directory, "*.rs")):
            text = open(path).read()
            # k8s-pb spells initialisms as words (PodDnsConfig for PodDNSConfig).
            found = re.search(r"pub struct (\w+) \{", text)
            if found and found.group(1).lower() == type_name.lower():
                names = re.findall(r'"(\w+)" => Field::Key_', text)
                break
        _json_names[key] = names
    return _json_names[key]


def normalise(name):
    return name.replace("_", "").lower()


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def rust_fields(full):
    """(attrs, number, rust name, rust type) of each field of a k8s-pb message."""
    module, type_name = full.rsplit(".", 1)
    body = structs(module).get(type_name)
    if body is None:
        sys.exit(f"no message {full} in k8s-pb")
    return module, [m.groups() for m in FIELD.finditer(body)]


# JSON names for messages without a k8s-openapi type of their own: Go structs embedded in a
# parent (VolumeSource in Volume) whose fields are the parent's.
borrowed_names = {}


def message(full):
    module, raw = rust_fields(full)
    type_name = full.rsplit(".", 1)[1]
    known = json_names(module, type_name) or borrowed_names.get(full, [])
    names = {normalise(n): n for n in known}
    fields, refs = [], []
    for attrs, number, rust_name, rust_type in raw:
        json_name = names.get(normalise(rust_name))
        inline = False
        if "btree_map" in attrs:
            value = re.search(r'btree_map = "string, (\w+)"', attrs).group(1)
            label = "map"
        else:
            value = attrs.split(",")[0].split("=")[0].strip()
            label = "repeated" if "repeated" in attrs else ""
        if value == "message":
            value = resolve(module, inner_type(rust_type))
            refs.append(value)
            # Embedded: not a field of the parent's JSON, but its own fields are.
            if json_name is None and value not in SPECIAL and label == "":
                _, child = rust_fields(value)
                if any(normalise(c[2]) in names for c in child):
                    inline = True
                    borrowed_names.setdefault(value, known)
        if json_name is None:
            json_name = camel(rust_name)
            if not inline:
                print(f"note: {full}.{json_name}: not in k8s-openapi, name guessed", file=sys.stderr)
        if inline:
            label = "inline"
        fields.append(" ".join(p for p in (number, json_name, label, value) if p))
    return fields, refs


def main():
    seen, order, queue = set(), [], list(ROOTS)
    while queue:
        full = queue.pop(0)
        if full in seen:
            continue
        seen.add(full)
        if full in SPECIAL:
            continue
        fields, refs = message(full)
        order.append((full, fields))
        queue.extend(refs)
    print(f"# generated by generate.py from {PB} and {OPENAPI}; do not edit")
    for full, fields in sorted(order):
        print(f"message {full}")
        for f in fields:
            print(f)


main()
