//! A block of log records: how the SQLite store keeps them (`log_blocks` + `log_block_data`).
//!
//! A commit stores its records as blocks of up to [`MAX_RECORDS`] records instead of a row per
//! record. The records of block `id` have the ids `id`, `id + 1`, … `id + records - 1`. A block
//! keeps, besides its compressed records:
//! - the summary a query filters on before decoding anything: the range of record times and the
//!   newest receive time, the lowest severity number, the facilities present (a bit each), how
//!   many records did not parse;
//! - a Bloom filter of its hosts and apps ([`Keys`]): a query for one host skips the blocks that
//!   surely do not have it;
//! - its distinct words ([`super::block_index::Words`]): the block's row in the full-text index.
//!
//! The records are encoded one after the other (format [`FORMAT`]: a flags byte, the receive
//! time as a difference to the previous record's, the sender's time as a difference to the
//! receive time, facility and severity, then the strings, each with its length) and the whole
//! is compressed with Snappy. Nothing of a record is lost: decoding gives back the records
//! exactly as they were stored.

use super::block_index::Words;
use crate::record::LogRecord;

/// Most records in one block: a query decodes a whole block to read one record.
pub const MAX_RECORDS: usize = 4096;
/// The encoding of the records (first byte of the uncompressed data).
const FORMAT: u8 = 1;

const HAS_TIMESTAMP: u8 = 1;
const HAS_FACILITY: u8 = 2;
const HAS_SEVERITY: u8 = 4;
const HAS_PARSE_ERROR: u8 = 8;

/// Bits of the Bloom filter per record (one host and one app key each): about 2 % false
/// positives when every host and app of a block differs, none in practice.
const KEY_BITS_PER_RECORD: usize = 16;
/// Bits set per key.
const KEY_HASHES: u64 = 4;

/// A block ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Records in it.
    pub records: usize,
    /// The records, encoded and compressed.
    pub data: Vec<u8>,
    /// Its distinct words, the document of its full-text index row.
    pub words: String,
    /// Bloom filter of hosts and apps ([`Keys`]).
    pub keys: Vec<u8>,
    /// Lowest and highest record time (the sender's timestamp, else the receive time), ns.
    pub min_ts_ns: i64,
    /// See `min_ts_ns`.
    pub max_ts_ns: i64,
    /// Newest receive time, ns: retention by age removes a block once this is past.
    pub max_received_ns: i64,
    /// Lowest severity number (the worst severity), if any record has one.
    pub min_severity: Option<u8>,
    /// Bit `f` set: a record of facility `f`.
    pub facilities: u32,
    /// Records that did not parse.
    pub parse_errors: usize,
}

