//! A PIN with its PUK: retry counters, enable/disable, change and unblock,
//! as ISO 7816-4 VERIFY / CHANGE / DISABLE / ENABLE / RESET RETRY COUNTER.

/// Tries before a PIN blocks.
pub const PIN_TRIES: u8 = 3;
/// Tries before a PUK blocks (for good).
pub const PUK_TRIES: u8 = 10;

/// The outcome of an operation, for the caller to turn into a status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinResult {
    Ok,
    /// Wrong value; this many tries are left.
    Wrong {
        tries_left: u8,
    },
    /// No tries left.
    Blocked,
    /// The operation contradicts the PIN's state (disable when disabled, ...).
    Contradiction,
}

#[derive(Debug, Clone)]
pub struct Pin {
    value: [u8; 8],
    puk: [u8; 8],
    tries_left: u8,
    puk_tries_left: u8,
    enabled: bool,
    verified: bool,
}

/// A PIN as it travels in an APDU: ASCII digits padded with FF to 8 bytes.
pub fn pad(digits: &str) -> [u8; 8] {
    let mut out = [0xFF; 8];
    for (o, b) in out.iter_mut().zip(digits.bytes()) {
        *o = b;
    }
    out
}

impl Pin {
    pub fn new(value: &str, puk: &str, enabled: bool) -> Self {
        Pin {
            value: pad(value),
            puk: pad(puk),
            tries_left: PIN_TRIES,
            puk_tries_left: PUK_TRIES,
            enabled,
            verified: false,
        }
    }

    /// Whether the access condition "PIN" is met.
    pub fn satisfied(&self) -> bool {
        !self.enabled || self.verified
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn tries_left(&self) -> u8 {
        self.tries_left
    }

    pub fn puk_tries_left(&self) -> u8 {
        self.puk_tries_left
    }

    /// Forgets the verification (on reset).
    pub fn reset_security(&mut self) {
        self.verified = false;
    }

    fn check(&mut self, candidate: &[u8]) -> PinResult {
        if self.tries_left == 0 {
            return PinResult::Blocked;
        }
        if candidate == self.value {
            self.tries_left = PIN_TRIES;
            self.verified = true;
            PinResult::Ok
        } else {
            self.tries_left -= 1;
            self.verified = false;
            match self.tries_left {
                0 => PinResult::Blocked,
                n => PinResult::Wrong { tries_left: n },
            }
        }
    }

    pub fn verify(&mut self, candidate: &[u8]) -> PinResult {
        self.check(candidate)
    }

    pub fn change(&mut self, old: &[u8], new: &[u8; 8]) -> PinResult {
        if !self.enabled {
            return PinResult::Contradiction;
        }
        let r = self.check(old);
        if r == PinResult::Ok {
            self.value = *new;
        }
        r
    }

    pub fn disable(&mut self, candidate: &[u8]) -> PinResult {
        if !self.enabled {
            return PinResult::Contradiction;
        }
        let r = self.check(candidate);
        if r == PinResult::Ok {
            self.enabled = false;
        }
        r
    }

    pub fn enable(&mut self, candidate: &[u8]) -> PinResult {
        if self.enabled {
            return PinResult::Contradiction;
        }
        let r = self.check(candidate);
        if r == PinResult::Ok {
            self.enabled = true;
        }
        r
    }

    /// RESET RETRY COUNTER: the PUK sets a new PIN and unblocks it.
    pub fn unblock(&mut self, puk: &[u8], new: &[u8; 8]) -> PinResult {
        if self.puk_tries_left == 0 {
            return PinResult::Blocked;
        }
        if puk == self.puk {
            self.puk_tries_left = PUK_TRIES;
            self.value = *new;
            self.tries_left = PIN_TRIES;
            self.verified = true;
            PinResult::Ok
        } else {
            self.puk_tries_left -= 1;
            match self.puk_tries_left {
                0 => PinResult::Blocked,
                n => PinResult::Wrong { tries_left: n },
            }
        }
    }
}
