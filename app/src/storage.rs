//! What this browser remembers, in localStorage (gloo-storage): the session (sent in every
//! handshake), each tab's outbox, and read markers. Missing or corrupt entries read as empty.

use serde::{Deserialize, Serialize};

/// The stored session: the private `sessionID` plus what the UI shows before connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    #[serde(rename = "sessionID")]
    pub session_id: String,
    #[serde(rename = "userID")]
    pub user_id: String,
    pub username: String,
}

#[cfg(feature = "hydrate")]
mod browser {
    use super::*;
    use std::collections::BTreeMap;

    use client::chat::OutboxEntry;
    use gloo_storage::{LocalStorage, SessionStorage, Storage};

    const SESSION_KEY: &str = "tether.session";
    const READ_KEY: &str = "tether.read";
    const OUTBOX_PREFIX: &str = "tether.outbox.";
    const TAB_KEY: &str = "tether.tab";
    const PENDING_KEY: &str = "tether.signin";
    const TAKEOVER_KEY: &str = "tether.takeover";

    pub fn load_account() -> Option<Account> {
        LocalStorage::get(SESSION_KEY).ok()
    }

    pub fn save_account(account: &Account) {
        let _ = LocalStorage::set(SESSION_KEY, account);
    }

    pub fn forget_account() {
        LocalStorage::delete(SESSION_KEY);
    }

    /// Set by "Use here": the next handshake asks to take the session over from another tab.
    pub fn takeover_requested() -> bool {
        SessionStorage::get::<bool>(TAKEOVER_KEY).unwrap_or(false)
    }

    pub fn request_takeover(on: bool) {
        if on {
            let _ = SessionStorage::set(TAKEOVER_KEY, true);
        } else {
            SessionStorage::delete(TAKEOVER_KEY);
        }
    }

    /// The name this tab is signing in with, until the server hands out a session.
    pub fn pending_username() -> Option<String> {
        SessionStorage::get(PENDING_KEY).ok()
    }

    pub fn set_pending_username(username: Option<&str>) {
        match username {
            Some(name) => {
                let _ = SessionStorage::set(PENDING_KEY, name);
            }
            None => SessionStorage::delete(PENDING_KEY),
        }
    }

    pub fn load_read_markers() -> BTreeMap<String, i64> {
        LocalStorage::get(READ_KEY).unwrap_or_default()
    }

    pub fn save_read_markers(markers: &BTreeMap<String, i64>) {
        let _ = LocalStorage::set(READ_KEY, markers);
    }

    /// This tab's id: kept in sessionStorage, so it survives a reload of the same tab.
    fn tab_id() -> String {
        if let Ok(id) = SessionStorage::get::<String>(TAB_KEY) {
            return id;
        }
        let id = client::chat::random_id();
        let _ = SessionStorage::set(TAB_KEY, &id);
        id
    }

    /// The outbox is per tab (tabs would otherwise overwrite each other's entries).
    pub fn load_outbox() -> Vec<OutboxEntry> {
        LocalStorage::get(format!("{OUTBOX_PREFIX}{}", tab_id())).unwrap_or_default()
    }

    pub fn save_outbox(entries: &[OutboxEntry]) {
        let key = format!("{OUTBOX_PREFIX}{}", tab_id());
        if entries.is_empty() {
            LocalStorage::delete(key);
        } else {
            let _ = LocalStorage::set(key, entries);
        }
    }

    pub fn clear_all() {
        forget_account();
        LocalStorage::delete(READ_KEY);
        save_outbox(&[]);
    }
}

#[cfg(feature = "hydrate")]
pub use browser::*;
