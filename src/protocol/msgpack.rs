//! MessagePack by hand, for the few messages whose serde encoding or decoding showed in a node's
//! profile ([`super::request`], `raft::wire`).
//!
//! Readers take a cursor (`&mut &[u8]`) and advance it past what they read; each returns `None`
//! for anything but the forms it names, and the caller then hands the whole value to serde.
//! Writers use the smallest form, as `rmp` (and so serde) does, so that what they write is byte
//! for byte what serde writes.
//!
//! Not here: anything that knows a message's shape.

use bytes::BufMut;
use rmp::Marker;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[inline]
pub fn marker(input: &mut &[u8]) -> Option<Marker> {
    let (&byte, rest) = input.split_first()?;
    *input = rest;
    Some(Marker::from_u8(byte))
}

#[inline]
pub fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (taken, rest) = input.split_at_checked(n)?;
    *input = rest;
    Some(taken)
}

/// A big-endian unsigned number of `N` bytes.
#[inline]
fn be<const N: usize>(input: &mut &[u8]) -> Option<u64> {
    let bytes: [u8; N] = take(input, N)?.try_into().ok()?;
    Some(bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b)))
}

/// A length, as a `usize`.
#[inline]
fn len_of(len: u64) -> Option<usize> {
    usize::try_from(len).ok()
}

/// An unsigned integer, in any of MessagePack's unsigned forms.
#[inline]
pub fn uint(input: &mut &[u8]) -> Option<u64> {
    match marker(input)? {
        Marker::FixPos(n) => Some(n.into()),
        Marker::U8 => be::<1>(input),
        Marker::U16 => be::<2>(input),
        Marker::U32 => be::<4>(input),
        Marker::U64 => be::<8>(input),
        _ => None,
    }
}

pub fn boolean(input: &mut &[u8]) -> Option<bool> {
    match marker(input)? {
        Marker::True => Some(true),
        Marker::False => Some(false),
        _ => None,
    }
}

/// `nil`, or what `read` reads.
pub fn optional<T>(input: &mut &[u8], read: impl FnOnce(&mut &[u8]) -> Option<T>) -> Option<Option<T>> {
    if input.first() == Some(&u8::from(Marker::Null)) {
        *input = &input[1..];
        return Some(None);
    }
    read(input).map(Some)
}

#[inline]
pub fn map_len(input: &mut &[u8]) -> Option<usize> {
    match marker(input)? {
        Marker::FixMap(n) => Some(n.into()),
        Marker::Map16 => len_of(be::<2>(input)?),
        Marker::Map32 => len_of(be::<4>(input)?),
        _ => None,
    }
}

#[inline]
pub fn array_len(input: &mut &[u8]) -> Option<usize> {
    match marker(input)? {
        Marker::FixArray(n) => Some(n.into()),
        Marker::Array16 => len_of(be::<2>(input)?),
        Marker::Array32 => len_of(be::<4>(input)?),
        _ => None,
    }
}

/// A `str`'s bytes (field and variant names).
#[inline]
pub fn string<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = match marker(input)? {
        Marker::FixStr(n) => n.into(),
        Marker::Str8 => be::<1>(input)?,
        Marker::Str16 => be::<2>(input)?,
        Marker::Str32 => be::<4>(input)?,
        _ => return None,
    };
    take(input, len_of(len)?)
}

/// A `bin`'s bytes.
#[inline]
pub fn bin<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = match marker(input)? {
        Marker::Bin8 => be::<1>(input)?,
        Marker::Bin16 => be::<2>(input)?,
        Marker::Bin32 => be::<4>(input)?,
        _ => return None,
    };
    take(input, len_of(len)?)
}

/// A byte string as clients send them: a `bin`, or a `str` (its bytes, UTF-8 or not).
pub fn bin_or_str<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = match marker(input)? {
        Marker::Bin8 | Marker::Str8 => be::<1>(input)?,
        Marker::Bin16 | Marker::Str16 => be::<2>(input)?,
        Marker::Bin32 | Marker::Str32 => be::<4>(input)?,
        Marker::FixStr(n) => n.into(),
        _ => return None,
    };
    take(input, len_of(len)?)
}

