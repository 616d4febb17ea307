//! The API as grpcurl users see it: no .proto files, only server reflection
//! (grpcurl 1.8.6 speaks v1alpha), JSON in and out, and the health service.

mod common;

use std::process::Command;

use common::*;

fn run(args: &[&str]) -> String {
    let out = Command::new(grpcurl())
        .args(args)
        .output()
        .expect("grpcurl runs");
    assert!(
        out.status.success(),
        "grpcurl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls() {
    let dir = TempDir::new("grpcurl");
    let server = Server::start(&dir.path("db")).await;
    let addr = server.api.to_string();
    let services = run(&["-plaintext", &addr, "list"]);
    for s in [
        "remsim.v1.RemsimService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == s),
            "{s} missing from:\n{services}"
        );
    }
    let methods = run(&["-plaintext", &addr, "list", "remsim.v1.RemsimService"]);
    assert!(
        methods.contains("remsim.v1.RemsimService.CreateSlotmap")
            && methods.contains("remsim.v1.RemsimService.Watch"),
        "{methods}"
    );

    // The architecture guide's JSON, as the C REST API takes it.
    let json = r#"{"bank":{"bankId":1,"slotNr":0},"client":{"clientId":23,"slotNr":0}}"#;
    let created = run(&[
        "-plaintext",
        "-d",
        json,
        &addr,
        "remsim.v1.RemsimService/CreateSlotmap",
    ]);
    let v: serde_json::Value = serde_json::from_str(&created).expect("JSON reply");
    assert_eq!(v["id"], 65536);
    assert_eq!(v["bank"]["bankId"], 1);
    assert_eq!(v["client"]["clientId"], 23);
    assert_eq!(v["state"], "SLOTMAP_STATE_NEW");

    let listed = run(&["-plaintext", &addr, "remsim.v1.RemsimService/ListSlotmaps"]);
    let v: serde_json::Value = serde_json::from_str(&listed).expect("JSON reply");
    assert_eq!(v["slotmaps"].as_array().map(Vec::len), Some(1));

    let health = run(&[
        "-plaintext",
        "-d",
        r#"{"service":"remsim.v1.RemsimService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.contains("SERVING"), "{health}");

    // A refused request: the status and message reach the user.
    let out = Command::new(grpcurl())
        .args([
            "-plaintext",
            "-d",
            json,
            &addr,
            "remsim.v1.RemsimService/CreateSlotmap",
        ])
        .output()
        .expect("grpcurl runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AlreadyExists") && err.contains("already mapped"),
        "{err}"
    );
}
