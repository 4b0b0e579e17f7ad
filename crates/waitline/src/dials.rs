//! The `command_id`s of a tenant's recent dials (docs/behaviour.md §2.1).
//!
//! The other commands remember their `command_id`s on their call; a dial has no call yet, so
//! its tenant remembers them: which call each dial made, and when. A dial whose `command_id`
//! was accepted in the last 60 s makes no second call and answers the first.
//!
//! Entries are kept in the order they were accepted and found by id through a table of their
//! positions. The memory is bounded: adding an entry first drops, from the oldest, those past
//! the window and those over [`DIAL_COMMAND_IDS`]. Entries are time-ordered unless the clock
//! went back; then an expired entry may sit behind a newer one, and a new entry for its id
//! takes over its place in the table (dropping the old entry later leaves the table alone).

use std::collections::VecDeque;

use hashbrown::HashTable;

use crate::call::COMMAND_ID_WINDOW_MICROS;
use crate::clock::Timestamp;
use crate::slab::Handle;

/// The most dials' `command_id`s a tenant remembers (past it the oldest go first): over
/// 1,600 dials a second for the whole window, and at most about 30 MB with the longest ids.
/// A constant, not a setting: a replay must remember what the live run did, whatever the
/// configuration is at the restart.
pub(crate) const DIAL_COMMAND_IDS: usize = 100_000;

/// One accepted dial with a `command_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DialCommand {
    pub(crate) command_id: Box<str>,
    pub(crate) at: Timestamp,
    /// The call the dial made: the handle goes stale once the call is forgotten.
    pub(crate) call: Handle,
}

impl DialCommand {
    fn expired(&self, now: Timestamp) -> bool {
        now.as_micros().saturating_sub(self.at.as_micros()) >= COMMAND_ID_WINDOW_MICROS
    }
}

/// A tenant's [`DialCommand`]s.
#[derive(Debug, Default)]
pub(crate) struct DialCommands {
    /// Oldest first.
    entries: VecDeque<DialCommand>,
    /// Entries dropped from the front so far: the entry at index `i` has position
    /// `dropped + i`, which stays the same as older entries go.
    dropped: u64,
    /// The position of the latest entry of each `command_id`, by the id's hash.
    positions: HashTable<u64>,
}

impl DialCommands {
    /// The call a dial with `command_id` made within the window, if one did.
    pub(crate) fn find(&self, hash: u64, command_id: &str, now: Timestamp) -> Option<Handle> {
        let pos = *self.positions.find(hash, |&p| *self.at(p).command_id == *command_id)?;
        let entry = self.at(pos);
        (!entry.expired(now)).then_some(entry.call)
    }

    /// Remembers that a dial with `command_id` made `call` at `now`, keeping at most `cap`
    /// entries. `hash` hashes a `command_id` as [`DialCommands::find`] was given.
    pub(crate) fn remember(
        &mut self,
        hash: impl Fn(&str) -> u64,
        command_id: &str,
        call: Handle,
        now: Timestamp,
        cap: usize,
    ) {
        while let Some(oldest) = self.entries.front() {
            if self.entries.len() < cap && !oldest.expired(now) {
                break;
            }
            self.drop_oldest(&hash);
        }
        self.push(&hash, DialCommand { command_id: command_id.into(), at: now, call });
    }

    /// The entries, oldest first (for a snapshot).
    pub(crate) fn entries(&self) -> impl ExactSizeIterator<Item = &DialCommand> + Clone {
        self.entries.iter()
    }

    /// The memory that holds `entries` (oldest first), as [`DialCommands::entries`] gave them.
    pub(crate) fn from_entries(hash: impl Fn(&str) -> u64, entries: Vec<DialCommand>) -> Self {
        let mut commands = Self { entries: VecDeque::with_capacity(entries.len()), ..Self::default() };
        for entry in entries {
            commands.push(&hash, entry);
        }
        commands
    }

