//! The SQL several of the store's methods share: the directory at start-up, session and account
//! touches, the expiry sweep's statements, conversation keys, message rows and pages.

use protocol::payloads::Message;
use rusqlite::{params, Connection, Row};

use crate::domain::UserId;
use crate::store::{cut_to_page, Page, User};

pub(super) fn load_directory(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt =
        conn.prepare("SELECT user_id, username FROM users ORDER BY created_at, rowid")?;
    let users = stmt
        .query_map([], |r| {
            Ok(User {
                user_id: UserId::from_store(r.get(0)?),
                username: r.get(1)?,
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

pub(super) fn pair_key(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
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
}
