//! Service order of one queue: priority bands served highest first, first-in-first-out
//! within a band, with O(log n) position, removal from anywhere, and head lookup.
//!
//! Every member gets a slot numbered by arrival (`Seq`). Each priority band keeps a bitmap
//! of the slots of its members with a Fenwick tree over the bitmap's words, so a member's position is the size of the bands
//! above it plus a prefix count in its own band. The bitmaps are the one record of which
//! slots are live and in which band: the slot array holds only the values, so removal
//! clears a bit and touches nothing else (no shifting, no write to the slot array, which
//! at a million members would be one more cache miss). The caller, which keeps each
//! member's band beside its slot, passes it in. When the slot array fills up it is
//! compacted (live members renumbered in arrival order) or doubled; when it becomes sparse
//! it shrinks. Both are amortised O(1) per operation.

/// Number of priority bands (priorities `0..=9`).
pub(crate) const BANDS: usize = 10;

/// A slot number: arrival order within one queue. Changes only on compaction, which reports
/// every move through the `relocate` callback.
pub(crate) type Seq = usize;

const MIN_CAPACITY: usize = 16;

/// Words of the bitmap per block: one 64-byte cache line, 512 slots.
const BLOCK_WORDS: usize = 8;
const BLOCK_SLOTS: usize = 64 * BLOCK_WORDS;

/// One cache line of a bitmap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(align(64))]
struct Block([u64; BLOCK_WORDS]);

/// Which slots of `0..cap` hold a member of one band: a bitmap in blocks of one cache line
/// (512 slots), plus a Fenwick tree over the blocks' counts (1-based internally; none with
/// one block, whose prefix counts and selects never read it: most queues). A prefix
/// count is a walk of the small tree and the popcounts of one line of the bitmap. At a
/// million slots the bitmap is 128 KiB and the tree 8 KiB (2,048 blocks): the tree's lines
/// are touched by every operation and stay in the nearest caches, and an operation touches
/// one line of the bitmap. (A tree over the bitmap's words would be 64 KiB, and its lower
/// levels, each touched rarely, would be evicted by the records a random lookup reads.)
///
/// Boxed slices (they never grow: a rebuild makes new ones): a band's header is 32 bytes, so
/// that a band's is found by a shift, and aligned to 32, so that the bands' headers (one
/// allocation) never have one across two cache lines (at the allocator's 16, one in four
/// did: a quarter of a miss more per arrival, when the queues' lines are not cached).
#[derive(Debug, Default, Clone)]
#[repr(align(32))]
struct Marks {
    blocks: Box<[Block]>,
    tree: Box<[u32]>,
}

impl Marks {
    fn is_allocated(&self) -> bool {
        !self.blocks.is_empty()
    }

    /// `cap` is a power of two, so the block count is one too (which `select` relies on).
    fn with_capacity(cap: usize) -> Self {
        let blocks = cap.div_ceil(BLOCK_SLOTS).max(1);
        // One block: no tree, so marking a slot writes one cache line, not two.
        let tree = if blocks > 1 { vec![0; blocks + 1].into() } else { Box::default() };
        Self { blocks: vec![Block::default(); blocks].into(), tree }
    }

    fn add_to_tree(&mut self, block: usize, delta: i32) {
        // A band of one block (most) has no tree: one test, before the walk's first index.
        if self.tree.is_empty() {
            return;
        }
        let mut i = block + 1;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Marks (`delta` 1) or unmarks (`delta` -1) `slot`.
    fn add(&mut self, slot: usize, delta: i32) {
        let added = self.try_add(slot, delta);
        assert!(added, "a slot past the band's bitmap");
    }

    /// As [`Marks::add`]; false, with nothing changed, when the bitmap has no block for
    /// `slot` (a band with no bitmap yet has no block at all). Inlined into `mark`.
    #[inline]
    fn try_add(&mut self, slot: usize, delta: i32) -> bool {
        let (block, word, bit) = (slot / BLOCK_SLOTS, slot / 64 % BLOCK_WORDS, 1u64 << (slot % 64));
        let Some(b) = self.blocks.get_mut(block) else { return false };
        let w = &mut b.0[word];
        debug_assert_eq!(*w & bit != 0, delta < 0, "mark set twice or cleared twice");
        *w ^= bit;
        self.add_to_tree(block, delta);
        true
    }

    /// Marks the `count` slots from `first` on, none of them marked: each bitmap word
    /// written once, the tree once per block.
    fn add_run(&mut self, first: usize, count: usize) {
        let (mut slot, end) = (first, first + count);
        while slot < end {
            let block = slot / BLOCK_SLOTS;
            let block_end = end.min((block + 1) * BLOCK_SLOTS);
            let marked = block_end - slot;
            while slot < block_end {
                let bits = (block_end - slot).min(64 - slot % 64);
                let mask = (u64::MAX >> (64 - bits)) << (slot % 64);
                let w = &mut self.blocks[block].0[slot / 64 % BLOCK_WORDS];
                debug_assert_eq!(*w & mask, 0, "mark set twice");
                *w |= mask;
                slot += bits;
            }
            // At most 512 slots in a block.
            self.add_to_tree(block, marked as i32);
        }
    }

    /// Number of marked slots in `0..=slot`. Out of line: a position is usually the newest
    /// or the oldest member's, found without it, and its walk would have every position
    /// save registers.
    #[inline(never)]
    fn prefix(&self, slot: usize) -> u32 {
        let (block, word) = (slot / BLOCK_SLOTS, slot / 64 % BLOCK_WORDS);
        let mut i = block; // blocks 0..block, 1-based prefix up to `block`
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i &= i - 1;
        }
        let words = &self.blocks[block].0;
        let before: u32 = words[..word].iter().map(|w| w.count_ones()).sum();
        let below = words[word] & (u64::MAX >> (63 - slot % 64));
        sum + before + below.count_ones()
    }

    /// The slot of the `k`-th marked slot (`k >= 1`). The caller guarantees it exists.
    fn select(&self, mut k: u32) -> usize {
        let n = self.tree.len().saturating_sub(1); // a power of two, or 0 with one block
        let mut block = 0;
        let mut step = n;
        while step > 0 {
            let next = block + step;
            if next <= n && self.tree[next] < k {
                block = next;
                k -= self.tree[next];
            }
            step >>= 1;
        }
        // `block` (0-based) holds the k-th remaining mark: find its word, then drop the
        // k-1 lowest bits of that word.
        let words = &self.blocks[block].0;
        let mut word = 0;
        while words[word].count_ones() < k {
            k -= words[word].count_ones();
            word += 1;
        }
        let mut bits = words[word];
        for _ in 1..k {
            bits &= bits - 1;
        }
        block * BLOCK_SLOTS + word * 64 + bits.trailing_zeros() as usize
    }

