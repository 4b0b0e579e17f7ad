//! A removed queue's slot holds nothing on the heap: removing a queue allocates nothing,
//! and a later queue taking the slot frees nothing of it. Its own test binary: the global
//! allocator counts, per thread, what the commands between two readings allocate and free.
#![allow(clippy::unwrap_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use waitline::Engine;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static FREES: Cell<usize> = const { Cell::new(0) };
}

fn count(counter: &'static std::thread::LocalKey<Cell<usize>>) {
    // `try_with`: nothing to count in a thread being torn down.
    let _ = counter.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to `System` unchanged; the counting touches no heap.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCATIONS);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(&FREES);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&ALLOCATIONS);
        count(&FREES);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations and frees on this thread while `f` runs.
fn counted<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let (allocations, frees) = (ALLOCATIONS.with(Cell::get), FREES.with(Cell::get));
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - allocations, FREES.with(Cell::get) - frees)
}

const QUEUES: usize = 10;

fn names() -> Vec<String> {
    (0..QUEUES).map(|i| format!("queue-{i}")).collect()
}

#[test]
fn deleting_a_queue_allocates_nothing_and_leaves_nothing_on_the_heap() {
    let engine = Engine::builder().build();
    let t = engine.default_tenant();
    let names = names();
    // Warm up: the slab's slots, its free list and the name table get their room.
    for name in &names {
        t.create_queue(name, None).unwrap();
    }
    for name in &names {
        t.delete_queue(name).unwrap();
    }
    for round in 0..3 {
        for name in &names {
            // A new queue in a vacant slot: what the create frees is the slot's placeholder.
            let (info, _, frees) = counted(|| t.create_queue(name, None).unwrap());
            assert_eq!(frees, 0, "round {round}: a vacant slot held heap memory");
            drop(info);
        }
        for name in &names {
            let ((), allocations, _) = counted(|| t.delete_queue(name).unwrap());
            assert_eq!(allocations, 0, "round {round}: deleting {name} allocated");
        }
    }
    engine.check_invariants().unwrap();
}
