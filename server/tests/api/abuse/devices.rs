//! `devices` and `revoke_device` under attack: floods of each, bounded by the read budget (a
//! list is priced by its rows and bytes) and the write budget (`--read-marks-per-sec`: a revoke
//! takes a token before it reads anything), and the flooding socket let go.

use std::time::{Duration, Instant};

use serde_json::json;

use super::messenger::{request, Raw};
use super::{tight_reads, tight_reads_allow};
use crate::helpers::spawn_app_with;

#[tokio::test]
async fn a_devices_flood_is_priced_by_what_it_reads_and_its_socket_let_go() {
    let app = spawn_app_with(|c| {
        tight_reads(c);
        c.roster_full_max = 10;
    })
    .await;
    let ada = app.connect_as("ada").await;
    let mut raw = Raw::connect(app.addr, &ada.session_id).await;
    let started = Instant::now();
    raw.flood((0..1000).map(|i| request(i, "devices", &json!({}))))
        .await;
    let got = raw.receive(1000, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let served = got.served();
    // Each list costs its request, and its one row and entry ("Other browser").
    let each = 256 + 128 + 128 + "Other browser".len();
    let allowed = tight_reads_allow(elapsed, each);
    assert!(
        served <= allowed,
        "{served} lists served in {elapsed:?}, the budget allows {allowed}"
    );
    // (How many are served before the socket is let go depends on how fast the store answers:
    // the refusals are instant, so on a loaded machine none may be.)
    assert!(got.closed, "the flooding socket is disconnected");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    eprintln!(
        "devices flood: 1000 sent, {served} served, {} answered, disconnected after {elapsed:?}",
        got.acks.len()
    );
}

#[tokio::test]
async fn a_revoke_flood_takes_write_tokens_first_and_ends_nothing_it_does_not_own() {
    // Reads are plentiful here, so only the write budget can bound the lookups.
    let app = spawn_app_with(|c| {
        c.read_marks_per_sec = 5.0;
        c.read_mark_burst = 20.0;
        c.read_burst_bytes = 64 << 20;
        c.read_bytes_per_sec = 64 << 20;
        c.socket_read_burst_bytes = 64 << 20;
        c.socket_read_bytes_per_sec = 64 << 20;
    })
    .await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let mut raw = Raw::connect(app.addr, &ada.session_id).await;
    let started = Instant::now();
    // Guessing ids: well-formed, none ada's.
    raw.flood((0..1000).map(|i| {
        request(
            i,
            "revoke_device",
            &json!({ "deviceID": format!("{i:016x}") }),
        )
    }))
    .await;
    let got = raw.receive(1000, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let codes = got.codes();
    let looked_up = codes.iter().filter(|c| **c == "unknown_device").count();
    assert!(
        codes
            .iter()
            .all(|c| *c == "unknown_device" || *c == "rate_limited"),
        "{codes:?}"
    );
    let allowed = 20 + (5.0 * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        looked_up <= allowed,
        "{looked_up} looked up in {elapsed:?}, allowed {allowed}"
    );
    assert!(got.closed, "the flooding socket is disconnected");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // Nothing ended: both sessions still resume.
    app.resume(&bob.session_id).await;
    eprintln!(
        "revoke flood: 1000 sent, {looked_up} looked up, {} answered, disconnected after {elapsed:?}",
        got.acks.len()
    );
}
