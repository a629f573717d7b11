//! Logging: the operator's `--log` filter, a cap on the crates that see the wire which no
//! filter can lift, and the connection id that names a socket in log lines instead of its sid.
//!
//! No log line holds a session id, an Engine.IO sid, a message body or a client's IP address
//! (STYLE.md, "State, config, logging"). Our own lines never log them; the crates below log
//! frames, headers, request URIs (a polling request's carries the sid) or peer addresses at
//! debug or trace, so each is capped at a level whose lines carry none of that. The cap is a
//! second filter that every event and span must also pass, not a directive added to the
//! operator's: in an `EnvFilter` the most specific directive wins, so
//! `--log info,tungstenite::protocol=trace` used to lift a `tungstenite=info` cap.
//!
//! Lines are text, or with `--log-format json` one JSON object each (the event's fields at the
//! top level, beside `timestamp`, `level`, `target` and `message`). Both go through the same
//! filter, so the rule and the cap hold in either.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use socketioxide::socket::Sid;
use tracing::level_filters::LevelFilter;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, FilterFn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Crates that see the wire, and the most verbose level each may log at, whatever `--log`
/// says. What each logs, read from the sources this build uses (`cargo tree`; the registry's
/// sources and `vendor/`):
pub const WIRE_LEVEL_CRATES: &[(&str, LevelFilter)] = &[
    // Every frame and message, sids and bodies included, at trace (hex dumps too); a close
    // frame's reason at debug. Nothing at info; warn only in client code. (Through `log`.)
    ("tungstenite", LevelFilter::WARN),
    ("tokio_tungstenite", LevelFilter::WARN),
    // `axum::serve`: each client's address at trace; `axum::rejection`: the text of a rejected
    // request (it can quote the input) at trace. Errors (accept failures) carry neither.
    ("axum", LevelFilter::WARN),
    ("axum_core", LevelFilter::WARN),
    // Request spans with the URI (a polling request's query holds the sid) and headers at
    // debug and trace; errors and panics at error.
    ("tower_http", LevelFilter::WARN),
    ("tower", LevelFilter::WARN),
    // Headers and frames at debug and trace when built with tracing (this build is not).
    ("hyper", LevelFilter::WARN),
    ("hyper_util", LevelFilter::WARN),
    ("h2", LevelFilter::WARN),
    // Built here without their `tracing` feature. With it: spans carrying `sid` at INFO,
    // every packet with its sid at debug and trace, and extractor errors at ERROR that quote
    // the payload serde failed on (a message body). Nothing of theirs is safe: dropped whole.
    ("engineioxide", LevelFilter::OFF),
    ("engineioxide_core", LevelFilter::OFF),
    ("socketioxide", LevelFilter::OFF),
    ("socketioxide_parser_common", LevelFilter::OFF),
    // The cluster adapter: requests to other nodes (packets, bodies) at trace, broadcast
    // options (socket ids) at debug; at warn and error, node ids, channel names and errors.
    ("socketioxide_core", LevelFilter::WARN),
    ("socketioxide_redis", LevelFilter::WARN),
];

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, colored on a terminal.
    Text,
    /// For log shippers: one JSON object per line.
    Json,
}

/// Installs the process's subscriber: log lines to stdout in `format`, filtered by
/// [`log_filter`].
pub fn init(spec: &str, format: LogFormat) -> anyhow::Result<()> {
    let ansi = std::io::stdout().is_terminal();
    tracing_subscriber::registry()
        .with(lines(format, std::io::stdout, ansi).with_filter(log_filter(spec)?))
        .try_init()?;
    Ok(())
}

/// The layer that writes log lines in `format` to `writer`.
fn lines<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_ansi(false).boxed(),
    }
}

/// The operator's filter (`EnvFilter` syntax), and on top of it the [`WIRE_LEVEL_CRATES`]
/// cap: an event or span is logged only when both let it through.
pub fn log_filter<S>(spec: &str) -> anyhow::Result<impl Filter<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let operator = EnvFilter::try_new(spec)?;
    let cap = FilterFn::new(under_wire_cap).with_max_level_hint(LevelFilter::TRACE);
    Ok(operator.and(cap))
}

/// Whether `meta` is within its crate's cap (always, for a crate without one). A record from
/// the `log` crate carries its module path as its target, so it is capped the same way.
fn under_wire_cap(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let krate = target.split("::").next().unwrap_or(target);
    WIRE_LEVEL_CRATES
        .iter()
        .find(|(name, _)| *name == krate)
        .is_none_or(|(_, cap)| *cap >= *meta.level())
}

/// A socket's name in log lines: the first 6 bytes of SHA-256 over a key and its Engine.IO
/// sid. The key is drawn at random when the process starts and never leaves it, so the id
/// cannot be turned back into the sid, nor matched against a sid someone holds; within one run
/// every line about a socket carries the same id. Log it as `conn = %telemetry::conn(&socket.id)`.
pub fn conn(sid: &Sid) -> ConnId {
    let mut hash = Sha256::new();
    hash.update(log_key());
    hash.update(sid.as_str().as_bytes());
    let digest = hash.finalize();
    let mut id = [0; 6];
    id.copy_from_slice(&digest[..6]);
    ConnId(id)
}

