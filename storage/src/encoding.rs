//! Persisted formats, shared by both backends.
//!
//! - **Data key**: the 8-byte big-endian [`ring::Token`] of the user key, then the user key. Byte
//!   order of data keys is therefore `(token, key)` order and a token range is a contiguous span.
//! - **Record value**: [`VALUE_FORMAT`] (one byte), `version.hlc` (u64 BE), `version.node`
//!   (u32 BE), a tag byte ([`TAG_TOMBSTONE`] or [`TAG_VALUE`]), then the value bytes (nothing for a
//!   tombstone).
//! - **Meta keys**: [`FORMAT_KEY`] holds the database format ([`DB_FORMAT`]); user metadata lives
//!   under [`USER_META_PREFIX`] followed by its name, so it can never clobber the marker.
//! - **Hint key** (the [`crate::hints::HintId`]): target node (u32 BE), storage time in ms
//!   (u64 BE), a per-process sequence number (u64 BE), then the user key. Byte order is
//!   `(target, time, sequence)` order, so one target's hints are one contiguous span, oldest
//!   first, and "older than" is a prefix of that span.
//! - **Hint value**: [`HINT_FORMAT`] (one byte), then the record value encoding above.

use crate::engine::ScanCursor;
use crate::error::StorageError;
use proto::{Record, Version};
use ring::{NodeId, Token, TokenRange};

/// On-disk format of the whole database, stored under [`FORMAT_KEY`] in the meta column family.
pub const DB_FORMAT: u8 = 1;
/// Format byte that starts every encoded record value.
pub const VALUE_FORMAT: u8 = 1;
/// Tag byte of a tombstone.
pub const TAG_TOMBSTONE: u8 = 0;
/// Tag byte of a value.
pub const TAG_VALUE: u8 = 1;
/// Length of a token prefix in a data key.
pub const TOKEN_LEN: usize = 8;
/// Length of an encoded record value before the value bytes.
pub const VALUE_HEADER_LEN: usize = 1 + 8 + 4 + 1;
/// Format byte that starts every encoded hint value.
pub const HINT_FORMAT: u8 = 1;
/// Length of a hint key before the user key: target, storage time, sequence.
pub const HINT_KEY_HEADER_LEN: usize = 4 + 8 + 8;
/// Meta key of the database format marker.
pub const FORMAT_KEY: &[u8] = b"format";
/// Prefix of the meta keys holding [`crate::Engine::put_meta`] values.
pub const USER_META_PREFIX: &[u8] = b"user/";

/// The data key of `key`: its token (big-endian) followed by the key.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    data_key_with_token(ring::token_of(key), key)
}

/// The data key of `key` whose token is already known.
pub fn data_key_with_token(token: Token, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOKEN_LEN + key.len());
    out.extend_from_slice(&token.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits a data key into its token and user key.
pub fn decode_data_key(raw: &[u8]) -> Result<(Token, &[u8]), StorageError> {
    match raw.split_first_chunk::<TOKEN_LEN>() {
        Some((token, key)) => Ok((Token::from_be_bytes(*token), key)),
        None => Err(StorageError::Corrupt {
            key: raw.to_vec(),
            reason: format!("data key of {} bytes is shorter than a token", raw.len()),
        }),
    }
}

/// Encodes a record value.
pub fn encode_record(record: &Record) -> Vec<u8> {
    let body = record.value.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(VALUE_HEADER_LEN + body.len());
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&record.version.hlc.to_be_bytes());
    out.extend_from_slice(&record.version.node.to_be_bytes());
    match &record.value {
        Some(_) => out.push(TAG_VALUE),
        None => out.push(TAG_TOMBSTONE),
    }
    out.extend_from_slice(body);
    out
}

/// Decodes a record value stored under user key `key` (named in the error if it is corrupt).
pub fn decode_record(key: &[u8], raw: &[u8]) -> Result<Record, StorageError> {
    let (version, body) = decode_record_header(key, raw)?;
    Ok(Record {
        version,
        value: body.map(<[u8]>::to_vec),
    })
}

