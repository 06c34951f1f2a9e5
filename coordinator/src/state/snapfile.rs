//! The snapshot file: one self-describing file per snapshot, written and read
//! as a stream, so that neither building, sending nor installing a snapshot
//! holds more than one record in memory.
//!
//! Layout: `PANOSNAP` · version `u32` · meta length `u32` · bincode
//! ([`SnapshotMeta`]) · records · trailer. A record is tag `1u8`, key length
//! `u32`, value length `u32`, key, value; the trailer is tag `0u8`, the record
//! count `u64` and the CRC-32 of every byte before the CRC. All integers are
//! little-endian. A file that ends early, has a bad CRC or a count that does
//! not match is refused whole: a torn or corrupt snapshot is never installed.
use std::io::{self, BufReader, BufWriter, Read, Write};

use crate::raft::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"PANOSNAP";
const VERSION: u32 = 1;
/// Refuse absurd lengths (a corrupt file) instead of allocating them.
const MAX_META: u32 = 16 << 20;
const MAX_KEY: u32 = 1 << 16;
const MAX_VALUE: u32 = 256 << 20;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot file: {}", msg.into()))
}

/// Writes a snapshot file record by record.
pub struct Writer<W: Write> {
    out: BufWriter<W>,
    crc: crc32fast::Hasher,
    count: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, meta: &SnapshotMeta) -> io::Result<Self> {
        let mut w = Writer { out: BufWriter::with_capacity(1 << 20, out), crc: crc32fast::Hasher::new(), count: 0 };
        let m = bincode::serialize(meta).map_err(|e| bad(e.to_string()))?;
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        w.put(&(m.len() as u32).to_le_bytes())?;
        w.put(&m)?;
        Ok(w)
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
        let inner = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok((inner, count))
    }
}

/// Reads a snapshot file: the meta first, then the records in order. The
/// CRC is checked when the trailer is read, so a caller must read to the end
/// ([`Reader::next_record`] returning `None`) before trusting what it read.
pub struct Reader<R: Read> {
    inp: BufReader<R>,
    crc: crc32fast::Hasher,
    count: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(inp: R) -> io::Result<(Self, SnapshotMeta)> {
        let mut r = Reader { inp: BufReader::with_capacity(1 << 20, inp), crc: crc32fast::Hasher::new(), count: 0, done: false };
        let mut magic = [0u8; 8];
        r.get(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a Panoptes snapshot (bad magic)"));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(bad(format!("version {version}, this build reads version {VERSION}")));
        }
        let n = r.u32()?;
        if n > MAX_META {
            return Err(bad(format!("meta of {n} bytes")));
        }
        let mut m = vec![0; n as usize];
        r.get(&mut m)?;
        let meta = bincode::deserialize(&m).map_err(|e| bad(format!("meta: {e}")))?;
        Ok((r, meta))
    }

    fn get(&mut self, b: &mut [u8]) -> io::Result<()> {
        self.inp.read_exact(b).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { bad("ends early (torn or truncated)") } else { e })?;
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
                self.inp.read_exact(&mut crc).map_err(|_| bad("ends early (no checksum)"))?;
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

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = file(&[(b"k1", b"v1"), (b"k2", b"value two")]);
        for cut in 0..bytes.len() {
            assert!(read_all(&bytes[..cut]).is_err(), "a file cut at {cut} of {} was accepted", bytes.len());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            // A flipped byte may still decode into other records or another
            // meta; the checksum at the end must refuse it.
            assert!(read_all(&b).is_err(), "a file with byte {i} flipped was accepted");
        }
    }
}
