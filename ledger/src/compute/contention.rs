//! A device's contention view (node part): who holds a slot, who wanted the device last and
//! when, and which neighbours a container yields to.

use std::sync::atomic::{AtomicU64, Ordering};

use super::words::{COMPUTE_WORDS, CONTENTION_SLOTS, SLOT_BITS, contention_word};

/// Bit of `contention_word::HIGH` that marks slot `i`'s high-priority container as capped.
const HIGH_CAPPED_SHIFT: usize = 32;
const _: () = assert!(CONTENTION_SLOTS <= HIGH_CAPPED_SHIFT);

/// What a container's slot asks of its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotClass {
    /// Normal priority: nobody yields to it.
    Normal,
    /// High priority under a compute cap: its cap reserves its share, so only neighbours
    /// without a cap of their own yield to it.
    HighCapped,
    /// High priority without a cap: every normal-priority neighbour yields to it.
    High,
}

impl SlotClass {
    /// The class of a container of `priority` whose cap on the device is `compute_percent`.
    pub fn of(priority: crate::Priority, compute_percent: Option<u32>) -> Self {
        match (priority, compute_percent) {
            (crate::Priority::Normal, _) => Self::Normal,
            (crate::Priority::High, Some(percent)) if percent < 100 => Self::HighCapped,
            (crate::Priority::High, _) => Self::High,
        }
    }

    /// Whether neighbours may have to yield to it.
    pub fn is_high(self) -> bool {
        self != Self::Normal
    }
}

/// Which contention slot a container holds on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentionSlot {
    /// A slot of its own.
    Own(usize),
    /// All slots were taken: it shares the overflow word.
    Overflow,
}

/// Read access to a device's contention words: a writable cell on the host, or a read-only
/// node part inside a container (where no reference to the cell may be handed out, so that
/// nothing can ever store through the read-only mapping).
pub trait ContentionWords: Sync {
    /// The value of word `index` (0 when out of range).
    fn load(&self, index: usize) -> u64;
}

impl ContentionWords for [AtomicU64; COMPUTE_WORDS] {
    fn load(&self, index: usize) -> u64 {
        self.get(index).map_or(0, |w| w.load(Ordering::Acquire))
    }
}

impl ContentionWords for crate::DeviceContention {
    fn load(&self, index: usize) -> u64 {
        self.words.load(index)
    }
}

/// One device's contention words read through a (possibly read-only) node part.
pub struct NodeContentionWords<'a> {
    node: &'a crate::NodeLedger,
    dev: usize,
}

impl<'a> NodeContentionWords<'a> {
    /// Device `dev` of `node`.
    pub fn new(node: &'a crate::NodeLedger, dev: usize) -> Self {
        Self { node, dev }
    }
}

impl ContentionWords for NodeContentionWords<'_> {
    fn load(&self, index: usize) -> u64 {
        self.node.contention_word(self.dev, index).unwrap_or(0)
    }
}

/// A device's contention view, read side: what a container's limiter consults.
#[derive(Clone, Copy)]
pub struct Contention<'a> {
    words: &'a dyn ContentionWords,
}

impl<'a> Contention<'a> {
    /// Views `words` (a node-part contention cell, however it is mapped).
    pub fn new(words: &'a dyn ContentionWords) -> Self {
        Self { words }
    }

    /// True when a container other than the one in `own` showed demand within `window_ns`.
    ///
    /// Overflow demand always counts as someone else's, so a container without a slot of its
    /// own never bursts: the safe side.
    pub fn others_demand(&self, own: Option<ContentionSlot>, now_ns: u64, window_ns: u64) -> bool {
        let recent = |t: u64| t != 0 && now_ns.saturating_sub(t) <= window_ns;
        if recent(self.words.load(contention_word::OVERFLOW_DEMAND_NS)) {
            return true;
        }
        let claimed = self.words.load(contention_word::CLAIMED);
        (0..CONTENTION_SLOTS).any(|i| {
            own != Some(ContentionSlot::Own(i))
                && claimed & (1 << i) != 0
                && recent(self.words.load(contention_word::SLOT_BASE + i))
        })
    }