/// See [`conn`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId([u8; 6]);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({self})")
    }
}

/// This process's key for [`conn`]: 256 random bits (two v4 UUIDs, from the OS's generator).
fn log_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0; 32];
        let mut out = &mut key[..];
        for _ in 0..2 {
            // Writing 16 bytes into a slice with room for them cannot fail.
            let _ = out.write_all(uuid::Uuid::new_v4().as_bytes());
        }
        key
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// What `emit` logs under the operator filter `spec`: in text, then in JSON, whose every
    /// line is checked to be an object with its level and message.
    fn logged(spec: &str, emit: impl Fn()) -> Vec<String> {
        let mut each = Vec::new();
        for format in [LogFormat::Text, LogFormat::Json] {
            let out = Captured::default();
            let subscriber = tracing_subscriber::registry()
                .with(lines(format, out.clone(), false).with_filter(log_filter(spec).unwrap()));
            tracing::subscriber::with_default(subscriber, &emit);
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            if format == LogFormat::Json {
                for line in text.lines() {
                    let object: serde_json::Value = serde_json::from_str(line).expect(line);
                    assert!(object["message"].is_string(), "{line}");
                    assert!(object["level"].is_string(), "{line}");
                }
            }
            each.push(text);
        }
        each
    }

    #[test]
    fn a_more_specific_operator_directive_cannot_lift_the_cap() {
        let spec = "trace,tungstenite=trace,tungstenite::protocol=trace,\
                    tungstenite::protocol::frame=trace,axum::serve=trace,axum::rejection=trace,\
                    tower_http::trace=trace,socketioxide=trace,socketioxide::client=error";
        let logs = logged(spec, || {
            tracing::trace!(target: "tungstenite::protocol", "frame 42[\"secret-frame\"]");
            tracing::trace!(target: "tungstenite::protocol::frame", "payload 0xsecret-hex");
            tracing::debug!(target: "tungstenite::protocol", "close secret-reason");
            tracing::info!(target: "tungstenite", "secret-info");
            tracing::trace!(target: "axum::serve", "connection secret-addr accepted");
            tracing::trace!(target: "axum::rejection", body = "secret-body", "rejecting");
            tracing::debug!(target: "tower_http::trace::on_request", "secret-uri");
            tracing::error!(target: "socketioxide::client", "secret-extractor-error");
            tracing::warn!(target: "tungstenite::protocol", "kept-warning");
            tracing::error!(target: "axum::serve", "kept-error");
            tracing::trace!(target: "server::transport", "kept-our-trace");
        });
        for log in logs {
            assert!(!log.contains("secret"), "{log}");
            for kept in ["kept-warning", "kept-error", "kept-our-trace"] {
                assert!(log.contains(kept), "{kept} missing from {log}");
            }
        }
    }

    #[test]
    fn a_capped_crates_span_does_not_reach_the_lines_inside_it() {
        let logs = logged("trace,socketioxide=trace,[{sid}]=trace", || {
            let span =
                tracing::info_span!(target: "socketioxide::client", "on_connect", sid = "span-sid");
            let _inside = span.enter();
            tracing::info!(target: "server::transport::connection", "socket connected");
        });
        for log in logs {
            assert!(log.contains("socket connected"), "{log}");
            assert!(!log.contains("span-sid"), "{log}");
        }
    }

    #[test]
    fn the_operator_filter_still_filters_everything() {
        let logs = logged("warn", || {
            tracing::info!(target: "server", "quiet-info");
            tracing::warn!(target: "tungstenite", "loud-warning");
        });
        for log in logs {
            assert!(!log.contains("quiet-info"), "{log}");
            assert!(log.contains("loud-warning"), "{log}");
        }
        let off = logged("off", || tracing::error!(target: "server", "x"));
        assert!(off.iter().all(String::is_empty), "{off:?}");
    }

    #[test]
    fn only_whole_crate_names_are_capped() {
        let logs = logged("trace", || {
            tracing::trace!(target: "towerish::x", "kept-towerish");
            tracing::trace!(target: "tower", "capped-tower");
            tracing::trace!(target: "tower::buffer", "capped-tower-buffer");
        });
        for log in logs {
            assert!(log.contains("kept-towerish"), "{log}");
            assert!(!log.contains("capped"), "{log}");
        }
    }

    #[test]
    fn a_bad_filter_is_an_error() {
        assert!(log_filter::<tracing_subscriber::Registry>("info,[").is_err());
    }

    #[test]
    fn a_connection_id_is_stable_per_socket_and_reveals_nothing_of_the_sid() {
        let sid = Sid::new();
        let other = Sid::new();
        let id = conn(&sid).to_string();
        assert_eq!(id, conn(&sid).to_string());
        assert_ne!(id, conn(&other).to_string());
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!sid.as_str().contains(&id) && !id.contains(sid.as_str()));
        // Keyed: not the plain hash of the sid, which anyone holding the sid could compute.
        let plain = hex::encode(&Sha256::digest(sid.as_str().as_bytes())[..6]);
        assert_ne!(id, plain);
    }
}
