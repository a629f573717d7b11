//! A small JSON codec for the client side of the contract.
//!
//! The server speaks JSON through serde (socketioxide needs it). The browser client decodes with
//! this module instead: a pull reader that each payload type drives with a few lines of code,
//! and a writer that appends to a `String`. serde's derived visitors, instantiated once per type
//! and deserializer, plus serde_json's float and error formatting, were 50 KiB of the 312 KiB
//! gzip release WASM (BENCHMARKS.md, "Front-end"). Numbers are kept as integers or as their text:
//! nothing in the contract is fractional, so no float parsing or printing is compiled in.
//!
//! Wire types implement [`FromJson`] and [`ToJson`] with `#[derive(protocol::Json)]`, which reads
//! the same `#[serde(...)]` attributes as their serde derive (`protocol/derive`); the tests
//! check the two forms against each other (`protocol::agreement`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How deep arrays and objects may nest (serde_json's default limit too).
pub const MAX_DEPTH: u16 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at byte {0}")]
    Syntax(usize),
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("expected {expected} at byte {at}")]
    Expected { expected: &'static str, at: usize },
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("number out of range at byte {0}")]
    OutOfRange(usize),
}

pub type Result<T, E = JsonError> = std::result::Result<T, E>;

/// A type read from JSON by driving a [`Reader`].
pub trait FromJson: Sized {
    fn read_json(r: &mut Reader<'_>) -> Result<Self>;
}

/// A type written as JSON.
pub trait ToJson {
    fn write_json(&self, out: &mut String);
}

/// Reads one JSON document (surrounding whitespace allowed, nothing else) as `T`.
pub fn from_str<T: FromJson>(text: &str) -> Result<T> {
    let mut reader = Reader::new(text);
    let value = T::read_json(&mut reader)?;
    reader.end()?;
    Ok(value)
}

pub fn to_string<T: ToJson + ?Sized>(value: &T) -> String {
    let mut out = String::new();
    value.write_json(&mut out);
    out
}

/// A pull reader over JSON text. Each method reads one value of the kind it names, or fails
/// without a partial result; unknown object fields are skipped by the caller with [`Self::skip`].
pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: u16,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            depth: 0,
        }
    }

    /// Where the reader is, in bytes from the start (for errors).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Only whitespace may follow.
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(JsonError::Syntax(self.pos)),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after whitespace, not consumed.
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes().get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn expected(&self, expected: &'static str) -> JsonError {
        JsonError::Expected {
            expected,
            at: self.pos,
        }
    }

    fn eat(&mut self, byte: u8, expected: &'static str) -> Result<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(expected))
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// Consumes a `null` if one comes next.
    pub fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal("null")
    }

    pub fn bool(&mut self) -> Result<bool> {
        self.peek();
        if self.literal("true") {
            Ok(true)
        } else if self.literal("false") {
            Ok(false)
        } else {
            Err(self.expected("a boolean"))
        }
    }

    /// A number's text, checked against JSON's grammar.
    pub fn number(&mut self) -> Result<&'a str> {
        self.peek();
        let start = self.pos;
        let bytes = self.bytes();
        let digits = |pos: &mut usize| {
            let from = *pos;
            while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos > from
        };
        let mut pos = start;
        if bytes.get(pos) == Some(&b'-') {
            pos += 1;
        }
        let int_start = pos;
        if !digits(&mut pos) || (bytes[int_start] == b'0' && pos - int_start > 1) {
            return Err(self.expected("a number"));
        }
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            if !digits(&mut pos) {
                return Err(JsonError::Syntax(pos));
            }
        }
        if matches!(bytes.get(pos), Some(b'e' | b'E')) {
            pos += 1;
            if matches!(bytes.get(pos), Some(b'+' | b'-')) {
                pos += 1;
            }
            if !digits(&mut pos) {
                return Err(JsonError::Syntax(pos));
            }
        }
        self.pos = pos;
        Ok(&self.text[start..pos])
    }

    /// A number that is an integer in `T`'s range.
    pub fn integer<T: std::str::FromStr>(&mut self) -> Result<T> {
        let at = self.pos;
        let text = self.number()?;
        text.parse().map_err(|_| integer_error(text, at))
    }

    /// A string, borrowed from the text unless it has escapes.
    pub fn str(&mut self) -> Result<Cow<'a, str>> {
        self.eat(b'"', "a string")?;
        let bytes = self.bytes();
        let start = self.pos;
        let mut owned: Option<String> = None;
        let mut run = start;
        loop {
            // To the next byte that ends or escapes the string, or may not appear in it.
            let rest = bytes.get(self.pos..).unwrap_or_default();
            let Some(skip) = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            else {
                return Err(JsonError::Syntax(bytes.len()));
            };
            self.pos += skip;
            match bytes[self.pos] {
                b'"' => {
                    let tail = &self.text[run..self.pos];
                    self.pos += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                    });
                }
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    let escape = bytes.get(self.pos).copied();
                    self.pos += 1;
                    match escape {
                        Some(b'"') => s.push('"'),
                        Some(b'\\') => s.push('\\'),
                        Some(b'/') => s.push('/'),
                        Some(b'b') => s.push('\u{8}'),
                        Some(b'f') => s.push('\u{c}'),
                        Some(b'n') => s.push('\n'),
                        Some(b'r') => s.push('\r'),
                        Some(b't') => s.push('\t'),
                        Some(b'u') => s.push(self.unicode_escape()?),
                        _ => return Err(JsonError::Syntax(self.pos - 1)),
                    }
                    run = self.pos;
                }
                _ => return Err(JsonError::Syntax(self.pos)),
            }
        }
    }

    /// After `\u`: four hex digits, or a surrogate pair written as two escapes.
    fn unicode_escape(&mut self) -> Result<char> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.text[self.pos..].starts_with("\\u") {
                    return Err(JsonError::Syntax(self.pos));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(JsonError::Syntax(self.pos));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(JsonError::Syntax(self.pos)),
            code => code,
        };
        char::from_u32(code).ok_or(JsonError::Syntax(self.pos))
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or(JsonError::Syntax(self.pos))?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JsonError::Syntax(self.pos));
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| JsonError::Syntax(self.pos))
    }

    pub fn string(&mut self) -> Result<String> {
        self.str().map(Cow::into_owned)
    }

    fn nest(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.depth += 1;
        Ok(())
    }

    /// Reads an object, handing each field's name to `field`, which must read (or
    /// [`Self::skip`]) the field's value.
    pub fn object(&mut self, field: &mut dyn FnMut(&str, &mut Self) -> Result<()>) -> Result<()> {
        self.sequence([b'{', b'}'], ["an object", "`,` or `}`"], &mut |r| {
            let name = r.str()?;
            r.eat(b':', "`:`")?;
            field(&name, r)
        })
    }

    /// Reads an array, calling `item` once per element, which must read (or skip) it.
    pub fn array(&mut self, item: &mut dyn FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.sequence([b'[', b']'], ["an array", "`,` or `]`"], item)
    }

    /// Objects and arrays alike: `open`, then entries read by `entry` and separated by commas,
    /// then `close`, one nesting level deeper.
    fn sequence(
        &mut self,
        [open, close]: [u8; 2],
        [what, separator]: [&'static str; 2],
        entry: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.eat(open, what)?;
        self.nest()?;
        if self.peek() == Some(close) {
            self.pos += 1;
        } else {
            loop {
                entry(self)?;
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b) if b == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.expected(separator)),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Reads any one value and drops it, checking its syntax.
    pub fn skip(&mut self) -> Result<()> {
        match self.peek() {
            Some(b'{') => self.object(&mut |_, r| r.skip()),
            Some(b'[') => self.array(&mut |r| r.skip()),
            Some(b'"') => self.str().map(drop),
            Some(b't' | b'f') => self.bool().map(drop),
            Some(b'n') if self.null() => Ok(()),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            _ => Err(self.expected("a value")),
        }
    }

    /// Reads any one value and returns its text, as written.
    pub fn raw(&mut self) -> Result<&'a str> {
        self.peek();
        let start = self.pos;
        self.skip()?;
        Ok(&self.text[start..self.pos])
    }
}

