//! A fake SIMtrace2 card emulator behind the `Transport` trait, for tests:
//! it models what the host relies on (spec simtrace2-cardem.md §5): CONFIG
//! is echoed, TX_DATA is dropped unless SIM_SELECT chose remote, a PB_AND_RX
//! makes the "modem" send its command data as RX_DATA{FINAL}, and the bytes
//! the emulated card puts on the I/O line are recorded. Written from the
//! spec, not from the firmware.

use std::io;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use super::proto::*;
use super::transport::Transport;

#[derive(Default)]
struct State {
    enabled: bool,
    atr: Vec<u8>,
    line: Vec<u8>,
    /// What the modem sends once the card ACKs a case 3/4 header.
    modem_data: Option<Vec<u8>>,
    host: Vec<Vec<u8>>,
}

pub struct FakeCardem {
    state: Mutex<State>,
    bulk_tx: Mutex<Option<Sender<Vec<u8>>>>,
    bulk_rx: Mutex<Receiver<Vec<u8>>>,
    irq_tx: Mutex<Option<Sender<Vec<u8>>>>,
    irq_rx: Mutex<Receiver<Vec<u8>>>,
    /// Bumped at every host message: tests wait on it, not on the clock.
    received: tokio::sync::watch::Sender<()>,
}

fn msg(class: u8, msg_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![class, msg_type, 0, 0, 0, 0];
    out.extend_from_slice(&((HEADER_LEN + payload.len()) as u16).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn rx_data(flags: u32, data: &[u8]) -> Vec<u8> {
    let mut p = flags.to_le_bytes().to_vec();
    p.extend_from_slice(&(data.len() as u16).to_le_bytes());
    p.extend_from_slice(data);
    msg(CLASS_CARDEM, DO_CEMU_RX_DATA, &p)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeCardem {
    pub fn new() -> Self {
        let (bulk_tx, bulk_rx) = channel();
        let (irq_tx, irq_rx) = channel();
        FakeCardem {
            state: Mutex::new(State::default()),
            bulk_tx: Mutex::new(Some(bulk_tx)),
            bulk_rx: Mutex::new(bulk_rx),
            irq_tx: Mutex::new(Some(irq_tx)),
            irq_rx: Mutex::new(irq_rx),
            received: tokio::sync::watch::Sender::new(()),
        }
    }

    fn bulk(&self, bytes: Vec<u8>) {
        if let Some(tx) = lock(&self.bulk_tx).as_ref() {
            let _ = tx.send(bytes);
        }
    }

    /// The modem sends a TPDU header; `data` follows if the card ACKs it.
    pub fn modem_header(&self, header: &[u8], data: Option<&[u8]>) {
        lock(&self.state).modem_data = data.map(<[u8]>::to_vec);
        self.bulk(rx_data(FLAG_TPDU_HDR, header));
    }

    /// VCC / CLK / RST change: STATUS on the interrupt endpoint.
    pub fn status(&self, flags: u32) {
        let mut p = flags.to_le_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 1, 1, 10, 0x80, 0x25, 0, 0]);
        self.raw_irq(msg(CLASS_CARDEM, BD_CEMU_STATUS, &p));
    }

    /// Any bytes as one bulk IN transfer (broken or hostile firmware).
    pub fn raw_bulk(&self, bytes: Vec<u8>) {
        self.bulk(bytes);
    }

    /// Any bytes as one interrupt IN transfer.
    pub fn raw_irq(&self, bytes: Vec<u8>) {
        if let Some(tx) = lock(&self.irq_tx).as_ref() {
            let _ = tx.send(bytes);
        }
    }

    /// Waits until `done` holds, checking it at each host message the
    /// fake receives; fails the test after `wait`.
    pub async fn until(
        &self,
        what: &str,
        wait: std::time::Duration,
        mut done: impl FnMut() -> bool,
    ) {
        let mut received = self.received.subscribe();
        let waited = tokio::time::timeout(wait, async {
            while !done() {
                if received.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for {what}");
    }

    /// Takes the bytes the card sent on the I/O line so far.
    pub fn take_line(&self) -> Vec<u8> {
        std::mem::take(&mut lock(&self.state).line)
    }

    /// Every host message received, as bytes.
    pub fn host_messages(&self) -> Vec<Vec<u8>> {
        lock(&self.state).host.clone()
    }

    pub fn atr(&self) -> Vec<u8> {
        lock(&self.state).atr.clone()
    }

    /// Ends the reads: the frontend sees the device go away.
    pub fn unplug(&self) {
        lock(&self.bulk_tx).take();
        lock(&self.irq_tx).take();
    }
}

impl Transport for FakeCardem {
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() < HEADER_LEN || bytes.len() > MAX_MSG_LEN {
            return Err(io::Error::other(format!(
                "host message of {} bytes",
                bytes.len()
            )));
        }
        let (class, msg_type, p) = (bytes[0], bytes[1], &bytes[HEADER_LEN..]);
        let mut s = lock(&self.state);
        s.host.push(bytes.to_vec());
        self.received.send_replace(());
        match (class, msg_type) {
            (CLASS_CARDEM, BD_CEMU_CONFIG) => {
                let mut echo = p.to_vec();
                if let Some(pol) = echo.get_mut(5) {
                    *pol |= 0x02;
                }
                drop(s);
                self.bulk(msg(CLASS_CARDEM, BD_CEMU_CONFIG, &echo));
            }
            (CLASS_MODEM, DT_MODEM_SIM_SELECT) => s.enabled = p.first() == Some(&1),
            (CLASS_CARDEM, DT_CEMU_SET_ATR) => {
                let n = usize::from(p.first().copied().unwrap_or(0));
                if n <= MAX_ATR_LEN && p.len() > n {
                    s.atr = p[1..=n].to_vec();
                }
            }
            (CLASS_CARDEM, DT_CEMU_TX_DATA) if s.enabled && p.len() >= 6 => {
                let flags = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                let n = usize::from(u16::from_le_bytes([p[4], p[5]]));
                let data = p.get(6..6 + n).unwrap_or_default().to_vec();
                s.line.extend_from_slice(&data);
                if flags & FLAG_PB_AND_RX != 0 {
                    let from_modem = s.modem_data.take().unwrap_or_default();
                    drop(s);
                    self.bulk(rx_data(FLAG_FINAL, &from_modem));
                }
            }
            // TX_DATA while the slot is local (or short): dropped, as the firmware does.
            _ => {}
        }
        Ok(())
    }

    fn read_bulk(&self) -> io::Result<Vec<u8>> {
        lock(&self.bulk_rx)
            .recv()
            .map_err(|_| io::Error::other("unplugged"))
    }

    fn read_irq(&self) -> io::Result<Vec<u8>> {
        lock(&self.irq_rx)
            .recv()
            .map_err(|_| io::Error::other("unplugged"))
    }
}
