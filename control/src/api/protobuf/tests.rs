use serde_json::json;

use super::*;

/// A tiny protobuf writer, the way Go's generated code writes Kubernetes objects.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn num(field: u64, n: i64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(field << 3, &mut out);
    varint(n as u64, &mut out);
    out
}

fn bytes(field: u64, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint((field << 3) | 2, &mut out);
    varint(b.len() as u64, &mut out);
    out.extend_from_slice(b);
    out
}

fn msg(field: u64, parts: &[Vec<u8>]) -> Vec<u8> {
    bytes(field, &parts.concat())
}

fn entry(field: u64, key: &str, value: &[u8]) -> Vec<u8> {
    msg(field, &[bytes(1, key.as_bytes()), bytes(2, value)])
}

fn envelope(api_version: &str, kind: &str, object: &[Vec<u8>]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(msg(1, &[bytes(1, api_version.as_bytes()), bytes(2, kind.as_bytes())]));
    out.extend(msg(2, object));
    out.extend(bytes(3, b""));
    out.extend(bytes(4, b""));
    out
}

/// ObjectMeta as Go writes it: every string, the zero creationTimestamp, the labels.
fn meta(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let mut parts = vec![bytes(1, name.as_bytes()), bytes(2, b""), bytes(3, b""), num(7, 0), msg(8, &[])];
    parts.extend(labels.iter().map(|(k, v)| entry(11, k, v.as_bytes())));
    msg(1, &parts)
}

#[test]
fn a_deployment_as_kubectl_create_sends_it() {
    let container = msg(
        2,
        &[
            bytes(1, b"web"),
            bytes(2, b"nginx"),
            msg(6, &[bytes(1, b""), num(2, 0), num(3, 80), bytes(4, b"")]),
            msg(8, &[]),
            bytes(13, b""),
        ],
    );
    let spec = msg(
        2,
        &[
            num(1, 0),
            msg(2, &[entry(1, "app", b"web")]),
            msg(3, &[meta("", &[("app", "web")]), msg(2, &[container, bytes(3, b"")])]),
            msg(4, &[bytes(1, b"")]),
            num(5, 0),
        ],
    );
    let body = envelope("apps/v1", "Deployment", &[meta("web", &[("app", "web")]), spec, msg(3, &[])]);
    let decoded = decode(&body).expect("decode");
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {}}]}
                },
                "strategy": {}
            },
            "status": {}
        })
    );
}

#[test]
fn special_types_maps_bytes_and_inline_structs() {
    let service = envelope(
        "v1",
        "Service",
        &[
            meta("web", &[]),
            msg(
                2,
                &[
                    msg(
                        1,
                        &[
                            bytes(1, b"http"),
                            num(3, 80),
                            msg(4, &[num(1, 1), num(2, 0), bytes(3, b"web")]),
                            num(5, 0),
                        ],
                    ),
                    msg(1, &[num(3, 81), msg(4, &[num(1, 0), num(2, 8081), bytes(3, b"")])]),
                ],
            ),
        ],
    );
    let decoded = decode(&service).expect("service");
    assert_eq!(
        decoded["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": "web"}, {"port": 81, "targetPort": 8081}])
    );

    let config =
        envelope("v1", "ConfigMap", &[meta("c", &[]), entry(2, "a", b"1"), entry(3, "bin", &[0, 1, 2, 255])]);
    let decoded = decode(&config).expect("configmap");
    assert_eq!(decoded["data"], json!({"a": "1"}));
    assert_eq!(decoded["binaryData"], json!({"bin": "AAEC/w=="}));

    // Volume embeds VolumeSource, which embeds ConfigMapVolumeSource's LocalObjectReference.
    let pod = envelope(
        "v1",
        "Pod",
        &[
            meta("p", &[]),
            msg(2, &[msg(1, &[bytes(1, b"cfg"), msg(2, &[msg(19, &[msg(1, &[bytes(1, b"c")])])])])]),
        ],
    );
    let decoded = decode(&pod).expect("pod");
    assert_eq!(decoded["spec"]["volumes"], json!([{"name": "cfg", "configMap": {"name": "c"}}]));

    let lease = envelope(
        "coordination.k8s.io/v1",
        "Lease",
        &[meta("n", &[]), msg(2, &[msg(4, &[num(1, 1_700_000_000), num(2, 5_000)])])],
    );
    let decoded = decode(&lease).expect("lease");
    assert_eq!(decoded["spec"]["renewTime"], "2023-11-14T22:13:20.000005Z");
}

#[test]
fn bad_bodies_are_refused() {
    assert_eq!(decode(b"{}").expect_err("no magic").code, 400);
    let mut truncated = envelope("v1", "ConfigMap", &[meta("c", &[])]);
    truncated.truncate(truncated.len() - 6);
    assert_eq!(decode(&truncated).expect_err("truncated").code, 400);
    let unknown_field = envelope("v1", "ConfigMap", &[meta("c", &[]), bytes(99, b"x")]);
    let err = decode(&unknown_field).expect_err("unknown field");
    assert!(err.message.contains("field 99"), "{}", err.message);
    let unknown_kind = envelope("example.com/v1", "Widget", &[]);
    assert_eq!(decode(&unknown_kind).expect_err("unknown kind").code, 415);
    assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
}
