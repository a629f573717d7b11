//! What this browser remembers, in localStorage (gloo-storage): the session (sent in every
//! handshake), each tab's outbox, and read markers. Missing or corrupt entries read as empty.

use gloo_storage::Storage;
use protocol::json::{self, FromJson, ToJson};
use protocol::Json;

/// A stored value, in JSON (as gloo-storage's serde helpers stored it before, so what a browser
/// already holds still reads); missing or unreadable is `None`. Browser only.
pub fn get<S: Storage, T: FromJson>(key: &str) -> Option<T> {
    let text = S::raw().get_item(key).ok()??;
    json::from_str(&text).ok()
}

pub fn set<S: Storage, T: ToJson + ?Sized>(key: &str, value: &T) {
    let _ = S::raw().set_item(key, &json::to_string(value));
}

/// The stored session: the private `sessionID` plus what the UI shows before connecting. Kept as
/// `{"sessionID", "userID", "username"}`.
#[derive(Debug, Clone, PartialEq, Eq, Json)]
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
    use client::chat::ReadMarkers;

    use client::chat::OutboxEntry;
    use gloo_storage::{LocalStorage, SessionStorage};

    const SESSION_KEY: &str = "tether.session";
    const READ_KEY: &str = "tether.read";
    const OUTBOX_PREFIX: &str = "tether.outbox.";
    const TAB_KEY: &str = "tether.tab";
    const PENDING_KEY: &str = "tether.signin";
    const TAKEOVER_KEY: &str = "tether.takeover";

    pub fn load_account() -> Option<Account> {
        get::<LocalStorage, _>(SESSION_KEY)
    }

    pub fn save_account(account: &Account) {
        set::<LocalStorage, _>(SESSION_KEY, account);
    }

    pub fn forget_account() {
        LocalStorage::delete(SESSION_KEY);
    }

    /// Set by "Use here": the next handshake asks to take the session over from another tab.
    pub fn takeover_requested() -> bool {
        get::<SessionStorage, bool>(TAKEOVER_KEY).unwrap_or(false)
    }

    pub fn request_takeover(on: bool) {
        if on {
            set::<SessionStorage, _>(TAKEOVER_KEY, &true);
        } else {
            SessionStorage::delete(TAKEOVER_KEY);
        }
    }

    /// The name this tab is signing in with, until the server hands out a session.
    pub fn pending_username() -> Option<String> {
        get::<SessionStorage, _>(PENDING_KEY)
    }

    pub fn set_pending_username(username: Option<&str>) {
        match username {
            Some(name) => set::<SessionStorage, _>(PENDING_KEY, name),
            None => SessionStorage::delete(PENDING_KEY),
        }
    }

    pub fn load_read_markers() -> ReadMarkers {
        get::<LocalStorage, Markers>(READ_KEY)
            .map(|m| m.0)
            .unwrap_or_default()
    }

    pub fn save_read_markers(markers: &ReadMarkers) {
        set::<LocalStorage, _>(READ_KEY, &MarkersRef(markers));
    }

    /// The read markers as stored: a JSON object, peer id to message id (the form a
    /// `BTreeMap`'s codec wrote; a map of its own here, as a `BTreeMap` was code of its own in
    /// the wasm).
    struct Markers(ReadMarkers);
    struct MarkersRef<'a>(&'a ReadMarkers);

    impl FromJson for Markers {
        fn read_json(r: &mut json::Reader<'_>) -> json::Result<Self> {
            let mut map = ReadMarkers::default();
            r.object(&mut |name, r| {
                map.insert(name.to_owned(), r.integer()?);
                Ok(())
            })?;
            Ok(Markers(map))
        }
    }

    impl ToJson for MarkersRef<'_> {
        fn write_json(&self, out: &mut String) {
            json::write_object(out, |o| {
                for (name, value) in self.0 {
                    o.field(name, value);
                }
            });
        }
    }

    /// This tab's id: kept in sessionStorage, so it survives a reload of the same tab.
    fn tab_id() -> String {
        if let Some(id) = get::<SessionStorage, String>(TAB_KEY) {
            return id;
        }
        let id = client::chat::random_id();
        set::<SessionStorage, _>(TAB_KEY, &id);
        id
    }

    /// The outbox is per tab (tabs would otherwise overwrite each other's entries).
    pub fn load_outbox() -> Vec<OutboxEntry> {
        get::<LocalStorage, _>(&format!("{OUTBOX_PREFIX}{}", tab_id())).unwrap_or_default()
    }

    pub fn save_outbox(entries: &[OutboxEntry]) {
        let key = format!("{OUTBOX_PREFIX}{}", tab_id());
        if entries.is_empty() {
            LocalStorage::delete(key);
        } else {
            set::<LocalStorage, _>(&key, entries);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What browsers hold from before (gloo-storage's serde helpers wrote it) still reads, and
    /// is written back the same.
    #[test]
    fn a_stored_account_reads_and_writes_as_serde_stored_it() {
        let text = r#"{"sessionID":"s","userID":"u","username":"ada"}"#;
        let account: Account = json::from_str(text).unwrap();
        assert_eq!(account.username, "ada");
        assert_eq!(json::to_string(&account), text);
        assert!(json::from_str::<Account>(r#"{"sessionID":"s"}"#).is_err());
    }
}
