//! The SIMtrace2 / sysmoQMOD / OWHW / ngff-cardem frontend: the modem talks
//! to a card emulator on USB, which this frontend drives. Layers: `proto`
//! (the USB messages), `apdu_case`, `engine` (sans-I/O logic), `transport`
//! (the trait, with `usb` the real one) and `run`, which connects them.

pub mod apdu_case;
pub mod engine;
#[cfg(test)]
mod fake;
pub mod proto;
pub mod transport;
pub mod usb;

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::frontend::{FrontendCmd, ModemEvent};
use engine::{Engine, Out};
use proto::{HostMsg, decode_device};
use transport::{Inbound, Transport};

fn send(out: &std::sync::mpsc::SyncSender<Vec<u8>>, msg: &HostMsg) {
    use std::sync::mpsc::TrySendError;
    match msg.encode() {
        Ok(bytes) => match out.try_send(bytes) {
            Ok(()) => {}
            // A closed queue shows up as a transport error on the inbound side.
            Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                warn!("USB OUT queue full: the card emulator takes no data; message dropped")
            }
        },
        Err(e) => warn!(error = %e, "message not sent"),
    }
}

/// Runs the frontend until the device or the core goes away.
pub async fn run(
    transport: Arc<dyn Transport>,
    presence_high: Option<bool>,
    mut commands: mpsc::Receiver<FrontendCmd>,
    events: mpsc::Sender<ModemEvent>,
) {
    let (mut inbound, outbound) = transport::spawn(transport);
    let mut engine = Engine::default();
    for msg in Engine::startup(presence_high) {
        send(&outbound, &msg);
    }
    loop {
        tokio::select! {
            received = inbound.recv() => {
                let bytes = match received {
                    Some(Ok(Inbound::Bulk(b) | Inbound::Irq(b))) => b,
                    Some(Err(e)) => {
                        error!(error = %e, "card emulator lost");
                        let _ = events.send(ModemEvent::Gone).await;
                        return;
                    }
                    None => return,
                };
                let msgs = match decode_device(&bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, data = %hex::encode(&bytes), "malformed USB message; ignored");
                        continue;
                    }
                };
                for msg in msgs {
                    for out in engine.on_device(msg) {
                        match out {
                            Out::ToDevice(m) => send(&outbound, &m),
                            Out::ToCore(e) => {
                                let _ = events.send(e).await;
                            }
                        }
                    }
                }
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                for msg in engine.on_frontend(cmd) {
                    send(&outbound, &msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::fake::FakeCardem;
    use super::*;
    use remsim_testing::{free_port, start_server, start_soft_bankd};
    use rspro::SlotPhysStatus;

    const WAIT: Duration = Duration::from_secs(10);

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '|'], "")).expect("hex")
    }

    async fn event(events: &mut mpsc::Receiver<ModemEvent>) -> ModemEvent {
        tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("event in time")
            .expect("frontend alive")
    }

    /// The frontend against the fake card emulator: startup, the
    /// OPERATIONAL sequence, status changes, case 4, 2 and 3 TPDUs with their
    /// procedure bytes, a reset that voids a pending answer, and unplugging.
    #[tokio::test]
    async fn frontend_drives_the_card_emulator() {
        let fake = Arc::new(FakeCardem::new());
        let ((cmd_tx, mut events), (cmd_rx, event_tx)) = crate::frontend::channels();
        let task = tokio::spawn(run(fake.clone(), Some(true), cmd_rx, event_tx));
        fake.until("CONFIG", WAIT, || !fake.host_messages().is_empty())
            .await;
        assert_eq!(
            fake.host_messages()[0],
            h("01 08 00 00 00 00 0e 00 | 01 00 00 00 00 03")
        );

        for cmd in [
            FrontendCmd::SimRemote(true),
            FrontendCmd::SetAtr(vec![0x3B, 0x00]),
            FrontendCmd::CardInsert(true),
            FrontendCmd::ModemReset,
        ] {
            cmd_tx.try_send(cmd).expect("frontend alive");
        }
        fake.until("the OPERATIONAL sequence", WAIT, || {
            fake.host_messages().len() == 5
        })
        .await;
        assert_eq!(
            fake.host_messages()[1..],
            [
                h("02 02 00 00 00 00 09 00 | 01"),
                h("01 02 00 00 00 00 0b 00 | 02 3b 00"),
                h("01 05 00 00 00 00 09 00 | 01"),
                h("02 01 00 00 00 00 0b 00 | 02 2c 01"),
            ]
        );
        assert_eq!(fake.atr(), vec![0x3B, 0x00]);

        fake.status(STATUS_VCC_PRESENT_FLAGS);
        assert_eq!(
            event(&mut events).await,
            ModemEvent::Status(SlotPhysStatus {
                reset_active: false,
                vcc_present: Some(true),
                clk_active: Some(true),
                card_present: None
            })
        );

        // Case 4: SELECT; the card ACKs with INS, the modem sends 3F 00.
        fake.modem_header(&h("a0a4000002"), Some(&h("3f00")));
        assert_eq!(
            event(&mut events).await,
            ModemEvent::Tpdu(h("a0a40000023f00"))
        );
        cmd_tx
            .try_send(FrontendCmd::Tpdu(h("9f17")))
            .expect("alive");
        fake.until("the SW", WAIT, || fake.host_messages().len() == 7)
            .await;
        assert_eq!(fake.take_line(), h("a4 9f17"));

        // Case 2: GET RESPONSE; INS, the data, the SW.
        fake.modem_header(&h("a0c0000004"), None);
        assert_eq!(event(&mut events).await, ModemEvent::Tpdu(h("a0c0000004")));
        cmd_tx
            .try_send(FrontendCmd::Tpdu(h("0102030490 00")))
            .expect("alive");
        fake.until("the data and the SW", WAIT, || {
            fake.host_messages().len() == 9
        })
        .await;
        assert_eq!(fake.take_line(), h("c0 01020304 9000"));

        // Case 3: UPDATE BINARY with two data bytes.
        fake.modem_header(&h("00d6000002"), Some(&h("1122")));
        assert_eq!(
            event(&mut events).await,
            ModemEvent::Tpdu(h("00d60000021122"))
        );
        cmd_tx
            .try_send(FrontendCmd::Tpdu(h("9000")))
            .expect("alive");
        fake.until("the SW", WAIT, || fake.host_messages().len() == 11)
            .await;
        assert_eq!(fake.take_line(), h("d6 9000"));

        // A reset while the bank works on a READ BINARY: its answer is void.
        fake.modem_header(&h("00b0000002"), None);
        assert_eq!(event(&mut events).await, ModemEvent::Tpdu(h("00b0000002")));
        fake.status(STATUS_VCC_PRESENT_FLAGS | STATUS_RESET_ACTIVE);
        assert!(matches!(event(&mut events).await, ModemEvent::Status(s) if s.reset_active));
        cmd_tx
            .try_send(FrontendCmd::Tpdu(h("aabb9000")))
            .expect("alive");
        // Leaving OPERATIONAL: card out, SIM local; later TX_DATA is dropped by the device.
        cmd_tx
            .try_send(FrontendCmd::CardInsert(false))
            .expect("alive");
        cmd_tx
            .try_send(FrontendCmd::SimRemote(false))
            .expect("alive");
        fake.until("card removal", WAIT, || fake.host_messages().len() == 13)
            .await;
        assert_eq!(
            fake.host_messages()[11..],
            [
                h("01 05 00 00 00 00 09 00 | 00"),
                h("02 02 00 00 00 00 09 00 | 00")
            ]
        );
        assert!(
            fake.take_line().is_empty(),
            "the stale answer never reached the line"
        );

        fake.unplug();
        assert_eq!(event(&mut events).await, ModemEvent::Gone);
        tokio::time::timeout(WAIT, task)
            .await
            .expect("frontend ends")
            .expect("no panic");
    }

    /// Broken or hostile transfers from the card emulator (short, cut,
    /// lengths that lie, unknown classes, 64 kB of junk, a STATUS too
    /// short) are dropped without an event or an answer; the emulator
    /// goes on working: the next status and TPDU are served.
    #[tokio::test]
    async fn hostile_usb_transfers_are_dropped_and_the_emulator_keeps_working() {
        let fake = Arc::new(FakeCardem::new());
        let ((cmd_tx, mut events), (cmd_rx, event_tx)) = crate::frontend::channels();
        let _task = tokio::spawn(run(fake.clone(), Some(true), cmd_rx, event_tx));
        for cmd in [
            FrontendCmd::SimRemote(true),
            FrontendCmd::SetAtr(vec![0x3B, 0x00]),
            FrontendCmd::CardInsert(true),
        ] {
            cmd_tx.try_send(cmd).expect("frontend alive");
        }
        fake.until("the OPERATIONAL sequence", WAIT, || {
            fake.host_messages().len() == 4
        })
        .await;
        for junk in [
            "",
            "01",
            "01 06 00 00",
            "01 06 00 00 00 00 04 00",
            "01 06 00 00 00 00 40 00 | 00",
            "01 06 00 00 00 00 ff ff | 01 00 00 00 05 00 00 a4",
            "01 06 00 00 00 00 0e 00 | 01 00 00 00 09 00",
            "01 06 00 00 00 00 0e 00 | 01 00 00 00 ff ff",
            "7f 01 00 00 00 00 08 00",
            "01 7f 00 00 00 00 08 00",
        ] {
            fake.raw_bulk(h(junk));
            fake.raw_irq(h(junk));
        }
        fake.raw_bulk(vec![0xff; 64 * 1024]);
        fake.raw_irq(h("01 04 00 00 00 00 0a 00 | 13 00"));
        // In order: had any of it made an event, this would not be first.
        fake.status(STATUS_VCC_PRESENT_FLAGS);
        assert!(matches!(
            event(&mut events).await,
            ModemEvent::Status(s) if s.vcc_present == Some(true) && !s.reset_active
        ));
        fake.modem_header(&h("a0a4000002"), Some(&h("3f00")));
        assert_eq!(
            event(&mut events).await,
            ModemEvent::Tpdu(h("a0a40000023f00"))
        );
        cmd_tx
            .try_send(FrontendCmd::Tpdu(h("9f17")))
            .expect("alive");
        fake.until("the SW", WAIT, || {
            fake.host_messages()
                .iter()
                .any(|m| m.ends_with(&[0x9F, 0x17]))
        })
        .await;
        assert_eq!(fake.take_line(), h("a4 9f17"));
    }

    const STATUS_VCC_PRESENT_FLAGS: u32 = STATUS_VCC_PRESENT | STATUS_CLK_ACTIVE;
    use super::proto::{STATUS_CLK_ACTIVE, STATUS_RESET_ACTIVE, STATUS_VCC_PRESENT};

    /// The whole client (main state machine, links, this frontend) with the
    /// fake card emulator, against our server and bankd (soft SIMs): the
    /// modem reads the remote card with T=0 TPDUs.
    #[tokio::test]
    async fn modem_reads_a_remote_card_through_the_emulator() {
        use remsim_api::v1 as pb;
        let dir = std::env::temp_dir().join(format!("st2-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (rspro, api_port, bankd_port) = (free_port(), free_port(), free_port());
        let _server = start_server(&dir.join("remsim.db"), rspro, api_port, &[]);
        let _bankd = start_soft_bankd(rspro, 1, 2, bankd_port, &[]);
        // start_server returns once the server listens.
        let mut api = remsim_api::v1::remsim_service_client::RemsimServiceClient::connect(format!(
            "http://127.0.0.1:{api_port}"
        ))
        .await
        .expect("the API of a listening server");
        api.set_bank_endpoint(pb::SetBankEndpointRequest {
            bank_id: 1,
            endpoint: format!("127.0.0.1:{bankd_port}"),
        })
        .await
        .expect("endpoint");

        let fake = Arc::new(FakeCardem::new());
        let ((cmd_tx, event_rx), (cmd_rx, event_tx)) = crate::frontend::channels();
        tokio::spawn(run(fake.clone(), None, cmd_rx, event_tx));
        let config = crate::driver::Config {
            server: format!("127.0.0.1:{rspro}"),
            client: rspro::ClientSlot::new(23, 0),
            identity: rspro::Identity::new(
                rspro::ComponentType::RemsimClient,
                "st2-test",
                "remsim-client",
                "test",
            ),
            atr: vec![0x3B, 0x00],
            ignore_bank_atr: false,
            event_script: None,
            keepalive: rspro::keepalive::KeepaliveConfig::default(),
            usb: None,
            server_tls: None,
            bankd_tls: None,
        };
        tokio::spawn(crate::driver::run(config, cmd_tx, event_rx));
        let map = pb::CreateSlotmapRequest::new((1, 0), (23, 0));
        api.create_slotmap(map).await.expect("map");

        // The card emulator gets the bank card's ATR once OPERATIONAL.
        let card_atr = simcard::card::default_atr();
        fake.until("the bank card's ATR", WAIT, || fake.atr() == card_atr)
            .await;
        fake.status(STATUS_VCC_PRESENT_FLAGS);
        // GSM SELECT MF: INS, then 9F 16 after the modem sent 3F 00.
        fake.modem_header(&h("a0a4000002"), Some(&h("3f00")));
        fake.until("SELECT's SW", WAIT, || {
            fake.host_messages()
                .iter()
                .any(|m| m.ends_with(&[0x9F, 0x16]))
        })
        .await;
        assert_eq!(fake.take_line(), h("a4 9f16"));
        // GET RESPONSE (case 2): INS, 22 bytes, 90 00.
        fake.modem_header(&h("a0c0000016"), None);
        fake.until("GET RESPONSE", WAIT, || {
            fake.host_messages()
                .iter()
                .filter(|m| m.ends_with(&[0x90, 0x00]))
                .count()
                == 1
        })
        .await;
        let line = fake.take_line();
        assert_eq!(
            (line.len(), line[0], &line[5..7], &line[23..]),
            (25, 0xC0, &[0x3F, 0x00][..], &[0x90, 0x00][..])
        );
        // EF_ICCID over UICC commands.
        fake.modem_header(&h("00a4000c02"), Some(&h("2fe2")));
        fake.until("SELECT EF_ICCID", WAIT, || {
            fake.host_messages()
                .iter()
                .filter(|m| m.ends_with(&[0x90, 0x00]))
                .count()
                == 2
        })
        .await;
        assert_eq!(fake.take_line(), h("a4 9000"));
        fake.modem_header(&h("00b000000a"), None);
        fake.until("READ BINARY", WAIT, || {
            fake.host_messages()
                .iter()
                .filter(|m| m.ends_with(&[0x90, 0x00]))
                .count()
                == 3
        })
        .await;
        let mut expected = vec![0xB0];
        expected.extend(simcard::fs::swapped_bcd(
            &simcard::CardProfile::generated(1024).iccid,
            10,
        ));
        expected.extend([0x90, 0x00]);
        assert_eq!(fake.take_line(), expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_usb_opening_is_an_error_not_a_panic() {
        let err = usb::UsbTransport::open(&usb::Selector::default())
            .err()
            .expect("no SIMtrace2 device here");
        assert!(!err.to_string().is_empty());
    }
}
