//! The receive-side replay window of one session: a ring of 64-bit words (RFC 6479, as in the
//! Linux WireGuard driver), so moving the window forward clears whole words, never shifts.

use crate::drop::DropReason;

/// How many counters behind the highest one received are still accepted (once each): with the
/// highest counter `h`, `h + 1 - REPLAY_WINDOW ..= h` is the window.
pub const REPLAY_WINDOW: u64 = 8192;

const WORD_BITS: u64 = 64;
/// One more word than the window needs, so the word holding the window's low edge is never the
/// word being filled at the top.
const WORDS: usize = (REPLAY_WINDOW / WORD_BITS) as usize + 1;

/// Which counters of one session were received.
#[derive(Clone)]
pub(crate) struct ReplayWindow {
    /// Highest counter accepted plus one; 0 before the first.
    next: u64,
    bits: [u64; WORDS],
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow").field("next", &self.next).finish_non_exhaustive()
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { next: 0, bits: [0; WORDS] }
    }
}

fn slot(counter: u64) -> (usize, u64) {
    // `WORDS` is 129: the modulo keeps the result in range, so the cast cannot truncate.
    (((counter / WORD_BITS) % WORDS as u64) as usize, 1 << (counter % WORD_BITS))
}

impl ReplayWindow {
    /// Whether `counter` would be accepted, without recording it (checked before the costly
    /// decryption; [`ReplayWindow::accept`] records it once the packet is authentic).
    ///
    /// # Errors
    /// [`DropReason::Replay`] if it was received, [`DropReason::TooOld`] if it is behind the
    /// window.
    pub(crate) fn check(&self, counter: u64) -> Result<(), DropReason> {
        if counter >= self.next {
            return Ok(());
        }
        if self.next - counter > REPLAY_WINDOW {
            return Err(DropReason::TooOld);
        }
        let (w, bit) = slot(counter);
        if self.bits[w] & bit != 0 {
            Err(DropReason::Replay)
        } else {
            Ok(())
        }
    }

    /// Records `counter` as received.
    ///
    /// # Errors
    /// As [`ReplayWindow::check`]; nothing is recorded then.
    pub(crate) fn accept(&mut self, counter: u64) -> Result<(), DropReason> {
        self.check(counter)?;
        if counter >= self.next {
            let new_top = counter / WORD_BITS;
            if self.next == 0 {
                // Empty window: every word is already zero.
            } else {
                let old_top = (self.next - 1) / WORD_BITS;
                let advance = new_top - old_top;
                if advance >= WORDS as u64 {
                    self.bits = [0; WORDS];
                } else {
                    for word in old_top + 1..=new_top {
                        self.bits[slot(word * WORD_BITS).0] = 0;
                    }
                }
            }
            self.next = counter.saturating_add(1);
        }
        let (w, bit) = slot(counter);
        self.bits[w] |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn in_order_then_duplicates() {
        let mut w = ReplayWindow::default();
        for c in 0..20_000 {
            assert_eq!(w.accept(c), Ok(()));
        }
        assert_eq!(w.accept(19_999), Err(DropReason::Replay));
        assert_eq!(w.accept(19_999 - 8191), Err(DropReason::Replay));
        assert_eq!(w.accept(19_999 - 8192), Err(DropReason::TooOld));
    }

    #[test]
    fn whole_window_out_of_order() {
        let mut w = ReplayWindow::default();
        w.accept(10_000).unwrap();
        // Every one of the 8191 counters below 10 000 that still fit the window, in reverse.
        for c in (10_000 - 8191..10_000).rev() {
            assert_eq!(w.accept(c), Ok(()), "{c}");
        }
        assert_eq!(w.accept(10_000 - 8192), Err(DropReason::TooOld));
        for c in 10_000 - 8191..=10_000 {
            assert_eq!(w.accept(c), Err(DropReason::Replay));
        }
    }

    #[test]
    fn big_jump_clears_everything() {
        let mut w = ReplayWindow::default();
        w.accept(5).unwrap();
        w.accept(1_000_000).unwrap();
        assert_eq!(w.accept(5), Err(DropReason::TooOld));
        assert_eq!(w.accept(1_000_000 - 64), Ok(()));
        assert_eq!(w.accept(u64::MAX - 1), Ok(()));
        assert_eq!(w.accept(u64::MAX - 1), Err(DropReason::Replay));
    }

    proptest! {
        /// Against a model: a set of received counters and the highest one.
        #[test]
        fn matches_model(steps in proptest::collection::vec((0u64..40_000, any::<bool>()), 1..600)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            let mut highest: Option<u64> = None;
            let mut base = 0u64;
            for (delta, jump) in steps {
                // Mostly near the top, sometimes far ahead.
                let c = if jump { base + delta } else { base.saturating_sub(delta % 9000) };
                let expect = match highest {
                    Some(h) if c <= h && h - c >= REPLAY_WINDOW => Err(DropReason::TooOld),
                    _ if seen.contains(&c) => Err(DropReason::Replay),
                    _ => Ok(()),
                };
                prop_assert_eq!(w.accept(c), expect, "counter {}", c);
                if expect.is_ok() {
                    seen.insert(c);
                    highest = Some(highest.map_or(c, |h| h.max(c)));
                }
                base = highest.unwrap_or(0);
            }
        }
    }
}