    /// Latest demand (monotonic ns, 0 = never) of a high-priority container other than `own`
    /// that a container must yield to: any, or for a `capped` one only uncapped ones.
    pub fn latest_high_demand(&self, own: Option<ContentionSlot>, capped: bool) -> u64 {
        let claimed = self.words.load(contention_word::CLAIMED);
        let high_word = self.words.load(contention_word::HIGH);
        let mut high = high_word & claimed;
        if capped {
            high &= !(high_word >> HIGH_CAPPED_SHIFT);
        }
        let from_slots = (0..CONTENTION_SLOTS)
            .filter(|&i| own != Some(ContentionSlot::Own(i)) && high & (1 << i) != 0)
            .map(|i| self.words.load(contention_word::SLOT_BASE + i))
            .max()
            .unwrap_or(0);
        // High containers without a slot are visible through the shared high word only, and
        // whether they are capped is not known: the safe side is to yield to them.
        from_slots.max(self.words.load(contention_word::HIGH_DEMAND_NS))
    }

    /// True when a high-priority container other than `own` holds a slot on the device, or
    /// one without a slot ever showed demand: only then can [`Self::latest_high_demand`] be
    /// non-zero, so a container that finds this false has nobody to yield to.
    pub fn high_priority_present(&self, own: Option<ContentionSlot>) -> bool {
        let claimed = self.words.load(contention_word::CLAIMED);
        let mut high = self.words.load(contention_word::HIGH) & claimed & SLOT_BITS;
        if let Some(ContentionSlot::Own(i)) = own {
            high &= !(1 << i);
        }
        high != 0 || self.words.load(contention_word::HIGH_DEMAND_NS) != 0
    }

    /// Number of containers holding a slot.
    pub fn claimed_slots(&self) -> u32 {
        self.words.load(contention_word::CLAIMED).count_ones()
    }
}

/// A device's contention cell, write side: host components only (the node part is read-only
/// inside containers).
#[derive(Clone, Copy)]
pub struct ContentionCell<'a> {
    words: &'a [AtomicU64; COMPUTE_WORDS],
}

impl<'a> ContentionCell<'a> {
    /// Over a writable contention cell.
    pub fn new(words: &'a [AtomicU64; COMPUTE_WORDS]) -> Self {
        Self { words }
    }

    /// The read side of the same cell.
    pub fn view(&self) -> Contention<'a> {
        Contention::new(self.words)
    }

    /// Claims a slot for a container of `class`.
    pub fn claim_slot(&self, class: SlotClass) -> ContentionSlot {
        let claimed = &self.words[contention_word::CLAIMED];
        let mut bits = claimed.load(Ordering::Acquire);
        loop {
            let Some(free) = (0..CONTENTION_SLOTS).find(|i| bits & (1 << i) == 0) else {
                return ContentionSlot::Overflow;
            };
            match claimed.compare_exchange(
                bits,
                bits | (1 << free),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.words[contention_word::SLOT_BASE + free].store(0, Ordering::Release);
                    let high_bits = &self.words[contention_word::HIGH];
                    let own_bits = (1u64 << free) | (1u64 << (free + HIGH_CAPPED_SHIFT));
                    let set = match class {
                        SlotClass::Normal => 0,
                        SlotClass::HighCapped => own_bits,
                        SlotClass::High => 1 << free,
                    };
                    high_bits.fetch_and(!own_bits, Ordering::AcqRel);
                    high_bits.fetch_or(set, Ordering::AcqRel);
                    return ContentionSlot::Own(free);
                }
                Err(now) => bits = now,
            }
        }
    }

    /// Gives a slot back, when the container ends.
    pub fn release_slot(&self, slot: ContentionSlot) {
        if let ContentionSlot::Own(i) = slot {
            self.words[contention_word::SLOT_BASE + i].store(0, Ordering::Release);
            let own_bits = (1u64 << i) | (1u64 << (i + HIGH_CAPPED_SHIFT));
            self.words[contention_word::HIGH].fetch_and(!own_bits, Ordering::AcqRel);
            self.words[contention_word::CLAIMED].fetch_and(!(1 << i), Ordering::AcqRel);
        }
    }

    /// Publishes a container's last demand time into its slot.
    pub fn publish_demand(&self, slot: ContentionSlot, high: bool, last_demand_ns: u64) {
        let word = match slot {
            ContentionSlot::Own(i) => contention_word::SLOT_BASE + i,
            ContentionSlot::Overflow => contention_word::OVERFLOW_DEMAND_NS,
        };
        self.words[word].fetch_max(last_demand_ns, Ordering::AcqRel);
        if high && slot == ContentionSlot::Overflow {
            self.words[contention_word::HIGH_DEMAND_NS].fetch_max(last_demand_ns, Ordering::AcqRel);
        }
    }
}
