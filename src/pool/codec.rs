//! How the pool encodes what it sends: items and results with postcard, through
//! an output that appends small writes byte by byte, and the byte payloads of its
//! messages as one byte string.
//!
//! Both are about cost, not format: the bytes on the wire are postcard's own.
//!
//! - [`encode`]: postcard writes each integer as a varint of 1 to 10 bytes with
//!   one `extend_from_slice`, which its `Vec` output turns into a call of
//!   `memcpy` per item; [`Output`] copies writes this short byte by byte
//!   (measured on 1,000,000 `i64` items in chunks of 4,000: 2.9 ms instead of
//!   5.1 ms), through one `extend` of a known length (see `Output`).
//! - [`as_bytes`]: serde sees a `Vec<u8>` field as a sequence, which postcard
//!   reads and writes one element at a time (a visitor call per byte: a task's
//!   16 KiB of items and its results crossed that way twice each). As a byte
//!   string it is one length and one copy; postcard writes a byte string and a
//!   sequence of `u8` the same way (a varint length, then the bytes).

use serde::Serialize;

/// Writes at most this long are pushed byte by byte (a varint is at most 10).
const SHORT: usize = 16;

/// A postcard output into a `Vec<u8>` (see the module).
struct Output(Vec<u8>);

impl postcard::ser_flavors::Flavor for Output {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= SHORT {
            // Through an iterator of known length (not the slice's own copy,
            // which is a `memcpy` call): one capacity check, then a loop that
            // keeps the length in a register until its end, where a `push` per
            // byte stores and reloads it each time (measured on 1,000,000 `i64`
            // in chunks of 36,000: items 4.0 -> 3.0 ms, S7's results 6.2 -> 5.1 ms).
            #[allow(clippy::map_clone)]
            self.0.extend(data.iter().map(|&b| b));
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// `value` in postcard, as `postcard::to_stdvec` gives it (same bytes), faster.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    postcard::serialize_with_flavor(value, Output(Vec::new()))
}

/// Room for the longest length prefix of a postcard sequence (a varint `u64`).
pub(crate) const PREFIX: usize = 10;

/// Items encoded one after another into one buffer, counted: what both sequence
/// writers below share. One serializer for all the items (not one per item: a
/// sequence of many small items would pay its set-up each time).
struct Items {
    ser: postcard::Serializer<Output>,
    count: usize,
}

impl Items {
    /// No items yet; they go after what `buf` holds.
    fn after(buf: Vec<u8>) -> Items {
        Items {
            ser: postcard::Serializer {
                output: Output(buf),
            },
            count: 0,
        }
    }

    /// Appends `item`.
    #[inline]
    fn push<T: Serialize>(&mut self, item: &T) -> postcard::Result<()> {
        item.serialize(&mut self.ser)?;
        self.count += 1;
        Ok(())
    }

    /// The buffer.
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.ser.output.0
    }

    /// The buffer's length.
    fn len(&self) -> usize {
        self.ser.output.0.len()
    }

    /// The buffer, given back.
    fn into_buf(self) -> Vec<u8> {
        self.ser.output.0
    }
}

/// A postcard `Vec<T>` written one item at a time, for items that come from an
/// iterator (see `Pool::submit`): the items go after [`PREFIX`] bytes of room,
/// and [`SeqWriter::finish`] writes the length into the end of that room. The
/// encoding starts at the returned offset: the bytes from there are postcard's
/// own for the `Vec<T>` of the items pushed.
pub(crate) struct SeqWriter {
    items: Items,
}

impl SeqWriter {
    /// An empty sequence, with room for `capacity` bytes of items.
    pub(crate) fn new(capacity: usize) -> SeqWriter {
        let mut buf = Vec::with_capacity(PREFIX + capacity);
        buf.resize(PREFIX, 0);
        SeqWriter {
            items: Items::after(buf),
        }
    }

    /// Appends `item`.
    #[inline]
    pub(crate) fn push<T: Serialize>(&mut self, item: &T) -> postcard::Result<()> {
        self.items.push(item)
    }

    /// Items pushed.
    pub(crate) fn count(&self) -> usize {
        self.items.count
    }

    /// Bytes of items pushed.
    pub(crate) fn item_bytes(&self) -> usize {
        self.items.len() - PREFIX
    }

    /// Takes the last item pushed out, as a new sequence of that one item (the
    /// item that made this one too big starts the next). Needs two items or more.
    pub(crate) fn split_last(&mut self, at: usize, capacity: usize) -> SeqWriter {
        debug_assert!(self.items.count >= 2 && at >= PREFIX);
        let buf = self.items.buf();
        let mut next = SeqWriter::new(capacity.max(buf.len() - at));
        next.items.buf().extend_from_slice(&buf[at..]);
        next.items.count = 1;
        buf.truncate(at);
        self.items.count -= 1;
        next
    }

    /// The bytes and where the sequence starts in them.
    pub(crate) fn finish(self) -> (Vec<u8>, usize) {
        let len = encode(&(self.items.count as u64)).expect("a u64 always encodes");
        let from = PREFIX - len.len();
        let mut buf = self.items.into_buf();
        buf[from..PREFIX].copy_from_slice(&len);
        (buf, from)
    }