impl Block {
    /// Encodes `records` (at most [`MAX_RECORDS`]; `words` is scratch space, cleared first).
    ///
    /// # Errors
    /// Snappy refuses the data (only past ~4 GiB, which a block never reaches).
    pub fn encode(records: &[&LogRecord], words: &mut Words) -> Result<Self, snap::Error> {
        debug_assert!(records.len() <= MAX_RECORDS);
        words.clear();
        let mut raw = Vec::with_capacity(1 + records.iter().map(|r| encoded_len(r)).sum::<usize>());
        raw.push(FORMAT);
        let mut keys = Keys::with_records(records.len());
        let mut block = Self {
            records: records.len(),
            data: Vec::new(),
            words: String::new(),
            keys: Vec::new(),
            min_ts_ns: i64::MAX,
            max_ts_ns: i64::MIN,
            max_received_ns: i64::MIN,
            min_severity: None,
            facilities: 0,
            parse_errors: 0,
        };
        let mut prev_received = 0_i64;
        for &r in records {
            let ts = r.timestamp_ns.unwrap_or(r.received_ns);
            block.min_ts_ns = block.min_ts_ns.min(ts);
            block.max_ts_ns = block.max_ts_ns.max(ts);
            block.max_received_ns = block.max_received_ns.max(r.received_ns);
            if let Some(s) = r.severity {
                block.min_severity = Some(block.min_severity.map_or(s, |m| m.min(s)));
            }
            if let Some(f) = r.facility {
                // A number past 31 (not a syslog facility) sets every bit: the block is then
                // read for any facility, never skipped wrongly.
                block.facilities |= 1_u32.checked_shl(u32::from(f)).unwrap_or(u32::MAX);
            }
            block.parse_errors += usize::from(r.parse_error.is_some());
            keys.insert(b'h', &r.host);
            keys.insert(b'a', &r.app);
            words.add(&r.message);

            let flag = |present: bool, bit: u8| if present { bit } else { 0 };
            let flags = flag(r.timestamp_ns.is_some(), HAS_TIMESTAMP)
                | flag(r.facility.is_some(), HAS_FACILITY)
                | flag(r.severity.is_some(), HAS_SEVERITY)
                | flag(r.parse_error.is_some(), HAS_PARSE_ERROR);
            raw.push(flags);
            put_signed(&mut raw, r.received_ns.wrapping_sub(prev_received));
            prev_received = r.received_ns;
            if let Some(t) = r.timestamp_ns {
                put_signed(&mut raw, t.wrapping_sub(r.received_ns));
            }
            if let Some(f) = r.facility {
                raw.push(f);
            }
            if let Some(s) = r.severity {
                raw.push(s);
            }
            for s in [
                &r.host,
                &r.app,
                &r.procid,
                &r.msgid,
                &r.message,
                &r.structured_data,
                &r.format,
                &r.input,
                &r.peer,
            ] {
                put_str(&mut raw, s);
            }
            if let Some(e) = &r.parse_error {
                put_str(&mut raw, e);
            }
        }
        block.data = snap::raw::Encoder::new().compress_vec(&raw)?;
        block.words = words.document();
        block.keys = keys.0;
        Ok(block)
    }
}

/// Encodes `records` (any number) into blocks of at most [`MAX_RECORDS`], in order.
///
/// # Errors
/// As [`Block::encode`].
pub fn encode_all(records: &[&LogRecord], words: &mut Words) -> Result<Vec<Block>, snap::Error> {
    records
        .chunks(MAX_RECORDS)
        .map(|c| Block::encode(c, words))
        .collect()
}

fn encoded_len(r: &LogRecord) -> usize {
    32 + r.host.len()
        + r.app.len()
        + r.procid.len()
        + r.msgid.len()
        + r.message.len()
        + r.structured_data.len()
        + r.format.len()
        + r.input.len()
        + r.peer.len()
        + r.parse_error.as_ref().map_or(0, String::len)
}

fn put_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_unsigned(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Why a stored block could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Snappy refused the data.
    #[error("log block {block}: the compressed data is corrupt: {source}")]
    Compression {
        /// Block id.
        block: i64,
        /// Snappy's error.
        source: snap::Error,
    },
    /// The data is not of a known format or ends early.
    #[error("log block {block}: {what}")]
    Format {
        /// Block id.
        block: i64,
        /// What is wrong.
        what: String,
    },
}

