//! Request-body compression shared by the HTTP destinations.

use flate2::{Compression as Level, write::GzEncoder};
use serde::Deserialize;
use std::io::Write;

/// How a destination's request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    /// gzip at a fast level: on QoE JSON, level 1 gets most of the ratio of level 6 at a
    /// fraction of the CPU, and CPU is what a router pays for.
    #[default]
    Gzip,
}

/// gzip level used by default; see [`Compression::Gzip`].
pub const GZIP_LEVEL: u32 = 1;

/// Where an encoder writes a request body, one event at a time.
pub trait BodySink {
    /// The uncommitted bytes: the event being written (an encoder may truncate back to where
    /// that event began, e.g. to leave out an event it rejects).
    fn staged(&mut self) -> &mut Vec<u8>;
    /// Everything staged so far is final.
    fn commit(&mut self);
}

/// A plain body, kept whole (tests, and uncompressed bodies).
impl BodySink for Vec<u8> {
    fn staged(&mut self) -> &mut Vec<u8> {
        self
    }
    fn commit(&mut self) {}
}

/// Bytes staged before they are handed to the compressor: big enough for deflate to work
/// well, small enough to stay in cache.
const CHUNK: usize = 64 * 1024;

/// A request body compressed while it is encoded, so that a batch never exists whole
/// uncompressed: at ~1,000 events of 5 KB per request and several requests in flight per
/// destination, that copy was most of the router's memory.
pub struct BodyWriter {
    staged: Vec<u8>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    uncompressed: usize,
    /// The first compressor failure. [`BodySink::commit`] cannot return it, and a body with a
    /// hole in it must never be sent: [`BodyWriter::finish`] does.
    failed: Option<std::io::Error>,
}

/// The compressor failed, so the body is not whole. With a `Vec` to write into this is not
/// expected to happen; it is reported rather than sending an empty or truncated body.
#[derive(Debug, thiserror::Error)]
#[error("gzip failed: {0}")]
pub struct CompressError(#[from] std::io::Error);

impl BodyWriter {
    /// `estimate`: the uncompressed size expected, for the buffers' first allocation.
    pub fn new(compression: Compression, estimate: usize) -> Self {
        match compression {
            Compression::None => BodyWriter {
                staged: Vec::with_capacity(estimate),
                gzip: None,
                uncompressed: 0,
                failed: None,
            },
            Compression::Gzip => BodyWriter {
                staged: Vec::with_capacity(CHUNK + CHUNK / 4),
                gzip: Some(GzEncoder::new(
                    Vec::with_capacity(estimate / 4 + 64),
                    Level::new(GZIP_LEVEL),
                )),
                uncompressed: 0,
                failed: None,
            },
        }
    }

    /// Bytes written so far, before compression.
    pub fn uncompressed_len(&self) -> usize {
        self.uncompressed + self.staged.len()
    }

    /// The finished body and its `Content-Encoding`, or why it could not be finished.
    pub fn finish(mut self) -> Result<(Vec<u8>, Option<&'static str>), CompressError> {
        if let Some(e) = self.failed.take() {
            return Err(e.into());
        }
        match self.gzip.take() {
            None => Ok((self.staged, None)),
            Some(mut gz) => {
                gz.write_all(&self.staged)?;
                Ok((gz.finish()?, Some("gzip")))
            }
        }
    }
}

impl BodySink for BodyWriter {
    fn staged(&mut self) -> &mut Vec<u8> {
        &mut self.staged
    }

    fn commit(&mut self) {
        if let Some(gz) = &mut self.gzip
            && self.staged.len() >= CHUNK
        {
            if let Err(e) = gz.write_all(&self.staged)
                && self.failed.is_none()
            {
                self.failed = Some(e);
            }
            self.uncompressed += self.staged.len();
            self.staged.clear();
        }
    }
}

/// Compresses `body` with gzip.
pub fn gzip(body: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        Level::new(GZIP_LEVEL),
    );
    enc.write_all(body)?;
    Ok(enc.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn gunzip(packed: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(packed).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_body_written_in_events_compresses_to_the_whole() {
        let event = br#"{"event":{"type":"heartbeat","timestamp":1712167312284}}"#;
        let mut body = BodyWriter::new(Compression::Gzip, 0);
        let mut whole = Vec::new();
        for i in 0..5000 {
            let out = body.staged();
            let start = out.len();
            out.extend_from_slice(event);
            if i % 7 == 0 {
                // A rejected event is truncated away before it is committed.
                out.truncate(start);
            } else {
                whole.extend_from_slice(event);
            }
            body.commit();
        }
        assert_eq!(body.uncompressed_len(), whole.len());
        let (packed, encoding) = body.finish().unwrap();
        assert_eq!(encoding, Some("gzip"));
        assert!(packed.len() < whole.len() / 10);
        assert_eq!(gunzip(&packed), whole);

        let mut plain = BodyWriter::new(Compression::None, 0);
        plain.staged().extend_from_slice(event);
        plain.commit();
        assert_eq!(plain.finish().unwrap(), (event.to_vec(), None));
    }

    #[test]
    fn a_compressor_failure_fails_the_body_rather_than_sending_it_short() {
        // A Vec never refuses a write, so the failure a commit met is put in its place.
        let mut body = BodyWriter::new(Compression::Gzip, 0);
        body.staged().extend_from_slice(b"{}");
        body.failed = Some(std::io::Error::other("deflate stream corrupt"));
        let err = body.finish().unwrap_err();
        assert_eq!(err.to_string(), "gzip failed: deflate stream corrupt");
    }

    #[test]
    fn gzip_round_trips() {
        let body = br#"{"a":1}{"a":2}"#.repeat(100);
        let packed = gzip(&body).unwrap();
        assert!(packed.len() < body.len());
        let mut out = Vec::new();
        GzDecoder::new(&packed[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, body);
    }
}
