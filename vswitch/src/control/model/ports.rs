//! Dense port ids, reused after release (the datapath indexes vectors with them).

use std::collections::BTreeSet;

use crate::types::PortId;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct PortIds {
    free: BTreeSet<u32>,
    next: u32,
}

impl PortIds {
    pub(super) fn take(&mut self) -> PortId {
        match self.free.pop_first() {
            Some(id) => PortId(id),
            None => {
                self.next += 1;
                PortId(self.next - 1)
            }
        }
    }

    pub(super) fn give_back(&mut self, id: PortId) {
        self.free.insert(id.0);
    }

    /// Ids in `used` are taken; the gaps below the highest are free.
    pub(super) fn with_used(used: &BTreeSet<u32>) -> PortIds {
        let next = used.last().map_or(0, |m| m + 1);
        PortIds { free: (0..next).filter(|i| !used.contains(i)).collect(), next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse() {
        let mut p = PortIds::default();
        assert_eq!(p.take(), PortId(0));
        assert_eq!(p.take(), PortId(1));
        p.give_back(PortId(0));
        assert_eq!(p.take(), PortId(0));
        assert_eq!(p.take(), PortId(2));
        let p = PortIds::with_used(&[0, 3].into());
        assert_eq!(p.free, [1, 2].into());
        assert_eq!(p.next, 4);
    }
}
