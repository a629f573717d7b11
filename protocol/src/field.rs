//! Field rules that serde and the browser codec both follow, for `#[serde(with = "…")]`: each
//! module has serde's `serialize` and `deserialize` and the codec's `read_json` and
//! `write_json`, side by side, and `derive(Json)` calls the latter.

/// `null` reads as the default (`since: null` is `since: 0`); written as the value.
pub mod null_as_default {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::json::{FromJson, Reader, Result, ToJson};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    pub fn read_json<T: FromJson + Default>(r: &mut Reader<'_>) -> Result<T> {
        Ok(Option::<T>::read_json(r)?.unwrap_or_default())
    }

    pub fn write_json<T: ToJson>(value: &T, out: &mut String) {
        value.write_json(out);
    }
}

/// Any JSON value is accepted; one of another type than the field's reads as the default. For
/// input read field by field, where a wrong type must not spoil the rest (the handshake's
/// `auth`: a `sessionID` that is not a string is as good as absent).
pub mod lenient {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::json::{self, FromJson, Reader, Result, ToJson};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: DeserializeOwned + Default,
        D: Deserializer<'de>,
    {
        let value = serde_json::Value::deserialize(d)?;
        Ok(T::deserialize(value).unwrap_or_default())
    }

    pub fn read_json<T: FromJson + Default>(r: &mut Reader<'_>) -> Result<T> {
        Ok(json::from_str(r.raw()?).unwrap_or_default())
    }

    pub fn write_json<T: ToJson>(value: &T, out: &mut String) {
        value.write_json(out);
    }
}
