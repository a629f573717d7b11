//! Input rules, as types: each value is parsed once at the edge through one fallible
//! constructor and cannot be invalid afterwards. The browser uses the same rules for its forms.

use std::fmt;

/// Longest username, in characters, after trimming.
pub const USERNAME_MAX_CHARS: usize = 32;
/// Longest message, in characters.
pub const MESSAGE_MAX_CHARS: usize = 4000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("a username must not be empty")]
    EmptyUsername,
    #[error("a username is at most {USERNAME_MAX_CHARS} characters")]
    UsernameTooLong,
    #[error("a username must not contain control characters")]
    UsernameControlChars,
    #[error("a username must not contain invisible formatting characters (zero-width or direction marks)")]
    UsernameFormatChars,
    #[error("a message must not be empty")]
    EmptyMessage,
    #[error("a message is at most {max} characters")]
    MessageTooLong { max: usize },
    #[error("a client id must be a UUID")]
    InvalidClientId,
}

/// Unicode general category Cf (Format), as listed for `Cf` in
/// <https://www.unicode.org/Public/16.0.0/ucd/extracted/DerivedGeneralCategory.txt>
/// (Unicode 16.0.0; the same table regex-syntax 0.8 generates with ucd-generate). These are
/// invisible: zero-width characters (U+200B-U+200D, U+2060, U+FEFF) and the soft hyphen make one
/// name look like another, and the bidi marks, embeddings, overrides and isolates (U+200E,
/// U+200F, U+061C, U+202A-U+202E, U+2066-U+2069) reorder the text drawn around them.
const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