/// Decodes the `records` records of block `block` from `data`.
///
/// # Errors
/// The data is corrupt, of an unknown format, or holds another number of records.
pub fn decode(block: i64, records: usize, data: &[u8]) -> Result<Vec<LogRecord>, DecodeError> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(data)
        .map_err(|source| DecodeError::Compression { block, source })?;
    let bad = |what: String| DecodeError::Format { block, what };
    let mut r = Reader { buf: &raw, at: 0 };
    match r.byte() {
        Some(FORMAT) => {}
        Some(v) => return Err(bad(format!("unknown format {v}"))),
        None => return Err(bad("empty".into())),
    }
    let mut out = Vec::with_capacity(records);
    let mut prev_received = 0_i64;
    while r.at < raw.len() {
        let n = out.len();
        let cut = || bad(format!("record {n} is cut short"));
        let flags = r.byte().ok_or_else(cut)?;
        let received_ns = prev_received.wrapping_add(r.signed().ok_or_else(cut)?);
        prev_received = received_ns;
        let timestamp_ns = if flags & HAS_TIMESTAMP != 0 {
            Some(received_ns.wrapping_add(r.signed().ok_or_else(cut)?))
        } else {
            None
        };
        let facility = if flags & HAS_FACILITY != 0 {
            Some(r.byte().ok_or_else(cut)?)
        } else {
            None
        };
        let severity = if flags & HAS_SEVERITY != 0 {
            Some(r.byte().ok_or_else(cut)?)
        } else {
            None
        };
        let mut text = || -> Result<String, DecodeError> {
            let s = r.bytes().ok_or_else(cut)?;
            String::from_utf8(s.to_vec()).map_err(|_| bad(format!("record {n}: text is not UTF-8")))
        };
        let host = text()?;
        let app = text()?;
        let procid = text()?;
        let msgid = text()?;
        let message = text()?;
        let structured_data = text()?;
        let format = text()?;
        let input = text()?;
        let peer = text()?;
        let parse_error = if flags & HAS_PARSE_ERROR != 0 {
            Some(text()?)
        } else {
            None
        };
        out.push(LogRecord {
            received_ns,
            timestamp_ns,
            host,
            app,
            procid,
            msgid,
            facility,
            severity,
            message,
            structured_data,
            format,
            parse_error,
            input,
            peer,
        });
    }
    if out.len() != records {
        return Err(bad(format!(
            "holds {} records, its row says {records}",
            out.len()
        )));
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn unsigned(&mut self) -> Option<u64> {
        let mut v = 0_u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn signed(&mut self) -> Option<i64> {
        let v = self.unsigned()?;
        Some(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.unsigned()?).ok()?;
        let end = self.at.checked_add(len)?;
        let s = self.buf.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
}

/// A Bloom filter of a block's hosts (`h`) and apps (`a`): [`Keys::may_hold`] is false only
/// for a key the block surely does not hold. Its size, a power of two of bytes, follows from
/// the records of the block; the hashes are fixed (FNV-1a), so stored filters stay readable.
#[derive(Debug, Clone)]
pub struct Keys(Vec<u8>);

impl Keys {
    fn with_records(records: usize) -> Self {
        let bytes = (records * KEY_BITS_PER_RECORD / 8)
            .max(8)
            .next_power_of_two();
        Self(vec![0; bytes])
    }

    fn bits(filter_len: usize, kind: u8, value: &str) -> impl Iterator<Item = usize> {
        let h1 = fnv1a(kind, value.as_bytes());
        let h2 = h1.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mask = (filter_len as u64 * 8).wrapping_sub(1);
        (0..KEY_HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) & mask) as usize)
    }

    fn insert(&mut self, kind: u8, value: &str) {
        for bit in Self::bits(self.0.len(), kind, value) {
            self.0[bit / 8] |= 1 << (bit % 8);
        }
    }

    /// Whether the stored filter `filter` may hold `value` as a host (`kind` `b'h'`) or app
    /// (`b'a'`). A filter of another size than a power of two (not written by this code)
    /// may hold anything.
    pub fn may_hold(filter: &[u8], kind: u8, value: &str) -> bool {
        if !filter.len().is_power_of_two() {
            return true;
        }
        Self::bits(filter.len(), kind, value).all(|bit| filter[bit / 8] & (1 << (bit % 8)) != 0)
    }
}