/// Decodes the version of a record value and borrows its value bytes (`None` for a tombstone),
/// without copying: for callers that only need versions (purge, trees). Checks exactly what
/// [`decode_record`] checks.
pub fn decode_record_header<'a>(
    key: &[u8],
    raw: &'a [u8],
) -> Result<(Version, Option<&'a [u8]>), StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: key.to_vec(),
        reason,
    };
    let truncated = || corrupt(format!("truncated record value ({} bytes)", raw.len()));
    let Some((&format, rest)) = raw.split_first() else {
        return Err(corrupt("empty record value".into()));
    };
    if format != VALUE_FORMAT {
        return Err(corrupt(format!(
            "unknown record format {format} (supported: {VALUE_FORMAT})"
        )));
    }
    let (hlc, rest) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
    let (node, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
    let (&tag, body) = rest.split_first().ok_or_else(truncated)?;
    let version = Version {
        hlc: u64::from_be_bytes(*hlc),
        node: u32::from_be_bytes(*node),
    };
    match tag {
        TAG_VALUE => Ok((version, Some(body))),
        TAG_TOMBSTONE if body.is_empty() => Ok((version, None)),
        TAG_TOMBSTONE => Err(corrupt(format!(
            "tombstone with {} trailing bytes",
            body.len()
        ))),
        other => Err(corrupt(format!("unknown record tag {other}"))),
    }
}

/// The meta key under which user metadata `name` is stored.
pub fn user_meta_key(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(USER_META_PREFIX.len() + name.len());
    out.extend_from_slice(USER_META_PREFIX);
    out.extend_from_slice(name.as_bytes());
    out
}

/// The parts of a hint key (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintKey<'a> {
    /// The node the hint is for.
    pub target: NodeId,
    /// When the hint was stored, in milliseconds.
    pub stored_at_ms: u64,
    /// The per-process sequence number that makes the key unique.
    pub sequence: u64,
    /// The user key of the hinted record.
    pub key: &'a [u8],
}

impl HintKey<'_> {
    /// The encoded hint key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HINT_KEY_HEADER_LEN + self.key.len());
        out.extend_from_slice(&self.target.to_be_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(self.key);
        out
    }
}

/// Splits an encoded hint key into its parts.
pub fn decode_hint_key(raw: &[u8]) -> Result<HintKey<'_>, StorageError> {
    let short = || StorageError::Corrupt {
        key: raw.to_vec(),
        reason: format!(
            "hint key of {} bytes is shorter than its {HINT_KEY_HEADER_LEN}-byte header",
            raw.len()
        ),
    };
    let (target, rest) = raw.split_first_chunk::<4>().ok_or_else(short)?;
    let (stored_at_ms, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    let (sequence, key) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    Ok(HintKey {
        target: NodeId::from_be_bytes(*target),
        stored_at_ms: u64::from_be_bytes(*stored_at_ms),
        sequence: u64::from_be_bytes(*sequence),
        key,
    })
}

/// The first byte string of `target`'s hint span: every hint key of `target` starts with it.
pub fn hint_target_prefix(target: NodeId) -> [u8; 4] {
    target.to_be_bytes()
}

/// The exclusive end of `target`'s hints stored before `cutoff_ms`: every hint key of `target`
/// with `stored_at_ms < cutoff_ms` sorts below it, every other one at or above it.
pub fn hint_time_bound(target: NodeId, cutoff_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&target.to_be_bytes());
    out.extend_from_slice(&cutoff_ms.to_be_bytes());
    out
}

/// Encodes a hint value: [`HINT_FORMAT`], then the record encoding.
pub fn encode_hint_value(record: &Record) -> Vec<u8> {
    let encoded = encode_record(record);
    let mut out = Vec::with_capacity(1 + encoded.len());
    out.push(HINT_FORMAT);
    out.extend_from_slice(&encoded);
    out
}

