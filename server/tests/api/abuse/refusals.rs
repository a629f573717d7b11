//! See `super`. A flood of refused requests is logged as a line per kind of refusal with its
//! count, not a line per request (issue 22, item 5), in text and in JSON.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::helpers::{http_request, ChildServer};

/// Requests in the flood.
const FLOOD: u64 = 200;
/// The report interval the server runs with here (`--refusal-log-ms`).
const EVERY: Duration = Duration::from_millis(1000);
/// Lines about the flood allowed: one per report while it lasts, and the last.
const MOST_LINES: usize = 4;
/// The whole test stays under this.
const BUDGET: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_flood_of_refused_requests_is_a_few_text_lines_with_counts() {
    flood_is_summarised("text").await;
}

#[tokio::test]
async fn a_flood_of_refused_requests_is_a_few_json_lines_with_counts() {
    flood_is_summarised("json").await;
}

/// One refusal report as logged: its kind, count and running total.
#[derive(Debug)]
struct Report {
    class: String,
    count: u64,
    total: u64,
}

fn parse(format: &str, line: &str) -> Option<Report> {
    if format == "json" {
        let line: Value = serde_json::from_str(line).expect("every line is a JSON object");
        (line["message"] == "refused").then(|| Report {
            class: line["class"].as_str().unwrap_or_default().to_owned(),
            count: line["count"].as_u64().expect("a numeric count"),
            total: line["total"].as_u64().expect("a numeric total"),
        })
    } else {
        line.contains(" refused ").then(|| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_else(|| panic!("{name} in {line}"))
                    .to_owned()
            };
            Report {
                class: field("class"),
                count: field("count").parse().expect("a count"),
                total: field("total").parse().expect("a total"),
            }
        })
    }
}

/// Whether `word` occurs in `line` on its own, not inside a longer run of letters and digits
/// (a timestamp's microseconds may hold "403").
fn has_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

async fn flood_is_summarised(format: &str) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let args = [
        "--log-format".to_owned(),
        format.to_owned(),
        "--refusal-log-ms".to_owned(),
        EVERY.as_millis().to_string(),
    ];
    let server = ChildServer::start_logging_with(dir.path(), "info", Some(tx), &args).await;
    for _ in 0..FLOOD {
        let (status, _, _) = http_request(
            server.addr,
            "/socket.io/?EIO=4&transport=polling",
            &["Origin: http://evil.example"],
        )
        .await;
        assert_eq!(status, 403);
    }
    // Lines until the reports add up to the flood (a report at most `EVERY` after it).
    let mut lines = Vec::new();
    let mut reports = Vec::new();
    let deadline = tokio::time::Instant::now() + EVERY * 3;
    while reports.iter().map(|r: &Report| r.count).sum::<u64>() < FLOOD {
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("the reports did not add up to {FLOOD}: {lines:#?}"))
            .expect("the server is running");
        if let Some(report) = parse(format, &line) {
            assert_eq!(report.class, "origin", "{line}");
            reports.push(report);
        }
        lines.push(line);
    }
    // Nothing more about it in the next report's time: one line per report, none per request.
    while let Ok(Some(line)) = tokio::time::timeout(EVERY + EVERY / 2, rx.recv()).await {
        assert!(parse(format, &line).is_none(), "reported twice: {line}");
        lines.push(line);
    }
    server.kill_9().await;
    assert!(
        reports.len() <= MOST_LINES,
        "{} reports for {FLOOD} refusals: {lines:#?}",
        reports.len()
    );
    assert_eq!(reports.last().map(|r| r.total), Some(FLOOD), "{reports:?}");
    let per_request = lines
        .iter()
        .filter(|l| has_word(l, "403") || l.contains("origin not allowed"))
        .count();
    assert_eq!(per_request, 0, "{lines:#?}");
    assert!(lines.len() < 20, "{} lines: {lines:#?}", lines.len());
    assert!(started.elapsed() < BUDGET, "took {:?}", started.elapsed());
}

#[test]
fn a_status_is_told_from_digits_inside_a_timestamp() {
    assert!(has_word("GET /socket.io/ 403 Forbidden", "403"));
    assert!(has_word(r#"{"status":403}"#, "403"));
    assert!(!has_word(
        r#"{"timestamp":"2026-12-05T22:19:36.522403Z"}"#,
        "403"
    ));
}
