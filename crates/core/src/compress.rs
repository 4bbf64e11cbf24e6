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
}

impl BodyWriter {
    /// `estimate`: the uncompressed size expected, for the buffers' first allocation.
    pub fn new(compression: Compression, estimate: usize) -> Self {
        match compression {
            Compression::None => BodyWriter {
                staged: Vec::with_capacity(estimate),
                gzip: None,
                uncompressed: 0,
            },
            Compression::Gzip => BodyWriter {
                staged: Vec::with_capacity(CHUNK + CHUNK / 4),
                gzip: Some(GzEncoder::new(
                    Vec::with_capacity(estimate / 4 + 64),
                    Level::new(GZIP_LEVEL),
                )),
                uncompressed: 0,
            },
        }
    }

    /// Bytes written so far, before compression.
    pub fn uncompressed_len(&self) -> usize {
        self.uncompressed + self.staged.len()
    }

    /// The finished body and its `Content-Encoding`.
    pub fn finish(mut self) -> (Vec<u8>, Option<&'static str>) {
        match self.gzip.take() {
            None => (self.staged, None),
            Some(mut gz) => {
                // Writing into a Vec never returns an I/O error.
                let _ = gz.write_all(&self.staged);
                (gz.finish().unwrap_or_default(), Some("gzip"))
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
            let _ = gz.write_all(&self.staged);
            self.uncompressed += self.staged.len();
            self.staged.clear();
        }
    }
}

/// Compresses `body` with gzip. Writing into a `Vec` cannot fail, so neither can this.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        Level::new(GZIP_LEVEL),
    );
    // A Vec writer never returns an I/O error.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
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
        let (packed, encoding) = body.finish();
        assert_eq!(encoding, Some("gzip"));
        assert!(packed.len() < whole.len() / 10);
        assert_eq!(gunzip(&packed), whole);

        let mut plain = BodyWriter::new(Compression::None, 0);
        plain.staged().extend_from_slice(event);
        plain.commit();
        assert_eq!(plain.finish(), (event.to_vec(), None));
    }

    #[test]
    fn gzip_round_trips() {
        let body = br#"{"a":1}{"a":2}"#.repeat(100);
        let packed = gzip(&body);
        assert!(packed.len() < body.len());
        let mut out = Vec::new();
        GzDecoder::new(&packed[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, body);
    }
}