/// Decodes a hint value stored under hint key `raw_key` (named in the error if it is corrupt).
pub fn decode_hint_value(raw_key: &[u8], raw: &[u8]) -> Result<Record, StorageError> {
    match raw.split_first() {
        Some((&HINT_FORMAT, record)) => decode_record(raw_key, record),
        Some((&other, _)) => Err(StorageError::Corrupt {
            key: raw_key.to_vec(),
            reason: format!("unknown hint format {other} (supported: {HINT_FORMAT})"),
        }),
        None => Err(StorageError::Corrupt {
            key: raw_key.to_vec(),
            reason: "empty hint value".into(),
        }),
    }
}

/// A contiguous span of data keys: from `lower` (inclusive) to `upper` (exclusive, `None` for the
/// end of the key space).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpan {
    /// First data key of the span (inclusive).
    pub lower: Vec<u8>,
    /// End of the span (exclusive); `None` means up to the last possible key.
    pub upper: Option<Vec<u8>>,
}

/// The data-key spans to read, in order, to scan `range` after `cursor` (see
/// [`crate::Engine::scan`] for the order). Empty when there is nothing left to read.
pub fn scan_spans(range: TokenRange, cursor: Option<&ScanCursor>) -> Vec<KeySpan> {
    // Inclusive token intervals in ring order starting after `range.start`.
    let mut pieces: Vec<(Token, Token)> = Vec::with_capacity(2);
    if range.start < range.end {
        pieces.push((range.start + 1, range.end));
    } else {
        if range.start < Token::MAX {
            pieces.push((range.start + 1, Token::MAX));
        }
        pieces.push((0, range.end));
    }
    let first = match cursor {
        None => 0,
        Some(c) => match pieces
            .iter()
            .position(|&(lo, hi)| lo <= c.token && c.token <= hi)
        {
            Some(i) => i,
            None => return Vec::new(),
        },
    };
    pieces[first..]
        .iter()
        .enumerate()
        .map(|(i, &(lo, hi))| {
            let lower = match cursor {
                // The immediate successor of the cursor's data key in byte order.
                Some(c) if i == 0 => {
                    let mut k = data_key_with_token(c.token, &c.key);
                    k.push(0);
                    k
                }
                _ => lo.to_be_bytes().to_vec(),
            };
            let upper = hi.checked_add(1).map(|t| t.to_be_bytes().to_vec());
            KeySpan { lower, upper }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let v = Version {
            hlc: 0x0102_0304_0506_0708,
            node: 0x0a0b_0c0d,
        };
        for record in [
            Record {
                version: v,
                value: Some(b"hello".to_vec()),
            },
            Record {
                version: v,
                value: Some(Vec::new()),
            },
            Record {
                version: v,
                value: None,
            },
        ] {
            let raw = encode_record(&record);
            assert_eq!(raw[0], VALUE_FORMAT);
            assert_eq!(decode_record(b"k", &raw).unwrap(), record);
        }
    }

    #[test]
    fn bad_values_are_corrupt() {
        let good = encode_record(&Record {
            version: Version::default(),
            value: Some(b"x".to_vec()),
        });
        let mut cases: Vec<Vec<u8>> = (0..VALUE_HEADER_LEN).map(|n| good[..n].to_vec()).collect();
        let mut newer = good.clone();
        newer[0] = VALUE_FORMAT + 1;
        cases.push(newer);
        let mut bad_tag = good.clone();
        bad_tag[VALUE_HEADER_LEN - 1] = 7;
        cases.push(bad_tag);
        let mut fat_tombstone = good.clone();
        fat_tombstone[VALUE_HEADER_LEN - 1] = TAG_TOMBSTONE;
        cases.push(fat_tombstone);
        for raw in cases {
            match decode_record(b"key", &raw) {
                Err(StorageError::Corrupt { key, .. }) => assert_eq!(key, b"key"),
                other => panic!("{raw:?} decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn data_keys_sort_by_token_then_key() {
        let k = data_key_with_token(0x0102, b"abc");
        assert_eq!(decode_data_key(&k).unwrap(), (0x0102, &b"abc"[..]));
        assert!(data_key_with_token(1, b"zzz") < data_key_with_token(2, b"a"));
        assert!(matches!(
            decode_data_key(b"short"),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn spans_of_plain_and_wrapping_ranges() {
        let be = |t: u64| t.to_be_bytes().to_vec();
        let spans = scan_spans(TokenRange { start: 10, end: 20 }, None);
        assert_eq!(
            spans,
            vec![KeySpan {
                lower: be(11),
                upper: Some(be(21))
            }]
        );
        let spans = scan_spans(TokenRange { start: 20, end: 10 }, None);
        assert_eq!(
            spans,
            vec![
                KeySpan {
                    lower: be(21),
                    upper: None
                },
                KeySpan {
                    lower: be(0),
                    upper: Some(be(11))
                }
            ]
        );
        let whole = scan_spans(
            TokenRange {
                start: u64::MAX,
                end: u64::MAX,
            },
            None,
        );
        assert_eq!(
            whole,
            vec![KeySpan {
                lower: be(0),
                upper: None
            }]
        );
        let cursor = ScanCursor {
            token: 5,
            key: b"k".to_vec(),
        };
        let spans = scan_spans(TokenRange { start: 20, end: 10 }, Some(&cursor));
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].lower, [&be(5)[..], b"k", &[0]].concat());
        let outside = ScanCursor {
            token: 15,
            key: b"k".to_vec(),
        };
        assert!(scan_spans(TokenRange { start: 20, end: 10 }, Some(&outside)).is_empty());
    }

    #[test]
    fn hint_keys_round_trip_and_sort_by_target_time_sequence() {
        let k = HintKey {
            target: 0x0102_0304,
            stored_at_ms: 0x1122_3344_5566_7788,
            sequence: 9,
            key: b"user",
        };
        let raw = k.encode();
        assert_eq!(raw.len(), HINT_KEY_HEADER_LEN + 4);
        assert_eq!(decode_hint_key(&raw).unwrap(), k);
        let empty_key = HintKey { key: b"", ..k };
        assert_eq!(decode_hint_key(&empty_key.encode()).unwrap(), empty_key);
        let later = HintKey {
            stored_at_ms: k.stored_at_ms + 1,
            sequence: 0,
            key: b"a",
            ..k
        };
        let next_seq = HintKey {
            sequence: 10,
            key: b"a",
            ..k
        };
        assert!(raw < next_seq.encode() && next_seq.encode() < later.encode());
        // The time bound splits a target's hints at the cutoff; the prefix starts them.
        let bound = hint_time_bound(k.target, k.stored_at_ms);
        assert!(raw >= bound && raw.starts_with(&hint_target_prefix(k.target)));
        assert!(
            HintKey {
                stored_at_ms: k.stored_at_ms - 1,
                ..k
            }
            .encode()
                < bound
        );
        assert!(hint_time_bound(k.target, u64::MAX) < hint_target_prefix(k.target + 1).to_vec());
        for n in 0..HINT_KEY_HEADER_LEN {
            assert!(matches!(
                decode_hint_key(&raw[..n]),
                Err(StorageError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn hint_values_round_trip_and_reject_garbage() {
        let record = Record {
            version: Version { hlc: 5, node: 6 },
            value: None,
        };
        let raw = encode_hint_value(&record);
        assert_eq!(raw[0], HINT_FORMAT);
        assert_eq!(&raw[1..], &encode_record(&record)[..]);
        assert_eq!(decode_hint_value(b"id", &raw).unwrap(), record);
        let mut newer = raw.clone();
        newer[0] = HINT_FORMAT + 1;
        for bad in [Vec::new(), newer, vec![HINT_FORMAT], raw[..5].to_vec()] {
            match decode_hint_value(b"id", &bad) {
                Err(StorageError::Corrupt { key, .. }) => assert_eq!(key, b"id"),
                other => panic!("{bad:?} decoded as {other:?}"),
            }
        }
    }
}
