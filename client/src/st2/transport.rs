//! The USB side of the SIMtrace2 frontend behind a trait, so that tests run
//! the whole frontend against a fake card emulator instead of hardware.
//! Blocking reads run on threads of their own (a rusb read that times out
//! loses data, spec §1.5), feeding one channel.

use std::io;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

/// One IN transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Bulk(Vec<u8>),
    Irq(Vec<u8>),
}

/// A cardem interface: one bulk OUT, one bulk IN and one interrupt IN
/// endpoint. Reads block until a transfer completes.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msg: &[u8]) -> io::Result<()>;
    fn read_bulk(&self) -> io::Result<Vec<u8>>;
    fn read_irq(&self) -> io::Result<Vec<u8>>;
}

/// A blocking read and how its result is tagged.
type Reader = (
    fn(&dyn Transport) -> io::Result<Vec<u8>>,
    fn(Vec<u8>) -> Inbound,
);

/// Transfers that may wait in each direction; a full inbound queue pauses
/// the reads (they block without a timeout, so nothing is lost).
const QUEUE: usize = 64;

/// Starts the reader and writer threads: returns the inbound stream (ending
/// with the first error) and the outbound queue.
pub fn spawn(
    transport: Arc<dyn Transport>,
) -> (
    mpsc::Receiver<io::Result<Inbound>>,
    std_mpsc::SyncSender<Vec<u8>>,
) {
    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    let readers: [Reader; 2] = [
        (|t| t.read_bulk(), Inbound::Bulk),
        (|t| t.read_irq(), Inbound::Irq),
    ];
    for (read, wrap) in readers {
        let t = transport.clone();
        let tx = in_tx.clone();
        std::thread::spawn(move || {
            loop {
                let result = read(t.as_ref()).map(wrap);
                let failed = result.is_err();
                if tx.blocking_send(result).is_err() || failed {
                    return;
                }
            }
        });
    }
    let (out_tx, out_rx) = std_mpsc::sync_channel::<Vec<u8>>(QUEUE);
    std::thread::spawn(move || {
        while let Ok(msg) = out_rx.recv() {
            if let Err(e) = transport.send(&msg) {
                let _ = in_tx.blocking_send(Err(e));
                return;
            }
        }
    });
    (in_rx, out_tx)
}
