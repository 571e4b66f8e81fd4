//! Pairing requests: codes, expiry, and the per-account cap.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::phone::E164;

/// Codes use letters and digits that cannot be misread (no 0/O, 1/I).
pub(crate) const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
pub(crate) const CODE_LEN: usize = 8;
pub const PAIRING_TTL_MS: u64 = 60 * 60 * 1000;
/// While this many requests are pending, new senders get nothing.
pub const MAX_PENDING_PER_ACCOUNT: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingRequest {
    pub code: String,
    pub sender: E164,
    pub account: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

impl PairingRequest {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

/// A fresh code from the operating system's CSPRNG.
pub fn new_code() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

/// Normalises what an operator typed: codes are case-insensitive.
pub(crate) fn normalize_code(input: &str) -> String {
    input.trim().to_ascii_uppercase()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    IssueNew,
    AlreadyPending,
    CapReached,
}

/// Whether an unknown sender gets a new request, given the account's unexpired ones.
pub(crate) fn step(pending: &[PairingRequest], sender: &E164) -> Step {
    if pending.iter().any(|r| &r.sender == sender) {
        Step::AlreadyPending
    } else if pending.len() >= MAX_PENDING_PER_ACCOUNT {
        Step::CapReached
    } else {
        Step::IssueNew
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_use_the_alphabet() {
        for _ in 0..200 {
            let c = new_code();
            assert_eq!(c.len(), CODE_LEN);
            assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{c}");
        }
        assert_ne!(new_code(), new_code());
        assert_eq!(normalize_code(" abcd2345 "), "ABCD2345");
    }
}