/// Whether `c` is a format character (category Cf), see [`FORMAT_CHARS`].
fn is_format_char(c: char) -> bool {
    FORMAT_CHARS
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// A display name: trimmed, 1 to 32 characters, no control characters (Cc), no format
/// characters (Cf: zero-width, soft hyphen, bidi marks and overrides) and no line or paragraph
/// separator (U+2028, U+2029). Two names are the same name when their [`name_key`]s are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(DomainError::EmptyUsername);
        }
        if trimmed.chars().count() > USERNAME_MAX_CHARS {
            return Err(DomainError::UsernameTooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(DomainError::UsernameControlChars);
        }
        // Refused, never stripped: a name is taken as written or not at all. The line and
        // paragraph separators (Zl, Zp) break a roster line as a newline would.
        if trimmed
            .chars()
            .any(|c| is_format_char(c) || matches!(c, '\u{2028}' | '\u{2029}'))
        {
            return Err(DomainError::UsernameFormatChars);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key two names are compared by: equal for names people read as the same. A protected
/// name is claimed under its key, and a sign-up whose key is claimed is refused. It is
///
/// 1. the compatibility caseless form (Unicode 16 §3.13, D146:
///    NFKD(toCasefold(NFKD(toCasefold(NFD(X)))))), without the Default_Ignorable_Code_Point
///    characters (U+00AD soft hyphen, zero-width characters, variation selectors, fillers):
///    `ADA`, `ａｄａ` (fullwidth), `ada\u{200B}`, `ad\u{AD}a` and the NFC and NFD spellings of
///    `Zoë` each become one form;
/// 2. its UTS #39 confusables skeleton (`unicode_security::skeleton`), so that `аda` with a
///    Cyrillic `а`, or `bob` and `b0b`, collide; the skeleton is folded again (it maps some
///    characters to capitals);
/// 3. with its white space trimmed and each run of it made one U+0020.
///
/// The result is NFC. A name of invisible characters only has the empty key (a server refuses
/// such a name). Server side only (feature `name-key`): its tables stay out of the browser.
#[cfg(feature = "name-key")]
pub fn name_key(name: &str) -> String {
    let skeleton: String = unicode_security::skeleton(&caseless(name)).collect();
    let key = caseless(&skeleton);
    let mut out = String::with_capacity(key.len());
    for word in key.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    use unicode_normalization::UnicodeNormalization;
    out.nfc().collect()
}

/// The compatibility caseless form (D146), without default-ignorable code points.
#[cfg(feature = "name-key")]
fn caseless(text: &str) -> String {
    use icu_properties::props::DefaultIgnorableCodePoint;
    use unicode_normalization::UnicodeNormalization;
    let ignorable = icu_properties::CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let fold = icu_casemap::CaseMapper::new();
    let visible = |c: &char| !ignorable.contains(*c);
    let once: String = text.nfd().filter(visible).collect();
    let once: String = fold.fold_string(&once).nfkd().filter(visible).collect();
    fold.fold_string(&once).nfkd().filter(visible).collect()
}

/// A message body: 1 to `max` characters (the server's configured limit, at most
/// [`MESSAGE_MAX_CHARS`] by default). Whitespace-only bodies are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent(String);

impl MessageContent {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, DomainError> {
        if raw.trim().is_empty() {
            return Err(DomainError::EmptyMessage);
        }
        if raw.chars().count() > max_chars {
            return Err(DomainError::MessageTooLong { max: max_chars });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The id a client gives a message so that a resend is recognised: a UUID in its canonical
/// hyphenated lower-case form (other spellings are normalised to it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let hex: String = raw.chars().filter(|c| *c != '-').collect();
        let well_formed = raw.len() == 36
            && raw
                .char_indices()
                .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'))
            && hex.len() == 32
            && hex.chars().all(|c| c.is_ascii_hexdigit());
        if !well_formed {
            return Err(DomainError::InvalidClientId);
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_is_trimmed() {
        assert_eq!(Username::parse("  ada ").unwrap().as_str(), "ada");
    }

    #[test]
    fn blank_username_is_refused() {
        assert_eq!(Username::parse("   "), Err(DomainError::EmptyUsername));
        assert_eq!(Username::parse(""), Err(DomainError::EmptyUsername));
    }

    #[test]
    fn username_of_32_characters_is_accepted_and_33_refused() {
        assert!(Username::parse(&"é".repeat(32)).is_ok());
        assert_eq!(
            Username::parse(&"a".repeat(33)),
            Err(DomainError::UsernameTooLong)
        );
    }

    #[test]
    fn username_with_control_characters_is_refused() {
        assert_eq!(
            Username::parse("a\u{7}b"),
            Err(DomainError::UsernameControlChars)
        );
        assert_eq!(
            Username::parse("a\nb"),
            Err(DomainError::UsernameControlChars)
        );
    }

    #[test]
    fn username_with_format_characters_is_refused_whatever_their_class() {
        for (class, name) in [
            ("soft hyphen", "ad\u{ad}a"),
            ("zero-width space", "ad\u{200b}a"),
            ("zero-width non-joiner", "ad\u{200c}a"),
            ("zero-width joiner", "ad\u{200d}a"),
            ("left-to-right mark", "ad\u{200e}a"),
            ("right-to-left mark", "ad\u{200f}a"),
            ("left-to-right embedding", "ad\u{202a}a"),
            ("pop directional formatting", "ad\u{202c}a"),
            ("right-to-left override", "ad\u{202e}a"),
            ("left-to-right isolate", "ad\u{2066}a"),
            ("pop directional isolate", "ad\u{2069}a"),
            ("word joiner", "ad\u{2060}a"),
            ("byte order mark", "ad\u{feff}a"),
            ("arabic letter mark", "ad\u{61c}a"),
            ("mongolian vowel separator", "ad\u{180e}a"),
            ("interlinear annotation", "ad\u{fff9}a"),
            ("tag letter", "ad\u{e0041}a"),
            ("language tag", "ad\u{e0001}a"),
            ("last of the table", "ad\u{1343f}a"),
        ] {
            assert_eq!(
                Username::parse(name),
                Err(DomainError::UsernameFormatChars),
                "{class}"
            );
        }
    }

    #[test]
    fn a_format_character_at_either_end_is_refused_not_trimmed_away() {
        for name in ["\u{200b}ada", "ada\u{feff}", " \u{202e}ada ", "\u{2066}"] {
            assert_eq!(
                Username::parse(name),
                Err(DomainError::UsernameFormatChars),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_line_or_paragraph_separator_is_refused() {
        for name in ["ada\u{2028}bob", "ada\u{2029}bob"] {
            assert_eq!(
                Username::parse(name),
                Err(DomainError::UsernameFormatChars),
                "{name:?}"
            );
        }
    }

    /// The review's examples (h4 finding 3): each reads as "ada" and so has its key.
    #[cfg(feature = "name-key")]
    #[test]
    fn names_read_alike_have_one_key() {
        let ada = name_key("ada");
        assert_eq!(ada, "ada");
        for (what, name) in [
            ("capitals", "ADA"),
            ("surrounding spaces", "  Ada "),
            ("zero-width space", "ada\u{200b}"),
            ("soft hyphen", "ad\u{ad}a"),
            ("word joiner", "a\u{2060}da"),
            ("fullwidth", "\u{ff41}\u{ff44}\u{ff41}"),
            ("fullwidth capitals", "\u{ff21}\u{ff24}\u{ff21}"),
            ("Cyrillic a", "\u{430}da"),
            ("Cyrillic capital A", "\u{410}DA"),
            ("Greek alpha", "\u{3b1}da"),
            ("mathematical bold", "\u{1d41a}\u{1d41d}\u{1d41a}"),
            ("variation selector", "ada\u{fe0f}"),
            ("hangul filler", "ad\u{3164}a"),
        ] {
            assert_eq!(name_key(name), ada, "{what}: {name:?}");
        }
        // NFC and NFD spellings of one name.
        assert_eq!(name_key("Zo\u{eb}"), name_key("Zoe\u{308}"));
        assert_eq!(name_key("ZO\u{cb}"), name_key("zoe\u{308}"));
        // Case folding beyond lower-casing.
        assert_eq!(name_key("Stra\u{df}e"), name_key("STRASSE"));
        assert_eq!(
            name_key("\u{3a3}\u{3b1}\u{3c2}"),
            name_key("\u{3c3}\u{3b1}\u{3c3}")
        );
        // Look-alike digits and letters (UTS #39).
        assert_eq!(name_key("b0b"), name_key("bob"));
        assert_eq!(name_key("a1ice"), name_key("alice"));
        // White space collapsed, whatever its kind.
        assert_eq!(name_key("ada  lovelace"), name_key("ada lovelace"));
        assert_eq!(name_key("ada\u{3000}lovelace"), name_key("ada lovelace"));
        assert_eq!(name_key("ada\u{a0}lovelace"), name_key("ada lovelace"));
    }

    #[cfg(feature = "name-key")]
    #[test]
    fn names_read_differently_have_different_keys() {
        for (a, b) in [
            ("ada", "bob"),
            ("ada", "adam"),
            ("ada lovelace", "adalovelace"),
            ("zoe", "zo\u{eb}"),
            (
                "\u{43b}\u{435}\u{43d}\u{430}",
                "\u{43c}\u{430}\u{448}\u{430}",
            ),
            ("\u{674e}", "\u{738b}"),
        ] {
            assert_ne!(name_key(a), name_key(b), "{a:?} {b:?}");
        }
    }

    #[cfg(feature = "name-key")]
    #[test]
    fn a_name_of_invisible_characters_has_the_empty_key() {
        assert_eq!(name_key("\u{3164}"), "");
        assert_eq!(name_key("\u{115f}\u{fe0f}"), "");
        assert_ne!(name_key("ada"), "");
    }

    #[test]
    fn the_format_table_is_sorted_and_its_ranges_are_disjoint() {
        for pair in FORMAT_CHARS.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
        // Unicode 16.0 has 170 characters of category Cf.
        let count: u32 = FORMAT_CHARS
            .iter()
            .map(|&(first, last)| u32::from(last) - u32::from(first) + 1)
            .sum();
        assert_eq!(count, 170);
    }

    #[test]
    fn characters_next_to_the_format_ranges_are_accepted() {
        // Neighbours of the table's edges, and names that only look exotic.
        for name in [
            "\u{ac}ada\u{ae}",
            "a\u{2010}b",
            "a\u{2027}b",
            "a\u{202f}b",
            "a\u{2070}b",
            "a\u{13440}b",
            "élodie",
            "زينب",
            "李小龍",
            "ada 🚀",
        ] {
            assert!(Username::parse(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn message_must_have_visible_content() {
        assert_eq!(
            MessageContent::parse(" \n ", 10),
            Err(DomainError::EmptyMessage)
        );
        assert_eq!(MessageContent::parse(" hi ", 10).unwrap().as_str(), " hi ");
    }

    #[test]
    fn message_length_counts_characters_not_bytes() {
        assert!(MessageContent::parse(&"ü".repeat(4000), MESSAGE_MAX_CHARS).is_ok());
        assert_eq!(
            MessageContent::parse(&"a".repeat(4001), MESSAGE_MAX_CHARS),
            Err(DomainError::MessageTooLong { max: 4000 })
        );
    }

    #[test]
    fn client_id_must_be_a_hyphenated_uuid() {
        assert!(ClientMsgId::parse("0f8fad5b-d9cb-469f-a165-70867728950e").is_ok());
        assert_eq!(
            ClientMsgId::parse("0F8FAD5B-D9CB-469F-A165-70867728950E")
                .unwrap()
                .as_str(),
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        );
        for bad in [
            "",
            "not-a-uuid",
            "0f8fad5bd9cb469fa16570867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "0f8fad5b-d9cb-469f-a16-570867728950e",
        ] {
            assert_eq!(
                ClientMsgId::parse(bad),
                Err(DomainError::InvalidClientId),
                "{bad}"
            );
        }
    }
}
