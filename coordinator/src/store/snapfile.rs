//! The snapshot file: one self-describing file per snapshot, written and read
//! as a stream, so that neither building, sending nor installing a snapshot
//! holds more than one record in memory.
//!
//! Layout: `PANOSNAP` · version `u32` · meta length `u32` · bincode
//! ([`SnapshotMeta`]) · body. The body is the records and the trailer; in
//! version 2 (what this build writes) it is one zstd stream, in version 1
//! (still read) it is plain. A record is tag `1u8`, key length `u32`, value
//! length `u32`, key, value; the trailer is tag `0u8`, the record count
//! `u64` and the CRC-32 of every (uncompressed) byte before the CRC. All
//! integers are little-endian. A file that ends early, has a bad CRC or a
//! count that does not match is refused whole: a torn or corrupt snapshot is
//! never installed. The header stays uncompressed so that [`read_meta`]
//! reads a few bytes.
use std::io::{self, BufReader, BufWriter, Read, Write};

use crate::raft::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"PANOSNAP";
/// The version written: a zstd-compressed body.
const VERSION: u32 = 2;
/// The version of a plain body, still read (snapshots of earlier builds).
const VERSION_PLAIN: u32 = 1;
/// The body's zstd level: results compress ~3.5×, so a snapshot costs a
/// data directory and a follower's transfer that much less, for ~10 ms of
/// CPU per 4 MB (see `STORE_ZSTD_LEVEL` for why the level stays low).
const ZSTD_LEVEL: i32 = 3;
/// Refuse absurd lengths (a corrupt file) instead of allocating them.
const MAX_META: u32 = 16 << 20;
const MAX_KEY: u32 = 1 << 16;
const MAX_VALUE: u32 = 256 << 20;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot file: {}", msg.into()))
}

/// Writes a snapshot file record by record.
pub struct Writer<W: Write> {
    out: zstd::stream::write::Encoder<'static, BufWriter<W>>,
    crc: crc32fast::Hasher,
    count: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, meta: &SnapshotMeta) -> io::Result<Self> {
        let mut head = BufWriter::with_capacity(1 << 20, out);
        let mut crc = crc32fast::Hasher::new();
        let m = bincode::serialize(meta).map_err(|e| bad(e.to_string()))?;
        for part in [&MAGIC[..], &VERSION.to_le_bytes(), &(m.len() as u32).to_le_bytes(), &m] {
            crc.update(part);
            head.write_all(part)?;
        }
        let out = zstd::stream::write::Encoder::new(head, ZSTD_LEVEL)?;
        Ok(Writer { out, crc, count: 0 })
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.out.write_all(b)
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.len() > MAX_KEY as usize || value.len() > MAX_VALUE as usize {
            return Err(bad(format!("a record of {} + {} bytes is over the limit", key.len(), value.len())));
        }
        self.put(&[1])?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(value)?;
        self.count += 1;
        Ok(())
    }

    /// Write the trailer; returns the inner writer (flushed) and the record count.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.put(&[0])?;
        let count = self.count;
        self.put(&count.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        let head = self.out.finish()?;
        let inner = head.into_inner().map_err(|e| e.into_error())?;
        Ok((inner, count))
    }
}

/// A file's body, as read: plain (version 1) or through zstd (version 2).
enum Body<R: Read> {
    Plain(BufReader<R>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Plain(r) => r.read(buf),
            Body::Zstd(r) => r.read(buf),
        }
    }
}

/// Reads a snapshot file: the meta first, then the records in order. The
/// CRC is checked when the trailer is read, so a caller must read to the end
/// ([`Reader::next_record`] returning `None`) before trusting what it read.
pub struct Reader<R: Read> {
    inp: Body<R>,
    crc: crc32fast::Hasher,
    count: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(inp: R) -> io::Result<(Self, SnapshotMeta)> {
        let mut head = BufReader::with_capacity(1 << 20, inp);
        let mut crc = crc32fast::Hasher::new();
        let mut get = |b: &mut [u8]| -> io::Result<()> {
            read_exact(&mut head, b)?;
            crc.update(b);
            Ok(())
        };
        let mut magic = [0u8; 8];
        get(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a Panoptes snapshot (bad magic)"));
        }
        let mut b4 = [0u8; 4];
        get(&mut b4)?;
        let version = u32::from_le_bytes(b4);
        if version != VERSION && version != VERSION_PLAIN {
            return Err(bad(format!("version {version}, this build reads versions {VERSION_PLAIN} and {VERSION}")));
        }
        get(&mut b4)?;
        let n = u32::from_le_bytes(b4);
        if n > MAX_META {
            return Err(bad(format!("meta of {n} bytes")));
        }
        let mut m = vec![0; n as usize];
        get(&mut m)?;
        let meta = bincode::deserialize(&m).map_err(|e| bad(format!("meta: {e}")))?;
        let inp = if version == VERSION_PLAIN { Body::Plain(head) } else { Body::Zstd(zstd::stream::read::Decoder::with_buffer(head)?.single_frame()) };
        Ok((Reader { inp, crc, count: 0, done: false }, meta))
    }

