//! The vsmartcard vpcd protocol from the card's side: vpcd (inside pcscd)
//! listens, the card connects, and every message in both directions is a
//! 2-byte big-endian length and a payload. A 1-byte payload is a control
//! code (power off/on, reset, get ATR), anything longer an APDU. The card
//! always answers GET ATR and APDUs, never with an empty payload.
//!
//! vpcd writes length and payload in two segments without TCP_NODELAY, so
//! the card re-arms TCP_QUICKACK after every read, the length's too:
//! otherwise each APDU waits for a delayed ACK (about 40 ms).

use std::io;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use simcard::SimCard;

/// vpcd's first slot (0x8C7B); slot n listens on `DEFAULT_PORT + n`.
pub const DEFAULT_PORT: u16 = 35963;

pub const CTRL_POWER_OFF: u8 = 0x00;
pub const CTRL_POWER_ON: u8 = 0x01;
pub const CTRL_RESET: u8 = 0x02;
pub const CTRL_GET_ATR: u8 = 0x04;

/// One message from vpcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    PowerOff,
    PowerOn,
    Reset,
    GetAtr,
    /// A control code vpcd may add one day: ignored, as vicc does.
    Unknown(u8),
    Apdu(&'a [u8]),
}

/// Parses a payload; an empty one is a protocol error.
pub fn parse_request(payload: &[u8]) -> io::Result<Request<'_>> {
    Ok(match payload {
        [] => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty vpcd message",
            ));
        }
        [CTRL_POWER_OFF] => Request::PowerOff,
        [CTRL_POWER_ON] => Request::PowerOn,
        [CTRL_RESET] => Request::Reset,
        [CTRL_GET_ATR] => Request::GetAtr,
        [other] => Request::Unknown(*other),
        apdu => Request::Apdu(apdu),
    })
}

/// A card that can sit behind vpcd.
pub trait VirtualCard {
    fn atr(&self) -> Vec<u8>;
    fn power_on(&mut self);
    fn power_off(&mut self);
    fn reset(&mut self);
    /// Answers a C-APDU with an R-APDU (at least SW1 SW2).
    fn apdu(&mut self, apdu: &[u8]) -> Vec<u8>;
}

impl VirtualCard for SimCard {
    fn atr(&self) -> Vec<u8> {
        SimCard::atr(self).to_vec()
    }
    fn power_on(&mut self) {
        SimCard::reset(self);
    }
    fn power_off(&mut self) {
        SimCard::reset(self);
    }
    fn reset(&mut self) {
        SimCard::reset(self);
    }
    fn apdu(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.transmit(apdu)
    }
}

/// The answer to one request, if it takes one.
pub fn handle<C: VirtualCard + ?Sized>(card: &mut C, request: Request) -> Option<Vec<u8>> {
    match request {
        Request::PowerOff => card.power_off(),
        Request::PowerOn => card.power_on(),
        Request::Reset => card.reset(),
        Request::Unknown(code) => debug!(code, "ignoring unknown vpcd control code"),
        Request::GetAtr => return Some(card.atr()),
        Request::Apdu(apdu) => return Some(card.apdu(apdu)),
    }
    None
}

/// Encodes one message: length, then payload, in one write.
pub fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|l| *l > 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "vpcd payload must be 1..65535 bytes",
            )
        })?;
    let mut out = Vec::with_capacity(2 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Reads one whole message (length, then payload; at most 64 KiB by the
/// format), calling `acked` after every read that returned data.
///
/// vpcd writes the length and the payload as two segments without
/// TCP_NODELAY, so the payload waits (Nagle) until the length is
/// acknowledged; `acked` is where the caller sends that ACK at once
/// ([`quickack`]) instead of after the 40 ms delayed-ACK timer.
pub async fn read_message<R: AsyncRead + Unpin>(
    stream: &mut R,
    mut acked: impl FnMut(&R),
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    read_acked(stream, &mut len, &mut acked).await?;
    let len = usize::from(u16::from_be_bytes(len));
    let mut payload = vec![0u8; len];
    read_acked(stream, &mut payload, &mut acked).await?;
    Ok(payload)
}

/// Fills `buf`, calling `acked` after each read.
async fn read_acked<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
    acked: &mut impl FnMut(&R),
) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        acked(stream);
        filled += n;
    }
    Ok(())
}

/// Sends pending ACKs now and keeps acknowledging at once until the kernel
/// falls back to delayed ACKs by itself, which is why it is re-armed after
/// every read.
pub fn quickack(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_tcp_quickack(true);
}

/// Serves one vpcd connection until vpcd closes it.
pub async fn serve_connection<C: VirtualCard + ?Sized>(
    mut stream: TcpStream,
    card: &mut C,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let payload = match read_message(&mut stream, quickack).await {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let request = parse_request(&payload)?;
        if let Some(answer) = handle(card, request) {
            stream.write_all(&frame(&answer)?).await?;
        }
    }
}

/// Back-off between connection attempts to vpcd.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

/// Presents `card` to the vpcd at `addr` for ever: connects, serves, and
/// reconnects with back-off whenever pcscd is absent or restarts.
pub async fn run<C: VirtualCard + ?Sized>(addr: &str, card: &mut C, retry: Retry) {
    let mut delay = retry.initial;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                info!(%addr, "card inserted into vpcd");
                delay = retry.initial;
                match serve_connection(stream, card).await {
                    Ok(()) => info!(%addr, "vpcd closed the connection"),
                    Err(e) => warn!(%addr, error = %e, "vpcd connection failed"),
                }
            }
            Err(e) => debug!(%addr, error = %e, "vpcd not reachable"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(retry.max);
    }
}
