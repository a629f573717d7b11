//! A process-wide tag that names this node in every session id it makes (patch 0007).
//!
//! A cluster without sticky sessions routes a long-polling request by its `sid`: the first two
//! characters name the node that holds the socket, and a node that receives a request for
//! another node's tag forwards it there. socketioxide builds its [`crate::config::EngineIoConfig`]
//! itself, so the tag cannot ride in the config; it is set once per process here (and may be
//! changed, for instance when a node lost its tag and claimed another). Without a tag, session
//! ids are 96 random bits as published; with one, the other 14 characters carry 84.

use std::sync::atomic::{AtomicU16, Ordering};

use engineioxide_core::Sid;

/// The two tag bytes, or 0 for none (a tag is two base64url characters, never 0).
static TAG: AtomicU16 = AtomicU16::new(0);

/// Whether `byte` is a base64url character (the alphabet of session ids).
fn is_sid_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// Sets the tag every new session id starts with (`None`: no tag). Returns false, changing
/// nothing, when a byte is not a base64url character.
pub fn set(tag: Option<[u8; 2]>) -> bool {
    match tag {
        None => TAG.store(0, Ordering::Relaxed),
        Some(tag) if tag.iter().all(|b| is_sid_char(*b)) => {
            TAG.store(u16::from_be_bytes(tag), Ordering::Relaxed)
        }
        Some(_) => return false,
    }
    true
}

/// The tag new session ids start with, if any.
pub fn get() -> Option<[u8; 2]> {
    match TAG.load(Ordering::Relaxed) {
        0 => None,
        tag => Some(tag.to_be_bytes()),
    }
}

/// A new random session id, starting with the tag when one is set.
pub fn new_sid() -> Sid {
    let sid = Sid::new();
    match get() {
        None => sid,
        Some(tag) => {
            let mut id = [0u8; 16];
            id.copy_from_slice(sid.as_str().as_bytes());
            id[..2].copy_from_slice(&tag);
            // Both parts are base64url characters, so this parses.
            std::str::from_utf8(&id)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(sid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_tag_starts_every_new_sid_and_none_gives_them_back_their_whole_randomness() {
        assert!(!set(Some(*b"a/")), "not base64url");
        assert!(set(Some(*b"Q_")));
        let a = new_sid();
        let b = new_sid();
        assert!(a.as_str().starts_with("Q_") && b.as_str().starts_with("Q_"));
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
        assert!(set(None));
        assert_eq!(get(), None);
        let plain: Vec<Sid> = (0..64).map(|_| new_sid()).collect();
        assert!(plain.iter().any(|s| !s.as_str().starts_with("Q_")));
    }
}
