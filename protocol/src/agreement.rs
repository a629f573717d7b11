//! The check that holds a wire type's two forms together: serde's (the server) and
//! `derive(Json)`'s (the browser), both made from the same `#[serde(...)]` attributes. Each
//! sample value must be written byte for byte alike, and read back alike; and so must a set of
//! variations of its text (each field missing, `null`, of another type; an unknown field; a
//! variant in its other spelling), which is where `default`, `Option` and renames show.
//!
//! [`Agreement::covers`] fails for any type derived with `Json` in the given sources that no
//! sample exercised, so a new wire type cannot skip the check. Built for this crate's tests and,
//! with the `testing` feature, for the tests of crates with wire types of their own.

use std::any::type_name;
use std::collections::BTreeSet;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::json::{self, FromJson, ToJson};

/// A wire type's two forms, in one bound.
pub trait Wire: Serialize + DeserializeOwned + FromJson + ToJson + PartialEq + Debug {}

impl<T: Serialize + DeserializeOwned + FromJson + ToJson + PartialEq + Debug> Wire for T {}

#[derive(Default)]
pub struct Agreement {
    checked: BTreeSet<&'static str>,
}

impl Agreement {
    pub fn new() -> Self {
        Self::default()
    }

    /// Both forms write `value` alike and read each other's text, and its variations, alike.
    pub fn check<T: Wire>(&mut self, value: T) -> &mut Self {
        let name = type_name::<T>();
        let theirs = serde_json::to_string(&value).unwrap();
        let ours = json::to_string(&value);
        assert_eq!(ours, theirs, "{name} is written as serde writes it");
        assert_eq!(
            json::from_str::<T>(&theirs).as_ref(),
            Ok(&value),
            "{name} reads serde's text"
        );
        assert_eq!(
            serde_json::from_str::<T>(&ours).ok().as_ref(),
            Some(&value),
            "serde reads {name}'s text"
        );
        let document: Value = serde_json::from_str(&theirs).unwrap();
        for variation in variations(&document) {
            read_alike::<T>(&variation.to_string());
        }
        self.checked.insert(short_name(name));
        self
    }

    /// Every type that `sources` (Rust source files) derive `Json` for has been checked.
    pub fn covers(&self, sources: &[&str]) {
        let derived: BTreeSet<&str> = sources.iter().flat_map(|s| derived_types(s)).collect();
        let unchecked: Vec<&&str> = derived.difference(&self.checked).collect();
        assert!(
            unchecked.is_empty(),
            "derived with Json but given no sample to check: {unchecked:?}"
        );
    }
}

/// Both forms read `text` alike: the same value, or both refuse it.
pub fn read_alike<T: Wire>(text: &str) {
    let ours = json::from_str::<T>(text).ok();
    let theirs = serde_json::from_str::<T>(text).ok();
    assert_eq!(ours, theirs, "{} read from {text}", type_name::<T>());
}

/// Values of every JSON type, put where a field's value was.
fn odd_values() -> [Value; 8] {
    [
        Value::Null,
        json!(true),
        json!("x"),
        json!(0),
        json!(-1),
        json!(1.5),
        json!([]),
        json!({}),
    ]
}

/// `document` changed in one place each, at any depth (the first element of an array stands
/// for the rest).
fn variations(document: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    match document {
        Value::Object(fields) => {
            for (key, value) in fields {
                let with = |value: Value| {
                    let mut changed = fields.clone();
                    changed.insert(key.clone(), value);
                    Value::Object(changed)
                };
                let mut without = fields.clone();
                without.remove(key);
                out.push(Value::Object(without));
                // Not an array where an object was: serde also reads a struct from an array of its
                // fields, which no Tether peer writes and the codec refuses.
                let odd = odd_values().into_iter();
                out.extend(
                    odd.filter(|odd| !(value.is_object() && odd.is_array()))
                        .map(with),
                );
                out.extend(variations(value).into_iter().map(with));
                if fields.len() == 1 {
                    // A variant with a body, named without one.
                    out.push(Value::String(key.clone()));
                }
            }
            let mut extra = fields.clone();
            extra.insert("unknownField".into(), json!([{ "a": null }]));
            out.push(Value::Object(extra));
        }
        Value::String(name) => {
            // A unit variant's other spellings (or a string where an object was wanted).
            out.push(json!({ name.as_str(): null }));
            out.push(json!({ name.as_str(): {} }));
            out.push(json!("unknownVariant"));
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                for changed in variations(first) {
                    let mut items = items.clone();
                    items[0] = changed;
                    out.push(Value::Array(items));
                }
            }
        }
        _ => {}
    }
    out
}

/// `Ack` for `protocol::ack::Ack<protocol::payloads::Tabs>`.
fn short_name(name: &'static str) -> &'static str {
    let path = name.split('<').next().unwrap_or(name);
    path.rsplit("::").next().unwrap_or(path)
}

/// The types a Rust source derives `Json` for: each `struct` or `enum` after a `derive` list
/// that names `Json` (plain, or inside `cfg_attr`).
fn derived_types(source: &str) -> Vec<&str> {
    let mut types = Vec::new();
    let mut pending = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[") && line.contains("derive(") {
            let list = &line[line.find("derive(").unwrap_or(0)..];
            if list
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|word| word == "Json")
            {
                pending = true;
            }
            continue;
        }
        let item = line.strip_prefix("pub ").unwrap_or(line);
        let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
        if let Some(rest) = item
            .strip_prefix("struct ")
            .or_else(|| item.strip_prefix("enum "))
        {
            if pending {
                let name = rest
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or(rest);
                types.push(name);
            }
            pending = false;
        }
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_types_are_found_in_source() {
        let source = r#"
            #[derive(Debug, Json)]
            pub struct A { x: i64 }
            #[derive(Debug)]
            pub struct NotDerived;
            #[derive(Clone, Json)]
            #[serde(rename_all = "camelCase")]
            enum B<T> { X(T) }
            #[derive(Debug, Clone)]
            #[cfg_attr(test, derive(Serialize, Deserialize))]
            #[derive(protocol::Json)]
            pub(crate) struct C {}
            #[derive(JsonSchema)]
            struct D;
        "#;
        assert_eq!(derived_types(source), ["A", "B", "C"]);
        assert_eq!(
            short_name("protocol::ack::Ack<protocol::payloads::Tabs>"),
            "Ack"
        );
    }
}
