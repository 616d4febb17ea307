//! The driver's calls made in process, as pcscd makes them, against our
//! server and a soft bankd on 127.0.0.1: the card appears once mapped,
//! power and APDUs work, and closing the reader while an APDU waits for a
//! bankd that does not answer (stopped with SIGSTOP) ends that APDU at
//! once with an error, and the close itself returns (the C handler had no
//! timeouts, and freed what the waiting call still used).

use std::process::Command;
use std::time::Instant;

use ifd_remsim_client::abi::*;
use ifd_remsim_client::{
    IFDHCloseChannel, IFDHCreateChannelByName, IFDHICCPresence, IFDHPowerICC, IFDHTransmitToICC,
};
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use remsim_testing::{GUARD, free_port, start_server, start_soft_bankd, unread_at};
use simcard::card::default_atr;

/// Reader 3 of this "pcscd".
const LUN: Dword = 3 << 16;

fn transmit(apdu: &[u8]) -> (ResponseCode, Vec<u8>) {
    let mut rx = [0u8; 300];
    let mut rx_len: Dword = rx.len() as Dword;
    let pci = ScardIoHeader {
        protocol: 0,
        length: 16,
    };
    let rc = unsafe {
        IFDHTransmitToICC(
            LUN,
            pci,
            apdu.as_ptr(),
            apdu.len() as Dword,
            rx.as_mut_ptr(),
            &mut rx_len,
            std::ptr::null_mut(),
        )
    };
    (rc, rx[..rx_len as usize].to_vec())
}

#[test]
fn closing_during_an_apdu_ends_it() {
    let dir = std::env::temp_dir().join(format!("ifd-close-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (rspro, api_port, bankd_port) = (free_port(), free_port(), free_port());
    let _server = start_server(&dir.join("remsim.db"), rspro, api_port, &[]);
    let bankd = start_soft_bankd(rspro, 1, 1, bankd_port, &[]);
    let name = std::ffi::CString::new(format!("31:0:127.0.0.1:{rspro}")).expect("name");
    assert_eq!(
        unsafe { IFDHCreateChannelByName(LUN, name.as_ptr()) },
        IFD_SUCCESS
    );
    assert_eq!(IFDHICCPresence(LUN), IFD_ICC_NOT_PRESENT, "no map, no card");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut api = RemsimServiceClient::connect(format!("http://127.0.0.1:{api_port}"))
            .await
            .expect("the API");
        let endpoint = pb::SetBankEndpointRequest {
            bank_id: 1,
            endpoint: format!("127.0.0.1:{bankd_port}"),
        };
        api.set_bank_endpoint(endpoint).await.expect("endpoint");
        let req = pb::CreateSlotmapRequest::new((1, 0), (31, 0));
        api.create_slotmap(req).await.expect("map");
        remsim_testing::watch::until(&mut api, |m| {
            m.slotmaps()
                .iter()
                .any(|s| s.state == pb::SlotmapState::Active as i32)
        })
        .await;
    });
    // pcscd polls presence; so does this test, within the guard.
    let started = Instant::now();
    while IFDHICCPresence(LUN) != IFD_ICC_PRESENT {
        assert!(started.elapsed() < GUARD, "the card never appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut atr = [0u8; MAX_ATR_SIZE];
    let mut atr_len: Dword = 0;
    let rc = unsafe { IFDHPowerICC(LUN, IFD_POWER_UP, atr.as_mut_ptr(), &mut atr_len) };
    assert_eq!(rc, IFD_SUCCESS);
    assert_eq!(&atr[..atr_len as usize], &default_atr()[..]);
    assert_eq!(
        transmit(&[0xA0, 0xA4, 0, 0, 2, 0x3F, 0]),
        (IFD_SUCCESS, vec![0x9F, 0x16])
    );
    // Case 1 (4 bytes) gets its P3; a 3-byte command is refused here.
    assert_eq!(transmit(&[0xA0, 0xF2, 0, 0]).0, IFD_SUCCESS);
    assert_eq!(transmit(&[0xA0, 0xF2, 0]).0, IFD_COMMUNICATION_ERROR);

    let pid = bankd.0.id().to_string();
    let signal = |s: &str| {
        let ok = Command::new("kill").args([s, &pid]).status().expect("kill");
        assert!(ok.success(), "kill {s} {pid}");
    };
    signal("-STOP");
    let waiting = std::thread::spawn(|| transmit(&[0xA0, 0xA4, 0, 0, 2, 0x3F, 0]).0);
    let started = Instant::now();
    while !unread_at(bankd_port) {
        assert!(
            started.elapsed() < GUARD,
            "the APDU never reached the bankd"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(IFDHCloseChannel(LUN), IFD_SUCCESS);
    assert_eq!(waiting.join().expect("thread"), IFD_COMMUNICATION_ERROR);
    assert_eq!(IFDHICCPresence(LUN), IFD_NO_SUCH_DEVICE, "closed");
    signal("-CONT");
    let _ = std::fs::remove_dir_all(&dir);
}