fn integer_error(text: &str, at: usize) -> JsonError {
    if text.bytes().all(|b| b == b'-' || b.is_ascii_digit()) {
        JsonError::OutOfRange(at)
    } else {
        JsonError::Expected {
            expected: "an integer",
            at,
        }
    }
}

/// Writes an object's fields; made by [`write_object`].
pub struct ObjectWriter<'w> {
    out: &'w mut String,
    first: bool,
}

impl ObjectWriter<'_> {
    /// Starts a field: writes its name; its value is written next, to the `String` returned.
    pub fn key(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_str(self.out, name);
        self.out.push(':');
        self.out
    }

    pub fn field<T: ToJson + ?Sized>(&mut self, name: &str, value: &T) -> &mut Self {
        value.write_json(self.key(name));
        self
    }
}

pub fn write_object(out: &mut String, fields: impl FnOnce(&mut ObjectWriter<'_>)) {
    out.push('{');
    fields(&mut ObjectWriter { out, first: true });
    out.push('}');
}

/// A JSON string, escaped as serde_json escapes it (quotes, backslashes, control characters).
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Reads an object whose fields `field` picks out, failing on the first field it cannot read.
/// Fields it does not know (it returns `Ok(false)`) are skipped.
pub fn read_fields(
    r: &mut Reader<'_>,
    field: &mut dyn FnMut(&str, &mut Reader<'_>) -> Result<bool>,
) -> Result<()> {
    r.object(&mut |name, r| {
        if field(name, r)? {
            Ok(())
        } else {
            r.skip()
        }
    })
}

/// Reads one variant of an externally tagged enum, as serde does: `"name"`, or an object with
/// exactly one key, the name, whose value is the variant's body. `variant` gets the name and the
/// body's reader (`None` for the string form), and returns `None` for a name the enum lacks.
pub fn read_variant<T>(r: &mut Reader<'_>, variant: &mut VariantReader<'_, T>) -> Result<T> {
    let at = r.position();
    let unknown = JsonError::Expected {
        expected: "a known variant",
        at,
    };
    if r.peek() == Some(b'"') {
        let name = r.str()?;
        return variant(&name, None)?.ok_or(unknown);
    }
    let mut found = None;
    r.object(&mut |name, r| {
        if found.is_some() {
            return Err(unknown);
        }
        found = Some(variant(name, Some(r))?.ok_or(unknown)?);
        Ok(())
    })?;
    found.ok_or(unknown)
}

/// What [`read_variant`] asks for each variant.
pub type VariantReader<'f, T> = dyn FnMut(&str, Option<&mut Reader<'_>>) -> Result<Option<T>> + 'f;

/// A unit variant's body: none (`"name"`), or `null` (`{"name": null}`).
pub fn unit_variant(body: Option<&mut Reader<'_>>) -> Result<()> {
    match body {
        Some(r) => match r.null() {
            true => Ok(()),
            false => Err(r.expected("`null`")),
        },
        None => Ok(()),
    }
}

/// The body of a variant that has one (a newtype or struct variant).
pub fn variant_body<'r, 'a>(body: Option<&'r mut Reader<'a>>) -> Result<&'r mut Reader<'a>> {
    body.ok_or(JsonError::Missing("the variant's value"))
}

/// A required field's value, or the error naming it.
pub fn required<T>(value: Option<T>, name: &'static str) -> Result<T> {
    value.ok_or(JsonError::Missing(name))
}

impl FromJson for String {
    fn read_json(r: &mut Reader<'_>) -> Result<Self> {
        r.string()
    }
}

impl FromJson for bool {
    fn read_json(r: &mut Reader<'_>) -> Result<Self> {
        r.bool()
    }
}

/// `null` is `None` (as with serde; a missing field is handled by the type that has it).
impl<T: FromJson> FromJson for Option<T> {
    fn read_json(r: &mut Reader<'_>) -> Result<Self> {
        if r.null() {
            Ok(None)
        } else {
            T::read_json(r).map(Some)
        }
    }
}

impl<T: FromJson> FromJson for Vec<T> {
    fn read_json(r: &mut Reader<'_>) -> Result<Self> {
        let mut items = Vec::new();
        r.array(&mut |r| {
            items.push(T::read_json(r)?);
            Ok(())
        })?;
        Ok(items)
    }
}

/// An object whose field names are the keys.
impl<T: FromJson> FromJson for BTreeMap<String, T> {
    fn read_json(r: &mut Reader<'_>) -> Result<Self> {
        let mut map = BTreeMap::new();
        r.object(&mut |name, r| {
            map.insert(name.to_owned(), T::read_json(r)?);
            Ok(())
        })?;
        Ok(map)
    }
}

impl<T: ToJson> ToJson for BTreeMap<String, T> {
    fn write_json(&self, out: &mut String) {
        write_object(out, |o| {
            for (name, value) in self {
                o.field(name, value);
            }
        });
    }
}

impl ToJson for str {
    fn write_json(&self, out: &mut String) {
        write_str(out, self);
    }
}

impl ToJson for String {
    fn write_json(&self, out: &mut String) {
        write_str(out, self);
    }
}

impl ToJson for bool {
    fn write_json(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

macro_rules! integer_json {
    ($($t:ty),*) => {$(
        impl FromJson for $t {
            fn read_json(r: &mut Reader<'_>) -> Result<Self> {
                r.integer()
            }
        }

        impl ToJson for $t {
            fn write_json(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_json!(i64, u64, u32);

impl<T: ToJson> ToJson for Option<T> {
    fn write_json(&self, out: &mut String) {
        match self {
            Some(value) => value.write_json(out),
            None => out.push_str("null"),
        }
    }
}

impl<T: ToJson> ToJson for [T] {
    fn write_json(&self, out: &mut String) {
        out.push('[');
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            item.write_json(out);
        }
        out.push(']');
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn write_json(&self, out: &mut String) {
        self.as_slice().write_json(out);
    }
}

impl<T: ToJson + ?Sized> ToJson for &T {
    fn write_json(&self, out: &mut String) {
        (**self).write_json(out);
    }
}

/// One JSON value kept as its text: checked once, decoded later into whatever type its consumer
/// expects (an event's argument, a payload carried through unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(Box<str>);

impl RawJson {
    /// Checks `text` is one JSON value.
    pub fn new(text: &str) -> Result<Self> {
        let mut reader = Reader::new(text);
        let raw = reader.raw()?;
        reader.end()?;
        Ok(Self(raw.into()))
    }

    pub fn of<T: ToJson + ?Sized>(value: &T) -> Self {
        Self(to_string(value).into())
    }

    pub fn null() -> Self {
        Self("null".into())
    }

    pub fn get(&self) -> &str {
        &self.0
    }

    /// Decodes the value into `T`; `None` when it has another shape.
    pub fn parse<T: FromJson>(&self) -> Option<T> {
        from_str(&self.0).ok()
    }
}

impl FromJson for RawJson {
    fn read_json(r: &mut Reader<'_>) -> Result<Self> {
        r.raw().map(|raw| Self(raw.into()))
    }
}

impl ToJson for RawJson {
    fn write_json(&self, out: &mut String) {
        out.push_str(&self.0);
    }
}

/// serde's form of a raw value (its text, unchanged), for checking the types that carry one
/// against serde (`crate::agreement`); nothing else needs it.
#[cfg(any(test, feature = "testing"))]
mod raw_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    use super::RawJson;

    impl Serialize for RawJson {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let raw =
                RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
            raw.serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for RawJson {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            Box::<RawValue>::deserialize(d).map(|raw| RawJson(raw.get().into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_whole_and_kept_as_written() {
        let text = r#"{ "a" : [1, -2.5e3, true, false, null, "x"], "b": {} , "c": []}"#;
        assert_eq!(RawJson::new(&format!(" {text} ")).unwrap().get(), text);
    }

    #[test]
    fn strings_unescape_and_escape_like_serde_json() {
        let text = r#""q\" b\\ s\/ \b\f\n\r\t \u00e9 \ud83d\ude00 \u0001""#;
        let s: String = from_str(text).unwrap();
        assert_eq!(s, "q\" b\\ s/ \u{8}\u{c}\n\r\t é 😀 \u{1}");
        assert_eq!(to_string(&s), serde_json::to_string(&s).unwrap());
        for s in ["plain", "", "é😀", "\u{7f}\u{1f}", "a\"b\\c</d>"] {
            assert_eq!(to_string(s), serde_json::to_string(s).unwrap(), "{s:?}");
            assert_eq!(from_str::<String>(&to_string(s)).unwrap(), s);
        }
    }

    #[test]
    fn unescaped_strings_are_borrowed() {
        let mut r = Reader::new(r#""plain""#);
        assert!(matches!(r.str().unwrap(), Cow::Borrowed("plain")));
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "{",
            "[1,]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{a:1}",
            "01",
            "1.",
            "-",
            "1e",
            "\"abc",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\u{1}\"",
            "tru",
            "nul",
            "[] []",
            "'a'",
            "+1",
            ".5",
        ] {
            assert!(RawJson::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(RawJson::new(&deep), Err(JsonError::TooDeep));
        let ok = "[".repeat(100) + &"]".repeat(100);
        assert!(RawJson::new(&ok).is_ok());
    }

    #[test]
    fn integers_are_checked_for_kind_and_range() {
        assert_eq!(from_str::<i64>("-42"), Ok(-42));
        assert_eq!(from_str::<u64>("18446744073709551615"), Ok(u64::MAX));
        assert!(matches!(
            from_str::<u64>("-1"),
            Err(JsonError::OutOfRange(_))
        ));
        assert!(matches!(
            from_str::<u32>("4294967296"),
            Err(JsonError::OutOfRange(_))
        ));
        assert!(matches!(
            from_str::<i64>("1.5"),
            Err(JsonError::Expected { .. })
        ));
        assert!(matches!(
            from_str::<i64>("\"1\""),
            Err(JsonError::Expected { .. })
        ));
    }

    #[test]
    fn raw_values_keep_their_text_and_decode_later() {
        let raw = RawJson::new(r#" {"a": [1, "b"]} "#).unwrap();
        assert_eq!(raw.get(), r#"{"a": [1, "b"]}"#);
        assert_eq!(
            raw.parse::<BTreeMap<String, Vec<RawJson>>>().unwrap()["a"],
            [RawJson::new("1").unwrap(), RawJson::new(r#""b""#).unwrap()]
        );
        assert_eq!(raw.parse::<String>(), None);
        let mut out = String::new();
        Some(raw).write_json(&mut out);
        assert_eq!(out, r#"{"a": [1, "b"]}"#);
    }

    #[test]
    fn maps_are_objects() {
        let map: BTreeMap<String, i64> = from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(to_string(&map), r#"{"a":1,"b":2}"#);
        assert!(from_str::<BTreeMap<String, i64>>(r#"{"a":"1"}"#).is_err());
    }
}

#[cfg(test)]
mod fuzz {
    //! The reader against arbitrary input: an error or a value, never a panic, and strings read
    //! and written exactly as serde_json reads and writes them.
    //! `PROPTEST_CASES=100000 cargo test -p protocol fuzz_` runs it longer.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fuzz_arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = RawJson::new(&text);
        }

        #[test]
        fn fuzz_json_looking_text_never_panics(text in r#"[\[\]{}",:\\u0-9a-fA-F. nulltrefals\-+eE]{0,60}"#) {
            let _ = RawJson::new(&text);
        }

        #[test]
        fn fuzz_strings_read_as_serde_json_reads_them(text in r#""([^"\\]|\\["\\/bfnrtu]|\\u[0-9a-fA-FdD]{0,4}){0,12}"?"#) {
            prop_assert_eq!(from_str::<String>(&text).ok(), serde_json::from_str::<String>(&text).ok());
        }

        #[test]
        fn fuzz_strings_round_trip_and_write_as_serde_json_writes_them(s in any::<String>()) {
            let written = to_string(&s);
            prop_assert_eq!(&written, &serde_json::to_string(&s).unwrap());
            prop_assert_eq!(from_str::<String>(&written).unwrap(), s);
        }
    }
}