/// A signed integer, in any of MessagePack's integer forms, within `i64`.
#[inline]
pub fn sint(input: &mut &[u8]) -> Option<i64> {
    match marker(input)? {
        Marker::FixPos(n) => Some(n.into()),
        Marker::FixNeg(n) => Some(n.into()),
        Marker::U8 => be::<1>(input).map(|n| n as i64),
        Marker::U16 => be::<2>(input).map(|n| n as i64),
        Marker::U32 => be::<4>(input).map(|n| n as i64),
        Marker::U64 => i64::try_from(be::<8>(input)?).ok(),
        Marker::I8 => be::<1>(input).map(|n| i64::from(n as u8 as i8)),
        Marker::I16 => be::<2>(input).map(|n| i64::from(n as u16 as i16)),
        Marker::I32 => be::<4>(input).map(|n| i64::from(n as u32 as i32)),
        Marker::I64 => be::<8>(input).map(|n| n as i64),
        _ => None,
    }
}

/// A 64-bit float (the form serde writes an `f64` in).
#[inline]
pub fn float(input: &mut &[u8]) -> Option<f64> {
    match marker(input)? {
        Marker::F64 => be::<8>(input).map(f64::from_bits),
        _ => None,
    }
}

/// Decodes one value with serde from the front of `input`, and moves past it.
pub fn serde_value<T: DeserializeOwned>(input: &mut &[u8]) -> Option<T> {
    let mut decoder = rmp_serde::Deserializer::new(&mut *input);
    T::deserialize(&mut decoder).ok()
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    TooLong(#[from] TooLong),
    #[error(transparent)]
    Serde(#[from] rmp_serde::encode::Error),
}

/// Writes `value` as serde does: structs as arrays, or as maps keyed by field name if `named`.
/// A hand-written encoder hands it what it does not write itself, in place: MessagePack values
/// simply follow one another.
pub fn serde_in_place(value: &impl Serialize, out: &mut impl BufMut, named: bool) -> Result<(), EncodeError> {
    let mut writer = out.writer();
    if named {
        rmp_serde::encode::write_named(&mut writer, value)?;
    } else {
        rmp_serde::encode::write(&mut writer, value)?;
    }
    Ok(())
}

/// A string, array or map too long for MessagePack (over `u32::MAX`).
#[derive(Debug, thiserror::Error)]
#[error("{0} items or bytes do not fit MessagePack")]
pub struct TooLong(usize);

fn len_u32(len: usize) -> Result<u32, TooLong> {
    u32::try_from(len).map_err(|_| TooLong(len))
}

#[inline]
pub fn put_uint(out: &mut impl BufMut, n: u64) {
    if n < 128 {
        out.put_u8(n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.put_u8(Marker::U8.to_u8());
        out.put_u8(n);
    } else if let Ok(n) = u16::try_from(n) {
        out.put_u8(Marker::U16.to_u8());
        out.put_u16(n);
    } else if let Ok(n) = u32::try_from(n) {
        out.put_u8(Marker::U32.to_u8());
        out.put_u32(n);
    } else {
        out.put_u8(Marker::U64.to_u8());
        out.put_u64(n);
    }
}

/// A signed integer, in the smallest form (an unsigned one if not negative), as `rmp` does.
#[inline]
pub fn put_sint(out: &mut impl BufMut, n: i64) {
    if n >= 0 {
        put_uint(out, n as u64);
    } else if n >= -32 {
        out.put_i8(n as i8);
    } else if let Ok(n) = i8::try_from(n) {
        out.put_u8(Marker::I8.to_u8());
        out.put_i8(n);
    } else if let Ok(n) = i16::try_from(n) {
        out.put_u8(Marker::I16.to_u8());
        out.put_i16(n);
    } else if let Ok(n) = i32::try_from(n) {
        out.put_u8(Marker::I32.to_u8());
        out.put_i32(n);
    } else {
        out.put_u8(Marker::I64.to_u8());
        out.put_i64(n);
    }
}

#[inline]
pub fn put_f64(out: &mut impl BufMut, n: f64) {
    out.put_u8(Marker::F64.to_u8());
    out.put_f64(n);
}

#[inline]
pub fn put_bool(out: &mut impl BufMut, value: bool) {
    out.put_u8(if value { Marker::True } else { Marker::False }.to_u8());
}

#[inline]
pub fn put_nil(out: &mut impl BufMut) {
    out.put_u8(Marker::Null.to_u8());
}

/// A length in the form `fix` (up to `fix_max`), or with a 16- or 32-bit count.
#[inline]
fn put_len(out: &mut impl BufMut, len: usize, fix: (u8, usize), wide: [Marker; 2]) -> Result<(), TooLong> {
    let len = len_u32(len)?;
    let (fix_marker, fix_max) = fix;
    if len as usize <= fix_max {
        out.put_u8(fix_marker | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(wide[0].to_u8());
        out.put_u16(len);
    } else {
        out.put_u8(wide[1].to_u8());
        out.put_u32(len);
    }
    Ok(())
}

#[inline]
pub fn put_array_len(out: &mut impl BufMut, len: usize) -> Result<(), TooLong> {
    put_len(out, len, (0x90, 15), [Marker::Array16, Marker::Array32])
}

#[inline]
pub fn put_map_len(out: &mut impl BufMut, len: usize) -> Result<(), TooLong> {
    put_len(out, len, (0x80, 15), [Marker::Map16, Marker::Map32])
}

#[inline]
pub fn put_str(out: &mut impl BufMut, text: &str) -> Result<(), TooLong> {
    let len = len_u32(text.len())?;
    if len <= 31 {
        out.put_u8(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.put_u8(Marker::Str8.to_u8());
        out.put_u8(len);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(Marker::Str16.to_u8());
        out.put_u16(len);
    } else {
        out.put_u8(Marker::Str32.to_u8());
        out.put_u32(len);
    }
    out.put_slice(text.as_bytes());
    Ok(())
}

#[inline]
pub fn put_bin(out: &mut impl BufMut, bytes: &[u8]) -> Result<(), TooLong> {
    let len = len_u32(bytes.len())?;
    if let Ok(len) = u8::try_from(len) {
        out.put_u8(Marker::Bin8.to_u8());
        out.put_u8(len);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(Marker::Bin16.to_u8());
        out.put_u16(len);
    } else {
        out.put_u8(Marker::Bin32.to_u8());
        out.put_u32(len);
    }
    out.put_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length at the edges of each form, written as `rmp` writes it and read back.
    #[test]
    fn writers_match_rmp_and_readers_read_them_back() {
        for n in [0, 1, 127, 128, 255, 256, 65_535, 65_536, u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_uint(&mut ours, n);
            rmp::encode::write_uint(&mut theirs, n).unwrap();
            assert_eq!(ours, theirs, "uint {n}");
            assert_eq!(uint(&mut &ours[..]), Some(n));
        }
        for len in [0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536] {
            let bytes = vec![b'x'; len];
            let text = std::str::from_utf8(&bytes).unwrap();
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_str(&mut ours, text).unwrap();
            rmp::encode::write_str(&mut theirs, text).unwrap();
            assert_eq!(ours, theirs, "str of {len}");
            assert_eq!(string(&mut &ours[..]), Some(&bytes[..]));
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_bin(&mut ours, &bytes).unwrap();
            rmp::encode::write_bin(&mut theirs, &bytes).unwrap();
            assert_eq!(ours, theirs, "bin of {len}");
            assert_eq!(bin(&mut &ours[..]), Some(&bytes[..]));
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_array_len(&mut ours, len).unwrap();
            rmp::encode::write_array_len(&mut theirs, len as u32).unwrap();
            assert_eq!(ours, theirs, "array of {len}");
            assert_eq!(array_len(&mut &ours[..]), Some(len));
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_map_len(&mut ours, len).unwrap();
            rmp::encode::write_map_len(&mut theirs, len as u32).unwrap();
            assert_eq!(ours, theirs, "map of {len}");
            assert_eq!(map_len(&mut &ours[..]), Some(len));
        }
        for n in
            [0, 127, 128, -1, -32, -33, -128, -129, -32_768, -32_769, i32::MIN as i64 - 1, i64::MIN, i64::MAX]
        {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_sint(&mut ours, n);
            rmp::encode::write_sint(&mut theirs, n).unwrap();
            assert_eq!(ours, theirs, "sint {n}");
            assert_eq!(sint(&mut &ours[..]), Some(n));
        }
        for n in [0.0, -1.5, f64::MAX] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_f64(&mut ours, n);
            rmp::encode::write_f64(&mut theirs, n).unwrap();
            assert_eq!(ours, theirs);
            assert_eq!(float(&mut &ours[..]), Some(n));
        }
        let mut out = Vec::new();
        put_bool(&mut out, true);
        put_bool(&mut out, false);
        put_nil(&mut out);
        let mut input = &out[..];
        assert_eq!((boolean(&mut input), boolean(&mut input)), (Some(true), Some(false)));
        assert_eq!(optional(&mut input, uint), Some(None));
        assert!(input.is_empty());
    }

    #[test]
    fn readers_refuse_other_forms_and_short_input() {
        assert_eq!(uint(&mut &[0xd0, 0x01][..]), None, "a signed integer");
        assert_eq!(bin(&mut &[0xa1, b'x'][..]), None, "a str is not a bin");
        assert_eq!(bin(&mut &[0xc4, 0x05, b'x'][..]), None, "shorter than it says");
        assert_eq!(string(&mut &[0xda, 0x00][..]), None, "a cut length");
        assert_eq!(array_len(&mut &[][..]), None);
    }
}
