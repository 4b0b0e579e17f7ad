#![allow(clippy::unwrap_used)]
mod common;
use common::*;
use waitline::*;

#[test]
fn seed_flow() {
    let mut f = Fixture::new();
    let c = f.dial();
    let a = f.dial();
    f.t.enqueue(&c, &EnqueueParams::new("support")).unwrap();
    assert_eq!(f.t.queue("support").unwrap().current_size, 1);
    f.t.bridge(&a, &BridgeParams::queue("support")).unwrap();
    assert_eq!(f.t.call(&c).unwrap().state, CallState::Bridged);
    f.check();
    f.t.hangup(&a, &none()).unwrap();
    assert_eq!(f.t.call(&c).unwrap().state, CallState::Ended);
    f.check();
    let evs = f.take();
    assert_eq!(
        evs,
        vec![
            ev("call.enqueued", &c),
            ev("call.dequeued", &c),
            ev("call.bridged", &a),
            ev("call.bridged", &c),
            ev("call.hangup", &a),
            ev("call.hangup", &c),
        ]
    );
}

/// A queue is found by its name alone among names that share a length, their first or last
/// bytes, or a prefix, at every length the lookup compares as words and beyond it.
#[test]
fn queues_found_by_name_among_like_names() {
    let f = Fixture::new();
    let names = [
        "a",
        "ab",
        "abc",
        "abcd",
        "abce",
        "bbcd",
        "abcde",
        "abcdef",
        "abcdeg",
        "abcdefg",
        "abcdefgh",
        "abcdefgi",
        "bbcdefgh",
        "abcdefghi",
        "abcdefghij",
        "abcdefghik",
        "abcdefghijklmnop",
        "abcdefghijklmnoq",
        "bbcdefghijklmnop",
        "abcdefgXijklmnop",
        "abcdefghijklmnopq",
        "abcdefghijklmnopr",
        "abcdefghijklmnopqrstuvwxyz",
    ];
    for (i, name) in names.iter().enumerate() {
        f.t.create_queue(name, Some(i as u32 + 1)).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        assert_eq!(f.t.queue(name).unwrap().max_size, i + 1, "{name}");
    }
    for missing in ["abcf", "abcdefgj", "abcdefghijklmnor", "abcdefghijklmnops", "b"] {
        assert!(f.t.queue(missing).is_err(), "{missing}");
    }
    f.check();
}
