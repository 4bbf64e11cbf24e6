//! Indexer acknowledgement's client side: the instance's channel, and how an `ackId` of a
//! channel becomes the engine's [`Receipt`] and back.
//!
//! Splunk numbers ack ids from 0 per channel, so a receipt carries the channel's generation
//! in its top bits: after a new channel is opened (code 11), ids of the old one can never be
//! confused with the new one's. The old ones are no longer asked about; they time out and
//! their events are sent again. Which channel an answer belongs to is read from the header
//! its request carried, not from the channel current when it is read.

use std::sync::{Mutex, MutexGuard};
use switchyard_core::Receipt;

/// Bits of a receipt that hold the ack id; the other 24 hold the channel's generation.
const ID_BITS: u32 = 40;
const ID_MASK: u64 = (1 << ID_BITS) - 1;
/// The generation of an answer on a channel already replaced: never current, so its
/// receipts are never asked about and time out.
pub const REPLACED: u32 = (1 << (64 - ID_BITS)) - 1;

/// The receipt for ack id `id` of channel generation `generation`.
pub fn receipt(generation: u32, id: u64) -> Receipt {
    (u64::from(generation.min(REPLACED)) << ID_BITS) | (id & ID_MASK)
}

/// The (generation, ack id) of `receipt`.
pub fn parts(receipt: Receipt) -> (u32, u64) {
    ((receipt >> ID_BITS) as u32, receipt & ID_MASK)
}

/// This instance's `X-Splunk-Request-Channel`: a random UUID, replaced when Splunk says it
/// does not know it (code 11).
#[derive(Debug)]
pub struct Channel {
    current: Mutex<(u32, String)>,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            current: Mutex::new((0, new_uuid())),
        }
    }
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, (u32, String)> {
        // The pair is replaced whole: a panic elsewhere cannot leave it half-written.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (generation, UUID) of the channel in use.
    pub fn current(&self) -> (u32, String) {
        self.lock().clone()
    }

    /// The generation of `uuid`: the current one's, or [`REPLACED`].
    pub fn generation_of(&self, uuid: &str) -> u32 {
        let current = self.lock();
        if current.1 == uuid {
            current.0
        } else {
            REPLACED
        }
    }

    /// Opens a new channel in place of `uuid`, unless it was already replaced (several
    /// answers may report the same invalid channel).
    pub fn renew(&self, uuid: &str) {
        let mut current = self.lock();
        if current.1 == uuid {
            *current = ((current.0 + 1) % REPLACED, new_uuid());
        }
    }
}

/// A random (version 4) UUID. Uniqueness matters, not secrecy: a channel is no credential.
pub fn new_uuid() -> String {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_keeps_the_channel_generation_and_the_ack_id() {
        assert_eq!(parts(receipt(0, 0)), (0, 0));
        assert_eq!(parts(receipt(3, 12345)), (3, 12345));
        assert_ne!(receipt(0, 7), receipt(1, 7), "ids of two channels differ");
    }

    #[test]
    fn channels_are_v4_uuids_renewed_once_per_generation() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        let c = Channel::default();
        let (g, first) = c.current();
        assert_eq!(c.generation_of(&first), g);
        c.renew(&first);
        let (g2, second) = c.current();
        assert_eq!(g2, g + 1);
        assert_ne!(first, second);
        c.renew(&first);
        assert_eq!(c.current().0, g2, "a stale report does not renew again");
        assert_eq!(
            c.generation_of(&first),
            REPLACED,
            "an answer on the old channel"
        );
        assert_eq!(parts(receipt(REPLACED, 5)), (REPLACED, 5));
    }
}
