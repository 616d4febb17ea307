//! A modem played by the demo through `remsim-client shell`: C-APDUs go in
//! as hex lines on the client's stdin, `SET_ATR: ` and `R-APDU: ` lines
//! come back on its stdout. Everything it reads crosses the real RSPRO path
//! (client → bankd → soft SIM over TCP). Every wait is bounded.

use std::time::Duration;

use simcard::CardProfile;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};

use crate::usim::{self, AuthOutcome};

/// The ATR the client presents while it has no card (`-a`).
pub const NO_CARD_ATR: &str = "3b 00";
/// How long one APDU may take to come back.
const APDU_BOUND: Duration = Duration::from_secs(10);
/// Lines kept from the client before the demo reads them.
const LINE_QUEUE: usize = 64;

/// What a modem read from its card.
#[derive(Debug, Clone)]
pub struct Reading {
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    /// "ok", or what went wrong.
    pub auth: String,
}

impl Reading {
    pub fn failed(why: String) -> Reading {
        Reading {
            iccid: None,
            imsi: None,
            auth: why,
        }
    }

    pub fn ok(&self) -> bool {
        self.auth == "ok" && self.iccid.is_some() && self.imsi.is_some()
    }
}

/// The modem side of one `remsim-client shell`.
pub struct Modem {
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Modem {
    pub fn new(stdin: ChildStdin, stdout: ChildStdout) -> Modem {
        let (tx, lines) = mpsc::channel(LINE_QUEUE);
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        Modem { stdin, lines }
    }

    /// The client's next line, or a message naming what was awaited and
    /// for how long (`bound` as the caller set it).
    async fn line_until(
        &mut self,
        deadline: Instant,
        bound: Duration,
        waiting_for: &str,
    ) -> Result<String, String> {
        match timeout_at(deadline, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(format!("the client ended while waiting for {waiting_for}")),
            Err(_) => Err(format!("no {waiting_for} within {} s", bound.as_secs())),
        }
    }

    /// Waits until the client presents a bank card's ATR. With `after_loss`
    /// the card in place is first seen to go (the no-card ATR), so that a
    /// remapped modem is known to hold its new card.
    pub async fn wait_for_card(
        &mut self,
        bound: Duration,
        after_loss: bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + bound;
        let mut lost = !after_loss;
        loop {
            let line = self.line_until(deadline, bound, "card (SET_ATR)").await?;
            if let Some(atr) = line.strip_prefix("SET_ATR: ") {
                let atr = atr.trim();
                if atr == NO_CARD_ATR {
                    lost = true;
                } else if lost {
                    return Ok(atr.to_string());
                }
            }
        }
    }

    /// From now on the client's lines are read and dropped: a client whose
    /// output nobody reads would block once its pipe is full.
    pub fn discard_output(&mut self) {
        let (_, closed) = mpsc::channel(1);
        let mut lines = std::mem::replace(&mut self.lines, closed);
        tokio::spawn(async move { while lines.recv().await.is_some() {} });
    }

    /// Sends one TPDU and returns the R-APDU.
    async fn tpdu(&mut self, cmd: &[u8]) -> Result<Vec<u8>, String> {
        let line = format!("{}\n", hex::encode(cmd));
        timeout(APDU_BOUND, self.stdin.write_all(line.as_bytes()))
            .await
            .map_err(|_| "the client does not read its input".to_string())?
            .map_err(|e| format!("the client's input: {e}"))?;
        let deadline = Instant::now() + APDU_BOUND;
        loop {
            let line = self.line_until(deadline, APDU_BOUND, "R-APDU").await?;
            if let Some(rapdu) = line.strip_prefix("R-APDU: ") {
                return hex::decode(rapdu.replace(' ', ""))
                    .map_err(|_| format!("unreadable R-APDU {rapdu:?}"));
            }
            if line.starts_with("SET_ATR: ") {
                return Err("the card changed during a command".into());
            }
        }
    }

    /// One command with the T=0 follow-ups it needs.
    pub async fn transceive(&mut self, cmd: &[u8]) -> Result<Vec<u8>, String> {
        let mut cmd = cmd.to_vec();
        // 61xx and 6Cxx come at most once each per command.
        for _ in 0..3 {
            let rapdu = self.tpdu(&cmd).await?;
            match usim::follow_up(&cmd, &rapdu) {
                Some(next) => cmd = next,
                None => return Ok(rapdu),
            }
        }
        Err(format!(
            "the card keeps asking for follow-ups to {}",
            hex::encode(&cmd)
        ))
    }

    async fn select(&mut self, what: &str, cmd: &[u8]) -> Result<(), String> {
        let rapdu = self.transceive(cmd).await?;
        usim::data_of(what, &rapdu).map(|_| ())
    }

    /// Reads EF_ICCID and EF_IMSI, then authenticates the card as the
    /// network would: the keys are looked up by the IMSI just read, a stale
    /// SQN is resynchronised from AUTS once.
    pub async fn read_card(&mut self, known: &[CardProfile]) -> Reading {
        let mut reading = Reading::failed(String::new());
        if let Err(why) = self.read_ids(&mut reading).await {
            reading.auth = why;
            return reading;
        }
        let imsi = reading.imsi.clone().unwrap_or_default();
        reading.auth = match known.iter().find(|p| p.imsi == imsi) {
            Some(profile) => self.authenticate(profile).await,
            None => format!("IMSI {imsi} unknown to the network"),
        };
        reading
    }

    async fn read_ids(&mut self, reading: &mut Reading) -> Result<(), String> {
        self.select("SELECT MF", &usim::SELECT_MF).await?;
        self.select("SELECT EF_ICCID", &usim::SELECT_ICCID).await?;
        let rapdu = self.transceive(&usim::READ_ICCID).await?;
        reading.iccid = Some(usim::decode_iccid(usim::data_of("READ EF_ICCID", &rapdu)?)?);
        self.select("SELECT ADF_USIM", &usim::SELECT_USIM).await?;
        self.select("SELECT EF_IMSI", &usim::SELECT_IMSI).await?;
        let rapdu = self.transceive(&usim::READ_IMSI).await?;
        reading.imsi = Some(usim::decode_imsi(usim::data_of("READ EF_IMSI", &rapdu)?)?);
        Ok(())
    }

    async fn authenticate(&mut self, profile: &CardProfile) -> String {
        let mut sqn = profile.sqn + 1;
        for _ in 0..2 {
            let mut rand = [0u8; 16];
            if getrandom::fill(&mut rand).is_err() {
                return "no random numbers for RAND".into();
            }
            let challenge = usim::challenge(profile, rand, sqn);
            let rapdu = match self.transceive(&usim::authenticate_apdu(&challenge)).await {
                Ok(rapdu) => rapdu,
                Err(why) => return why,
            };
            match usim::check_auth(profile, &challenge, &rapdu) {
                AuthOutcome::Ok => return "ok".into(),
                AuthOutcome::WrongRes => return "RES differs from XRES".into(),
                AuthOutcome::Failed(why) => return why,
                AuthOutcome::Resync { sqn_ms } => sqn = sqn_ms + 1,
            }
        }
        "SQN not accepted after resynchronisation".into()
    }
}
