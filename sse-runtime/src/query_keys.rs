//! Which query parameters a `Query<T>` reads: what a polled route's topic is made of.
//!
//! A poller is shared by every subscriber of its topic, so the topic must be made of exactly
//! what the poll function reads: a parameter it never reads must not start a poller of its own
//! (`?junk=1`, `?junk=2`, ... would multiply the backend's load at a client's whim). `T`'s own
//! `Deserialize` says what it reads: a derived struct deserializes the value of every field it
//! knows and skips the others with `IgnoredAny`. [`read_keys`] runs it over the query's
//! parameters with a deserializer that notes, for each parameter, whether its value was read
//! or skipped. Anything it cannot tell (a type that is not a map or struct, a value it cannot
//! read as `axum::extract::Query` would) gives `None`: the whole query stays in the topic.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::forward_to_deserialize_any;

/// The names of the parameters of `query` that `T` reads, or `None` when that cannot be told.
pub(crate) fn read_keys<T: DeserializeOwned>(query: &str) -> Option<BTreeSet<String>> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let read = RefCell::new(BTreeSet::new());
    T::deserialize(Pairs {
        pairs: &pairs,
        read: &read,
    })
    .ok()?;
    Some(read.into_inner())
}

/// The whole query, as a map of its parameters.
struct Pairs<'a> {
    pairs: &'a [(String, String)],
    read: &'a RefCell<BTreeSet<String>>,
}

impl<'de> de::Deserializer<'de> for Pairs<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Entries {
            pairs: self.pairs.iter(),
            value: None,
            read: self.read,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("not a map of parameters"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct tuple tuple_struct map enum identifier ignored_any
    }
}

/// The parameters one by one; the current one's name and value between key and value.
struct Entries<'a, I> {
    pairs: I,
    value: Option<&'a (String, String)>,
    read: &'a RefCell<BTreeSet<String>>,
}

impl<'a, 'de, I: Iterator<Item = &'a (String, String)>> MapAccess<'de> for Entries<'a, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(pair) = self.pairs.next() else {
            return Ok(None);
        };
        self.value = Some(pair);
        let key: StrDeserializer<'_, Error> = pair.0.as_str().into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (name, value) = self.value.take().expect("a key before its value");
        seed.deserialize(Value {
            name,
            value,
            read: self.read,
        })
    }
}

/// One parameter's value, read as `axum::extract::Query` (serde_urlencoded) reads it: numbers
/// and booleans parsed from the text, an option present, anything else the text. Noting that
/// it was read, unless it is skipped (`IgnoredAny`: a name `T` does not know).
struct Value<'a> {
    name: &'a str,
    value: &'a str,
    read: &'a RefCell<BTreeSet<String>>,
}

impl Value<'_> {
    fn noted(&self) {
        self.read.borrow_mut().insert(self.name.to_owned());
    }
}

macro_rules! parsed {
    ($($method:ident => $visit:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.noted();
            match self.value.parse() {
                Ok(value) => visitor.$visit(value),
                Err(_) => Err(de::Error::custom("not a value of this type")),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Value<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.noted();
        visitor.visit_str(self.value)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.noted();
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.noted();
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.noted();
        let text: StrDeserializer<'_, Error> = self.value.into_deserializer();
        de::Deserializer::deserialize_enum(text, name, variants, visitor)
    }

    parsed! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8,
        deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32,
        deserialize_i64 => visit_i64,
        deserialize_i128 => visit_i128,
        deserialize_u8 => visit_u8,
        deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64,
        deserialize_u128 => visit_u128,
        deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
        deserialize_char => visit_char,
    }

    forward_to_deserialize_any! {
        str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Process {
        pid: u32,
        #[serde(default)]
        verbose: Option<bool>,
        mode: Option<Mode>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Full,
    }

    fn keys(names: &[&str]) -> Option<BTreeSet<String>> {
        Some(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn a_struct_reads_its_fields_and_skips_the_rest() {
        assert_eq!(read_keys::<Process>("pid=7&junk=1"), keys(&["pid"]));
        assert_eq!(
            read_keys::<Process>("junk=2&verbose=true&pid=7&mode=full&x"),
            keys(&["mode", "pid", "verbose"])
        );
    }

    #[test]
    fn a_map_reads_everything() {
        assert_eq!(
            read_keys::<HashMap<String, String>>("a=1&b=2"),
            keys(&["a", "b"])
        );
    }

    #[test]
    fn what_cannot_be_read_tells_nothing() {
        assert_eq!(read_keys::<Process>("pid=seven"), None, "not a number");
        assert_eq!(read_keys::<Process>("junk=1"), None, "pid missing");
        assert_eq!(read_keys::<Vec<String>>("a=1"), None, "not a map");
    }
}
