//! GSMTAP tracing of APDUs and ATRs (spec §5.11): UDP datagrams to port
//! 4729 with a 16-byte GSMTAP header of type SIM, for Wireshark. The slot
//! filter checks the bank id too (the C bankd compares the slot only).

use std::io;
use std::net::{ToSocketAddrs, UdpSocket};

use rspro::BankSlot;
use tracing::debug;

pub const GSMTAP_PORT: u16 = 4729;
const GSMTAP_VERSION: u8 = 2;
const GSMTAP_TYPE_SIM: u8 = 0x04;
pub const GSMTAP_SIM_APDU: u8 = 0x00;
pub const GSMTAP_SIM_ATR: u8 = 0x01;

/// Which slots are traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    Slot(BankSlot),
}

pub struct Gsmtap {
    socket: UdpSocket,
    filter: Filter,
}

/// A GSMTAP SIM datagram: header (hdr_len in 32-bit words), then payload.
pub fn packet(sub_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[0] = GSMTAP_VERSION;
    p[1] = 4;
    p[2] = GSMTAP_TYPE_SIM;
    p[12] = sub_type;
    p.extend_from_slice(payload);
    p
}

impl Gsmtap {
    /// `target`: a host, or host:port (default port 4729).
    pub fn new(target: &str, filter: Filter) -> io::Result<Self> {
        let addr = match target.to_socket_addrs() {
            Ok(mut a) => a.next(),
            Err(_) => (target, GSMTAP_PORT).to_socket_addrs()?.next(),
        }
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("GSMTAP target {target:?} does not resolve"),
            )
        })?;
        let bind = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(addr)?;
        socket.set_nonblocking(true)?;
        Ok(Gsmtap { socket, filter })
    }

    fn wanted(&self, slot: BankSlot) -> bool {
        match self.filter {
            Filter::All => true,
            Filter::Slot(s) => s == slot,
        }
    }

    fn send(&self, slot: BankSlot, sub_type: u8, payload: &[u8]) {
        if self.wanted(slot)
            && let Err(e) = self.socket.send(&packet(sub_type, payload))
        {
            debug!(error = %e, "GSMTAP send failed");
        }
    }

    /// One APDU exchange: command, then the card's response.
    pub fn apdu(&self, slot: BankSlot, command: &[u8], response: &[u8]) {
        let mut payload = command.to_vec();
        payload.extend_from_slice(response);
        self.send(slot, GSMTAP_SIM_APDU, &payload);
    }

    pub fn atr(&self, slot: BankSlot, atr: &[u8]) {
        self.send(slot, GSMTAP_SIM_ATR, atr);
    }
}
