//! Framing and encoding. A frame is a 4-byte big-endian length, then the body: one byte of wire
//! version ([`WIRE_VERSION`]) followed by the postcard encoding of a message. Lengths above
//! [`MAX_FRAME_BYTES`] are refused before anything is allocated.

use crate::limits::MAX_FRAME_BYTES;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The wire format version this build speaks. Bumped on any incompatible message change.
pub const WIRE_VERSION: u8 = 5;

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The announced frame length exceeds the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// An empty frame (not even a version byte).
    #[error("empty frame")]
    Empty,
    /// The frame carries a wire version this build does not speak.
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    Version(u8),
    /// The body is not a valid message.
    #[error("undecodable message: {0}")]
    Decode(#[from] postcard::Error),
    /// The stream failed or ended inside a frame.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends one framed message to `out`. Messages are built by this crate's callers from bounded
/// inputs; an oversized one is an error here too, so nothing too large for a peer is ever sent.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, WIRE_VERSION]);
    let mut out_vec = std::mem::take(out);
    out_vec = postcard::to_extend(msg, out_vec)?;
    *out = out_vec;
    let len = out.len() - start - 4;
    if len > MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(CodecError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes a frame body (version byte + message).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (&version, msg) = body.split_first().ok_or(CodecError::Empty)?;
    if version != WIRE_VERSION {
        return Err(CodecError::Version(version));
    }
    Ok(postcard::from_bytes(msg)?)
}

/// Reads one frame body into `buf` (reused between calls). Returns `Ok(false)` on a clean end of
/// stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<bool, CodecError> {
    let mut len_bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len_bytes[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(CodecError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Request, RequestFrame};
    use crate::Consistency;

    fn frame(key: Vec<u8>, value: Vec<u8>) -> RequestFrame {
        RequestFrame {
            id: 42,
            timeout_ms: 1000,
            body: Request::Put {
                key,
                value,
                consistency: Consistency::Quorum,
                opts: crate::message::WriteOpts {
                    op: Some(u128::MAX - 7),
                    retry: true,
                    after: Some(crate::Version { hlc: 99, node: 3 }),
                    receipt: true,
                },
            },
        }
    }

    #[tokio::test]
    async fn round_trip_through_a_stream() {
        let mut wire = Vec::new();
        let a = frame(b"k".to_vec(), b"v".to_vec());
        let b = RequestFrame {
            id: 7,
            timeout_ms: 5,
            body: Request::Topology,
        };
        encode_into(&a, &mut wire).expect("encode");
        encode_into(&b, &mut wire).expect("encode");
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert!(read_frame(&mut r, &mut buf).await.expect("read"));
        assert_eq!(decode_body::<RequestFrame>(&buf).expect("decode"), a);
        assert!(read_frame(&mut r, &mut buf).await.expect("read"));
        assert_eq!(decode_body::<RequestFrame>(&buf).expect("decode"), b);
        assert!(!read_frame(&mut r, &mut buf).await.expect("clean end"));
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        let wire = (u32::MAX).to_be_bytes();
        let mut r = &wire[..];
        let mut buf = Vec::new();
        let err = read_frame(&mut r, &mut buf).await.expect_err("too large");
        assert!(matches!(err, CodecError::TooLarge { .. }));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn oversized_message_is_not_encoded() {
        let mut out = vec![1, 2, 3];
        let big = vec![0u8; MAX_FRAME_BYTES];
        let err = encode_into(&frame(b"k".to_vec(), big), &mut out).expect_err("too large");
        assert!(matches!(err, CodecError::TooLarge { .. }));
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn unknown_version_and_garbage_are_errors() {
        let mut wire = Vec::new();
        encode_into(&frame(b"k".to_vec(), b"v".to_vec()), &mut wire).expect("encode");
        let mut body = wire[4..].to_vec();
        body[0] = 99;
        assert!(matches!(
            decode_body::<RequestFrame>(&body),
            Err(CodecError::Version(99))
        ));
        assert!(decode_body::<RequestFrame>(&[WIRE_VERSION, 0xff, 0xff, 0xff]).is_err());
        assert!(matches!(
            decode_body::<RequestFrame>(&[]),
            Err(CodecError::Empty)
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_body::<RequestFrame>(&bytes);
            let _ = decode_body::<crate::message::ResponseFrame>(&bytes);
        }
    }
}