    fn get(&mut self, b: &mut [u8]) -> io::Result<()> {
        read_exact(&mut self.inp, b)?;
        self.crc.update(b);
        Ok(())
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.get(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The next (key, value), or `None` at a verified end.
    pub fn next_record(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.get(&mut tag)?;
        match tag[0] {
            1 => {
                let (kl, vl) = (self.u32()?, self.u32()?);
                if kl > MAX_KEY || vl > MAX_VALUE {
                    return Err(bad(format!("a record of {kl} + {vl} bytes")));
                }
                let mut k = vec![0; kl as usize];
                self.get(&mut k)?;
                let mut v = vec![0; vl as usize];
                self.get(&mut v)?;
                self.count += 1;
                Ok(Some((k, v)))
            }
            0 => {
                let mut c = [0u8; 8];
                self.get(&mut c)?;
                let expect = self.crc.clone().finalize();
                let mut crc = [0u8; 4];
                read_exact(&mut self.inp, &mut crc)?;
                if u32::from_le_bytes(crc) != expect {
                    return Err(bad("checksum mismatch (corrupt)"));
                }
                if u64::from_le_bytes(c) != self.count {
                    return Err(bad(format!("{} records read, the trailer says {}", self.count, u64::from_le_bytes(c))));
                }
                self.done = true;
                Ok(None)
            }
            t => Err(bad(format!("unknown record tag {t}"))),
        }
    }
}

/// `read_exact` whose error says that the file is torn, whether the plain
/// reader or zstd noticed (zstd reports a stream cut short as "incomplete
/// frame" or as other errors, depending on where it was cut).
fn read_exact(r: &mut impl Read, b: &mut [u8]) -> io::Result<()> {
    r.read_exact(b).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => bad("ends early (torn or truncated)"),
        io::ErrorKind::InvalidData | io::ErrorKind::Other => bad(format!("body does not decompress (torn or corrupt): {e}")),
        _ => e,
    })
}

/// Only the meta of a snapshot file (its header).
pub fn read_meta(inp: impl Read) -> io::Result<SnapshotMeta> {
    Reader::new(inp).map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn meta() -> SnapshotMeta {
        SnapshotMeta { last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 42)), last_membership: Default::default(), snapshot_id: "s-42".into() }
    }

    fn file(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &meta()).unwrap();
        for (k, v) in records {
            w.record(k, v).unwrap();
        }
        w.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> io::Result<(SnapshotMeta, Vec<(Vec<u8>, Vec<u8>)>)> {
        let (mut r, m) = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(kv) = r.next_record()? {
            out.push(kv);
        }
        Ok((m, out))
    }

    #[test]
    fn round_trip() {
        let recs: [(&[u8], &[u8]); 3] = [(b"a", b""), (b"j/1", b"job"), (b"r/\x00\x01", &[7u8; 1000])];
        let bytes = file(&recs);
        let (m, got) = read_all(&bytes).unwrap();
        assert_eq!(m, meta());
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].1, vec![7u8; 1000]);
        assert_eq!(read_meta(&bytes[..]).unwrap(), meta());
        assert!(read_all(&file(&[])).unwrap().1.is_empty());
    }

    /// A version-1 file (plain body), as earlier builds wrote it.
    fn plain_v1(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let m = bincode::serialize(&meta()).unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(m.len() as u32).to_le_bytes());
        b.extend_from_slice(&m);
        for (k, v) in records {
            b.push(1);
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(k);
            b.extend_from_slice(v);
        }
        b.push(0);
        b.extend_from_slice(&(records.len() as u64).to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_snapshot_of_an_earlier_build_still_reads() {
        let recs: [(&[u8], &[u8]); 2] = [(b"j/1", b"job"), (b"r/1", b"{\"x\":1}")];
        let bytes = plain_v1(&recs);
        let (m, got) = read_all(&bytes).unwrap();
        assert_eq!(m, meta());
        assert_eq!(got, recs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<Vec<_>>());
        let mut b = bytes.clone();
        let last = b.len() - 6;
        b[last] ^= 1;
        assert!(read_all(&b).is_err(), "a flipped byte in a version-1 file was accepted");
    }

    #[test]
    fn the_body_is_compressed() {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..2000u64)
            .map(|i| (i.to_be_bytes().to_vec(), format!("{{\"palette\":[[{},{},{},0.25],[12,40,200,0.5]]}}", i % 256, (i * 7) % 256, 3).into_bytes()))
            .collect();
        let raw: usize = rows.iter().map(|(k, v)| 9 + k.len() + v.len()).sum();
        let recs: Vec<(&[u8], &[u8])> = rows.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let bytes = file(&recs);
        assert!(bytes.len() * 3 < raw, "{} bytes for {raw} bytes of records", bytes.len());
        assert_eq!(read_all(&bytes).unwrap().1, rows);
    }

    #[test]
    fn every_truncation_is_refused_and_no_flipped_byte_changes_what_is_read() {
        let recs: [(&[u8], &[u8]); 2] = [(b"k1", b"v1"), (b"k2", b"value two")];
        let bytes = file(&recs);
        let original = read_all(&bytes).unwrap();
        for cut in 0..bytes.len() {
            assert!(read_all(&bytes[..cut]).is_err(), "a file cut at {cut} of {} was accepted", bytes.len());
        }
        let mut refused = 0;
        for bit in [0x01, 0x40, 0x80] {
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= bit;
                // A flipped byte may still decode into other records or
                // another meta; the checksum at the end must refuse it. A
                // few bits of zstd's frame header (the window size) do not
                // change what is decoded: such a file reads as the original.
                match read_all(&b) {
                    Err(_) => refused += 1,
                    Ok(got) => assert_eq!(got, original, "a file with byte {i} flipped ({bit:#x}) read as other records"),
                }
            }
        }
        assert!(refused > bytes.len() * 3 * 9 / 10, "only {refused} of {} flips refused", bytes.len() * 3);
        // Every byte of a version-1 file counts.
        let v1 = plain_v1(&recs);
        for i in 0..v1.len() {
            let mut b = v1.clone();
            b[i] ^= 0x40;
            assert!(read_all(&b).is_err(), "a version-1 file with byte {i} flipped was accepted");
        }
        for cut in 0..v1.len() {
            assert!(read_all(&v1[..cut]).is_err(), "a version-1 file cut at {cut} was accepted");
        }
    }
}
