//! remsim-load against this workspace's remsim-server (the bankd
//! scenario: against its remsim-bankd alone), each scenario at a small
//! size through the library. Counts are asserted (every client served,
//! every mapped client its ATR, APDUs from every sender, every answer a
//! success status word), never timings; and the JSON report carries its
//! fields, the process figures of the component under test among them.

use std::path::PathBuf;
use std::time::Duration;

use remsim_load::{
    BankEndpoints, Report, Scenario, Settings, Sizes, Watched, listen_for_bankd, run, run_bankd,
};
use remsim_testing::{Proc, free_port, start_server, start_soft_bankd};
use serde_json::Value;

struct Server {
    _proc: Proc,
    dir: PathBuf,
    api_port: u16,
    settings: Settings,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server(tag: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("remsim-load-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let (rspro, api_port) = (free_port(), free_port());
    let proc = start_server(&dir.join("remsim.db"), rspro, api_port, &[]);
    let settings = Settings {
        server: format!("127.0.0.1:{rspro}"),
        api: format!("http://127.0.0.1:{api_port}"),
        timeout: Duration::from_secs(20),
        processes: vec![Watched {
            label: "server".into(),
            pid: proc.0.id(),
        }],
        ..Settings::default()
    };
    Server {
        _proc: proc,
        dir,
        api_port,
        settings,
    }
}

fn json(report: &Report) -> Value {
    serde_json::to_value(report).expect("the report as JSON")
}

fn assert_common_fields(v: &Value, scenario: &str, clients: u64) {
    assert_eq!(v["scenario"], scenario);
    assert_eq!(v["clients"], clients);
    assert_eq!(v["served"], clients, "{v}");
    assert_eq!(v["served_fraction"], 1.0);
    assert!(v["all_served_ms"].is_number(), "{v}");
    for key in ["count", "p50", "p90", "p99", "max"] {
        assert!(v["latency_us"][key].is_u64(), "latency_us.{key} in {v}");
    }
    assert!(v["window_ms"].is_number());
    let server = &v["processes"][0];
    assert_eq!(server["label"], "server");
    assert_process_fields(v, server);
}

fn assert_process_fields(v: &Value, process: &Value) {
    for key in [
        "pid",
        "cpu_ms",
        "peak_rss_kb",
        "rss_start_kb",
        "rss_end_kb",
        "threads",
        "context_switches",
    ] {
        assert!(process[key].is_number(), "{key} of {process} in {v}");
    }
    assert!(process["peak_rss_kb"].as_u64() > Some(0));
    assert!(process["rss_end_kb"].as_u64() > Some(0));
    assert!(process["peak_rss_kb"].as_u64() >= process["rss_end_kb"].as_u64());
    assert!(process["threads"].as_u64() >= Some(1));
    assert!(v["generator"]["cpu_ms"].is_number());
    assert!(v["generator"]["context_switches"].is_u64(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_serves_every_client() {
    let s = server("connect");
    let sizes = Sizes {
        clients: 50,
        ..Sizes::default()
    };
    let report = run(&s.settings, Scenario::Connect, &sizes)
        .await
        .expect("connect runs");
    assert_eq!(report.served, 50, "{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.latency_us.map(|l| l.count), Some(50));
    assert_common_fields(&json(&report), "connect", 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_connects_are_all_served() {
    let s = server("paced");
    let sizes = Sizes {
        clients: 20,
        rate: Some(500.0),
        ..Sizes::default()
    };
    let report = run(&s.settings, Scenario::Connect, &sizes)
        .await
        .expect("connect runs");
    assert_eq!(report.served, 20, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activate_gives_every_client_its_atr() {
    let s = server("activate");
    let sizes = Sizes {
        clients: 8,
        banks: 2,
        slots: 4,
        ..Sizes::default()
    };
    let report = run(&s.settings, Scenario::Activate, &sizes)
        .await
        .expect("activate runs");
    let a = report.activation.as_ref().expect("activation figures");
    assert_eq!(
        (a.maps, a.maps_created, a.maps_failed),
        (8, 8, 0),
        "{report}"
    );
    assert_eq!((a.configured, a.activated), (8, 8), "{report}");
    assert!(report.failures.is_empty(), "{report}");
    let v = json(&report);
    assert_common_fields(&v, "activate", 8);
    assert!(v["activation"]["all_configured_ms"].is_number(), "{v}");
    for key in [
        "banks",
        "slots",
        "maps",
        "maps_created",
        "maps_failed",
        "create_ms",
        "configured",
        "activated",
        "activated_fraction",
    ] {
        assert!(v["activation"][key].is_number(), "activation.{key} in {v}");
    }
    assert!(v["activation"]["all_activated_ms"].is_number(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apdus_flow_for_every_sender() {
    let s = server("apdu");
    let sizes = Sizes {
        clients: 4,
        banks: 1,
        slots: 4,
        seconds: Duration::from_secs(1),
        ..Sizes::default()
    };
    let report = run(&s.settings, Scenario::Apdu, &sizes)
        .await
        .expect("apdu runs");
    assert_eq!(
        report.activation.as_ref().map(|a| a.activated),
        Some(4),
        "{report}"
    );
    let apdu = report.apdu.as_ref().expect("apdu figures");
    assert_eq!(apdu.senders, 4);
    assert!(apdu.min_client_apdus > 0, "a client starved: {report}");
    assert!(apdu.apdus >= 4, "{report}");
    assert_eq!(apdu.bad_answers, 0, "{report}");
    let v = json(&report);
    assert_common_fields(&v, "apdu", 4);
    for key in [
        "apdus",
        "apdus_per_s",
        "min_client_apdus",
        "slowest_client_apdus_per_s",
        "bad_answers",
    ] {
        assert!(v["apdu"][key].is_number(), "apdu.{key} in {v}");
    }
    assert!(v["apdu"]["apdu_us"]["p99"].is_u64(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_stay_connected() {
    let s = server("idle");
    let sizes = Sizes {
        clients: 10,
        seconds: Duration::from_secs(1),
        ..Sizes::default()
    };
    let report = run(&s.settings, Scenario::Idle, &sizes)
        .await
        .expect("idle runs");
    let idle = report.idle.as_ref().expect("idle figures");
    assert_eq!(idle.lost, 0, "{report}");
    let v = json(&report);
    assert_common_fields(&v, "idle", 10);
    assert!(v["idle"]["held_s"].is_number());
}

/// Management calls while clients are held, over gRPC and over the REST
/// API: every round answered, every held client in the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_list_every_held_client() {
    let s = server("api");
    let sizes = Sizes {
        clients: 12,
        calls: 3,
        ..Sizes::default()
    };
    let report = run(&s.settings, Scenario::Api, &sizes)
        .await
        .expect("api runs");
    let api = report.api.as_ref().expect("api figures");
    assert_eq!(api.clients_listed, Some(12), "{report}");
    for summary in [
        &api.list_banks_us,
        &api.new_connection_list_banks_us,
        &api.list_clients_us,
    ] {
        assert_eq!(summary.map(|s| s.count), Some(3), "{report}");
    }
    assert_common_fields(&json(&report), "api", 12);

    let rest = Settings {
        rest: Some(format!("http://127.0.0.1:{}", s.api_port)),
        // Clients of the first run are gone; these come with other ids.
        client_id_base: 100,
        ..s.settings.clone()
    };
    let report = run(&rest, Scenario::Api, &sizes)
        .await
        .expect("api over REST runs");
    let api = report.api.as_ref().expect("api figures");
    assert_eq!(api.list_banks_us, None, "no kept connection over REST");
    assert_eq!(api.list_clients_us.map(|s| s.count), Some(3));
    // Twelve clients take more than an empty listing's bytes.
    assert!(api.listing_bytes > 12 * 20, "{report}");
}

/// The path taken against osmo-remsim-server: maps over the C REST API
/// (our server serves it too), bankds found by their source address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activate_over_rest_with_source_addresses() {
    let s = server("rest");
    let settings = Settings {
        rest: Some(format!("http://127.0.0.1:{}", s.api_port)),
        bank_endpoints: Some(BankEndpoints::SourceIp),
        // Away from the default 127.0.0.10, in case a run of the tool is going on.
        source_ip_base: "127.0.0.210".parse().expect("address"),
        ..s.settings.clone()
    };
    let sizes = Sizes {
        clients: 4,
        banks: 2,
        slots: 2,
        ..Sizes::default()
    };
    let report = run(&settings, Scenario::Activate, &sizes)
        .await
        .expect("activate over REST runs");
    let a = report.activation.as_ref().expect("activation figures");
    assert_eq!((a.maps_created, a.activated), (4, 4), "{report}");
}

/// Our bankd with soft SIMs measured alone: remsim-load is its server
/// (bound before the bankd starts, so that its first connect finds it) and
/// its two clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bankd_scenario_measures_our_soft_bankd() {
    let (listen_port, bankd_port) = (free_port(), free_port());
    let mut settings = Settings {
        listen: format!("127.0.0.1:{listen_port}"),
        bankd: format!("127.0.0.1:{bankd_port}"),
        timeout: Duration::from_secs(20),
        ..Settings::default()
    };
    let listener = listen_for_bankd(&settings).await.expect("listens");
    let bankd = start_soft_bankd(listen_port, 1, 4, bankd_port, &[]);
    settings.processes = vec![Watched {
        label: "bankd".into(),
        pid: bankd.0.id(),
    }];
    let sizes = Sizes {
        clients: 2,
        seconds: Duration::from_secs(1),
        ..Sizes::default()
    };
    let report = run_bankd(&settings, &sizes, listener)
        .await
        .expect("bankd runs");
    assert_eq!((report.clients, report.served), (2, 2), "{report}");
    let info = report.bankd.as_ref().expect("the bankd's figures");
    assert_eq!((info.bank_id, info.slots, info.first_slot), (1, 4, 0));
    let a = report.activation.as_ref().expect("activation figures");
    assert_eq!((a.maps_created, a.activated), (2, 2), "{report}");
    let apdu = report.apdu.as_ref().expect("apdu figures");
    assert_eq!(apdu.senders, 2);
    assert!(apdu.min_client_apdus > 0, "a client starved: {report}");
    assert_eq!(apdu.bad_answers, 0, "{report}");
    assert!(report.failures.is_empty(), "{report}");

    let v = json(&report);
    assert_eq!(v["scenario"], "bankd");
    assert_eq!(v["bankd"]["software"], "remsim-bankd");
    assert!(v["apdu"]["apdu_us"]["p99"].is_u64(), "{v}");
    let watched = &v["processes"][0];
    assert_eq!(watched["label"], "bankd");
    assert_process_fields(&v, watched);
    for key in ["cpu_us_per_apdu", "context_switches_per_apdu"] {
        assert!(watched[key].is_number(), "processes[0].{key} in {v}");
        assert!(v["generator"][key].is_number(), "generator.{key} in {v}");
    }
}

/// The same scenario through `run`, which binds by itself: a bankd that
/// connects later (ours retries) is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bankd_scenario_waits_for_a_later_bankd() {
    let (listen_port, bankd_port) = (free_port(), free_port());
    let settings = Settings {
        listen: format!("127.0.0.1:{listen_port}"),
        bankd: format!("127.0.0.1:{bankd_port}"),
        timeout: Duration::from_secs(20),
        first_slot: 3,
        ..Settings::default()
    };
    let sizes = Sizes {
        // Capped at the one slot left from slot 3.
        clients: 5,
        seconds: Duration::from_millis(300),
        ..Sizes::default()
    };
    // Started beside the scenario, maybe before it listens.
    let bankd =
        tokio::task::spawn_blocking(move || start_soft_bankd(listen_port, 2, 4, bankd_port, &[]));
    let report = run(&settings, Scenario::Bankd, &sizes).await;
    let _bankd = bankd.await.expect("the bankd starts");
    let report = report.expect("bankd runs");
    assert_eq!(report.clients, 1, "{report}");
    let apdu = report.apdu.as_ref().expect("apdu figures");
    assert!(apdu.min_client_apdus > 0, "{report}");
    assert_eq!(apdu.bad_answers, 0, "{report}");
}
