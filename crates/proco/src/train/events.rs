//! Metric sinks: a JSON-lines log (one object per epoch) and TensorBoard event files
//! (TFRecord framing with masked CRC-32C, `Event`/`Summary` protobufs encoded by hand: a few
//! dozen lines instead of a protobuf and TensorBoard dependency).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{ProcoError, Result};


/// CRC-32C (Castagnoli), bitwise; event files are small.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    varint(((field << 3) | 2) as u64, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// Serialises an `Event` with wall time, step, and either a file version or scalar summaries.
fn event(wall_time: f64, step: i64, file_version: Option<&str>, scalars: &[(&str, f64)]) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(0x09);
    e.extend_from_slice(&wall_time.to_le_bytes());
    e.push(0x10);
    varint(step as u64, &mut e);
    if let Some(v) = file_version {
        bytes_field(3, v.as_bytes(), &mut e);
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut val = Vec::new();
            bytes_field(1, tag.as_bytes(), &mut val);
            val.push(0x15);
            val.extend_from_slice(&(*value as f32).to_le_bytes());
            bytes_field(1, &val, &mut summary);
        }
        bytes_field(5, &summary, &mut e);
    }
    e
}

/// Appends scalars to a TensorBoard event file in a run directory.
pub struct TensorBoardWriter {
    file: File,
    path: PathBuf,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl TensorBoardWriter {
    /// Creates `dir/events.out.tfevents.<time>.proco` and writes the version record. A resumed
    /// run opens a new file; TensorBoard reads all of them.
    pub fn create(dir: &Path) -> Result<Self> {
        let stamp = now() as u64;
        let (path, file) = (0u32..)
            .map(|k| dir.join(format!("events.out.tfevents.{stamp}.proco{}", if k == 0 { String::new() } else { format!(".{k}") })))
            .find_map(|p| match OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(f) => Some(Ok((p, f))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(ProcoError::Io { path: p, source: e })),
            })
            .unwrap_or_else(|| Err(ProcoError::InvalidConfig { reason: "no free event file name".into() }))?;
        let mut w = Self { file, path };
        w.record(&event(now(), 0, Some("brain.Event:2"), &[]))?;
        Ok(w)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write_all(&buf).map_err(ProcoError::io_at(&self.path))?;
        self.file.flush().map_err(ProcoError::io_at(&self.path))
    }

    /// Writes scalar values (tag, value) at `step`.
    pub fn scalars(&mut self, step: i64, scalars: &[(&str, f64)]) -> Result<()> {
        let finite: Vec<(&str, f64)> = scalars.iter().copied().filter(|(_, v)| v.is_finite()).collect();
        self.record(&event(now(), step, None, &finite))
    }
}

/// Reads the records of an event file back, checking both CRCs (for tests and `proco` tools).
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path).map_err(ProcoError::io_at(path))?;
    let corrupt = |what: &str| ProcoError::Data { path: path.to_path_buf(), reason: format!("corrupt event file: {what}") };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let head = data.get(at..at + 12).ok_or_else(|| corrupt("truncated header"))?;
        let (len_bytes, crc_bytes) = head.split_at(8);
        if masked_crc(len_bytes).to_le_bytes() != crc_bytes {
            return Err(corrupt("length checksum"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| corrupt("length"))?) as usize;
        let body = data.get(at + 12..at + 12 + len).ok_or_else(|| corrupt("truncated record"))?;
        let crc = data.get(at + 12 + len..at + 16 + len).ok_or_else(|| corrupt("truncated checksum"))?;
        if masked_crc(body).to_le_bytes() != crc {
            return Err(corrupt("record checksum"));
        }
        out.push(body.to_vec());
        at += 16 + len;
    }
    Ok(out)
}

/// The JSON-lines metrics log of a run: one JSON object per line.
pub struct JsonlLog {
    path: PathBuf,
}

impl JsonlLog {
    /// The log at `path` (created on first append).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Appends one record.
    pub fn append(&self, value: &serde_json::Value) -> Result<()> {
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path).map_err(ProcoError::io_at(&self.path))?;
        writeln!(f, "{value}").map_err(ProcoError::io_at(&self.path))
    }

    /// All records (an absent file has none). A malformed last line, left by a crash in the
    /// middle of an append, is ignored; a malformed line elsewhere is an error.
    pub fn read(&self) -> Result<Vec<serde_json::Value>> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(ProcoError::Io { path: self.path.clone(), source: e }),
        };
        let lines: Vec<String> = BufReader::new(f).lines().collect::<std::io::Result<_>>().map_err(ProcoError::io_at(&self.path))?;
        let last = lines.len().saturating_sub(1);
        let mut out = Vec::with_capacity(lines.len());
        for (k, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(v) => out.push(v),
                Err(_) if k == last => {}
                Err(e) => return Err(ProcoError::Data { path: self.path.clone(), reason: format!("line {}: {e}", k + 1) }),
            }
        }
        Ok(out)
    }

    /// Keeps only the records whose `epoch` field is below `epoch` (used when resuming, so
    /// epochs logged after the last checkpoint are not counted twice). Rewrites atomically.
    pub fn truncate_from_epoch(&self, epoch: u64) -> Result<()> {
        let keep: Vec<serde_json::Value> =
            self.read()?.into_iter().filter(|v| v.get("epoch").and_then(|e| e.as_u64()).is_some_and(|e| e < epoch)).collect();
        let tmp = self.path.with_extension("jsonl.tmp");
        let text: String = keep.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(&tmp, text).map_err(ProcoError::io_at(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(ProcoError::io_at(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answer() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn event_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("proco-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = TensorBoardWriter::create(&dir).unwrap();
        w.scalars(3, &[("acc/val_top1", 42.5), ("skip", f64::NAN)]).unwrap();
        let records = read_records(&w.path).unwrap();
        assert_eq!(records.len(), 2);
        assert!(records[0].windows(13).any(|s| s == b"brain.Event:2"));
        assert!(records[1].windows(12).any(|s| s == b"acc/val_top1"));
        assert!(records[1].windows(4).any(|s| s == 42.5f32.to_le_bytes()));
        assert!(!records[1].windows(4).any(|s| s == b"skip"));
        let log = JsonlLog::new(dir.join("m.jsonl"));
        for e in 0..4u64 {
            log.append(&serde_json::json!({ "epoch": e })).unwrap();
        }
        // A crash in the middle of an append leaves half a line: ignored, then dropped.
        std::fs::OpenOptions::new().append(true).open(dir.join("m.jsonl")).unwrap().write_all(b"{\"epoch\": 4, \"va").unwrap();
        assert_eq!(log.read().unwrap().len(), 4);
        log.truncate_from_epoch(2).unwrap();
        assert_eq!(log.read().unwrap().len(), 2);
        let second = TensorBoardWriter::create(&dir).unwrap();
        assert_ne!(second.path, w.path, "two writers in the same second get different files");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
