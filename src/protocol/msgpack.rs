//! MessagePack by hand, for the few messages whose serde encoding or decoding showed in a node's
//! profile ([`super::request`], [`crate::raft::wire`]).
//!
//! Readers take a cursor (`&mut &[u8]`) and advance it past what they read; each returns `None`
//! for anything but the forms it names, and the caller then hands the whole value to serde.
//! Writers use the smallest form, as `rmp` (and so serde) does, so that what they write is byte
//! for byte what serde writes.
//!
//! Not here: anything that knows a message's shape.

use bytes::BufMut;
use rmp::Marker;

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
