//! A device's browser label ("Firefox on Linux"), classified from the `User-Agent` of the
//! request that opened the socket, and its public id.
//!
//! The label is a few well-known tokens matched in the first [`UA_SCAN_BYTES`] of the header;
//! nothing shown needs a user-agent crate. The raw header is neither kept nor logged: the
//! request-head copy drops it ([`crate::transport::request_head`]) right after this reads it.

use sha2::{Digest, Sha256};

/// How much of a `User-Agent` is read: real ones are 100–300 bytes, and every token matched
/// here comes early. A longer header costs no more than this.
pub const UA_SCAN_BYTES: usize = 512;

/// The characters of a device id: 16 lower-case hex digits (64 bits of a SHA-256).
pub const DEVICE_ID_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browser {
    Chrome,
    Edge,
    Firefox,
    Safari,
    Opera,
    SamsungInternet,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Windows,
    MacOs,
    Linux,
    Android,
    Ios,
    ChromeOs,
    Other,
}

/// What a device is shown as: its browser and operating system, from the `User-Agent` of the
/// request that opened its socket (an extension of that request, set by
/// `transport::request_head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLabel {
    pub browser: Browser,
    pub os: Os,
}

impl DeviceLabel {
    /// The label of a request without a `User-Agent` (or one not valid UTF-8).
    pub const UNKNOWN: DeviceLabel = DeviceLabel {
        browser: Browser::Other,
        os: Os::Other,
    };

    /// Classifies a `User-Agent` value (only its first [`UA_SCAN_BYTES`] are read).
    pub fn from_user_agent(ua: &[u8]) -> DeviceLabel {
        let ua = &ua[..ua.len().min(UA_SCAN_BYTES)];
        let has = |token: &str| ua.windows(token.len()).any(|w| w == token.as_bytes());
        // Order matters: each browser's UA also names the engines it is compatible with
        // (Edge and Opera say Chrome and Safari, Chrome says Safari).
        let browser = if has("SamsungBrowser/") {
            Browser::SamsungInternet
        } else if has("OPR/") || has("Opera") {
            Browser::Opera
        } else if has("Edg/") || has("EdgA/") || has("EdgiOS/") || has("Edge/") {
            Browser::Edge
        } else if has("Firefox/") || has("FxiOS/") {
            Browser::Firefox
        } else if has("Chrome/") || has("CriOS/") || has("Chromium/") {
            Browser::Chrome
        } else if has("Safari/") && has("Version/") {
            Browser::Safari
        } else {
            Browser::Other
        };
        // iOS says "like Mac OS X", Android and ChromeOS say "Linux".
        let os = if has("iPhone") || has("iPad") || has("iPod") {
            Os::Ios
        } else if has("Android") {
            Os::Android
        } else if has("CrOS") {
            Os::ChromeOs
        } else if has("Windows") {
            Os::Windows
        } else if has("Macintosh") || has("Mac OS X") {
            Os::MacOs
        } else if has("Linux") {
            Os::Linux
        } else {
            Os::Other
        };
        DeviceLabel { browser, os }
    }

    /// The label as stored and shown: "Firefox on Linux", "Safari", "Other browser on Android".
    pub fn label(self) -> String {
        let browser = match self.browser {
            Browser::Chrome => "Chrome",
            Browser::Edge => "Edge",
            Browser::Firefox => "Firefox",
            Browser::Safari => "Safari",
            Browser::Opera => "Opera",
            Browser::SamsungInternet => "Samsung Internet",
            Browser::Other => "Other browser",
        };
        let os = match self.os {
            Os::Windows => "Windows",
            Os::MacOs => "macOS",
            Os::Linux => "Linux",
            Os::Android => "Android",
            Os::Ios => "iOS",
            Os::ChromeOs => "ChromeOS",
            Os::Other => return browser.to_owned(),
        };
        format!("{browser} on {os}")
    }
}

/// The public id of a device: the first [`DEVICE_ID_LEN`] hex digits of
/// `SHA-256("tether-device\0" ‖ family)`. Derived, so nothing new is stored; one-way from a
/// digest of a secret, and shown only to the device's owner.
pub fn device_id(family: &str) -> String {
    public_id(b"tether-device\0", family)
}

/// The public id of a passkey: as [`device_id`], of its stored credential id under its own tag
/// (so a passkey's id never equals a device's). Shown only to the account's own sessions.
pub fn passkey_id(cred_id: &str) -> String {
    public_id(b"tether-passkey\0", cred_id)
}

fn public_id(tag: &[u8], of: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(tag);
    hash.update(of.as_bytes());
    let mut id = hex::encode(hash.finalize());
    id.truncate(DEVICE_ID_LEN);
    id
}

/// Whether `raw` has the form of a device or passkey id (it may still name none).
pub fn is_device_id(raw: &str) -> bool {
    raw.len() == DEVICE_ID_LEN && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_user_agents_get_their_browser_and_system() {
        let cases = [
            ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "Firefox on Linux"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "Chrome on Windows"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", "Edge on Windows"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", "Safari on macOS"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", "Safari on iOS"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1", "Chrome on iOS"),
            ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", "Samsung Internet on Android"),
            ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", "Chrome on Android"),
            ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "Chrome on ChromeOS"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/114.0.0.0", "Opera on Windows"),
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36", "Chrome on Linux"),
            ("curl/8.5.0", "Other browser"),
            ("", "Other browser"),
        ];
        for (ua, label) in cases {
            assert_eq!(
                DeviceLabel::from_user_agent(ua.as_bytes()).label(),
                label,
                "{ua}"
            );
        }
    }

    #[test]
    fn only_the_start_of_a_long_user_agent_is_read() {
        let mut ua = vec![b'x'; UA_SCAN_BYTES];
        ua.extend_from_slice(b" Firefox/133.0 Linux");
        assert_eq!(DeviceLabel::from_user_agent(&ua), DeviceLabel::UNKNOWN);
        let huge = vec![b'A'; 1 << 20];
        assert_eq!(DeviceLabel::from_user_agent(&huge), DeviceLabel::UNKNOWN);
    }

    #[test]
    fn a_device_id_is_derived_short_and_not_the_family() {
        let family = "a".repeat(64);
        let id = device_id(&family);
        assert!(is_device_id(&id), "{id}");
        assert_eq!(id, device_id(&family), "stable");
        assert_ne!(id, device_id(&"b".repeat(64)));
        assert!(!family.contains(&id));
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
            "0123456789abcdeg",
        ] {
            assert!(!is_device_id(bad), "{bad}");
        }
    }
}