    /// Marks `slot` without updating the tree: for rebuilding, followed by
    /// [`Marks::build_tree`].
    fn set_bit(&mut self, slot: usize) {
        self.blocks[slot / BLOCK_SLOTS].0[slot / 64 % BLOCK_WORDS] |= 1 << (slot % 64);
    }

    /// The word of the bitmap that holds slots `64 * word ..`, cleared.
    fn take_word(&mut self, word: usize) -> u64 {
        std::mem::take(&mut self.blocks[word / BLOCK_WORDS].0[word % BLOCK_WORDS])
    }

    /// Builds the tree from the bitmap, in O(blocks).
    fn build_tree(&mut self) {
        self.tree.fill(0);
        let n = if self.tree.is_empty() { 0 } else { self.blocks.len() };
        for i in 1..=n {
            self.tree[i] += self.blocks[i - 1].0.iter().map(|w| w.count_ones()).sum::<u32>();
            let parent = i + (i & i.wrapping_neg());
            if parent <= n {
                self.tree[parent] += self.tree[i];
            }
        }
    }

    /// Whether `slot` is marked (false past the bitmap, or with none).
    fn has(&self, slot: usize) -> bool {
        self.word(slot / 64) & (1 << (slot % 64)) != 0
    }

    /// The word of the bitmap that holds slots `64 * word ..`, 0 with none.
    fn word(&self, word: usize) -> u64 {
        self.blocks.get(word / BLOCK_WORDS).map_or(0, |b| b.0[word % BLOCK_WORDS])
    }
}

/// The first slot from `seq` on whose bit is set in the bitmap that `word` reads by words;
/// there must be one.
fn next_set(seq: Seq, word: impl Fn(usize) -> u64) -> Seq {
    let mut w = seq / 64;
    let mut bits = word(w) & (u64::MAX << (seq % 64));
    while bits == 0 {
        w += 1;
        bits = word(w);
    }
    w * 64 + bits.trailing_zeros() as usize
}

/// Members of one queue in service order.
#[derive(Debug, Clone)]
pub(crate) struct MemberOrder<T> {
    /// The value of each slot in `0..used`; a slot that no band marks holds a stale value.
    /// Its length is the room for values: `cap` once an arrival needed it (none before the
    /// first), so that an arrival tests the room alone and stores with no further check.
    slots: Box<[T]>,
    /// Slots used: the next arrival takes slot `used`.
    used: usize,
    cap: usize,
    /// No live slot below this index (advanced lazily).
    first_live: usize,
    band_len: [u32; BANDS],
    /// Boxed: ten headers inline would spread a queue's hot fields over many more cache
    /// lines, and a queue shared by threads pays for every line it touches. None only in a
    /// placeholder ([`MemberOrder::unallocated`]): one pointer still (a slice's length
    /// would move the queue's fields), read through [`MemberOrder::trees`].
    trees: Option<Box<[Marks; BANDS]>>,
    len: usize,
}

impl<T> Default for MemberOrder<T> {
    fn default() -> Self {
        Self { trees: Some(Box::default()), ..Self::unallocated() }
    }
}

impl<T> MemberOrder<T> {
    /// An order that holds nothing on the heap, not even its bands' headers: the
    /// placeholder of a vacant queue slot, never read or changed.
    pub(crate) fn unallocated() -> Self {
        Self {
            slots: Box::default(),
            used: 0,
            cap: MIN_CAPACITY,
            first_live: 0,
            band_len: [0; BANDS],
            trees: None,
            len: 0,
        }
    }

    /// The bands' bitmaps, which every order but a placeholder has.
    fn trees(&self) -> &[Marks; BANDS] {
        self.trees.as_deref().expect("an order in use has its bands")
    }

    fn trees_mut(&mut self) -> &mut [Marks; BANDS] {
        self.trees.as_deref_mut().expect("an order in use has its bands")
    }
}

impl<T: Copy + Default> MemberOrder<T> {
    /// Number of members.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots before the next compaction or growth.
    #[cfg(test)]
    pub(crate) const fn capacity(&self) -> usize {
        self.cap
    }

    /// Appends `value` at the end of `band`. `relocate` is told of every member that a
    /// compaction renumbers (before the new member is added).
    pub(crate) fn push(&mut self, band: u8, value: T, mut relocate: impl FnMut(&T, Seq)) -> Seq {
        debug_assert!((band as usize) < BANDS);
        let mut seq = self.used;
        // The test of the room is also the store's bounds check.
        if seq < self.slots.len() {
            self.slots[seq] = value;
        } else {
            self.make_room(&mut relocate);
            seq = self.used;
            self.slots[seq] = value;
        }
        self.used = seq + 1;
        self.mark(seq, band, 1);
        self.len += 1;
        seq
    }

    /// Appends `value` after the last slot without making it a member yet: a run of
    /// arrivals into one band appends each value and then marks them all at once
    /// ([`MemberOrder::mark_run`]). Until then the order must not be read or changed
    /// otherwise. The caller made room first ([`MemberOrder::reserve`]).
    pub(crate) fn append_unmarked(&mut self, value: T) -> Seq {
        debug_assert!(self.used < self.cap, "no room reserved");
        let seq = self.used;
        self.slots[seq] = value;
        self.used = seq + 1;
        seq
    }

