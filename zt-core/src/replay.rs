//! A sliding-window replay filter for transport packet counters (RFC 6479's idea, as in
//! WireGuard): counters far behind the highest seen are rejected, counters inside the
//! window are accepted once.

/// Number of counters the window remembers behind the highest one seen.
pub const WINDOW_BITS: u64 = 2048;
const WORDS: usize = (WINDOW_BITS / 64) as usize;

/// Remembers which recent packet counters have been accepted.
///
/// Call [`ReplayWindow::check`] before decrypting (cheap rejection) and
/// [`ReplayWindow::accept`] only after the packet authenticated, so forged packets cannot
/// move the window.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One more than the highest accepted counter (0: nothing accepted yet).
    next: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        ReplayWindow {
            next: 0,
            bits: [0; WORDS],
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        let i = counter % WINDOW_BITS;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// True if `counter` would be accepted (new and not too old).
    pub fn check(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        if self.next - counter > WINDOW_BITS {
            return false;
        }
        let (w, b) = Self::slot(counter);
        self.bits[w] & b == 0
    }

    /// Records `counter`; returns false (and changes nothing) if it is a replay or too old.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            // Clear the slots the window slides over.
            let advance = counter + 1 - self.next;
            if advance >= WINDOW_BITS {
                self.bits = [0; WORDS];
            } else {
                for c in self.next..=counter {
                    let (w, b) = Self::slot(c);
                    self.bits[w] &= !b;
                }
            }
            self.next = counter + 1;
        }
        let (w, b) = Self::slot(counter);
        self.bits[w] |= b;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_counter_once_in_any_order() {
        let mut w = ReplayWindow::new();
        for c in [5u64, 0, 3, 1, 2, 4, 10, 7] {
            assert!(w.accept(c), "{c}");
        }
        for c in [5u64, 0, 3, 1, 2, 4, 10, 7] {
            assert!(!w.check(c), "{c}");
            assert!(!w.accept(c), "{c}");
        }
        assert!(w.accept(6));
        assert!(w.accept(8));
    }

    #[test]
    fn rejects_counters_older_than_the_window() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(10_000));
        assert!(!w.accept(10_000 - WINDOW_BITS - 1));
        assert!(w.accept(10_000 - WINDOW_BITS + 1));
        assert!(w.accept(10_000 - 1));
        // Jumping far ahead forgets everything behind.
        assert!(w.accept(1_000_000));
        assert!(!w.accept(10_000 - 1));
        assert!(w.accept(1_000_000 - 5));
    }

    #[test]
    fn sliding_clears_reused_slots() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(1));
        // Counter 1 + WINDOW_BITS shares counter 1's slot; it must be accepted once, and
        // counter 1 is then too old.
        assert!(w.accept(1 + WINDOW_BITS));
        assert!(!w.accept(1 + WINDOW_BITS));
        assert!(!w.accept(1));
        // Counters skipped over while sliding are still acceptable once.
        assert!(w.accept(WINDOW_BITS));
        assert!(!w.accept(WINDOW_BITS));
    }

    #[test]
    fn check_does_not_record() {
        let mut w = ReplayWindow::new();
        assert!(w.check(3));
        assert!(w.check(3));
        assert!(w.accept(3));
        assert!(!w.check(3));
    }
}
