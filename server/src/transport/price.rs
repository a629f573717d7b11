//! What an answer costs on the wire, in bytes, and how answers are cut to a byte bound.
//!
//! Sizes are what serde_json writes for the payload (escapes included), counted without
//! serialising: each answer is measured while it is built, so a cut costs no second pass.
//! The fixed parts (field names, ids, timestamps) are counted at their largest.

use protocol::payloads::{ConversationSummary, Message, Presence, UserEntry};

/// A message's JSON without its content: `{"id":…,"ts":…,"content":"","from":"<uuid>",
/// "to":"<uuid>","clientId":"<uuid>"}` with 19-digit numbers, and a separating comma.
const MESSAGE_FIXED: usize = 205;
/// A user entry's JSON without its name: `{"userID":"<uuid>","username":"","connected":false,
/// "messages":[]}`, and a separating comma.
pub const USER_FIXED: usize = 96;
/// A user entry's `readUpTo` with a 19-digit number: `,"readUpTo":…`.
const READ_UP_TO: usize = 31;
/// A user entry's `protected` when given, at its longest: `,"protected":false`.
const PROTECTED: usize = 18;
/// A conversation summary's JSON without its name and last message: `{"userID":"<uuid>",
/// "username":"","connected":false,"last":,"unread":4294967295,"readUpTo":…,"peerRead":
/// {"upTo":…,"at":…}}` with 19-digit numbers, and a separating comma.
const SUMMARY_FIXED: usize = 224;
/// What reading one row of the store costs, in the bytes reads are priced in. A `conversations`
/// page pays it for every conversation of the viewer it considered and every message it read
/// to count the unread ones: measured on SQLite (release build), 1.9–2.4 µs a conversation (a
/// page of 50 out of 1,000 and 5,000) and 0.8 µs a message (50 conversations of 1,000 unread).
/// At the default 1 MiB/s a user's sustained `conversations` then take at most ~8,000 rows,
/// 10–20 ms of a reader thread, a second.
pub const STORE_ROW: usize = 128;
/// What comparing one directory entry with a search query costs, in the same bytes: a
/// `users_search` pays it for every user in the directory. Measured 24–81 ns an entry over
/// 100,000 (release build; the most when most names match and are ranked), so the default
/// 1 MiB/s holds a user's searches to ~131,000 entries, under 11 ms of CPU, a second.
pub const DIRECTORY_ROW: usize = 8;
/// What every read costs besides its rows (the request, the ack's envelope): an empty answer
/// is not free.
pub const REQUEST_BASE: usize = 256;

