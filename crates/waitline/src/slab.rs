//! A slab: records in a `Vec` of slots, found by index, with a free list.
//!
//! Each slot counts its generation: it goes up when the slot's record is removed, so a
//! [`Handle`] (index + generation) kept somewhere else (a timer, the list of ended calls)
//! tells the record it was made for from a later one in the same slot. Freed slots are
//! reused last-freed-first, which keeps the slab dense and its hot slots in cache.
//!
//! A vacant slot holds a placeholder record ([`Vacant`]) and says so in a flag, rather
//! than an `Option`: a command reads a slot it knows is live (a record it found, or one a
//! live record links to) with a bounds check alone, and only the reads that take a slot
//! from outside (an id's slot, a timer's handle) check the flag.

/// A slot and the generation of the record in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Handle {
    pub(crate) ix: u32,
    pub(crate) generation: u32,
}

/// The record a vacant slot holds: never read as a record (every read of a slot from
/// outside checks that it is live first).
pub(crate) trait Vacant {
    fn vacant() -> Self;
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    live: bool,
    /// The record while `live`, else a placeholder.
    value: T,
}

impl<T> Slot<T> {
    fn get(&self) -> Option<&T> {
        self.live.then_some(&self.value)
    }
}

#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

fn ix_u32(ix: usize) -> u32 {
    u32::try_from(ix).expect("fewer than 2^32 records")
}

