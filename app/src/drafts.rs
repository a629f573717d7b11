//! Unsent drafts, one per conversation, in localStorage: a draft survives a reload and a
//! navigation, and every tab of the browser shows the same one as it is typed (the `storage`
//! event tells the other tabs).
//!
//! Kept under `tether.draft.<account>.<peer>` as `<at>\n<text>` (`at`: when it was last
//! written, ms since the epoch; plain text, as JSON code for one pair was not worth its size). Bounded: a draft keeps at most [`MAX_CHARS`] characters (a
//! message's most), an account at most [`MAX_DRAFTS`] drafts (writing one more forgets the
//! oldest). A sent draft is removed, and signing out removes the account's drafts.
//!
//! When the browser's storage is full, a draft it refuses is kept in the tab's memory instead
//! (`save` says so, and the composer tells the person).
//!
//! On the server there is no localStorage: there, drafts are always empty and nothing is kept.
#![cfg_attr(not(feature = "hydrate"), allow(dead_code))]

/// Longest draft kept, in characters: the longest message there is.
pub const MAX_CHARS: usize = protocol::domain::MESSAGE_MAX_CHARS;
/// Most drafts one account keeps in this browser.
pub const MAX_DRAFTS: usize = 50;

const PREFIX: &str = "tether.draft.";

/// The storage key of `account`'s draft to `peer`.
pub fn key(account: &str, peer: &str) -> String {
    format!("{PREFIX}{account}.{peer}")
}

fn account_prefix(account: &str) -> String {
    format!("{PREFIX}{account}.")
}

/// A stored draft: when it was written, then the text.
fn stored(at: i64, text: &str) -> String {
    format!("{at}\n{text}")
}

/// When a stored draft was written, and its text; `None` when unreadable.
fn parse(stored: &str) -> Option<(i64, &str)> {
    let (at, text) = stored.split_once('\n')?;
    Some((at.parse().ok()?, text))
}

/// The draft a stored value holds (empty when missing or unreadable).
pub fn text_of(stored: Option<&str>) -> String {
    stored
        .and_then(parse)
        .map(|(_, text)| text.to_owned())
        .unwrap_or_default()
}

/// `text` cut to [`MAX_CHARS`] characters.
fn bounded(text: &str) -> &str {
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Of an account's drafts (key, when written), the ones to forget so that `keep` are left,
/// oldest first.
fn oldest_beyond(mut drafts: Vec<(String, i64)>, keep: usize) -> Vec<String> {
    if drafts.len() <= keep {
        return Vec::new();
    }
    // Picked one at a time (a few at most): a sort would be code of its own in the wasm.
    let extra = drafts.len() - keep;
    let mut oldest = Vec::with_capacity(extra);
    for _ in 0..extra {
        let at = (0..drafts.len())
            .min_by(|&a, &b| {
                let (a, b) = (&drafts[a], &drafts[b]);
                a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0))
            })
            .unwrap_or(0);
        oldest.push(drafts.swap_remove(at).0);
    }
    oldest
}

/// Drafts the browser's storage refused (its quota is full), kept in memory while the tab
/// lives: by key, at most [`MAX_DRAFTS`] (one more forgets the oldest written).
#[derive(Default)]
struct Unsaved(Vec<(String, String)>);

