//! The abuse suite: each attack a hostile client tried (issue 21) reproduced against the real
//! server, on loopback, bounded in count and time, with the bound it must hold asserted.
//!
//! - [`memory`]: sockets that never read, byte budgets, write stalls;
//! - [`edge`]: idle and half-sent TCP connections, header timeouts, origins;
//! - [`logs`]: nothing secret in any log line at the most verbose settings, in text and JSON;
//! - [`refusals`]: a flood of refused requests is a few log lines with counts;
//! - [`signup`]: sign-up floods, idle accounts, expired and revoked sessions;
//! - [`reads`]: priced reads, sockets per user under concurrent handshakes, roster bounds;
//! - [`messenger`]: `typing` floods, odd and flooded searches, absurd and flooded `read`s,
//!   `conversations` and `settings` floods;
//! - [`devices`]: `devices` and `revoke_device` floods;
//! - [`passkeys`]: floods of passkey sign-ins with guessed or malformed ceremony ids.

mod devices;
mod edge;
mod logs;
mod memory;
mod messenger;
mod passkeys;
mod reads;
mod refusals;
mod signup;

use server::Config;

/// A read budget a flood spends in a few hundred requests: per user and per socket, a burst of
/// [`TIGHT_BURST`] refilled at [`TIGHT_RATE`] a second; answers of at most 16 KiB and messages of
/// at most 100 characters, so a test's fixtures stay small.
pub(super) const TIGHT_BURST: u64 = 256 * 1024;
pub(super) const TIGHT_RATE: u64 = 16 * 1024;

pub(super) fn tight_reads(c: &mut Config) {
    c.read_burst_bytes = TIGHT_BURST;
    c.read_bytes_per_sec = TIGHT_RATE;
    c.socket_read_burst_bytes = TIGHT_BURST;
    c.socket_read_bytes_per_sec = TIGHT_RATE;
    c.max_answer_bytes = 16 * 1024;
    c.max_message_chars = 100;
}

/// How many requests costing `each` bytes [`tight_reads`] can serve in `elapsed`: the burst and
/// what refilled meanwhile.
pub(super) fn tight_reads_allow(elapsed: std::time::Duration, each: usize) -> usize {
    ((TIGHT_BURST as f64 + TIGHT_RATE as f64 * elapsed.as_secs_f64()) / each as f64) as usize
}

/// [`tight_reads`] as a node's command-line flags.
pub(super) fn tight_reads_args() -> Vec<String> {
    [
        ("--read-burst-bytes", TIGHT_BURST),
        ("--read-bytes-per-sec", TIGHT_RATE),
        ("--socket-read-burst-bytes", TIGHT_BURST),
        ("--socket-read-bytes-per-sec", TIGHT_RATE),
        ("--max-answer-bytes", 16 * 1024),
        ("--max-message-chars", 100),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value.to_string()])
    .collect()
}
