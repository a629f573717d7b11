//! The SQL several of the store's methods share: the directory at start-up, session and account
//! touches, the expiry sweep's statements, conversation keys, message rows and pages.

use protocol::payloads::Message;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::domain::UserId;
use crate::store::{cut_to_page, Page, User};

pub(super) fn load_directory(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt = conn.prepare(
        "SELECT u.user_id, u.username, p.user_id IS NOT NULL FROM users u
         LEFT JOIN protected_names p ON p.user_id = u.user_id ORDER BY u.created_at, u.rowid",
    )?;
    let users = stmt
        .query_map([], |r| {
            Ok(User {
                user_id: UserId::from_store(r.get(0)?),
                username: r.get(1)?,
                protected: r.get(2)?,
            })
        })?
        .collect();
    users
}

/// A message-less user left with no session: its account is due for the next sweep
/// (`last_seen_at` 0, see migration 5).
pub(super) fn mark_if_sessionless(conn: &Connection, user: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET last_seen_at = 0 WHERE user_id = ?1 AND messaged = 0
         AND NOT EXISTS (SELECT 1 FROM sessions WHERE user_id = ?1)",
    )?
    .execute(params![user])?;
    Ok(())
}

/// A session in use at `now`, and its account if it is message-less. Two single writes, each
/// harmless alone (see [`Isolation::Statement`](super::writer::Isolation::Statement)).
pub(super) fn touch(conn: &Connection, digest: &str, user: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE sessions SET last_seen_at = MAX(last_seen_at, ?2) WHERE session_digest = ?1",
    )?
    .execute(params![digest, now])?;
    touch_account(conn, user, now)
}

pub(super) fn touch_account(conn: &Connection, user: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET last_seen_at = MAX(last_seen_at, ?2) WHERE user_id = ?1 AND messaged = 0",
    )?
    .execute(params![user, now])?;
    Ok(())
}

/// The expiry sweep's statements, shared with the test that checks their query plans: what
/// is due is found through an index, never by reading every session or account.
pub(super) const EXPIRED_SESSIONS_EXIST: &str =
    "SELECT EXISTS (SELECT 1 FROM sessions WHERE last_seen_at < ?1)
     OR EXISTS (SELECT 1 FROM sessions WHERE created_at < ?2)";
pub(super) const EXPIRE_SESSIONS: &str = "DELETE FROM sessions WHERE session_digest IN (
         SELECT session_digest FROM sessions WHERE last_seen_at < ?1
         UNION SELECT session_digest FROM sessions WHERE created_at < ?2
         LIMIT ?3)
     RETURNING session_digest, user_id";
pub(super) const IDLE_ACCOUNTS_EXIST: &str =
    "SELECT EXISTS (SELECT 1 FROM users WHERE messaged = 0 AND last_seen_at < ?1)";
pub(super) const IDLE_ACCOUNTS: &str =
    "SELECT user_id FROM users WHERE messaged = 0 AND last_seen_at < ?1
     AND NOT EXISTS (SELECT 1 FROM peers p WHERE p.user_id = users.user_id)
     LIMIT ?2";

/// A conversation's name in `conversations`: its two parties in sorted order, joined by ':'.
pub(super) fn pair_key(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
}

