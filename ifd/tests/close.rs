//! The driver's calls made in process, as pcscd makes them, against our
//! server on 127.0.0.1, with the test playing the bankd the server sends
//! the client to (a soft bankd registers bank 1; its endpoint points at the
//! test): the card appears once mapped, with pcscd's event wait waking on
//! it; power and APDUs work; and closing the reader while an APDU waits
//! for a bankd that keeps it unanswered ends that APDU at once with an
//! error, and the close itself returns (the C handler had no timeouts, and
//! freed what the waiting call still used).

use std::sync::mpsc;

use ifd_remsim_client::abi::*;
use ifd_remsim_client::{
    IFDHCloseChannel, IFDHCreateChannelByName, IFDHICCPresence, IFDHPowerICC, IFDHTransmitToICC,
    card_event,
};
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use remsim_testing::{GUARD, Peer, free_port, start_server, start_soft_bankd};
use rspro::{BankSlot, ClientSlot, ComponentType, Identity, Msg, ResultCode, RsproPdu};
use tokio::net::TcpListener;

/// Reader 3 of this "pcscd".
const LUN: Dword = 3 << 16;
const CLIENT: ClientSlot = ClientSlot {
    client_id: 31,
    slot_nr: 0,
};
const BANK: BankSlot = BankSlot {
    bank_id: 1,
    slot_nr: 0,
};
const ATR: [u8; 4] = [0x3B, 0x02, 0x14, 0x50];
/// The command the test's bankd keeps unanswered.
const HELD: [u8; 7] = [0xA0, 0xF2, 0, 0, 2, 0xEE, 0xEE];

/// The bankd the client is sent to: ConnectClientRes, the card's ATR, then
/// 9F 16 to every command but [`HELD`], whose arrival it reports instead.
async fn bankd(listener: TcpListener, held: mpsc::Sender<()>) {
    let (stream, _) = listener.accept().await.expect("the client connects");
    let mut client = Peer::from_stream(stream);
    let req = client.recv().await;
    assert!(matches!(req.msg, Msg::ConnectClientReq(_)), "{req:?}");
    let me = Identity::new(ComponentType::RemsimBankd, "test", "test-bankd", "1");
    client
        .send(&RsproPdu::connect_client_res(me, ResultCode::Ok))
        .await;
    client
        .send(&RsproPdu::set_atr_req(CLIENT, ATR.to_vec()))
        .await;
    loop {
        let pdu = client.recv().await;
        match pdu.msg {
            Msg::TpduModemToCard(t) if t.data.as_ref() == HELD => {
                let _ = held.send(());
            }
            Msg::TpduModemToCard(_) => {
                let answer = RsproPdu::tpdu_card_to_modem(BANK, CLIENT, vec![0x9F, 0x16]);
                client.send(&answer).await;
            }
            _ => {}
        }
    }
}

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
    let (rspro, api_port) = (free_port(), free_port());
    let _server = start_server(&dir.join("remsim.db"), rspro, api_port, &[]);
    let _bank_1 = start_soft_bankd(rspro, 1, 1, free_port(), &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("the test's bankd port");
    let endpoint = listener.local_addr().expect("address").to_string();
    let (held_tx, held) = mpsc::channel();
    rt.spawn(bankd(listener, held_tx));

    let name = std::ffi::CString::new(format!("31:0:127.0.0.1:{rspro}")).expect("name");
    assert_eq!(
        unsafe { IFDHCreateChannelByName(LUN, name.as_ptr()) },
        IFD_SUCCESS
    );
    assert_eq!(IFDHICCPresence(LUN), IFD_ICC_NOT_PRESENT, "no map, no card");
    rt.block_on(async {
        let mut api = RemsimServiceClient::connect(format!("http://127.0.0.1:{api_port}"))
            .await
            .expect("the API");
        let endpoint = pb::SetBankEndpointRequest {
            bank_id: 1,
            endpoint,
        };
        api.set_bank_endpoint(endpoint).await.expect("endpoint");
        let req = pb::CreateSlotmapRequest::new((1, 0), (31, 0));
        api.create_slotmap(req).await.expect("map");
    });
    // As pcscd's event thread: wait in the driver until the card comes
    // (the only change ahead), then ask.
    assert_eq!(card_event(LUN, GUARD.as_millis() as i32), IFD_SUCCESS);
    assert_eq!(IFDHICCPresence(LUN), IFD_ICC_PRESENT);
    let mut atr = [0u8; MAX_ATR_SIZE];
    let mut atr_len: Dword = 0;
    let rc = unsafe { IFDHPowerICC(LUN, IFD_POWER_UP, atr.as_mut_ptr(), &mut atr_len) };
    assert_eq!(rc, IFD_SUCCESS);
    assert_eq!(&atr[..atr_len as usize], &ATR[..]);
    assert_eq!(
        transmit(&[0xA0, 0xA4, 0, 0, 2, 0x3F, 0]),
        (IFD_SUCCESS, vec![0x9F, 0x16])
    );
    // Case 1 (4 bytes) gets its P3; a 3-byte command is refused here.
    assert_eq!(transmit(&[0xA0, 0xF2, 0, 0]).0, IFD_SUCCESS);
    assert_eq!(transmit(&[0xA0, 0xF2, 0]).0, IFD_COMMUNICATION_ERROR);

    let waiting = std::thread::spawn(|| transmit(&HELD).0);
    held.recv_timeout(GUARD)
        .expect("the held APDU reached the bankd");
    assert_eq!(IFDHCloseChannel(LUN), IFD_SUCCESS);
    assert_eq!(waiting.join().expect("thread"), IFD_COMMUNICATION_ERROR);
    assert_eq!(IFDHICCPresence(LUN), IFD_NO_SUCH_DEVICE, "closed");
    let _ = std::fs::remove_dir_all(&dir);
}