fn fnv1a(kind: u8, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for &b in std::iter::once(&kind).chain(bytes) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> LogRecord {
        LogRecord {
            received_ns: 1_700_000_000_000_000_000 + i as i64 * 1_000,
            timestamp_ns: (!i.is_multiple_of(3)).then(|| 1_700_000_000_000_000_000 - i as i64 * 7),
            host: format!("dev{:03}.site{}", i % 200, i % 7),
            app: ["sshd", "kernel", "cron"][i % 3].to_owned(),
            procid: (1000 + i).to_string(),
            msgid: format!("ID{}", i % 17),
            facility: (!i.is_multiple_of(5)).then_some((i % 24) as u8),
            severity: (!i.is_multiple_of(4)).then_some((i % 8) as u8),
            message: format!("Überlast on link {i}: größe 日本語 x_y-z {}", i * 31),
            structured_data: if i.is_multiple_of(2) {
                format!("[bench@32473 seq=\"{i}\"]")
            } else {
                String::new()
            },
            format: "rfc5424".to_owned(),
            parse_error: i
                .is_multiple_of(9)
                .then(|| format!("bad header at byte {i}")),
            input: "tcp".to_owned(),
            peer: format!("10.0.0.{}:514", i % 250),
        }
    }

    #[test]
    fn records_come_back_exactly_as_stored() {
        let records: Vec<_> = (0..500).map(record).collect();
        let b = Block::encode(&records.iter().collect::<Vec<_>>(), &mut Words::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.records, 500);
        assert_eq!(decode(7, 500, &b.data).unwrap_or_default(), records);
        // Extremes of every number survive.
        let odd = LogRecord {
            received_ns: i64::MIN,
            timestamp_ns: Some(i64::MAX),
            facility: Some(23),
            severity: Some(0),
            ..LogRecord::default()
        };
        let b = Block::encode(&[&odd], &mut Words::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decode(1, 1, &b.data).unwrap_or_default(), vec![odd]);
    }

    #[test]
    fn the_summary_covers_every_record() {
        let records: Vec<_> = (0..100).map(record).collect();
        let b = Block::encode(&records.iter().collect::<Vec<_>>(), &mut Words::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let ts = |r: &LogRecord| r.timestamp_ns.unwrap_or(r.received_ns);
        assert_eq!(b.min_ts_ns, records.iter().map(ts).min().unwrap_or(0));
        assert_eq!(b.max_ts_ns, records.iter().map(ts).max().unwrap_or(0));
        assert_eq!(
            b.max_received_ns,
            records.iter().map(|r| r.received_ns).max().unwrap_or(0)
        );
        assert_eq!(b.min_severity, Some(1));
        let want = records
            .iter()
            .filter_map(|r| r.facility)
            .fold(0_u32, |m, f| m | 1 << f);
        assert_eq!(b.facilities, want);
        let odd = LogRecord {
            facility: Some(40),
            ..LogRecord::default()
        };
        let b2 = Block::encode(&[&odd], &mut Words::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b2.facilities, u32::MAX);
        assert_eq!(b.parse_errors, 12);
        for r in &records {
            assert!(Keys::may_hold(&b.keys, b'h', &r.host));
            assert!(Keys::may_hold(&b.keys, b'a', &r.app));
            assert!(b.words.split(' ').any(|w| w == "größe"));
        }
    }

    #[test]
    fn the_key_filter_rejects_what_is_not_there() {
        let records: Vec<_> = (0..1000).map(record).collect();
        let b = Block::encode(&records.iter().collect::<Vec<_>>(), &mut Words::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let absent = (0..1000)
            .filter(|i| !Keys::may_hold(&b.keys, b'h', &format!("other{i}.example")))
            .count();
        // 1,400 distinct hosts and apps in 1,000 records: a few false positives at most.
        assert!(absent >= 950, "{absent}");
        // A filter this code did not write (not a power of two) excludes nothing.
        assert!(Keys::may_hold(&[0, 0, 0], b'h', "x"));
    }

    #[test]
    fn corrupt_blocks_are_errors_that_name_the_block() {
        let records: Vec<_> = (0..10).map(record).collect();
        let b = Block::encode(&records.iter().collect::<Vec<_>>(), &mut Words::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let err = |r: Result<Vec<LogRecord>, DecodeError>| r.err().map(|e| e.to_string());
        assert_eq!(
            err(decode(5, 11, &b.data)),
            Some("log block 5: holds 10 records, its row says 11".into())
        );
        assert!(
            err(decode(5, 10, b"not snappy"))
                .is_some_and(|e| e.starts_with("log block 5: the compressed data is corrupt"))
        );
        let raw = snap::raw::Encoder::new()
            .compress_vec(&[9, 1, 2])
            .unwrap_or_default();
        assert_eq!(
            err(decode(5, 1, &raw)),
            Some("log block 5: unknown format 9".into())
        );
        let raw = snap::raw::Encoder::new()
            .compress_vec(&[FORMAT, 0, 4])
            .unwrap_or_default();
        assert_eq!(
            err(decode(6, 1, &raw)),
            Some("log block 6: record 0 is cut short".into())
        );
    }
}
