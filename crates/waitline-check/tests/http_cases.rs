//! Hand-written inputs of the HTTP check, including the two cases fuzzing found in the check
//! itself (a HEAD answer has no body; the event stream never ends).

use waitline_check::http::{AuthHeader, HttpRequest, Segment, check_requests};
use waitline_check::json_bodies::{JsonCommand, JsonValue, check_commands};

fn request(method: u8, words: &[u8], auth: AuthHeader, body: &str) -> HttpRequest {
    HttpRequest {
        method,
        raw_method: String::new(),
        path: words.iter().map(|w| Segment::Word(*w)).collect(),
        query: None,
        auth,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn seeded_flow_and_refusals_pass_the_check() {
    // v2/calls/c1/actions/enqueue, then bad JSON, then no key, then HEAD, then the stream.
    let requests = vec![
        request(1, &[0, 1, 13, 3, 4], AuthHeader::Good, r#"{"queue_name":"q0"}"#),
        request(1, &[0, 1, 13, 3, 4], AuthHeader::Good, "{nope"),
        request(0, &[0, 2], AuthHeader::Missing, ""),
        request(5, &[0, 1, 3, 5, 5, 12, 0], AuthHeader::Good, ""),
        request(0, &[0, 9], AuthHeader::Good, ""),
        request(1, &[0, 2, 14], AuthHeader::Raw(b"Bearer \xff".to_vec()), "{}"),
    ];
    check_requests(&requests).unwrap();
}

#[test]
fn odd_json_values_pass_the_check() {
    let commands = vec![
        JsonCommand {
            route: 1,
            target: false,
            fields: vec![(0, JsonValue::Int(5)), (1, JsonValue::Big(u64::MAX))],
        },
        JsonCommand {
            route: 3,
            target: false,
            fields: vec![(8, JsonValue::Str("q0".into())), (9, JsonValue::Float(1.5))],
        },
        JsonCommand { route: 0, target: true, fields: vec![(14, JsonValue::Long(4000, 'é'))] },
        JsonCommand {
            route: 8,
            target: true,
            fields: vec![(4, JsonValue::Int(i64::MIN)), (3, JsonValue::Null)],
        },
    ];
    check_commands(&commands).unwrap();
}
