//! Downloading an official dataset archive: streamed to a temporary file with its MD5 computed
//! on the way, verified, unpacked into a temporary directory, and only then moved into place,
//! so an interrupted or corrupt download never leaves a directory that looks complete.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::error::{ProcoError, Result};

/// An archive to fetch: where it lives, its MD5, and the directory it unpacks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Download URL (http or https).
    pub url: String,
    /// Expected MD5 of the archive, lower-case hex.
    pub md5: String,
    /// Name of the top-level directory inside the archive (e.g. `cifar-10-batches-bin`).
    pub extracts_to: String,
}

/// The official CIFAR archives (Krizhevsky's site): (name, url, md5, directory inside).
pub const OFFICIAL_ARCHIVES: [(&str, &str, &str, &str); 4] = [
    ("cifar10-binary", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", "cifar-10-batches-bin"),
    ("cifar10-python", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    ("cifar100-binary", "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8", "cifar-100-binary"),
    ("cifar100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
];

/// The official archive called `name` (one of the first column of [`OFFICIAL_ARCHIVES`]).
pub fn official_archive(name: &str) -> Result<Archive> {
    OFFICIAL_ARCHIVES
        .iter()
        .find(|a| a.0 == name)
        .map(|a| Archive { url: a.1.into(), md5: a.2.into(), extracts_to: a.3.into() })
        .ok_or_else(|| ProcoError::InvalidConfig {
            reason: format!(
                "unknown dataset archive `{name}`; known: {}",
                OFFICIAL_ARCHIVES.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
            ),
        })
}

/// Removes a temporary path when dropped, unless it was kept.
struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
    }
}


/// Downloads `archive` into `data_dir` and returns the unpacked directory
/// `data_dir/<extracts_to>`. `progress(done, total)` is called as bytes arrive (total is the
/// Content-Length when the server sends one). If the directory already exists it is returned
/// untouched: delete it to force a new download.
pub fn fetch(archive: &Archive, data_dir: &Path, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<PathBuf> {
    let target = data_dir.join(&archive.extracts_to);
    if target.is_dir() {
        return Ok(target);
    }
    fs::create_dir_all(data_dir).map_err(ProcoError::io_at(data_dir))?;
    let part = TempPath(Some(data_dir.join(format!(".{}.download", archive.extracts_to))));
    let part_path = part.0.clone().unwrap_or_default();

    let mut response = ureq::get(&archive.url).call().map_err(|e| ProcoError::Data {
        path: data_dir.to_path_buf(),
        reason: format!("downloading {} failed: {e}; check the network or place the files yourself", archive.url),
    })?;
    let total = response.body().content_length();
    let mut reader = response.body_mut().as_reader();
    let mut file = fs::File::create(&part_path).map_err(ProcoError::io_at(&part_path))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| ProcoError::Data {
            path: part_path.clone(),
            reason: format!("download of {} broke off after {done} bytes: {e}", archive.url),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(ProcoError::io_at(&part_path))?;
        done += n as u64;
        progress(done, total);
    }
    file.sync_all().map_err(ProcoError::io_at(&part_path))?;
    let got = format!("{:x}", hasher.finalize());
    if got != archive.md5 {
        return Err(ProcoError::Data {
            path: part_path,
            reason: format!("MD5 of {} is {got}, expected {}; the download is corrupt, try again", archive.url, archive.md5),
        });
    }

    let staging = TempPath(Some(data_dir.join(format!(".{}.unpack", archive.extracts_to))));
    let staging_path = staging.0.clone().unwrap_or_default();
    let _ = fs::remove_dir_all(&staging_path);
    fs::create_dir_all(&staging_path).map_err(ProcoError::io_at(&staging_path))?;
    let gz = flate2::read::GzDecoder::new(fs::File::open(&part_path).map_err(ProcoError::io_at(&part_path))?);
    tar::Archive::new(gz).unpack(&staging_path).map_err(|e| ProcoError::Data {
        path: part_path.clone(),
        reason: format!("unpacking failed: {e}"),
    })?;
    let unpacked = staging_path.join(&archive.extracts_to);
    if !unpacked.is_dir() {
        return Err(ProcoError::Data {
            path: part_path,
            reason: format!("the archive does not contain the directory {}", archive.extracts_to),
        });
    }
    fs::rename(&unpacked, &target).map_err(ProcoError::io_at(&target))?;
    Ok(target)
}