impl<T: Vacant> Slab<T> {
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Where the next [`Slab::insert`] puts its record.
    pub(crate) fn next_handle(&self) -> Handle {
        match self.free.last() {
            Some(&ix) => Handle { ix, generation: self.slots[ix as usize].generation },
            None => Handle { ix: ix_u32(self.slots.len()), generation: 0 },
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> Handle {
        self.len += 1;
        if let Some(ix) = self.free.pop() {
            let slot = &mut self.slots[ix as usize];
            debug_assert!(!slot.live);
            slot.value = value;
            slot.live = true;
            return Handle { ix, generation: slot.generation };
        }
        let ix = ix_u32(self.slots.len());
        self.slots.push(Slot { generation: 0, live: true, value });
        Handle { ix, generation: 0 }
    }

    /// Removes the record in `ix` (which must hold one); handles to it go stale.
    pub(crate) fn remove(&mut self, ix: u32) -> T {
        // The placeholder first: nothing is changed if making it fails.
        let placeholder = T::vacant();
        let slot = &mut self.slots[ix as usize];
        assert!(slot.live, "removing an empty slot");
        slot.live = false;
        let value = std::mem::replace(&mut slot.value, placeholder);
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(ix);
        self.len -= 1;
        value
    }

    /// The record in `ix`, if there is one: for a slot that comes from outside.
    pub(crate) fn get(&self, ix: u32) -> Option<&T> {
        self.slots.get(ix as usize)?.get()
    }

    /// The record in `ix`, which the caller knows is there (found, or linked from a live
    /// record): no check that the slot is live, but in debug builds.
    pub(crate) fn at(&self, ix: u32) -> &T {
        let slot = &self.slots[ix as usize];
        debug_assert!(slot.live, "a live slot");
        &slot.value
    }

    /// The record in `ix`, which the caller knows is there, for changing (as [`Slab::at`]).
    pub(crate) fn at_mut(&mut self, ix: u32) -> &mut T {
        let slot = &mut self.slots[ix as usize];
        debug_assert!(slot.live, "a live slot");
        &mut slot.value
    }

    /// The handle of the record in `ix`, which the caller knows is there.
    pub(crate) fn handle(&self, ix: u32) -> Handle {
        Handle { ix, generation: self.slots[ix as usize].generation }
    }

    /// The record `h` was made for, if it is still there.
    pub(crate) fn get_handle(&self, h: Handle) -> Option<&T> {
        let slot = self.slots.get(h.ix as usize)?;
        if slot.generation == h.generation { slot.get() } else { None }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.get().map(|v| (ix_u32(i), v)))
    }

    /// Every slot, empty ones included, with its generation (for a snapshot).
    pub(crate) fn slots(&self) -> impl ExactSizeIterator<Item = (u32, Option<&T>)> + Clone {
        self.slots.iter().map(|s| (s.generation, s.get()))
    }

    /// The free slots in reuse order (the last is reused first).
    pub(crate) fn free_list(&self) -> &[u32] {
        &self.free
    }

    /// Slots ever used: every handle's slot is below this.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// A slab with exactly these slots and free list, as [`Slab::slots`] and
    /// [`Slab::free_list`] gave them: the free list must name every empty slot once and
    /// nothing else, so that the slots the next inserts take are those they took before.
    pub(crate) fn from_parts(slots: Vec<(u32, Option<T>)>, free: Vec<u32>) -> Result<Self, String> {
        if u32::try_from(slots.len()).is_err() {
            return Err("too many slots".into());
        }
        let mut listed = vec![false; slots.len()];
        for &ix in &free {
            match slots.get(ix as usize) {
                None => return Err(format!("free slot {ix} out of range")),
                Some((_, Some(_))) => return Err(format!("free slot {ix} is in use")),
                Some((_, None)) if listed[ix as usize] => return Err(format!("free slot {ix} listed twice")),
                Some((_, None)) => listed[ix as usize] = true,
            }
        }
        let empty = slots.iter().filter(|(_, v)| v.is_none()).count();
        if empty != free.len() {
            return Err(format!("{empty} empty slots but {} on the free list", free.len()));
        }
        let len = slots.len() - empty;
        let slots = slots
            .into_iter()
            .map(|(generation, value)| Slot {
                generation,
                live: value.is_some(),
                value: value.unwrap_or_else(T::vacant),
            })
            .collect();
        Ok(Self { slots, free, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Vacant for &str {
        fn vacant() -> Self {
            ""
        }
    }

    impl Vacant for i32 {
        fn vacant() -> Self {
            0
        }
    }

    #[test]
    fn reuses_slots_with_a_new_generation() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!((a.ix, b.ix), (0, 1));
        assert_eq!(s.remove(a.ix), "a");
        assert_eq!(s.get_handle(a), None);
        let next = s.next_handle();
        let c = s.insert("c");
        assert_eq!(next, c);
        assert_eq!(c.ix, 0);
        assert_ne!(c.generation, a.generation);
        assert_eq!(s.get_handle(c), Some(&"c"));
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["c", "b"]);
    }

    #[test]
    fn parts_round_trip_and_bad_free_lists_are_refused() {
        let mut s = Slab::default();
        let handles: Vec<_> = (0..4).map(|i| s.insert(i)).collect();
        s.remove(handles[2].ix);
        s.remove(handles[0].ix);
        let parts = || (s.slots().map(|(g, v)| (g, v.copied())).collect::<Vec<_>>(), s.free_list().to_vec());
        let (slots, free) = parts();
        let mut again = Slab::from_parts(slots.clone(), free).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.next_handle(), s.next_handle());
        assert_eq!(again.insert(9), Handle { ix: 0, generation: 1 }, "last freed, first reused");
        assert_eq!(again.insert(9), Handle { ix: 2, generation: 1 });
        assert!(Slab::from_parts(slots.clone(), vec![0]).is_err(), "an empty slot not listed");
        assert!(Slab::from_parts(slots.clone(), vec![0, 2, 2]).is_err(), "listed twice");
        assert!(Slab::from_parts(slots.clone(), vec![0, 1]).is_err(), "a used slot listed");
        assert!(Slab::from_parts(slots, vec![0, 7]).is_err(), "out of range");
    }

    #[test]
    fn a_vacant_slot_is_found_by_no_read_from_outside() {
        let mut s = Slab::default();
        let a = s.insert("a");
        s.insert("b");
        s.remove(a.ix);
        assert_eq!(s.get(a.ix), None, "an id's slot");
        let current = Handle { ix: a.ix, generation: a.generation.wrapping_add(1) };
        assert_eq!(s.get_handle(current), None, "a handle of the slot's own generation");
        assert_eq!(s.iter().map(|(ix, _)| ix).collect::<Vec<_>>(), [1], "iterated past");
        assert_eq!(s.slots().map(|(_, v)| v.copied()).collect::<Vec<_>>(), [None, Some("b")]);
    }

    /// In a build with debug assertions (the tests'), reading a vacant slot as a live one is
    /// caught: only that check guards `at` (a release build reads the placeholder).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a live slot")]
    fn reading_a_vacant_slot_as_live_is_caught_in_debug_builds() {
        let mut s = Slab::default();
        let a = s.insert("a");
        s.remove(a.ix);
        let _ = s.at(a.ix);
    }
}
