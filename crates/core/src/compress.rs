//! Request-body compression shared by the HTTP destinations.
//!
//! Chosen for cost: egress (~$0.09/GB) costs far more than the CPU (~$0.04/vCPU-hour) a
//! higher level spends, so the defaults are the levels that minimise the sum on QoE JSON
//! (measured in `docs/performance.md`).

use flate2::{Compression as Level, write::GzEncoder};
use serde::Deserialize;
use std::io::Write;
use std::ops::RangeInclusive;

/// A destination's `compression` setting: the algorithm, without its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Gzip,
    /// Only where the API accepts `Content-Encoding: zstd` (Datadog's logs intake).
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// gzip levels accepted by `compression_level` (0 would store, not compress: use `none`).
pub const GZIP_LEVELS: RangeInclusive<i32> = 1..=9;
/// zstd levels accepted by `compression_level`. 20 to 22 ("ultra") are left out: they need
/// tens of MB of window per body in flight and gain nothing on 1 MB bodies.
pub const ZSTD_LEVELS: RangeInclusive<i32> = 1..=19;

/// gzip's default level. Of the levels within 5% of the cheapest in total (egress + CPU) on
/// the varied corpus of `docs/performance.md`, the one that spends the least CPU: level 6
/// sends 360 bytes per varied event against level 9's 348 and level 1's 734, for 15.6 µs
/// against 26.9 and 4.6 ($32.6, $31.6 and $66.1 per billion events). Level 9's 3% would cost
/// 70% more CPU, the headroom a router needs to catch up after an outage.
pub const GZIP_LEVEL: u32 = 6;
/// zstd's default level, by the same rule: level 9 is within 2% of the cheapest (level 12,
/// which costs 3.7x its CPU), and levels 1 and 3 send a third more (279 bytes and 20 µs per
/// varied event).
pub const ZSTD_LEVEL: i32 = 9;

/// How bodies are compressed: an algorithm and its level, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Default for Codec {
    fn default() -> Self {
        Codec::Gzip { level: GZIP_LEVEL }
    }
}

/// Why a `compression_level` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("{level} is not a {algorithm} level (it takes {min} to {max})")]
    OutOfRange {
        algorithm: &'static str,
        level: i32,
        min: i32,
        max: i32,
    },
    #[error("is set but compression is \"none\"")]
    Uncompressed,
}

impl Codec {
    /// The codec for `compression` at `level`, or its default level.
    pub fn new(compression: Compression, level: Option<i32>) -> Result<Codec, LevelError> {
        let check = |range: RangeInclusive<i32>, default: i32| {
            let level = level.unwrap_or(default);
            if range.contains(&level) {
                Ok(level)
            } else {
                Err(LevelError::OutOfRange {
                    algorithm: compression.name(),
                    level,
                    min: *range.start(),
                    max: *range.end(),
                })
            }
        };
        match compression {
            Compression::None if level.is_some() => Err(LevelError::Uncompressed),
            Compression::None => Ok(Codec::None),
            Compression::Gzip => Ok(Codec::Gzip {
                level: check(GZIP_LEVELS, GZIP_LEVEL as i32)?.unsigned_abs(),
            }),
            Compression::Zstd => Ok(Codec::Zstd {
                level: check(ZSTD_LEVELS, ZSTD_LEVEL)?,
            }),
        }
    }

    /// The request's `Content-Encoding`.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Codec::None => None,
            Codec::Gzip { .. } => Some("gzip"),
            Codec::Zstd { .. } => Some("zstd"),
        }
    }

    /// Compresses a whole `body` (benches and one-off bodies; encoders use [`BodyWriter`]).
    pub fn compress(self, body: &[u8]) -> Result<Vec<u8>, CompressError> {
        let mut w = BodyWriter::new(self, body.len());
        w.staged().extend_from_slice(body);
        w.finish().map(|(bytes, _)| bytes)
    }
}

/// A connector's `compression` and `compression_level`, checked against the algorithms its
/// API accepts (`accepts`, named for the message by `api`): the codec, or the key at fault
/// and why.
pub fn codec_for(
    compression: Compression,
    level: Option<i32>,
    api: &str,
    accepts: &[Compression],
) -> Result<Codec, (&'static str, String)> {
    if !accepts.contains(&compression) {
        let names: Vec<_> = accepts.iter().map(|c| format!("{:?}", c.name())).collect();
        return Err((
            "compression",
            format!(
                "{:?} is not accepted by {api} (it takes {})",
                compression.name(),
                names.join(", ")
            ),
        ));
    }
    Codec::new(compression, level).map_err(|e| ("compression_level", e.to_string()))
}

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
    encoder: Option<Encoder>,
    codec: Codec,
    uncompressed: usize,
    /// The first compressor failure. [`BodySink::commit`] cannot return it, and a body with a
    /// hole in it must never be sent: [`BodyWriter::finish`] does.
    failed: Option<std::io::Error>,
}

enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(bytes),
            Encoder::Zstd(e) => e.write_all(bytes),
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// A zstd encoder whose window and match tables fit the body expected. Without a size zstd
/// plans for a large input: at level 9 a 4 MiB window and tables of tens of MiB per body
/// being compressed, which showed as 20-40 MiB more peak RSS end to end than gzip. QoE JSON
/// repeats itself within kilobytes: on 4 MB of generated events at level 9, a 1 MiB window
/// with tables to match sent 25,284 bytes against the default's 25,475 (128 KiB: 28,281). So
/// the window is the body's size, at least 128 KiB and at most 1 MiB.
fn zstd_encoder(
    out: Vec<u8>,
    level: i32,
    estimate: usize,
) -> std::io::Result<zstd::stream::write::Encoder<'static, Vec<u8>>> {
    use zstd::stream::raw::CParameter;
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    let window_log = estimate
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .clamp(17, 20);
    encoder.window_log(window_log)?;
    // The level's own tables are sized for a large input whatever the window: bound them by
    // it too, as zstd itself does when it knows the input's size.
    encoder.set_parameter(CParameter::HashLog(window_log))?;
    encoder.set_parameter(CParameter::ChainLog(window_log))?;
    Ok(encoder)
}

/// The compressor failed, so the body is not whole. With a `Vec` to write into this is not
/// expected to happen; it is reported rather than sending an empty or truncated body.
#[derive(Debug, thiserror::Error)]
#[error("{codec} failed: {source}")]
pub struct CompressError {
    codec: &'static str,
    source: std::io::Error,
}

impl BodyWriter {
    /// `estimate`: the uncompressed size expected, for the buffers' first allocation.
    pub fn new(codec: Codec, estimate: usize) -> Self {
        let out = || Vec::with_capacity(estimate / 4 + 64);
        let (encoder, failed) = match codec {
            Codec::None => (None, None),
            Codec::Gzip { level } => (
                Some(Encoder::Gzip(GzEncoder::new(out(), Level::new(level)))),
                None,
            ),
            Codec::Zstd { level } => match zstd_encoder(out(), level, estimate) {
                Ok(e) => (Some(Encoder::Zstd(e)), None),
                Err(e) => (None, Some(e)),
            },
        };
        BodyWriter {
            staged: Vec::with_capacity(if codec == Codec::None {
                estimate
            } else {
                CHUNK + CHUNK / 4
            }),
            encoder,
            codec,
            uncompressed: 0,
            failed,
        }
    }

    /// Bytes written so far, before compression.
    pub fn uncompressed_len(&self) -> usize {
        self.uncompressed + self.staged.len()
    }

    /// The finished body and its `Content-Encoding`, or why it could not be finished.
    pub fn finish(mut self) -> Result<(Vec<u8>, Option<&'static str>), CompressError> {
        let codec = self.codec;
        let fail = |source| CompressError {
            codec: codec.content_encoding().unwrap_or("identity"),
            source,
        };
        if let Some(e) = self.failed.take() {
            return Err(fail(e));
        }
        match self.encoder.take() {
            None => Ok((self.staged, None)),
            Some(mut enc) => {
                enc.write_all(&self.staged).map_err(fail)?;
                Ok((enc.finish().map_err(fail)?, codec.content_encoding()))
            }
        }
    }
}

impl BodySink for BodyWriter {
    fn staged(&mut self) -> &mut Vec<u8> {
        &mut self.staged
    }

    fn commit(&mut self) {
        if let Some(enc) = &mut self.encoder
            && self.staged.len() >= CHUNK
        {
            if let Err(e) = enc.write_all(&self.staged)
                && self.failed.is_none()
            {
                self.failed = Some(e);
            }
            self.uncompressed += self.staged.len();
            self.staged.clear();
        }
    }
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

    fn unzstd(packed: &[u8]) -> Vec<u8> {
        zstd::stream::decode_all(packed).unwrap()
    }

