//! The deployment files are valid before anyone deploys them: the
//! Kubernetes manifests against the schemas of Kubernetes 1.37
//! (kubernetes-validate, offline) with what the server needs (one replica,
//! gRPC health probes on 9997, a grace period above the 5 s shutdown bound),
//! the kustomization listing every manifest, the Containerfile lint-free
//! (hadolint), and the systemd units accepted by systemd-analyze with the
//! real binaries in place, at a low exposure level.
//!
//! The Python tools come from `scripts/setup test` (pinned, into .venv).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use remsim_testing::workspace_binary;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository")
}

/// A tool of .venv, or a failure saying how to get it.
fn venv_tool(name: &str) -> Command {
    let path = repo().join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup test",
        path.display()
    );
    Command::new(path)
}

fn run(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn kubernetes_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The manifests of the base: every YAML file but the kustomization.
fn manifests() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(kubernetes_dir())
        .expect("deploy/kubernetes")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    names.sort();
    names
}

/// The list items under a top-level key of a simple YAML file.
fn yaml_list(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| *l != format!("{key}:"))
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.is_empty())
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(kubernetes_dir().join("kustomization.yaml"))
        .expect("kustomization.yaml");
    let mut listed = yaml_list(&text, "resources");
    listed.sort();
    assert_eq!(listed, manifests());
    for env_file in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|f| f.ends_with(".env"))
    {
        assert!(
            kubernetes_dir().join(env_file).is_file(),
            "{env_file} is generated from but missing"
        );
    }
}

#[test]
fn manifests_validate_against_kubernetes_1_37() {
    let mut cmd = venv_tool("kubernetes-validate");
    cmd.current_dir(kubernetes_dir())
        .args(["--strict", "-k", "1.37.0"])
        .args(manifests());
    run(cmd);
    // The validator is not a formality: a misspelt field fails.
    let bad = std::env::temp_dir().join(format!("remsim-bad-manifest-{}.yaml", std::process::id()));
    let statefulset =
        std::fs::read_to_string(kubernetes_dir().join("statefulset.yaml")).expect("statefulset");
    std::fs::write(
        &bad,
        statefulset.replace("readinessProbe:", "readinesProbe:"),
    )
    .expect("write");
    let out = venv_tool("kubernetes-validate")
        .args(["--strict", "-k", "1.37.0"])
        .arg(&bad)
        .output()
        .expect("runs");
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success(), "a misspelt field passed");
}

/// The value after `key:` on the first line that has it.
fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")).map(str::trim))
}

#[test]
fn the_server_runs_as_one_probed_restricted_replica() {
    let text =
        std::fs::read_to_string(kubernetes_dir().join("statefulset.yaml")).expect("statefulset");
    assert_eq!(value_of(&text, "kind"), Some("StatefulSet"));
    assert_eq!(value_of(&text, "replicas"), Some("1"));
    let grace: u32 = value_of(&text, "terminationGracePeriodSeconds")
        .and_then(|v| v.parse().ok())
        .expect("a grace period");
    assert!(
        grace > 5,
        "the server's shutdown bound is 5 s; grace {grace}"
    );
    for probe in ["readinessProbe:", "livenessProbe:"] {
        let after = &text[text.find(probe).unwrap_or_else(|| panic!("{probe}"))..];
        let lines: Vec<&str> = after.lines().take(3).map(str::trim).collect();
        assert_eq!(
            lines[1..],
            ["grpc:", "port: 9997"],
            "{probe} on grpc.health.v1"
        );
    }
    for setting in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "type: RuntimeDefault",
        "volumeClaimTemplates:",
    ] {
        assert!(text.contains(setting), "{setting}");
    }
    let env =
        std::fs::read_to_string(kubernetes_dir().join("remsim-server.env")).expect("env file");
    assert!(
        env.lines().any(|l| l.trim() == "REMSIM_LOG_FORMAT=json"),
        "JSON logs"
    );
    let service = std::fs::read_to_string(kubernetes_dir().join("service.yaml")).expect("service");
    for port in ["port: 9998", "port: 9997"] {
        assert!(service.contains(port), "the Service exposes {port}");
    }
}

#[test]
fn containerfile_lints_clean() {
    let mut cmd = venv_tool("hadolint");
    cmd.arg(repo().join("deploy/container/Containerfile"));
    let out = run(cmd);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "hadolint warnings"
    );
    let text = std::fs::read_to_string(repo().join("deploy/container/Containerfile"))
        .expect("Containerfile");
    assert!(
        text.lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root")),
        "a non-root user"
    );
    assert!(
        text.lines().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
}

/// A root for systemd-analyze: the system's units, ours, our binaries in
/// /usr/local/bin and the example default files in /etc/default.
fn systemd_root() -> PathBuf {
    let root = std::env::temp_dir().join(format!("remsim-systemd-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for dir in [
        "usr/lib/systemd",
        "usr/local/bin",
        "etc/systemd/system",
        "etc/default",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    let status = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .expect("cp");
    assert!(status.success());
    for bin in ["remsim-server", "remsim-bankd", "remsim-client"] {
        std::fs::copy(workspace_binary(bin), root.join("usr/local/bin").join(bin)).expect("binary");
    }
    let units = repo().join("deploy/systemd");
    for unit in [
        "remsim-server.service",
        "remsim-bankd.service",
        "remsim-client@.service",
    ] {
        std::fs::copy(units.join(unit), root.join("etc/systemd/system").join(unit)).expect("unit");
    }
    for (file, target) in [
        ("remsim-server", "remsim-server"),
        ("remsim-bankd", "remsim-bankd"),
        ("remsim-client-example", "remsim-client-23-0"),
    ] {
        std::fs::copy(
            units.join("default").join(file),
            root.join("etc/default").join(target),
        )
        .expect("default file");
    }
    root
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let root = systemd_root();
    let units = [
        "remsim-server.service",
        "remsim-bankd.service",
        "remsim-client@23-0.service",
    ];
    let mut verify = Command::new("systemd-analyze");
    verify
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units);
    let out = run(verify);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "systemd-analyze verify complains"
    );
    for unit in units {
        let mut security = Command::new("systemd-analyze");
        security
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--root={}", root.display()))
            .arg(unit);
        let out = run(security);
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f32 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{text}"));
        assert!(
            level <= 2.0,
            "{unit}: exposure {level} (systemd-analyze security)"
        );
    }
    // Each default file is read by its unit.
    for (unit, file) in [
        ("remsim-server.service", "/etc/default/remsim-server"),
        ("remsim-bankd.service", "/etc/default/remsim-bankd"),
    ] {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).expect("unit");
        assert!(
            text.contains(&format!("EnvironmentFile=-{file}"))
                || text.contains(&format!("EnvironmentFile={file}")),
            "{unit} reads {file}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
