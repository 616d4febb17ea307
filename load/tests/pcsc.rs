//! The pcsc scenario against a real pcscd: inside a private mount and
//! network namespace, pcscd with the vsmartcard vpcd driver and
//! `remsim-vcard` as the card in "Virtual PCD 00 00"; remsim-load times
//! SELECTs on that reader as a PC/SC application. Counts are asserted
//! (APDUs answered, bad answers), never timings; and a reader that does
//! not exist is a clear error. Needs root, pcscd, vsmartcard-vpcd and
//! iproute2 (`.ci/run` installs them).

use std::time::Duration;

use remsim_load::{Scenario, Settings, Sizes, Watched, run};
use remsim_testing::{pcscd, spawn_quiet, workspace_binary};
use simcard::card::default_atr;

const INNER: &str = "REMSIM_LOAD_PCSC_TEST_INNER";
const READER: &str = "Virtual PCD 00 00";

fn settings(reader: &str, apdu: &str, vcard_pid: u32) -> Settings {
    Settings {
        reader: reader.into(),
        apdu: remsim_load::client::parse_apdu(apdu).expect("apdu"),
        timeout: Duration::from_secs(10),
        processes: vec![Watched {
            label: "vcard".into(),
            pid: vcard_pid,
        }],
        ..Settings::default()
    }
}

fn sizes() -> Sizes {
    Sizes {
        clients: 1,
        seconds: Duration::from_millis(300),
        ..Sizes::default()
    }
}

fn inside_namespace() {
    let dir = std::env::temp_dir().join(format!("load-pcsc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let _pcscd = pcscd::start(&dir, "pcscd.log");
    let vcard = spawn_quiet(&workspace_binary("remsim-vcard"), &["-n", "1"]);
    let vcard_pid = vcard.0.id();
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // SELECT MF: the soft SIM answers 9F xx, a success.
    let report = rt
        .block_on(run(
            &settings(READER, "a0a40000023f00", vcard_pid),
            Scenario::Pcsc,
            &sizes(),
        ))
        .expect("the pcsc scenario runs");
    let apdu = report.apdu.as_ref().expect("apdu figures");
    assert!(apdu.apdus > 0, "{report}");
    assert_eq!(apdu.bad_answers, 0, "{report}");
    assert_eq!(apdu.apdu_us.map(|s| s.count), Some(apdu.apdus as usize));
    let v = serde_json::to_value(&report).expect("JSON");
    assert_eq!(v["scenario"], "pcsc");
    assert_eq!(v["pcsc"]["reader"], READER);
    assert_eq!(v["pcsc"]["atr"], hex::encode(default_atr()), "{v}");
    assert_eq!(v["pcsc"]["protocol"], "T=0", "{v}");
    // The card answered every APDU: it spent CPU on them.
    assert_eq!(v["processes"][0]["label"], "vcard");
    assert!(v["processes"][0]["cpu_us_per_apdu"].is_number(), "{v}");

    // A file that does not exist: every answer is 6A82, counted as bad.
    let report = rt
        .block_on(run(
            &settings(READER, "00a4000c02dead", vcard_pid),
            Scenario::Pcsc,
            &sizes(),
        ))
        .expect("the pcsc scenario runs");
    let apdu = report.apdu.as_ref().expect("apdu figures");
    assert!(apdu.apdus > 0, "{report}");
    assert_eq!(apdu.bad_answers, apdu.apdus, "{report}");

    // A reader pcscd does not have: an error that names it.
    let err = rt
        .block_on(run(
            &settings("No Such Reader 00 00", "a0a40000023f00", vcard_pid),
            Scenario::Pcsc,
            &sizes(),
        ))
        .expect_err("no such reader");
    assert!(
        format!("{err:#}").contains("\"No Such Reader 00 00\""),
        "{err:#}"
    );
    drop(vcard);
}

#[test]
fn pcsc_times_apdus_on_a_local_reader() {
    if pcscd::in_namespace("pcsc_times_apdus_on_a_local_reader", INNER) {
        inside_namespace();
    }
}
