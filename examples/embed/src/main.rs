//! The README's embedding example: a caller waits in "support", an agent takes it, a second
//! caller gives up after its max wait, and every event is printed as webhook JSON would be.
//!
//! `cargo run -p waitline-example-embed`

use std::time::Duration;

use waitline::{BridgeParams, Clock, CommandOptions, DialParams, Engine, EnqueueParams, Timestamp};

fn main() -> Result<(), waitline::Error> {
    // A manual clock makes the example instant and repeatable; drop `.clock(..)` for real time.
    let (clock, hand) = Clock::manual(Timestamp::from_secs(1_767_225_600));
    let engine = Engine::builder().queue_idle_ttl(Duration::from_secs(300)).clock(clock).build();
    let mut events = engine.subscribe();
    let tenant = engine.default_tenant();

    let caller = tenant.dial(&DialParams::new("+15550100", "+15550001", "my-app"))?.call_control_id;
    let impatient = tenant.dial(&DialParams::new("+15550100", "+15550002", "my-app"))?.call_control_id;
    let agent = tenant.dial(&DialParams::new("+15550200", "+15550100", "my-app"))?.call_control_id;

    tenant.enqueue(&caller, &EnqueueParams::new("support"))?;
    tenant.enqueue(&impatient, &EnqueueParams::new("support").max_wait_time_secs(30))?;
    println!("support: {} waiting", tenant.queue("support")?.current_size);

    hand.advance(Duration::from_secs(20));
    tenant.bridge(&agent, &BridgeParams::queue("support").park_after_unbridge())?;
    hand.advance(Duration::from_secs(15)); // the impatient caller's 30 s run out
    engine.run_pending_tasks();

    tenant.hangup(&caller, &CommandOptions::default())?; // the agent is parked, not hung up
    let q = tenant.queue("support")?;
    println!(
        "support: {} waiting, {} bridged, {} timed out; agent is {}",
        q.current_size,
        q.total_dequeued.bridged,
        q.total_dequeued.timeout,
        tenant.call(&agent)?.state.as_str()
    );

    for event in events.drain() {
        println!("{}", describe(&event));
    }
    Ok(())
}

/// The event's time, type and call on one line (a frontend would serialise it as JSON).
fn describe(e: &waitline::Event) -> String {
    let call = e.kind.subject().map_or("-", |s| &*s.call.call_control_id);
    format!("{} {:<15} {call}", e.occurred_at, e.event_type())
}
