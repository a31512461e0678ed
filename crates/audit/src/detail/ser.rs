//! A serde serializer that writes the chain's canonical JSON directly (see [`super::Detail`]).
//!
//! Why not serde_json's serializer with a custom formatter: serde_json routes every struct field
//! name through its map-key serializer and the formatter's string calls, about two hundred
//! instructions a key; a decision's detail has some forty keys and is written on every
//! request. Here a field name is checked once against the previous one and copied; strings are
//! escaped with the chain's own escaping, in runs.
//!
//! The output is the canonical text whenever every object's keys come out in strictly
//! increasing byte order and no floating-point number appears; otherwise it is still valid JSON
//! and [`Output::canonical`] is false, so that the caller re-encodes it (the canonical number
//! format of floats is serde_json's, and a tree of values sorts keys).

use serde::ser::{self, Serialize};

use crate::chain::write_json_string;

/// What was written, and whether it is canonical.
pub(super) struct Output {
    pub bytes: Vec<u8>,
    pub canonical: bool,
}

/// Writing failed: only a `Serialize` implementation's own error, or a map key that is not a
/// string or a number.
#[derive(Debug)]
pub(super) struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Serialises `value`.
pub(super) fn write<T: Serialize + ?Sized>(value: &T) -> Result<Output, Error> {
    let mut w = Writer {
        out: Vec::with_capacity(1024),
        canonical: true,
    };
    value.serialize(&mut w)?;
    Ok(Output {
        bytes: w.out,
        canonical: w.canonical,
    })
}

struct Writer {
    out: Vec<u8>,
    canonical: bool,
}

impl Writer {
    fn write_int(&mut self, v: impl itoa::Integer) {
        let mut buf = itoa::Buffer::new();
        self.out.extend_from_slice(buf.format(v).as_bytes());
    }

    fn float(&mut self, v: f64) {
        // Written as serde_json writes it; the canonical form is left to the re-encoding.
        self.canonical = false;
        if v.is_finite() {
            let mut buf = ryu::Buffer::new();
            self.out.extend_from_slice(buf.format_finite(v).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    /// `{"variant":` for the externally tagged enum variants.
    fn open_variant(&mut self, variant: &str) {
        self.out.push(b'{');
        write_json_string(&mut self.out, variant);
        self.out.push(b':');
    }
}

/// Integers, written out: in values (`Writer`, as a JSON number) and keys (`KeyText`, as the
/// key's text).
macro_rules! integers {
    ($($name:ident($t:ty)),* $(,)?) => {$(
        fn $name(self, v: $t) -> Result<(), Error> {
            self.write_int(v);
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for &'a mut Writer {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Struct<'a>;
    type SerializeStructVariant = Struct<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    integers! {
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64),
        serialize_i128(i128), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_u128(u128),
    }

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.float(f64::from(v));
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.float(v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_json_string(&mut self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_json_string(&mut self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        // As serde_json: an array of numbers.
        self.out.push(b'[');
        for (i, b) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.write_int(*b);
        }
        self.out.push(b']');
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.open_variant(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Error> {
        self.out.push(b'[');
        Ok(Seq {
            w: self,
            first: true,
            variant: false,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a>, Error> {
        self.open_variant(variant);
        self.out.push(b'[');
        Ok(Seq {
            w: self,
            first: true,
            variant: true,
        })
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'a>, Error> {
        self.out.push(b'{');
        Ok(Map {
            w: self,
            last: None,
            key: Vec::new(),
        })
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Struct<'a>, Error> {
        self.out.push(b'{');
        Ok(Struct {
            w: self,
            last: None,
            variant: false,
        })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Struct<'a>, Error> {
        self.open_variant(variant);
        self.out.push(b'{');
        Ok(Struct {
            w: self,
            last: None,
            variant: true,
        })
    }
}

/// An array (or a tuple variant's array, inside its one-key object).
pub(super) struct Seq<'a> {
    w: &'a mut Writer,
    first: bool,
    variant: bool,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.w.out.push(b',');
        }
        self.first = false;
        value.serialize(&mut *self.w)
    }

    fn close(self) {
        self.w.out.push(b']');
        if self.variant {
            self.w.out.push(b'}');
        }
    }
}

/// serde's four array-like traits, all the same here.
macro_rules! seq_like {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }

            fn end(self) -> Result<(), Error> {
                self.close();
                Ok(())
            }
        }
    )*};
}

seq_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// An object from a struct: field names are static, so the order check compares them as they
/// are.
pub(super) struct Struct<'a> {
    w: &'a mut Writer,
    last: Option<&'static str>,
    variant: bool,
}

impl Struct<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        if let Some(last) = self.last {
            if last.as_bytes() >= key.as_bytes() {
                self.w.canonical = false;
            }
            self.w.out.push(b',');
        }
        self.last = Some(key);
        write_json_string(&mut self.w.out, key);
        self.w.out.push(b':');
        value.serialize(&mut *self.w)
    }

    fn close(self) {
        self.w.out.push(b'}');
        if self.variant {
            self.w.out.push(b'}');
        }
    }
}

/// serde's two struct-like traits, the same here.
macro_rules! struct_like {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Struct<'_> {
            type Ok = ();
            type Error = Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.field(key, value)
            }

            fn end(self) -> Result<(), Error> {
                self.close();
                Ok(())
            }
        }
    )*};
}

struct_like!(SerializeStruct, SerializeStructVariant);

/// An object from a map: keys are checked in the order they come, as text.
pub(super) struct Map<'a> {
    w: &'a mut Writer,
    /// The previous key's text.
    last: Option<Vec<u8>>,
    /// The key being written.
    key: Vec<u8>,
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key.clear();
        key.serialize(KeyText(&mut self.key))?;
        match &mut self.last {
            Some(last) => {
                if *last >= self.key {
                    self.w.canonical = false;
                }
                self.w.out.push(b',');
                std::mem::swap(last, &mut self.key);
            }
            None => self.last = Some(std::mem::take(&mut self.key)),
        }
        let text = self.last.as_deref().unwrap_or_default();
        // Keys are collected as UTF-8 text (strings, or numbers written out).
        write_json_string(&mut self.w.out, &String::from_utf8_lossy(text));
        self.w.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.w)
    }

    fn end(self) -> Result<(), Error> {
        self.w.out.push(b'}');
        Ok(())
    }
}

/// Collects a map key's text: a string as it is, a number written out (as serde_json quotes
/// number keys); anything else is not a JSON object key.
struct KeyText<'b>(&'b mut Vec<u8>);

fn not_a_key() -> Error {
    Error("a map key must be a string or a number".to_owned())
}

impl KeyText<'_> {
    fn write_int(self, v: impl itoa::Integer) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}

impl ser::Serializer for KeyText<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.0
            .extend_from_slice(v.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    integers! {
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64),
        serialize_i128(i128), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_u128(u128),
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_bool(self, _v: bool) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_f32(self, _v: f32) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_f64(self, _v: f64) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_none(self) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_unit(self) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(not_a_key())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_key())
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_key())
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_key())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_key())
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_a_key())
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(not_a_key())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_key())
    }
}
