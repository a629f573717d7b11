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
