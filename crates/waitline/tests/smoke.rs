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