    /// Checks that the table holds exactly the latest entry of each `command_id`.
    pub(crate) fn check(&self, hash: impl Fn(&str) -> u64) -> Result<(), String> {
        let mut latest = std::collections::HashMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            latest.insert(&*entry.command_id, self.dropped + i as u64);
        }
        if latest.len() != self.positions.len() {
            return Err(format!(
                "{} dial command ids remembered, {} in their table",
                latest.len(),
                self.positions.len()
            ));
        }
        for (id, pos) in latest {
            if self.positions.find(hash(id), |&p| p == pos).is_none() {
                return Err(format!("dial command id {id:?} not found at its latest position"));
            }
        }
        Ok(())
    }

    fn at(&self, pos: u64) -> &DialCommand {
        // Every position in the table is of an entry still kept (see `drop_oldest`).
        let index = usize::try_from(pos - self.dropped).unwrap_or(usize::MAX);
        &self.entries[index]
    }

    fn push(&mut self, hash: &impl Fn(&str) -> u64, entry: DialCommand) {
        let pos = self.dropped + self.entries.len() as u64;
        let id_hash = hash(&entry.command_id);
        let Self { entries, dropped, positions } = self;
        let slot_of = |p: u64| usize::try_from(p - *dropped).unwrap_or(usize::MAX);
        match positions.find_mut(id_hash, |&p| entries[slot_of(p)].command_id == entry.command_id) {
            Some(latest) => *latest = pos,
            None => {
                positions.insert_unique(id_hash, pos, |&p| hash(&entries[slot_of(p)].command_id));
            }
        }
        self.entries.push_back(entry);
    }

    fn drop_oldest(&mut self, hash: &impl Fn(&str) -> u64) {
        let Some(oldest) = self.entries.pop_front() else { return };
        let pos = self.dropped;
        self.dropped += 1;
        // A later entry of the same id has the table's place already: then nothing to remove.
        if let Ok(found) = self.positions.find_entry(hash(&oldest.command_id), |&p| p == pos) {
            found.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(id: &str) -> u64 {
        // Few distinct values, so that ids share hashes and the comparisons are what tells them apart.
        id.bytes().map(u64::from).sum::<u64>() % 3
    }

    const fn call(ix: u32) -> Handle {
        Handle { ix, generation: 0 }
    }

    fn secs(s: u64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    #[test]
    fn a_command_id_is_found_for_sixty_seconds() {
        let mut m = DialCommands::default();
        m.remember(hash, "a", call(1), secs(100), 10);
        m.remember(hash, "b", call(2), secs(130), 10);
        assert_eq!(m.find(hash("a"), "a", secs(159)), Some(call(1)));
        assert_eq!(m.find(hash("a"), "a", secs(160)), None, "expired at 60 s");
        assert_eq!(m.find(hash("b"), "b", secs(160)), Some(call(2)));
        assert_eq!(m.find(hash("c"), "c", secs(100)), None);
        // Expired entries stay until the next one is added, which drops them.
        assert_eq!(m.entries().len(), 2);
        m.remember(hash, "c", call(3), secs(160), 10);
        assert_eq!(m.entries().map(|e| &*e.command_id).collect::<Vec<_>>(), ["b", "c"]);
        m.check(hash).unwrap();
    }

    #[test]
    fn past_the_cap_the_oldest_go_first() {
        let mut m = DialCommands::default();
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            m.remember(hash, id, call(i as u32), secs(100), 3);
            m.check(hash).unwrap();
        }
        assert_eq!(m.entries().map(|e| &*e.command_id).collect::<Vec<_>>(), ["b", "c", "d"]);
        assert_eq!(m.find(hash("a"), "a", secs(100)), None);
        assert_eq!(m.find(hash("b"), "b", secs(100)), Some(call(1)));
        assert_eq!(m.find(hash("d"), "d", secs(100)), Some(call(3)));
    }

    #[test]
    fn a_clock_set_back_leaves_a_newer_entry_for_an_old_id_in_charge() {
        let mut m = DialCommands::default();
        m.remember(hash, "new", call(1), secs(1_000), 10);
        // The clock went back: "a" is older than "new" but sits behind it.
        m.remember(hash, "a", call(2), secs(500), 10);
        // At 560 "a" has expired, yet "new" (from the clock's future) keeps it from the front.
        assert_eq!(m.find(hash("a"), "a", secs(560)), None);
        m.remember(hash, "a", call(3), secs(560), 10);
        assert_eq!(m.entries().len(), 3, "the expired one is still behind the newer");
        assert_eq!(m.find(hash("a"), "a", secs(561)), Some(call(3)));
        m.check(hash).unwrap();
        // Time moves on past all three: adding drops them all, the old "a" without taking the
        // new one's place from the table.
        m.remember(hash, "z", call(4), secs(1_100), 10);
        assert_eq!(m.entries().map(|e| &*e.command_id).collect::<Vec<_>>(), ["z"]);
        m.check(hash).unwrap();
    }

    #[test]
    fn dropping_an_entry_replaced_in_the_table_keeps_the_replacement() {
        let mut m = DialCommands::default();
        // An entry from the clock's future keeps the expired "a" from the front.
        m.remember(hash, "later", call(1), secs(1_000), 3);
        m.remember(hash, "a", call(2), secs(100), 3);
        m.remember(hash, "a", call(3), secs(170), 3);
        assert_eq!(m.find(hash("a"), "a", secs(170)), Some(call(3)));
        // The cap drops "later", then the first "a" goes as expired: the second stays found.
        m.remember(hash, "b", call(4), secs(170), 3);
        assert_eq!(m.entries().map(|e| &*e.command_id).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.find(hash("a"), "a", secs(170)), Some(call(3)));
        m.check(hash).unwrap();
    }

    #[test]
    fn rebuilt_from_its_entries_it_finds_the_same() {
        let mut m = DialCommands::default();
        m.remember(hash, "x", call(1), secs(900), 10);
        m.remember(hash, "a", call(2), secs(100), 10);
        m.remember(hash, "a", call(3), secs(170), 10);
        let again = DialCommands::from_entries(hash, m.entries().cloned().collect());
        again.check(hash).unwrap();
        for id in ["x", "a", "b"] {
            assert_eq!(again.find(hash(id), id, secs(180)), m.find(hash(id), id, secs(180)), "{id}");
        }
        assert_eq!(again.entries().cloned().collect::<Vec<_>>(), m.entries().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn the_check_finds_a_table_out_of_step() {
        let mut m = DialCommands::default();
        m.remember(hash, "a", call(1), secs(100), 10);
        m.positions.clear();
        assert!(m.check(hash).is_err());
        let mut m = DialCommands::default();
        m.remember(hash, "a", call(1), secs(100), 10);
        m.remember(hash, "a", call(2), secs(200), 10);
        // Points at the older "a".
        *m.positions.find_mut(hash("a"), |_| true).unwrap() = 0;
        assert!(m.check(hash).is_err());
    }
}