impl Unsaved {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, text)| text.as_str())
    }

    fn set(&mut self, key: &str, text: &str) {
        self.remove(key);
        if self.0.len() >= MAX_DRAFTS {
            self.0.remove(0);
        }
        self.0.push((key.to_owned(), text.to_owned()));
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use super::*;
    use gloo_storage::{LocalStorage, Storage};
    use leptos::prelude::*;

    use crate::realtime::Realtime;

    thread_local! {
        static UNSAVED: std::cell::RefCell<Unsaved> = std::cell::RefCell::default();
    }

    fn raw(key: &str) -> Option<String> {
        LocalStorage::raw().get_item(key).ok().flatten()
    }

    /// `account`'s draft to `peer` ("" when there is none).
    pub fn load(account: &str, peer: &str) -> String {
        if account.is_empty() || peer.is_empty() {
            return String::new();
        }
        let key = key(account, peer);
        UNSAVED
            .with_borrow(|u| u.get(&key).map(str::to_owned))
            .unwrap_or_else(|| text_of(raw(&key).as_deref()))
    }

    /// Keeps `text` as the draft (an empty or blank one is removed). `false`: the browser's
    /// storage refused it (full), so it is kept only in this tab's memory.
    pub fn save(account: &str, peer: &str, text: &str) -> bool {
        if account.is_empty() || peer.is_empty() {
            return true;
        }
        let key = key(account, peer);
        if text.trim().is_empty() {
            UNSAVED.with_borrow_mut(|u| u.remove(&key));
            LocalStorage::delete(&key);
            return true;
        }
        let new = raw(&key).is_none();
        let value = stored(js_sys::Date::now() as i64, bounded(text));
        if LocalStorage::raw().set_item(&key, &value).is_err() {
            UNSAVED.with_borrow_mut(|u| u.set(&key, bounded(text)));
            return false;
        }
        UNSAVED.with_borrow_mut(|u| u.remove(&key));
        if new {
            for old in oldest_beyond(drafts_of(account), MAX_DRAFTS) {
                LocalStorage::delete(old);
            }
        }
        true
    }

    /// Removes the draft (it was sent).
    pub fn clear(account: &str, peer: &str) {
        let key = key(account, peer);
        UNSAVED.with_borrow_mut(|u| u.remove(&key));
        LocalStorage::delete(key);
    }

    /// `account`'s drafts: their keys and when each was written.
    fn drafts_of(account: &str) -> Vec<(String, i64)> {
        let prefix = account_prefix(account);
        let storage = LocalStorage::raw();
        let count = storage.length().unwrap_or(0);
        (0..count)
            .filter_map(|i| storage.key(i).ok().flatten())
            .filter(|k| k.starts_with(&prefix))
            .map(|k| {
                let at = raw(&k).as_deref().and_then(parse).map_or(0, |(at, _)| at);
                (k, at)
            })
            .collect()
    }

    /// Keeps `draft` on the stored draft of the conversation `which` names (account, peer)
    /// when another tab changes it, for as long as the calling component lives.
    pub fn follow(which: impl Fn() -> (String, String) + 'static, draft: RwSignal<String>) {
        let handle = window_event_listener(leptos::ev::storage, move |event| {
            let (account, peer) = which();
            if event.key().as_deref() != Some(key(&account, &peer).as_str()) {
                return;
            }
            let text = text_of(event.new_value().as_deref());
            if draft.get_untracked() != text {
                draft.set(text);
            }
        });
        on_cleanup(move || handle.remove());
    }

    /// Forgets an account's drafts once it signs out (on this tab or another).
    pub fn provide(rt: Realtime) {
        let signed_in = std::cell::RefCell::new(None::<String>);
        Effect::new(move |_| {
            let account = rt.account.with(|a| a.as_ref().map(|a| a.user_id.clone()));
            let was = signed_in.replace(account.clone());
            if let (Some(was), None) = (was, account) {
                let prefix = account_prefix(&was);
                UNSAVED.with_borrow_mut(|u| u.0.retain(|(k, _)| !k.starts_with(&prefix)));
                for (old, _) in drafts_of(&was) {
                    LocalStorage::delete(old);
                }
            }
        });
    }
}

#[cfg(feature = "hydrate")]
pub use browser::*;

#[cfg(not(feature = "hydrate"))]
mod inert {
    use leptos::prelude::RwSignal;

    use crate::realtime::Realtime;

    pub fn load(_account: &str, _peer: &str) -> String {
        String::new()
    }
    pub fn save(_account: &str, _peer: &str, _text: &str) -> bool {
        true
    }
    pub fn clear(_account: &str, _peer: &str) {}
    pub fn follow(_which: impl Fn() -> (String, String) + 'static, _draft: RwSignal<String>) {}
    pub fn provide(_rt: Realtime) {}
}

#[cfg(not(feature = "hydrate"))]
pub use inert::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_are_kept_per_account_and_conversation() {
        assert_eq!(key("u1", "p1"), "tether.draft.u1.p1");
        assert_ne!(key("u1", "p1"), key("u2", "p1"));
        assert!(key("u1", "p1").starts_with(&account_prefix("u1")));
        assert!(!key("u10", "p1").starts_with(&account_prefix("u1")));
    }

    #[test]
    fn a_stored_draft_reads_back_and_anything_else_reads_empty() {
        let value = stored(5, "half a thought\nand a second line");
        assert_eq!(value, "5\nhalf a thought\nand a second line");
        assert_eq!(
            parse(&value),
            Some((5, "half a thought\nand a second line"))
        );
        assert_eq!(text_of(Some(&value)), "half a thought\nand a second line");
        assert_eq!(text_of(Some("7\n")), "");
        for junk in [
            None,
            Some(""),
            Some("text"),
            Some("x\ntext"),
            Some("{\"at\":1}"),
        ] {
            assert_eq!(text_of(junk), "", "{junk:?}");
        }
    }

    #[test]
    fn a_draft_is_cut_at_the_longest_message() {
        let long = "é".repeat(MAX_CHARS + 10);
        assert_eq!(bounded(&long).chars().count(), MAX_CHARS);
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn past_the_limit_the_oldest_drafts_go() {
        let drafts = vec![("c".into(), 30), ("a".into(), 10), ("b".into(), 20)];
        assert_eq!(oldest_beyond(drafts.clone(), 3), Vec::<String>::new());
        assert_eq!(oldest_beyond(drafts.clone(), 2), ["a"]);
        assert_eq!(oldest_beyond(drafts, 1), ["a", "b"]);
    }

    #[test]
    fn a_draft_the_storage_refused_is_held_in_memory_bounded() {
        let mut unsaved = Unsaved::default();
        unsaved.set("a", "one");
        unsaved.set("a", "two");
        assert_eq!(unsaved.get("a"), Some("two"));
        for i in 0..MAX_DRAFTS {
            unsaved.set(&format!("k{i}"), "x");
        }
        assert_eq!(unsaved.0.len(), MAX_DRAFTS);
        assert_eq!(unsaved.get("a"), None, "the oldest went");
        unsaved.remove("k1");
        assert_eq!(unsaved.get("k1"), None);
    }
}