/// The conversation of `viewer` with `peer` (migration 15) as named in `conversations`, or 0
/// if they have none: no conversation has id 0, so a read of conversation 0 finds nothing.
/// Reads go by this name, which does not depend on either party's `peers` row; storing a
/// message goes by its sender's `peers` row instead (see `insert_message`).
pub(super) fn conversation(conn: &Connection, viewer: &str, peer: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT id FROM conversations WHERE pair = ?1")?
        .query_row(params![pair_key(viewer, peer)], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The viewer's conversations by latest activity (the peer, their newest message id from the
/// conversation index: one seek each, no table read, and the conversation), older than `?2`,
/// at most `?3`. What it costs grows with the number of the viewer's conversations, as a
/// connect does; nothing is written per message for it (see migration 7).
pub(super) const CONVERSATIONS_BY_ACTIVITY: &str = "SELECT peer_id, last, conv FROM (
         SELECT p.peer_id, (SELECT MAX(m.id) FROM messages m WHERE m.conv = p.conv) AS last,
             p.conv
         FROM peers p WHERE p.user_id = ?1)
     WHERE last < ?2 ORDER BY last DESC LIMIT ?3";

/// One listed conversation (its newest message `?3`): the message, the peer's name and receipts
/// setting, the viewer's read cursor and the peer's seen cursor (never the peer's read cursor).
pub(super) const CONVERSATION_ENTRY: &str = "SELECT m.id, m.ts, m.content, m.from_user, m.to_user,
         m.client_id, u.username, u.read_receipts, v.up_to, v.at, pr.seen_up_to, pr.seen_at
     FROM messages m
     LEFT JOIN users u ON u.user_id = ?2
     LEFT JOIN read_cursors v ON v.user_id = ?1 AND v.peer_id = ?2
     LEFT JOIN read_cursors pr ON pr.user_id = ?2 AND pr.peer_id = ?1
     WHERE m.id = ?3";

/// The senders of a conversation's messages after a cursor (`?2`) up to `?4`, newest first, as
/// "sent by the viewer `?3`": what an unread count reads (see `count_unread`).
pub(super) const UNREAD_SENDERS: &str = "SELECT from_user = ?3 FROM messages
     WHERE conv = ?1 AND id > ?2 AND id <= ?4 ORDER BY id DESC LIMIT ?5";

/// The viewer's unread count of the conversation `conv` after `after` up to `as_of` (counting
/// at most `max`), and how many messages it read.
pub(super) fn unread(
    conn: &Connection,
    conv: i64,
    viewer: &str,
    after: i64,
    as_of: i64,
    max: u32,
) -> rusqlite::Result<(u32, u64)> {
    let mut stmt = conn.prepare_cached(UNREAD_SENDERS)?;
    let mut rows = stmt.query(params![conv, after, viewer, as_of, max])?;
    // Stepped one by one: the count stops at the viewer's own message, and so does the read.
    let mut read = 0;
    let mut failed = None;
    let senders = std::iter::from_fn(|| {
        let from_viewer = match rows.next() {
            Ok(Some(row)) => row.get::<_, bool>(0),
            Ok(None) => return None,
            Err(e) => Err(e),
        };
        read += 1;
        match from_viewer {
            Ok(from_viewer) => Some(from_viewer),
            Err(e) => {
                failed = Some(e);
                None
            }
        }
    });
    let unread = crate::store::count_unread(senders, max);
    match failed {
        Some(e) => Err(e),
        None => Ok((unread, read)),
    }
}

/// The newest message id of a conversation (0: none).
pub(super) fn newest_in(conn: &Connection, conv: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM messages WHERE conv = ?1")?
        .query_row(params![conv], |r| r.get(0))
}

/// A read cursor, if one was ever written.
pub(super) fn read_cursor(
    conn: &Connection,
    viewer: &str,
    peer: &str,
) -> rusqlite::Result<Option<crate::store::ReadCursor>> {
    conn.prepare_cached("SELECT up_to, at FROM read_cursors WHERE user_id = ?1 AND peer_id = ?2")?
        .query_row(params![viewer, peer], |r| {
            Ok(crate::store::ReadCursor {
                up_to: r.get(0)?,
                at: r.get(1)?,
            })
        })
        .optional()
}

/// A user's read receipts setting; `None` for an unknown user.
pub(super) fn read_receipts(conn: &Connection, user: &str) -> rusqlite::Result<Option<bool>> {
    conn.prepare_cached("SELECT read_receipts FROM users WHERE user_id = ?1")?
        .query_row(params![user], |r| r.get(0))
        .optional()
}

pub(super) const MESSAGE_COLUMNS: &str = "id, ts, content, from_user, to_user, client_id";

pub(super) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get(0)?,
        ts: row.get(1)?,
        content: row.get(2)?,
        from: row.get(3)?,
        to: row.get(4)?,
        client_id: row.get(5)?,
    })
}

/// Runs a query for at most `limit` messages, asking for one more to learn whether more exist.
pub(super) fn page(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    limit: u32,
    newest_first: bool,
) -> rusqlite::Result<Page> {
    let mut stmt = conn.prepare_cached(sql)?;
    let messages = stmt
        .query_map(params, message_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (mut messages, has_more) = cut_to_page(messages, limit);
    if newest_first {
        messages.reverse();
    }
    Ok(Page { messages, has_more })
}

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;

    #[tokio::test]
    async fn the_sweeps_find_what_is_due_through_indexes_without_reading_every_row() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let conn = Connection::open(dir.path().join("tether.db")).unwrap();
        let plan = |sql: &str, args: &[i64]| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("\n")
        };
        let sessions = ["sessions_by_last_seen", "sessions_by_created"];
        for (sql, args, indexes) in [
            (EXPIRE_SESSIONS, &[0, 0, 10][..], &sessions[..]),
            (EXPIRED_SESSIONS_EXIST, &[0, 0][..], &sessions[..]),
            (IDLE_ACCOUNTS, &[0, 10][..], &["users_without_messages"][..]),
            (
                IDLE_ACCOUNTS_EXIST,
                &[0][..],
                &["users_without_messages"][..],
            ),
        ] {
            let shown = plan(sql, args);
            for index in indexes {
                assert!(shown.contains(index), "{index} not used:\n{shown}");
            }
            assert!(!shown.contains("SCAN sessions"), "{shown}");
            assert!(!shown.contains("SCAN users"), "{shown}");
        }
    }

    #[tokio::test]
    async fn read_state_is_read_through_indexes_a_seek_per_conversation() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let conn = Connection::open(dir.path().join("tether.db")).unwrap();
        let plan = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(args, |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("\n")
        };
        let by_activity = plan(CONVERSATIONS_BY_ACTIVITY, &[&"a", &10, &5]);
        // The viewer's `peers` rows, and for each the newest id from the conversation index alone.
        assert!(
            by_activity.contains("SEARCH p USING PRIMARY KEY (user_id=?)"),
            "{by_activity}"
        );
        assert!(
            by_activity.contains("SEARCH m USING COVERING INDEX messages_by_conv (conv=?)"),
            "{by_activity}"
        );
        let unread = plan(UNREAD_SENDERS, &[&1, &0, &"a", &10, &1000]);
        assert!(
            unread.contains("messages_by_conv (conv=? AND id>? AND id<?)"),
            "{unread}"
        );
        let entry = plan(CONVERSATION_ENTRY, &[&"a", &"b", &3]);
        for shown in [&by_activity, &unread, &entry] {
            assert!(!shown.contains("SCAN"), "{shown}");
        }
    }
}