    /// The length of the buffer so far (where the next item will start).
    pub(crate) fn end(&self) -> usize {
        self.items.len()
    }
}

/// A postcard `Vec<T>` of a length known in advance (a worker's results, one per
/// item of its chunk), written one item at a time after its length: the bytes
/// come out with no room to cut off before them (a [`SeqWriter`]'s room for the
/// prefix cost a move of all the results).
pub(crate) struct ExactSeq {
    items: Items,
    /// The length written first, and the bytes it took.
    len: usize,
    prefix: usize,
}

impl ExactSeq {
    /// A sequence that should get `len` items, with room for `capacity` bytes.
    pub(crate) fn new(len: usize, capacity: usize) -> ExactSeq {
        let head = encode(&(len as u64)).expect("a u64 always encodes");
        let mut buf = Vec::with_capacity(head.len() + capacity);
        buf.extend_from_slice(&head);
        ExactSeq {
            items: Items::after(buf),
            len,
            prefix: head.len(),
        }
    }

    /// Appends `item`.
    #[inline]
    pub(crate) fn push<T: Serialize>(&mut self, item: &T) -> postcard::Result<()> {
        self.items.push(item)
    }

    /// The bytes: postcard's `Vec<T>` of the items pushed (if they were not `len`,
    /// the prefix is written again).
    pub(crate) fn finish(self) -> Vec<u8> {
        let count = self.items.count;
        let buf = self.items.into_buf();
        if count == self.len {
            return buf;
        }
        let mut fixed = encode(&(count as u64)).expect("a u64 always encodes");
        fixed.extend_from_slice(&buf[self.prefix..]);
        fixed
    }
}

/// Serde `with` module for a byte payload (`Vec<u8>`, or `&[u8]` when only
/// serialized): one byte string instead of a sequence of `u8` (see the module).
pub(crate) mod as_bytes {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub(crate) fn serialize<T: AsRef<[u8]>, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v.as_ref())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // A format that writes byte strings as sequences.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        n: u32,
        payload: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Fast {
        n: u32,
        #[serde(with = "super::as_bytes")]
        payload: Vec<u8>,
    }

    /// A sequence written item by item is postcard's own `Vec<T>`, for lengths
    /// whose prefix takes one, two and three bytes, and after a split.
    #[test]
    fn a_sequence_written_item_by_item_is_postcards_vec() {
        for n in [0usize, 1, 127, 128, 16_383, 16_384, 20_000] {
            let items: Vec<i64> = (0..n as i64).map(|x| x * 7 - 3).collect();
            let mut w = super::SeqWriter::new(16);
            for x in &items {
                w.push(x).unwrap();
            }
            assert_eq!(w.count(), n);
            let (bytes, from) = w.finish();
            assert_eq!(
                bytes[from..],
                postcard::to_stdvec(&items).unwrap()[..],
                "{n}"
            );
        }
        let mut w = super::SeqWriter::new(0);
        w.push(&1u32).unwrap();
        let at = w.end();
        w.push(&300u32).unwrap();
        let next = w.split_last(at, 0);
        let (a, fa) = w.finish();
        let (b, fb) = next.finish();
        assert_eq!(a[fa..], postcard::to_stdvec(&vec![1u32]).unwrap()[..]);
        assert_eq!(b[fb..], postcard::to_stdvec(&vec![300u32]).unwrap()[..]);
    }

    /// A sequence of known length is postcard's own `Vec`, also when it gets
    /// fewer or more items than announced.
    #[test]
    fn an_exact_sequence_is_postcards_vec_whatever_it_gets() {
        for (announced, n) in [(0usize, 0usize), (5, 5), (200, 200), (200, 100), (3, 300)] {
            let items: Vec<i64> = (0..n as i64).map(|x| x * x - 7).collect();
            let mut w = super::ExactSeq::new(announced, 8);
            for x in &items {
                w.push(x).unwrap();
            }
            assert_eq!(
                w.finish(),
                postcard::to_stdvec(&items).unwrap(),
                "{announced} {n}"
            );
        }
    }

    /// Same bytes as postcard's own encoder and its sequence of `u8`, so both
    /// ends may use either.
    #[test]
    fn the_encodings_are_postcards_own() {
        let items: Vec<i64> = (-300..300).map(|x| x * 1_000_003).collect();
        assert_eq!(
            super::encode(&items).unwrap(),
            postcard::to_stdvec(&items).unwrap()
        );
        let payload: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        let plain = Plain {
            n: 7,
            payload: payload.clone(),
        };
        let fast = Fast { n: 7, payload };
        let bytes = postcard::to_stdvec(&fast).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&plain).unwrap());
        assert_eq!(postcard::from_bytes::<Fast>(&bytes).unwrap(), fast);
        assert_eq!(postcard::from_bytes::<Plain>(&bytes).unwrap(), plain);
    }
}