/// Bytes serde_json writes for `s` as a JSON string's contents.
pub fn json_str_bytes(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// The most one message of at most `max_chars` characters can cost (six bytes a character:
/// an escaped control character).
pub fn message_most(max_chars: usize) -> usize {
    MESSAGE_FIXED + 6 * max_chars
}

/// The most messages `max_bytes` can hold (each has a character at least): how many rows
/// a read cut to that many bytes needs to fetch.
pub fn most_messages_within(max_bytes: usize) -> u32 {
    u32::try_from(max_bytes / (MESSAGE_FIXED + 1) + 1).unwrap_or(u32::MAX)
}

pub fn message_bytes(message: &Message) -> usize {
    MESSAGE_FIXED + json_str_bytes(&message.content)
}

/// The most one presence entry can cost: a 32-character name of 4-byte characters, marked
/// `protected`.
pub const PRESENCE_MOST: usize = USER_FIXED + 4 * protocol::domain::USERNAME_MAX_CHARS + PROTECTED;

pub fn presence_bytes(user: &Presence) -> usize {
    USER_FIXED + json_str_bytes(&user.username) + if user.protected { PROTECTED } else { 0 }
}

pub fn summary_bytes(summary: &ConversationSummary) -> usize {
    SUMMARY_FIXED + json_str_bytes(&summary.username) + message_bytes(&summary.last)
}

/// The most one conversation summary can cost (a 32-character name of 4-byte characters).
pub fn summary_most(max_chars: usize) -> usize {
    SUMMARY_FIXED + 4 * protocol::domain::USERNAME_MAX_CHARS + message_most(max_chars)
}

pub fn entry_bytes(entry: &UserEntry) -> usize {
    USER_FIXED
        + json_str_bytes(&entry.username)
        + entry.read_up_to.map_or(0, |_| READ_UP_TO)
        + entry.protected.map_or(0, |_| PROTECTED)
        + entry.messages.iter().map(message_bytes).sum::<usize>()
}

/// Keeps the longest prefix of `messages` (oldest first) within `max_bytes`, at least one
/// message; returns it, its size, and whether anything was cut.
pub fn oldest_within(mut messages: Vec<Message>, max_bytes: usize) -> (Vec<Message>, usize, bool) {
    let mut used = 0;
    let keep = messages
        .iter()
        .position(|m| {
            used += message_bytes(m);
            used > max_bytes
        })
        .map_or(messages.len(), |i| i.max(1));
    let cut = keep < messages.len();
    messages.truncate(keep);
    let used = messages.iter().map(message_bytes).sum();
    (messages, used, cut)
}

/// Keeps the longest suffix of `messages` (oldest first) within `max_bytes`, at least one
/// message; returns it, its size, and whether anything was cut.
pub fn newest_within(mut messages: Vec<Message>, max_bytes: usize) -> (Vec<Message>, usize, bool) {
    let mut used = 0;
    let keep = messages
        .iter()
        .rev()
        .position(|m| {
            used += message_bytes(m);
            used > max_bytes
        })
        .map_or(messages.len(), |i| i.max(1));
    let cut = keep < messages.len();
    let dropped = messages.len() - keep;
    messages.drain(..dropped);
    let used = messages.iter().map(message_bytes).sum();
    (messages, used, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: i64, content: &str) -> Message {
        Message {
            id,
            ts: i64::MAX,
            content: content.into(),
            from: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            to: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            client_id: Some("0f8fad5b-d9cb-469f-a165-70867728950e".into()),
        }
    }

    #[test]
    fn sizes_are_never_below_what_serde_writes() {
        for content in [
            "",
            "hi",
            "\"quoted\" \\ back",
            "\u{1}\u{1f}\n\t",
            "héllo ✓ 🎉",
        ] {
            let message = m(i64::MAX, content);
            let written = serde_json::to_string(&message).unwrap().len() + 1;
            assert!(message_bytes(&message) >= written, "{content:?}");
            assert!(message_bytes(&message) <= written + 40, "{content:?}");
            assert_eq!(
                json_str_bytes(content) + 2,
                serde_json::to_string(content).unwrap().len()
            );
        }
        let entry = UserEntry {
            user_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            username: "a \"name\"".into(),
            connected: false,
            messages: vec![m(1, "x")],
            read_up_to: None,
            protected: None,
        };
        assert!(entry_bytes(&entry) >= serde_json::to_string(&entry).unwrap().len());
        let read = UserEntry {
            read_up_to: Some(i64::MAX),
            ..entry
        };
        assert!(entry_bytes(&read) >= serde_json::to_string(&read).unwrap().len());
        // `,"protected":false`, the longer of the two, is counted exactly.
        let unprotected = UserEntry {
            protected: Some(false),
            ..read.clone()
        };
        assert_eq!(
            entry_bytes(&unprotected) - entry_bytes(&read),
            serde_json::to_string(&unprotected).unwrap().len()
                - serde_json::to_string(&read).unwrap().len()
        );
        let protected = UserEntry {
            protected: Some(true),
            ..read.clone()
        };
        assert!(entry_bytes(&protected) >= serde_json::to_string(&protected).unwrap().len());
        // The largest presence entry fits the most one may cost.
        let largest = Presence {
            user_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            username: "\u{1f600}".repeat(protocol::domain::USERNAME_MAX_CHARS),
            connected: false,
            protected: true,
        };
        assert!(serde_json::to_string(&largest).unwrap().len() < PRESENCE_MOST);
        assert!(presence_bytes(&largest) <= PRESENCE_MOST);
        let summary = ConversationSummary {
            user_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            username: "a \"name\" ✓".into(),
            connected: false,
            last: m(i64::MAX, "last \u{1}"),
            unread: u32::MAX,
            read_up_to: i64::MAX,
            peer_read: Some(protocol::payloads::ReadMark {
                up_to: i64::MAX,
                at: i64::MAX,
            }),
        };
        let written = serde_json::to_string(&summary).unwrap().len() + 1;
        assert!(summary_bytes(&summary) >= written, "{written}");
        assert!(summary_bytes(&summary) <= written + 40, "{written}");
        assert!(summary_most(4000) >= summary_bytes(&summary));
    }

    #[test]
    fn a_restore_keeps_the_oldest_and_history_the_newest() {
        let all: Vec<Message> = (1..=10).map(|i| m(i, &"x".repeat(100))).collect();
        let each = message_bytes(&all[0]);
        let (old, used, cut) = oldest_within(all.clone(), each * 3 + 1);
        assert_eq!(old.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(used, each * 3);
        assert!(cut);
        let (new, _, cut) = newest_within(all.clone(), each * 3 + 1);
        assert_eq!(new.iter().map(|m| m.id).collect::<Vec<_>>(), [8, 9, 10]);
        assert!(cut);
        let (whole, _, cut) = newest_within(all, usize::MAX);
        assert_eq!(whole.len(), 10);
        assert!(!cut);
    }

    #[test]
    fn one_message_always_fits_so_paging_makes_progress() {
        let big = vec![m(1, &"x".repeat(10_000)), m(2, "y")];
        let (kept, _, cut) = oldest_within(big.clone(), 10);
        assert_eq!(kept.len(), 1);
        assert!(cut);
        let (kept, _, _) = newest_within(big, 10);
        assert_eq!(kept[0].id, 2);
    }
}