    /// No room for one more value. At the capacity: compact when at least half the slots
    /// are holes, else grow. Below it (a new order, or one read back from a snapshot):
    /// room up to it.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, relocate: impl FnMut(&T, Seq)) {
        if self.used == self.cap {
            let new_cap = if self.len * 2 <= self.cap { self.cap } else { self.cap * 2 };
            self.rebuild(new_cap, relocate);
        } else {
            self.fill_room();
        }
    }

    /// Room for `cap` values, those in use kept. Zeroed memory (`T::default()` of the
    /// order's call slots) is not touched until used.
    fn fill_room(&mut self) {
        let mut slots = vec![T::default(); self.cap].into_boxed_slice();
        slots[..self.used].copy_from_slice(&self.slots[..self.used]);
        self.slots = slots;
    }

    /// Makes the `count` values appended from slot `first` on (the last ones appended)
    /// members at the end of `band`, in their order.
    pub(crate) fn mark_run(&mut self, band: u8, first: Seq, count: usize) {
        debug_assert!((band as usize) < BANDS);
        debug_assert_eq!(first + count, self.used, "a run is the last values appended");
        let b = band as usize;
        if !self.trees()[b].is_allocated() {
            self.allocate_band(b);
        }
        self.trees_mut()[b].add_run(first, count);
        // At most the capacity, itself at most 2^22.
        self.band_len[b] += count as u32;
        self.len += count;
    }

    /// Makes room for `additional` more members: the pushes that follow neither compact nor
    /// grow (one rebuild now, when needed, instead of one per doubling on the way).
    pub(crate) fn reserve(&mut self, additional: usize, relocate: impl FnMut(&T, Seq)) {
        if self.used.saturating_add(additional) > self.cap {
            let new_cap = self.len.saturating_add(additional).next_power_of_two().max(self.cap);
            self.rebuild(new_cap, relocate);
        } else if self.slots.len() < self.cap {
            self.fill_room();
        }
    }

    /// Removes the member in `seq`, of `band`. Its value is not read (the caller has it):
    /// at a million members that read would be a cache miss of its own.
    pub(crate) fn remove(&mut self, seq: Seq, band: u8, relocate: impl FnMut(&T, Seq)) {
        debug_assert_eq!(self.band_of(seq), Some(band), "removing an empty slot, or from another band");
        self.unmark(seq, band);
        self.len -= 1;
        if self.len == 0 {
            self.reset();
        } else {
            if seq == self.first_live {
                self.first_live = self.next_live(seq + 1, band);
            }
            // Shrink when sparse; amortised against the removals that made it so.
            if self.cap > 1024 && self.len * 8 < self.cap {
                let new_cap = (self.len * 2).next_power_of_two().max(MIN_CAPACITY);
                self.rebuild(new_cap, relocate);
            }
        }
    }

    /// The union of the bands' bitmaps over `64 * word ..`: the live slots there.
    fn live_word(&self, word: usize) -> u64 {
        self.trees().iter().fold(0, |w, t| w | t.word(word))
    }

    /// The first live slot from `seq` on; there must be one. When `band` holds every
    /// member (the usual queue, whose head just left), its bitmap alone says which slots
    /// are live: no union of the ten bands' words.
    fn next_live(&self, seq: Seq, band: u8) -> Seq {
        let b = band as usize;
        if self.band_len[b] as usize == self.len {
            next_set(seq, |word| self.trees()[b].word(word))
        } else {
            next_set(seq, |word| self.live_word(word))
        }
    }

    /// The band of the member in `seq`, if the slot holds one.
    pub(crate) fn band_of(&self, seq: Seq) -> Option<u8> {
        (0..BANDS).find(|&b| self.trees()[b].has(seq)).map(|b| b as u8)
    }

    /// The member in `seq`, which must hold one.
    pub(crate) fn get(&self, seq: Seq) -> &T {
        debug_assert!(self.band_of(seq).is_some(), "empty slot");
        &self.slots[seq]
    }

    /// The member in `seq`, if the slot holds one.
    pub(crate) fn try_get(&self, seq: Seq) -> Option<&T> {
        self.band_of(seq).and(self.slots[..self.used].get(seq))
    }

    /// 1-based position of the member in `seq`.
    #[cfg(test)]
    pub(crate) fn position(&self, seq: Seq) -> usize {
        self.position_in_band(seq, self.band_of(seq).expect("empty slot"))
    }

    /// 1-based position of the member in `seq`, whose band the caller knows.
    pub(crate) fn position_in_band(&self, seq: Seq, band: u8) -> usize {
        let band = band as usize;
        debug_assert!(self.trees()[band].has(seq), "empty slot, or another band");
        // The members of the higher bands, counted from the side with fewer bands: the
        // default band, 0, the lowest, has all but its own members above it.
        let above = if band < BANDS / 2 {
            self.len as u32 - self.band_len[..=band].iter().sum::<u32>()
        } else {
            self.band_len[band + 1..].iter().sum()
        };
        // The newest member is the last of its band, the oldest the first of its own: no
        // tree walk for the members that just joined or are about to be served.
        let within = if seq + 1 == self.used {
            self.band_len[band]
        } else if seq == self.first_live {
            1
        } else {
            self.prefix(band, seq)
        };
        (above + within) as usize
    }

    /// Members of `band` in slots `0..=seq`: out of line with the check that the order has
    /// its bands, which would keep [`MemberOrder::position_in_band`] from being inlined.
    #[inline(never)]
    fn prefix(&self, band: usize, seq: Seq) -> u32 {
        self.trees()[band].prefix(seq)
    }

    /// The member at 1-based `position`, if any.
    pub(crate) fn seq_at(&self, position: usize) -> Option<Seq> {
        if position == 0 || position > self.len {
            return None;
        }
        let mut k = u32::try_from(position).ok()?;
        for band in (0..BANDS).rev() {
            if k <= self.band_len[band] {
                return Some(self.trees()[band].select(k));
            }
            k -= self.band_len[band];
        }
        None
    }

    /// The member served next.
    pub(crate) fn head(&self) -> Option<Seq> {
        if self.len == 0 {
            return None;
        }
        // The common case, without the tree or the bitmaps: when one band holds every
        // member, the member that arrived first is served first. The default band, 0, is
        // tested alone: LLVM folds ten such tests into one sequence of all ten.
        if self.band_len[0] as usize == self.len {
            return Some(self.first_live);
        }
        self.head_past_band_0()
    }

    /// [`MemberOrder::head`] when band 0 does not hold every member.
    #[inline(never)]
    fn head_past_band_0(&self) -> Option<Seq> {
        if self.band_len[1..].iter().any(|&n| n as usize == self.len) {
            return Some(self.first_live);
        }
        self.seq_at(1)
    }

    /// The member that arrived first (whatever its band).
    pub(crate) fn oldest(&self) -> Option<&T> {
        if self.len == 0 { None } else { Some(&self.slots[self.first_live]) }
    }

    /// Moves the member in `seq` from band `old` to `band`, keeping its arrival order.
    pub(crate) fn set_band(&mut self, seq: Seq, old: u8, band: u8) {
        debug_assert_eq!(self.band_of(seq), Some(old), "empty slot, or another band");
        if old != band {
            self.mark(seq, old, -1);
            self.mark(seq, band, 1);
        }
    }

    /// Back to empty, keeping small allocations: queues that empty and refill all the time
    /// (the common case) then allocate nothing.
    fn reset(&mut self) {
        if self.cap > 1024 {
            *self = Self::default();
            return;
        }
        // Every +1 in the trees met its -1, so they are all zeros again: nothing to clear.
        self.used = 0;
        self.first_live = 0;
        debug_assert!(self.trees().iter().all(|t| t.blocks.iter().all(|b| *b == Block::default())));
    }

    /// The live slots in arrival order.
    fn live_seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        (self.first_live / 64..self.used.div_ceil(64)).flat_map(move |word| {
            let mut bits = self.live_word(word);
            std::iter::from_fn(move || {
                let bit = (bits != 0).then(|| bits.trailing_zeros() as usize)?;
                bits &= bits - 1;
                Some(word * 64 + bit)
            })
        })
    }

    /// Members in arrival order (not service order), for whole-queue scans.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.live_seqs().map(|seq| &self.slots[seq])
    }

    /// Inlined: every arrival and departure marks, and a call would save and restore the
    /// registers the rare allocation below needs.
    #[inline]
    fn mark(&mut self, seq: Seq, band: u8, delta: i32) {
        let b = band as usize;
        // The bitmap's bounds check finds a band with no bitmap yet (it has no block).
        if !self.trees_mut()[b].try_add(seq, delta) {
            self.allocate_band(b);
            self.trees_mut()[b].add(seq, delta);
        }
        self.band_len[b] = self.band_len[b].wrapping_add_signed(delta);
    }

    /// Unmarks the member in `seq` of `band`, whose bitmap is there (it holds the member).
    #[inline]
    fn unmark(&mut self, seq: Seq, band: u8) {
        let b = band as usize;
        self.trees_mut()[b].add(seq, -1);
        self.band_len[b] -= 1;
    }

    /// The bitmap of a band's first member: once per band and queue, kept out of line.
    #[cold]
    #[inline(never)]
    fn allocate_band(&mut self, band: usize) {
        assert!(!self.trees()[band].is_allocated(), "a band's bitmap allocated twice");
        let cap = self.cap;
        self.trees_mut()[band] = Marks::with_capacity(cap);
    }

    /// How the slots are laid out: slots used, capacity, first live slot (for a snapshot:
    /// they decide when the next compaction renumbers the members).
    pub(crate) fn layout(&self) -> (usize, usize, usize) {
        (self.used, self.cap, self.first_live)
    }

    /// An order with this layout (as [`MemberOrder::layout`] gave it) and these members:
    /// (slot, band, value), in any order. Empty slots hold `T::default()`.
    pub(crate) fn from_parts(
        (used, cap, first_live): (usize, usize, usize),
        members: &[(Seq, u8, T)],
    ) -> Result<Self, String>
    where
        T: Default,
    {
        // Bounds before anything is allocated: the capacity, by twice the largest queue; the
        // slots used, by what `remove` allows (it shrinks an order sparser than 1 in 8).
        let dense_enough = used <= 1024.max(members.len().saturating_mul(8));
        if !cap.is_power_of_two() || !(MIN_CAPACITY..=1 << 22).contains(&cap) || used > cap || !dense_enough {
            return Err(format!("a queue order of {used} slots in {cap} for {} members", members.len()));
        }
        let mut order = Self { slots: vec![T::default(); used].into(), used, cap, ..Self::default() };
        for &(seq, band, value) in members {
            if seq >= used || (band as usize) >= BANDS {
                return Err(format!("a member in slot {seq} of {used}, band {band}"));
            }
            if order.band_of(seq).is_some() {
                return Err(format!("two members in slot {seq}"));
            }
            if !order.trees_mut()[band as usize].is_allocated() {
                order.trees_mut()[band as usize] = Marks::with_capacity(cap);
            }
            order.trees_mut()[band as usize].set_bit(seq);
            order.band_len[band as usize] += 1;
            order.slots[seq] = value;
        }
        for t in order.trees_mut().iter_mut().filter(|t| t.is_allocated()) {
            t.build_tree();
        }
        order.len = members.len();
        let first = members.iter().map(|m| m.0).min();
        if first.unwrap_or(0) != first_live || (first.is_none() && used != 0) {
            return Err(format!("first live slot {first_live}, members from {first:?} in {used} slots"));
        }
        order.first_live = first_live;
        Ok(order)
    }

    /// Renumbers live members densely in arrival order into `new_cap` slots. Out of line:
    /// amortised over many pushes and removals, it would only crowd their code.
    #[cold]
    #[inline(never)]
    fn rebuild(&mut self, new_cap: usize, mut relocate: impl FnMut(&T, Seq)) {
        // A compaction of members that share one band (the usual queue) keeps the room.
        if new_cap == self.cap && self.slots.len() == new_cap {
            if let Some(band) = (0..BANDS).find(|&b| self.band_len[b] as usize == self.len) {
                self.compact_band(band, relocate);
                return;
            }
        }
        let mut trees: Box<[Marks; BANDS]> = Box::default();
        for band in 0..BANDS {
            if self.band_len[band] > 0 {
                trees[band] = Marks::with_capacity(new_cap);
            }
        }
        // Zeroed memory (`T::default()` of the order's call slots) is not touched until used.
        let mut slots = vec![T::default(); new_cap].into_boxed_slice();
        let mut used = 0;
        for seq in self.live_seqs() {
            let band = self.band_of(seq).map_or(0, usize::from);
            let value = self.slots[seq];
            relocate(&value, used);
            trees[band].set_bit(used);
            slots[used] = value;
            used += 1;
        }
        for t in trees.iter_mut().filter(|t| t.is_allocated()) {
            t.build_tree();
        }
        self.slots = slots;
        self.used = used;
        self.trees = Some(trees);
        self.cap = new_cap;
        self.first_live = 0;
    }

    /// What [`MemberOrder::rebuild`] does at the same capacity when `band` holds every
    /// member, in place: the members renumbered densely in arrival order, read from that
    /// band's bitmap (no search for each member's band, no allocation). A member only
    /// moves down, into a word of the bitmap already read. Unlike the full rebuild, the
    /// other bands keep their (empty) bitmaps allocated.
    fn compact_band(&mut self, band: usize, mut relocate: impl FnMut(&T, Seq)) {
        let mut used = 0;
        for word in self.first_live / 64..self.used.div_ceil(64) {
            let mut bits = self.trees_mut()[band].take_word(word);
            while bits != 0 {
                let seq = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let value = self.slots[seq];
                relocate(&value, used);
                self.slots[used] = value;
                self.trees_mut()[band].set_bit(used);
                used += 1;
            }
        }
        self.trees_mut()[band].build_tree();
        self.used = used;
        self.first_live = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bands_header_is_half_a_cache_line_and_never_across_two() {
        assert_eq!(std::mem::size_of::<Marks>(), 32);
        assert_eq!(std::mem::align_of::<Marks>(), 32);
    }

    /// A small reproducible random source: `random(n)` is in `0..n`.
    fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize % n
        }
    }
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// The obvious model: a vector in service order.
    #[derive(Default)]
    struct Model {
        members: Vec<(u8, u64)>, // (band, id) in arrival order
    }

    impl Model {
        fn service_order(&self) -> Vec<u64> {
            let mut v: Vec<_> = self.members.iter().enumerate().collect();
            v.sort_by_key(|(i, (band, _))| (std::cmp::Reverse(*band), *i));
            v.into_iter().map(|(_, (_, id))| *id).collect()
        }
    }

    /// An order and its model changed step by step alike, with each member's slot kept as
    /// the order moves it.
    #[derive(Default)]
    struct Walk {
        order: MemberOrder<u64>,
        seqs: HashMap<u64, Seq>,
        model: Model,
    }

    impl Walk {
        fn push(&mut self, band: u8, id: u64) {
            let seqs = &mut self.seqs;
            let seq = self.order.push(band, id, |v, s| {
                seqs.insert(*v, s);
            });
            seqs.insert(id, seq);
            self.model.members.push((band, id));
        }

        /// The member at `i` in arrival order moves to `band`.
        fn set_band(&mut self, i: usize, band: u8) {
            let (old, id) = self.model.members[i];
            self.model.members[i].0 = band;
            self.order.set_band(self.seqs[&id], old, band);
        }

        /// The member at `i` in arrival order leaves.
        fn remove(&mut self, i: usize) {
            let (band, id) = self.model.members.remove(i);
            let seq = self.seqs.remove(&id).unwrap();
            assert_eq!(*self.order.get(seq), id);
            let seqs = &mut self.seqs;
            self.order.remove(seq, band, |v, s| {
                seqs.insert(*v, s);
            });
        }

        /// Every member's position and the slot at every position, the head and the length.
        fn check(&self, at: u64) {
            let expected = self.model.service_order();
            assert_eq!(self.order.len(), expected.len(), "step {at}");
            assert_eq!(self.order.head(), expected.first().map(|id| self.seqs[id]), "step {at}");
            for (pos, id) in expected.iter().enumerate() {
                assert_eq!(self.order.position(self.seqs[id]), pos + 1, "step {at}");
                assert_eq!(self.order.seq_at(pos + 1), Some(self.seqs[id]), "step {at}");
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8),
        Remove(usize),
        PopHead,
        SetBand(usize, u8),
        /// Members appended one by one and marked at once, as a batch's run does.
        PushRun(u8, usize),
    }

    /// Mostly the first three bands (members share bands: FIFOs, compaction), sometimes any
    /// of the ten (positions counted from the high side, a queue whose one band is not 0).
    fn band() -> impl Strategy<Value = u8> {
        prop_oneof![3 => 0u8..3, 1 => 0..BANDS as u8]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Arrivals (2 single, 1 run of 2 on average) as many as departures: the order
            // stays small and the checks after each step cheap.
            2 => band().prop_map(Op::Push),
            2 => any::<usize>().prop_map(Op::Remove),
            2 => Just(Op::PopHead),
            1 => (any::<usize>(), band()).prop_map(|(i, b)| Op::SetBand(i, b)),
            1 => (band(), 1usize..4).prop_map(|(b, n)| Op::PushRun(b, n)),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_a_sorted_vector(ops in proptest::collection::vec(op(), 1..400)) {
            let mut order = MemberOrder::<u64>::default();
            let mut seqs: HashMap<u64, Seq> = HashMap::new();
            let mut model = Model::default();
            let mut next_id = 0u64;
            for op in ops {
                match op {
                    Op::Push(band) => {
                        let id = next_id;
                        next_id += 1;
                        let seq = order.push(band, id, |v, s| { seqs.insert(*v, s); });
                        seqs.insert(id, seq);
                        model.members.push((band, id));
                    }
                    Op::PushRun(band, count) => {
                        order.reserve(count, |v, s| { seqs.insert(*v, s); });
                        let first = order.layout().0;
                        for k in 0..count {
                            let id = next_id;
                            next_id += 1;
                            prop_assert_eq!(order.append_unmarked(id), first + k);
                            seqs.insert(id, first + k);
                            model.members.push((band, id));
                        }
                        order.mark_run(band, first, count);
                    }
                    Op::Remove(i) | Op::SetBand(i, _) if model.members.is_empty() => { let _ = i; }
                    Op::Remove(i) => {
                        let (band, id) = model.members.remove(i % model.members.len());
                        let seq = seqs.remove(&id).unwrap();
                        prop_assert_eq!(order.try_get(seq), Some(&id));
                        order.remove(seq, band, |v, s| { seqs.insert(*v, s); });
                        prop_assert_eq!(order.try_get(seq), None);
                    }
                    Op::PopHead => {
                        let expected = model.service_order().first().copied();
                        let got = order.head().map(|s| *order.get(s));
                        prop_assert_eq!(got, expected);
                        if let Some(id) = expected {
                            let band = model.members.iter().find(|(_, m)| *m == id).unwrap().0;
                            model.members.retain(|(_, m)| *m != id);
                            let seq = seqs.remove(&id).unwrap();
                            order.remove(seq, band, |v, s| { seqs.insert(*v, s); });
                        }
                    }
                    Op::SetBand(i, band) => {
                        let i = i % model.members.len();
                        let old = model.members[i].0;
                        model.members[i].0 = band;
                        order.set_band(seqs[&model.members[i].1], old, band);
                    }
                }
                let expected = model.service_order();
                prop_assert_eq!(order.len(), expected.len());
                for (pos, id) in expected.iter().enumerate() {
                    prop_assert_eq!(order.position(seqs[id]), pos + 1);
                    prop_assert_eq!(order.seq_at(pos + 1), Some(seqs[id]));
                }
                prop_assert_eq!(order.seq_at(expected.len() + 1), None);
                prop_assert_eq!(order.oldest().copied(), model.members.first().map(|m| m.1));
                // Arrival order, and each member's band and value found by its slot.
                let arrived: Vec<u64> = order.iter().copied().collect();
                prop_assert_eq!(arrived, model.members.iter().map(|m| m.1).collect::<Vec<_>>());
                for (band, id) in &model.members {
                    prop_assert_eq!(order.band_of(seqs[id]), Some(*band));
                    prop_assert_eq!(order.try_get(seqs[id]), Some(id));
                }
                // Rebuilt from its layout and members (as a snapshot restores it), the order
                // answers the same and goes on the same: the next push takes the same slot
                // and compacts or grows the same.
                let members: Vec<(Seq, u8, u64)> = model.members.iter().map(|(b, id)| (seqs[id], *b, *id)).collect();
                let mut copy = MemberOrder::from_parts(order.layout(), &members).map_err(TestCaseError::fail)?;
                prop_assert_eq!(copy.layout(), order.layout());
                for (pos, id) in expected.iter().enumerate() {
                    prop_assert_eq!(copy.seq_at(pos + 1), Some(seqs[id]));
                    prop_assert_eq!(copy.position(seqs[id]), pos + 1);
                }
                prop_assert_eq!(copy.head(), order.head());
                let mut original = order.clone();
                let (mut moved, mut moved_copy) = (Vec::new(), Vec::new());
                let band = model.members.last().map_or(0, |m| m.0);
                let seq = original.push(band, u64::MAX, |v, s| moved.push((*v, s)));
                prop_assert_eq!(copy.push(band, u64::MAX, |v, s| moved_copy.push((*v, s))), seq);
                prop_assert_eq!(moved_copy, moved);
                prop_assert_eq!(copy.layout(), original.layout());
            }
        }
    }

    /// Large orders that grow, thin out and shrink: every layout they pass through is one
    /// `from_parts` accepts (its density bound holds), with the same answers.
    #[test]
    fn every_layout_of_a_large_order_is_accepted() {
        let mut order = MemberOrder::<u32>::default();
        let mut seqs: HashMap<u32, Seq> = HashMap::new();
        let mut live: Vec<(u32, u8)> = Vec::new();
        let mut x = 7u64;
        for step in 0..60_000u32 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // Grow for a while, then mostly remove (down to a few), then grow again.
            let removing = (20_000..45_000).contains(&step) && x % 16 != 0;
            if removing && !live.is_empty() {
                let (id, band) = live.swap_remove((x >> 33) as usize % live.len());
                let seq = seqs.remove(&id).unwrap();
                order.remove(seq, band, |v, s| {
                    seqs.insert(*v, s);
                });
            } else {
                let band = (x >> 40) as u8 % 3;
                let seq = order.push(band, step, |v, s| {
                    seqs.insert(*v, s);
                });
                seqs.insert(step, seq);
                live.push((step, band));
            }
            if step % 97 == 0 || live.len() < 3 {
                let members: Vec<(Seq, u8, u32)> = live.iter().map(|&(id, b)| (seqs[&id], b, id)).collect();
                let copy = MemberOrder::from_parts(order.layout(), &members).unwrap();
                assert_eq!((copy.len(), copy.head()), (order.len(), order.head()), "step {step}");
            }
        }
    }

    #[test]
    fn bad_layouts_are_refused() {
        let ok = MemberOrder::<u32>::from_parts((3, 16, 1), &[(1, 0, 7), (2, 9, 8)]).unwrap();
        assert_eq!((ok.len(), ok.head(), ok.position(2)), (2, Some(2), 1));
        let refused = |layout, members: &[(Seq, u8, u32)]| MemberOrder::from_parts(layout, members).is_err();
        assert!(refused((3, 12, 1), &[(1, 0, 7)]), "capacity not a power of two");
        assert!(refused((3, 8, 1), &[(1, 0, 7)]), "capacity below the least");
        assert!(refused((3, 1 << 23, 1), &[(1, 0, 7)]), "capacity above the most");
        assert!(refused((17, 16, 1), &[(1, 0, 7)]), "more slots used than capacity");
        assert!(refused((3, 16, 1), &[(3, 0, 7)]), "a member past the slots used");
        assert!(refused((3, 16, 1), &[(1, 10, 7)]), "no such band");
        assert!(refused((3, 16, 1), &[(1, 0, 7), (1, 2, 8)]), "two members in one slot");
        assert!(refused((3, 16, 0), &[(1, 0, 7)]), "first live slot below the first member");
        assert!(refused((3, 16, 2), &[(1, 0, 7)]), "first live slot past the first member");
        assert!(refused((3, 16, 0), &[]), "slots used with no member");
        assert!(refused((1025, 2048, 1024), &[(1024, 0, 7)]), "sparser than remove leaves an order");
        assert!(MemberOrder::<u32>::from_parts((1024, 2048, 1023), &[(1023, 0, 7)]).is_ok());
        assert!(MemberOrder::<u32>::from_parts((0, 1024, 0), &[]).is_ok_and(|o| o.len() == 0));
    }

    /// A bitmap of a million slots against a sorted list of its marks, with marks on every
    /// kind of edge: of a word, of a block (a cache line), of the tree's levels, of the whole.
    #[test]
    fn marks_count_and_select_across_blocks_at_a_million() {
        marks_agree_with_a_sorted_list(1 << 20, 3000);
    }

    /// One block has no tree (counts and selects read the bitmap alone); two blocks have one.
    #[test]
    fn marks_count_and_select_in_one_block_and_in_two() {
        assert!(Marks::with_capacity(BLOCK_SLOTS).tree.is_empty());
        assert_eq!(Marks::with_capacity(2 * BLOCK_SLOTS).tree.len(), 3);
        marks_agree_with_a_sorted_list(16, 10);
        marks_agree_with_a_sorted_list(BLOCK_SLOTS, 300);
        marks_agree_with_a_sorted_list(2 * BLOCK_SLOTS, 600);
    }

    fn marks_agree_with_a_sorted_list(cap: usize, random_picks: usize) {
        let mut marks = Marks::with_capacity(cap);
        let mut model = std::collections::BTreeSet::new();
        let mut edges: Vec<usize> =
            [0, 1, 62, 63, 64, 65, cap - 2, cap - 1].into_iter().filter(|&e| e < cap).collect();
        for block in [1, 2, 3, 7, 8, 255, 256, 1023, 1024, 1025, 2047] {
            let at = block * BLOCK_SLOTS;
            if at + 64 < cap {
                edges.extend([at - 65, at - 64, at - 1, at, at + 1, at + 63, at + 64]);
            }
        }
        edges.sort_unstable();
        edges.dedup();
        let mut seed = 7u64;
        let mut random = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize % cap
        };
        let picks: Vec<usize> = (0..random_picks).map(|_| random()).collect();
        for &slot in edges.iter().chain(&picks) {
            if model.insert(slot) {
                marks.add(slot, 1);
            }
        }
        let check = |marks: &Marks, model: &std::collections::BTreeSet<usize>| {
            for (k, &slot) in model.iter().enumerate() {
                assert_eq!(marks.prefix(slot) as usize, k + 1, "prefix at {slot}");
                assert_eq!(marks.select(k as u32 + 1), slot, "select {}", k + 1);
            }
            for &slot in &edges {
                let below = model.range(..=slot).count();
                assert_eq!(marks.prefix(slot) as usize, below, "prefix at edge {slot}");
                assert_eq!(marks.has(slot), model.contains(&slot));
            }
        };
        check(&marks, &model);
        // Unmark every other edge and a third of the rest; the rebuilt tree agrees.
        let gone: Vec<usize> =
            model.iter().copied().step_by(3).chain(edges.iter().copied().step_by(2)).collect();
        for slot in gone {
            if model.remove(&slot) {
                marks.add(slot, -1);
            }
        }
        check(&marks, &model);
        let mut rebuilt = Marks::with_capacity(cap);
        for &slot in &model {
            rebuilt.set_bit(slot);
        }
        rebuilt.build_tree();
        assert_eq!(rebuilt.tree, marks.tree);
        check(&rebuilt, &model);
    }

    /// A FIFO of one band (the usual queue) `depth` members deep through `arrivals`
    /// arrivals, its head served after each past `depth`; every `check_every` arrivals each
    /// member's position and the slot at each position agree with the FIFO. Returns the
    /// arrivals whose push moved members (a compaction or growth) at `capacity` slots.
    fn run_one_band_fifo(
        depth: usize,
        arrivals: u64,
        check_every: u64,
        capacity: usize,
    ) -> (MemberOrder<u64>, usize) {
        let mut order = MemberOrder::<u64>::default();
        let mut seqs: HashMap<u64, Seq> = HashMap::new();
        let mut fifo = std::collections::VecDeque::new();
        let mut moves_at_capacity = 0;
        for id in 0..arrivals {
            let mut moved = false;
            let seq = order.push(0, id, |v, s| {
                moved = true;
                seqs.insert(*v, s);
            });
            moves_at_capacity += usize::from(moved && order.capacity() == capacity);
            seqs.insert(id, seq);
            fifo.push_back(id);
            if fifo.len() > depth {
                let head = order.head().unwrap();
                let left = fifo.pop_front().unwrap();
                assert_eq!((*order.get(head), seqs[&left]), (left, head));
                order.remove(head, 0, |v, s| {
                    seqs.insert(*v, s);
                });
            }
            if id % check_every == 0 {
                for (i, id) in fifo.iter().enumerate() {
                    assert_eq!(order.position(seqs[id]), i + 1, "member {id}");
                    assert_eq!(order.seq_at(i + 1), Some(seqs[id]));
                }
            }
        }
        (order, moves_at_capacity)
    }

    /// A FIFO of one band compacts in place at its capacity: the members keep their order
    /// and positions, and each move is told.
    #[test]
    fn a_one_band_fifo_compacts_in_place() {
        let (order, _) = run_one_band_fifo(10, 1000, 1, 32);
        assert_eq!(order.capacity(), 32, "grown once, then compacted in place");
    }

    /// Many members in three bands, over many blocks, with compactions, growth and
    /// shrinking, against the sorted vector.
    #[test]
    fn agrees_with_a_sorted_vector_over_many_blocks() {
        let mut walk = Walk::default();
        let mut random = xorshift(99u64);
        for round in 0..40_000u64 {
            // Grow to ~4,800 members, then drain to none, twice: the array doubles,
            // compacts and shrinks over blocks of 512 slots.
            let grow = (round / 10_000) % 2 == 0;
            let members = walk.model.members.len();
            if members == 0 || random(10) < if grow { 7 } else { 1 } {
                walk.push(random(3) as u8, round);
            } else if random(4) == 0 {
                walk.set_band(random(members), random(3) as u8);
            } else {
                walk.remove(if random(2) == 0 { 0 } else { random(members) });
            }
            if round % 997 == 0 || round % 10_000 == 9_999 {
                walk.check(round);
                assert!(walk.order.iter().copied().eq(walk.model.members.iter().map(|m| m.1)));
            }
        }
    }

    /// Shrinking is amortised: nothing moves until the slots are sparse (fewer than one in
    /// eight live), then every member moves once into a quarter of the slots; small
    /// arrays (1,024 slots) never shrink.
    #[test]
    fn shrinks_once_when_sparse_and_not_before() {
        let mut order = MemberOrder::<u64>::default();
        let mut seqs: HashMap<u64, Seq> = HashMap::new();
        for id in 0..4096u64 {
            let s = order.push(0, id, |v, s| assert_eq!(seqs[v], s, "a dense array only grows"));
            seqs.insert(id, s);
        }
        assert_eq!((order.len(), order.cap), (4096, 4096));
        let mut moves = 0;
        for id in (512..4096).rev() {
            order.remove(seqs[&id], 0, |_, _| moves += 1);
        }
        assert_eq!((order.len(), order.cap, moves), (512, 4096, 0), "one live slot in eight: not yet");
        order.remove(seqs[&511], 0, |v, s| {
            moves += 1;
            seqs.insert(*v, s);
        });
        assert_eq!((order.len(), order.cap, moves), (511, 1024, 511));
        for id in (10..511).rev() {
            order.remove(seqs[&id], 0, |_, _| moves += 1);
        }
        assert_eq!((order.len(), order.cap, moves), (10, 1024, 511), "1,024 slots are kept");
        for (i, id) in (0..10u64).enumerate() {
            assert_eq!(order.position(seqs[&id]), i + 1);
        }
    }

    #[test]
    fn grows_compacts_and_shrinks() {
        let mut order = MemberOrder::<u64>::default();
        let mut seqs: HashMap<u64, Seq> = HashMap::new();
        for id in 0..5000u64 {
            let s = order.push(0, id, |v, s| {
                seqs.insert(*v, s);
            });
            seqs.insert(id, s);
        }
        // Remove all but every 100th, from the head, so the array becomes sparse.
        for id in 0..5000u64 {
            if id % 100 != 0 {
                let s = seqs.remove(&id).unwrap();
                order.remove(s, 0, |v, s| {
                    seqs.insert(*v, s);
                });
            }
        }
        assert_eq!(order.len(), 50);
        assert!(order.cap <= 1024, "shrank to {}", order.cap);
        for (i, id) in (0..5000u64).step_by(100).enumerate() {
            assert_eq!(order.position(seqs[&id]), i + 1);
        }
    }

    #[test]
    fn reserve_makes_room_at_once_and_keeps_the_order() {
        let mut order = MemberOrder::<u64>::default();
        let mut seqs: HashMap<u64, Seq> = HashMap::new();
        for id in 0..40u64 {
            let s = order.push(u8::try_from(id % 3).unwrap(), id, |v, s| {
                seqs.insert(*v, s);
            });
            seqs.insert(id, s);
        }
        for id in (0..40u64).step_by(4) {
            order.remove(seqs.remove(&id).unwrap(), u8::try_from(id % 3).unwrap(), |v, s| {
                seqs.insert(*v, s);
            });
        }
        let service = |order: &MemberOrder<u64>| -> Vec<u64> {
            (1..=order.len()).map(|p| *order.get(order.seq_at(p).unwrap())).collect()
        };
        let before = service(&order);
        order.reserve(1000, |v, s| {
            seqs.insert(*v, s);
        });
        assert!(order.cap >= 30 + 1000 && order.cap.is_power_of_two(), "cap {}", order.cap);
        assert_eq!(service(&order), before, "the same order");
        for (id, s) in &seqs {
            assert_eq!(order.get(*s), id, "every move reported");
        }
        // Room enough: what was reserved comes in without a rebuild, and a reserve that
        // fits changes nothing.
        for id in 40..1040u64 {
            let s = order.push(1, id, |_, _| panic!("rebuilt within the reserved room"));
            seqs.insert(id, s);
        }
        let cap = order.cap;
        order.reserve(cap - order.used, |_, _| panic!("rebuilt with room enough"));
        assert_eq!(order.cap, cap);
        for (id, s) in &seqs {
            assert_eq!(order.get(*s), id);
        }
    }

    /// Runs that cross the bitmap's blocks and words at every offset agree with as many
    /// single pushes (the proptest's runs are short).
    #[test]
    fn a_run_marks_as_its_single_pushes_do() {
        for (before, count) in [(0, 1), (0, 512), (1, 1100), (63, 65), (500, 1100), (511, 2), (700, 3000)] {
            let (mut singles, mut runs) = (MemberOrder::<u64>::default(), MemberOrder::<u64>::default());
            for id in 0..before {
                let band = (id % 3) as u8;
                singles.push(band, id, |_, _| {});
                runs.push(band, id, |_, _| {});
            }
            runs.reserve(count as usize, |_, _| {});
            let first = runs.layout().0;
            for id in before..before + count {
                singles.push(1, id, |_, _| {});
                runs.append_unmarked(id);
            }
            runs.mark_run(1, first, count as usize);
            let n = (before + count) as usize;
            assert_eq!((runs.len(), singles.len()), (n, n));
            let order =
                |o: &MemberOrder<u64>| (1..=n).map(|p| *o.get(o.seq_at(p).unwrap())).collect::<Vec<_>>();
            assert_eq!(order(&runs), order(&singles), "{before} + {count}");
            for p in (1..=n).step_by(7) {
                assert_eq!(runs.position(runs.seq_at(p).unwrap()), p);
            }
            assert_eq!(runs.head().map(|s| *runs.get(s)), singles.head().map(|s| *singles.get(s)));
        }
    }

    /// An order read back from a snapshot has a slot array only as long as its slots used.
    /// A batch's reserve that compacts at the same capacity must not compact it in place
    /// (its array has no room up to the capacity), and one that needs no rebuild must still
    /// give the array its room: the run's appends then fit.
    #[test]
    fn a_restored_order_takes_a_run_after_reserve() {
        // 10 slots used of 16, members in 7, 8, 9 (band 0): 10 + 10 > 16, 3 + 10 <= 16.
        for (layout, members, run) in [
            ((10, 16, 7), vec![(7, 0u8, 70u64), (8, 0, 80), (9, 0, 90)], 10u64),
            ((3, 16, 0), vec![(0, 0u8, 70u64), (1, 0, 80), (2, 0, 90)], 5),
        ] {
            let mut order = MemberOrder::<u64>::from_parts(layout, &members).unwrap();
            let mut seqs: HashMap<u64, Seq> = members.iter().map(|&(s, _, v)| (v, s)).collect();
            order.reserve(run as usize, |v, s| {
                seqs.insert(*v, s);
            });
            let first = order.layout().0;
            for k in 0..run {
                seqs.insert(100 + k, order.append_unmarked(100 + k));
            }
            order.mark_run(0, first, run as usize);
            let want: Vec<u64> = [70, 80, 90].into_iter().chain(100..100 + run).collect();
            for (i, id) in want.iter().enumerate() {
                assert_eq!(order.position(seqs[id]), i + 1, "{layout:?}");
                assert_eq!(*order.get(order.seq_at(i + 1).unwrap()), *id);
            }
        }
    }

    /// A one-band FIFO kept ~600 deep: its slot array reaches 2,048 slots (4 blocks, with a
    /// tree) and then compacts in place at that capacity; positions in the middle (the
    /// tree's walk) agree with the FIFO.
    #[test]
    fn a_one_band_fifo_over_many_blocks_compacts_in_place() {
        let (order, compactions) = run_one_band_fifo(600, 6000, 37, 2048);
        assert_eq!(order.capacity(), 2048);
        assert!(compactions >= 2, "{compactions}");
    }

    /// All ten bands against the sorted vector, with long phases in which one high band
    /// holds every member (positions counted from the high side, the head of a queue whose
    /// one band is not 0).
    #[test]
    fn all_ten_bands_agree_with_a_sorted_vector() {
        let mut walk = Walk::default();
        let mut random = xorshift(12345u64);
        for round in 0..4_000u64 {
            // Phases: one high band alone (a queue all of priority 7), then all bands.
            let band = if (round / 400) % 2 == 0 { 7 } else { random(BANDS) as u8 };
            let members = walk.model.members.len();
            if members < 3 || random(10) < 5 {
                walk.push(band, round);
            } else if random(5) == 0 {
                walk.set_band(random(members), band);
            } else {
                // The head or any member, by its place in the service order.
                let expected = walk.model.service_order();
                let id = if random(2) == 0 { expected[0] } else { expected[random(expected.len())] };
                walk.remove(walk.model.members.iter().position(|m| m.1 == id).unwrap());
            }
            if round % 7 == 0 {
                walk.check(round);
            } else {
                let head = walk.model.service_order().first().map(|id| walk.seqs[id]);
                assert_eq!(walk.order.head(), head, "round {round}");
            }
        }
    }
}