    const GZIP: Codec = Codec::Gzip { level: GZIP_LEVEL };
    const ZSTD: Codec = Codec::Zstd { level: ZSTD_LEVEL };

    #[test]
    fn a_body_written_in_events_compresses_to_the_whole() {
        let event = br#"{"event":{"type":"heartbeat","timestamp":1712167312284}}"#;
        for (codec, decode) in [(GZIP, gunzip as fn(&[u8]) -> Vec<u8>), (ZSTD, unzstd)] {
            let mut body = BodyWriter::new(codec, 0);
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
            assert_eq!(encoding, codec.content_encoding());
            assert!(packed.len() < whole.len() / 10, "{codec:?}");
            assert_eq!(decode(&packed), whole, "{codec:?}");
        }

        let mut plain = BodyWriter::new(Codec::None, 0);
        plain.staged().extend_from_slice(event);
        plain.commit();
        assert_eq!(plain.finish().unwrap(), (event.to_vec(), None));
    }

    #[test]
    fn a_compressor_failure_fails_the_body_rather_than_sending_it_short() {
        // A Vec never refuses a write, so the failure a commit met is put in its place.
        for (codec, name) in [(GZIP, "gzip"), (ZSTD, "zstd")] {
            let mut body = BodyWriter::new(codec, 0);
            body.staged().extend_from_slice(b"{}");
            body.failed = Some(std::io::Error::other("stream corrupt"));
            let err = body.finish().unwrap_err();
            assert_eq!(err.to_string(), format!("{name} failed: stream corrupt"));
        }
    }

    #[test]
    fn every_level_of_every_algorithm_round_trips() {
        let body = br#"{"a":1,"customer":"acme","url":"https://cdn.example/v/1.m3u8"}"#.repeat(500);
        for level in GZIP_LEVELS {
            let codec = Codec::new(Compression::Gzip, Some(level)).unwrap();
            assert_eq!(gunzip(&codec.compress(&body).unwrap()), body);
        }
        for level in ZSTD_LEVELS {
            let codec = Codec::new(Compression::Zstd, Some(level)).unwrap();
            assert_eq!(unzstd(&codec.compress(&body).unwrap()), body);
        }
        assert_eq!(Codec::None.compress(&body).unwrap(), body);
    }

    #[test]
    fn levels_are_checked_per_algorithm() {
        assert_eq!(Codec::new(Compression::Gzip, None), Ok(GZIP));
        assert_eq!(Codec::new(Compression::Zstd, None), Ok(ZSTD));
        assert_eq!(Codec::new(Compression::None, None), Ok(Codec::None));
        assert_eq!(
            Codec::new(Compression::Gzip, Some(9)),
            Ok(Codec::Gzip { level: 9 })
        );
        assert_eq!(
            Codec::new(Compression::Zstd, Some(19)),
            Ok(Codec::Zstd { level: 19 })
        );
        let err = Codec::new(Compression::Gzip, Some(12)).unwrap_err();
        assert_eq!(err.to_string(), "12 is not a gzip level (it takes 1 to 9)");
        let err = Codec::new(Compression::Gzip, Some(0)).unwrap_err();
        assert_eq!(err.to_string(), "0 is not a gzip level (it takes 1 to 9)");
        let err = Codec::new(Compression::Zstd, Some(22)).unwrap_err();
        assert_eq!(err.to_string(), "22 is not a zstd level (it takes 1 to 19)");
        let err = Codec::new(Compression::None, Some(3)).unwrap_err();
        assert_eq!(err.to_string(), "is set but compression is \"none\"");
    }

    #[test]
    fn an_algorithm_the_api_does_not_take_is_refused_by_its_key() {
        let hec = [Compression::Gzip, Compression::None];
        assert_eq!(
            codec_for(Compression::Zstd, None, "Splunk HEC", &hec),
            Err((
                "compression",
                "\"zstd\" is not accepted by Splunk HEC (it takes \"gzip\", \"none\")".into()
            ))
        );
        assert_eq!(
            codec_for(Compression::Gzip, Some(10), "Splunk HEC", &hec),
            Err((
                "compression_level",
                "10 is not a gzip level (it takes 1 to 9)".into()
            ))
        );
        assert_eq!(
            codec_for(Compression::Gzip, Some(9), "Splunk HEC", &hec),
            Ok(Codec::Gzip { level: 9 })
        );
    }
}
