//! remsimctl against a real remsim-server on 127.0.0.1 (with a simulated
//! bankd and client): every command, its JSON, its exit codes, a CSV import
//! of 2,000 maps, and `decode --pcap` of a capture written here.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use remsim_testing::{GUARD, Peer, Proc, free_port, start_server};
use rspro::{ClientSlot, ComponentType, Identity, Msg, ResultCode, RsproPdu};
use serde_json::Value;

struct Setup {
    _server: Proc,
    rspro: SocketAddr,
    api: String,
    dir: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn setup(tag: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("remsimctl-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (rspro, api) = (free_port(), free_port());
    let server = start_server(&dir.join("remsim.db"), rspro, api, &[]);
    let s = Setup {
        _server: server,
        rspro: format!("127.0.0.1:{rspro}").parse().expect("addr"),
        api: format!("http://127.0.0.1:{api}"),
        dir,
    };
    // start_server returns once the server listens.
    s
}

fn ctl(s: &Setup, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_remsimctl"))
        .args(["--server", &s.api])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("remsimctl runs")
}

fn json(s: &Setup, args: &[&str]) -> Value {
    let out = ctl(s, &[args, &["-o", "json"]].concat());
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

/// A bankd that answers every map request with ok, in the background.
async fn bankd(s: &Setup) -> tokio::task::JoinHandle<()> {
    let mut p = Peer::connect(s.rspro).await;
    let id = Identity::new(
        ComponentType::RemsimBankd,
        "sim-bank",
        "remsim-bankd",
        "test",
    );
    p.send(&RsproPdu::connect_bank_req(id, 1, 8)).await;
    assert!(matches!(p.recv().await.msg, Msg::ConnectBankRes(_)));
    tokio::spawn(async move {
        while let Some(der) = p.next_rspro(Duration::from_secs(3600)).await {
            let Ok(rspro::Decoded {
                pdu: rspro::Pdu::Known(pdu),
                ..
            }) = rspro::decode(&der)
            else {
                continue;
            };
            let answer = match pdu.msg {
                Msg::CreateMappingReq(_) => RsproPdu::create_mapping_res(ResultCode::Ok),
                Msg::RemoveMappingReq(_) => RsproPdu::remove_mapping_res(ResultCode::Ok),
                _ => continue,
            };
            p.send(&answer).await;
        }
    })
}

#[tokio::test]
async fn every_management_command() {
    let s = setup("all").await;
    let _bank = bankd(&s).await;
    let mut client = Peer::connect(s.rspro).await;
    let id = Identity::new(
        ComponentType::RemsimClient,
        "sim-client",
        "remsim-client",
        "test",
    );
    client
        .send(&RsproPdu::connect_client_req(
            id,
            Some(ClientSlot::new(23, 0)),
        ))
        .await;
    client.recv().await;
    let _client = tokio::spawn(async move {
        while client.next_rspro(Duration::from_secs(3600)).await.is_some() {}
    });

    let banks = json(&s, &["bank", "list"]);
    assert_eq!(
        (
            banks[0]["bankId"].clone(),
            banks[0]["connected"].clone(),
            banks[0]["numberOfSlots"].clone()
        ),
        (1.into(), true.into(), 8.into())
    );
    assert_eq!(banks[0]["identity"]["name"], "sim-bank");
    let table = String::from_utf8(ctl(&s, &["bank", "show", "1"]).stdout).expect("utf-8");
    assert!(
        table.contains("BANK") && table.contains("sim-bank"),
        "{table}"
    );
    let b = json(&s, &["bank", "set-endpoint", "1", "192.0.2.1:9999"]);
    assert_eq!(b["endpointOverride"], "192.0.2.1:9999");

    let clients = json(&s, &["client", "list"]);
    assert_eq!(
        (clients[0]["clientId"].clone(), clients[0]["slotNr"].clone()),
        (23.into(), 0.into())
    );
    assert_eq!(
        json(&s, &["client", "show", "23:0"])["identity"]["name"],
        "sim-client"
    );

    let m = json(&s, &["slotmap", "create", "1:0", "23:0"]);
    assert_eq!(
        (
            m["id"].clone(),
            m["bank"]["bankId"].clone(),
            m["client"]["clientId"].clone()
        ),
        (65536.into(), 1.into(), 23.into())
    );
    // ACTIVE once the bankd confirmed it: waited for on the server's events.
    let mut api =
        remsim_api::v1::remsim_service_client::RemsimServiceClient::connect(s.api.clone())
            .await
            .expect("the API");
    remsim_testing::watch::until(&mut api, |m| {
        m.slotmaps().iter().any(|map| {
            map.client
                .is_some_and(|c| (c.client_id, c.slot_nr) == (23, 0))
                && map.state == remsim_api::v1::SlotmapState::Active as i32
        })
    })
    .await;
    assert_eq!(
        json(&s, &["slotmap", "show", "--client", "23:0"])["state"],
        "ACTIVE"
    );
    assert_eq!(
        json(&s, &["client", "show", "23:0"])["bankd"],
        "192.0.2.1:9999"
    );
    let table = String::from_utf8(ctl(&s, &["slotmap", "list"]).stdout).expect("utf-8");
    assert!(
        table.contains("1:0") && table.contains("23:0") && table.contains("ACTIVE"),
        "{table}"
    );
    let csv = s.dir.join("maps.csv");
    assert!(
        ctl(&s, &["slotmap", "export", csv.to_str().expect("path")])
            .status
            .success()
    );
    assert_eq!(
        std::fs::read_to_string(&csv).expect("csv"),
        "bank_id,bank_slot,client_id,client_slot\n1,0,23,0\n"
    );

    // watch: the snapshot, then live events, until killed.
    let mut watch = Proc(
        Command::new(env!("CARGO_BIN_EXE_remsimctl"))
            .args(["--server", &s.api, "watch", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("watch"),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut kinds = Vec::new();
    while !kinds.contains(&"snapshotEnd".to_string()) {
        let v: Value = serde_json::from_str(&rx.recv_timeout(GUARD).expect("event")).expect("json");
        kinds.push(v["event"].as_str().expect("kind").to_string());
    }
    assert!(
        kinds.contains(&"bank".into())
            && kinds.contains(&"client".into())
            && kinds.contains(&"slotmap".into()),
        "{kinds:?}"
    );
    let deleted = json(&s, &["slotmap", "delete", "--bank", "1:0"]);
    assert_eq!(deleted["id"], 65536);
    let live: Value =
        serde_json::from_str(&rx.recv_timeout(GUARD).expect("live event")).expect("json");
    assert_eq!(
        (live["event"].clone(), live["slotmap"]["state"].clone()),
        ("slotmapRemoved".into(), "DELETE_REQ".into())
    );
    drop(watch);

    json(&s, &["slotmap", "create", "1:1", "24:0"]);
    let out = ctl(&s, &["reset"]);
    assert_eq!(code(&out), 2, "reset without --yes and no terminal");
    assert_eq!(json(&s, &["reset", "--yes"])["deleted"], 1);
    let completions = String::from_utf8(ctl(&s, &["completions", "bash"]).stdout).expect("utf-8");
    assert!(completions.contains("remsimctl") && completions.contains("slotmap"));
}

#[tokio::test]
async fn errors_have_exit_codes_and_one_line() {
    let s = setup("errors").await;
    let one_line = |out: &Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!err.contains("Status {"), "no debug output: {err}");
        err
    };
    let out = ctl(&s, &["slotmap", "delete", "--bank", "1:5"]);
    assert_eq!(code(&out), 3);
    assert!(one_line(&out).contains("no slot map for bank slot 1:5"));
    let out = ctl(&s, &["slotmap", "create", "1-0", "23:0"]);
    assert_eq!(code(&out), 2, "bad syntax");
    json(&s, &["slotmap", "create", "1:0", "23:0"]);
    let out = ctl(&s, &["slotmap", "create", "1:0", "24:0"]);
    assert_eq!(code(&out), 4);
    assert!(one_line(&out).contains("already mapped"));
    let out = ctl(&s, &["bank", "set-endpoint", "1", "nowhere"]);
    assert_eq!(code(&out), 2);
    one_line(&out);
    let out = ctl(&s, &["bank", "show", "77"]);
    assert_eq!(code(&out), 3);
    // Server down: exit 5, quickly, in one line.
    let down = Command::new(env!("CARGO_BIN_EXE_remsimctl"))
        .args([
            "--server",
            &format!("http://127.0.0.1:{}", free_port()),
            "--connect-timeout",
            "2s",
            "slotmap",
            "list",
        ])
        .output()
        .expect("runs");
    assert_eq!(code(&down), 5);
    assert!(one_line(&down).contains("cannot reach the server"));
}

#[tokio::test]
async fn import_of_two_thousand_maps_is_idempotent() {
    let s = setup("import").await;
    let csv = s.dir.join("import.csv");
    let mut text = String::from("bank_id,bank_slot,client_id,client_slot\n");
    for i in 0..2000u32 {
        text.push_str(&format!(
            "{},{},{},{}\n",
            2 + i / 1000,
            i % 1000,
            i % 1000,
            i / 1000
        ));
    }
    std::fs::write(&csv, &text).expect("csv");
    let path = csv.to_str().expect("path");
    let summary = json(&s, &["slotmap", "import", path]);
    assert_eq!(
        (
            summary["created"].clone(),
            summary["unchanged"].clone(),
            summary["failed"].clone()
        ),
        (2000.into(), 0.into(), 0.into())
    );
    let again = json(&s, &["slotmap", "import", path]);
    assert_eq!(
        (again["created"].clone(), again["unchanged"].clone()),
        (0.into(), 2000.into())
    );
    assert_eq!(
        json(&s, &["slotmap", "list"]).as_array().map(Vec::len),
        Some(2000)
    );
    // A conflicting row is reported and makes the exit code 4.
    std::fs::write(&csv, "2,0,999,9\n").expect("csv");
    let out = ctl(&s, &["slotmap", "import", path]);
    assert_eq!(code(&out), 4);
    let bad = s.dir.join("bad.csv");
    std::fs::write(&bad, "1,2,3\n").expect("csv");
    let out = ctl(&s, &["slotmap", "import", bad.to_str().expect("path")]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
    // Malformed and endless files: a clear error, exit 2, nothing imported.
    for (text, expected) in [
        ("1,0,23,0\n1,x,24,0\n", "line 2"),
        ("1,0,23,0\n1,1,24,99999999999\n", "line 2"),
        ("\"1,0,23,0\n", "line"),
        ("1,0,23,0,9\n", "line 1"),
    ] {
        std::fs::write(&bad, text).expect("csv");
        let out = ctl(&s, &["slotmap", "import", bad.to_str().expect("path")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 2, "{text:?}: {err}");
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    let out = ctl(&s, &["slotmap", "import", "/dev/zero"]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than"));
    assert_eq!(
        json(&s, &["slotmap", "list"]).as_array().map(Vec::len),
        Some(2000),
        "nothing of it imported"
    );
    let _ = std::io::stdout().flush();
}
