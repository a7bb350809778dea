//! CIFAR-10 and CIFAR-100 from the official releases, in their binary or python layout, read
//! into an [`InMemoryDataset`] of 32 x 32 RGB images in the official sample order.
//!
//! Layouts (directory names as the official archives unpack):
//!
//! | variant   | binary                                            | python (pickles)                     |
//! |-----------|---------------------------------------------------|--------------------------------------|
//! | CIFAR-10  | `cifar-10-batches-bin/`: `data_batch_1..5.bin`, `test_batch.bin`, `batches.meta.txt` | `cifar-10-batches-py/`: `data_batch_1..5`, `test_batch`, `batches.meta` |
//! | CIFAR-100 | `cifar-100-binary/`: `train.bin`, `test.bin`, `fine_label_names.txt` | `cifar-100-python/`: `train`, `test`, `meta` |
//!
//! A binary record is the label byte(s) then 3072 pixel bytes: 1024 red, 1024 green, 1024 blue,
//! each plane row-major 32 x 32. CIFAR-10 records have 1 label byte; CIFAR-100 records have the
//! coarse then the fine label byte. A python batch is a pickled dict whose `data` is an
//! N x 3072 `uint8` array of the same rows and whose `labels` (CIFAR-10) or `fine_labels`
//! (CIFAR-100) list the labels. CIFAR-100 is always read with its 100 fine labels. The training
//! split of CIFAR-10 is batches 1 to 5 concatenated.
//!
//! Every file is checked before use under a [`Checksum`] policy: by default the size and MD5 of
//! the official release ([`OFFICIAL_RELEASES`]); [`Checksum::SizeOnly`] checks only that the
//! files are well formed (for synthetic files written in the official layouts by tests).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::data::fetch::official_archive;
use crate::data::pickle::{self, Value};
use crate::data::InMemoryDataset;
use crate::error::{ProcoError, Result};

/// Side of a CIFAR image in pixels.
pub const SIDE: u32 = 32;
/// Pixel bytes of one CIFAR image (3 planes of 32 x 32).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which CIFAR dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CifarVariant {
    /// 10 classes, 50,000 training and 10,000 test images.
    Cifar10,
    /// 100 (fine) classes, 50,000 training and 10,000 test images.
    Cifar100,
}

impl CifarVariant {
    /// Number of classes (CIFAR-100: the fine labels).
    pub fn num_classes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100 => 100,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "CIFAR-10",
            CifarVariant::Cifar100 => "CIFAR-100",
        }
    }
}

/// Training or test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The 50,000 training images.
    Train,
    /// The 10,000 test images.
    Test,
}

/// The two file layouts of the official releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Fixed-size records (`*.bin`) and class names in text files.
    Binary,
    /// Python 2 cPickle dicts holding numpy arrays.
    Python,
}

/// How thoroughly files are checked before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Checksum {
    /// Size and MD5 must match the official release (where it publishes them, see
    /// [`OfficialFile`]), then the structure is checked. The default: anything else is not
    /// the dataset every published CIFAR number was measured on.
    #[default]
    Official,
    /// Only the structure is checked: binary files must hold a whole, non-zero number of
    /// records, pickles must parse into the official dict layout with as many labels as
    /// images, labels must be in range. Any number of images is accepted. Meant for synthetic
    /// files written in the official layouts (tests), whose MD5 cannot match.
    SizeOnly,
}

/// One file of an official release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfficialFile {
    /// File name inside the layout directory.
    pub name: &'static str,
    /// MD5 (lower-case hex) of the official file; `None` where the release publishes none
    /// (the class-name text files of the binary layouts).
    pub md5: Option<&'static str>,
    /// Size in bytes of the official file, where known; the MD5 decides where it is not.
    pub size: Option<u64>,
}

/// An official release in one layout: where its files live and what they must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfficialRelease {
    /// The dataset.
    pub variant: CifarVariant,
    /// The layout.
    pub layout: Layout,
    /// Directory the archive unpacks to (and that [`load_cifar`] looks for under its root).
    pub dir: &'static str,
    /// Name of the archive in [`crate::data::fetch::OFFICIAL_ARCHIVES`].
    pub archive: &'static str,
    /// Training files, in sample order.
    pub train: &'static [OfficialFile],
    /// Test files, in sample order.
    pub test: &'static [OfficialFile],
    /// The file holding the class names.
    pub meta: OfficialFile,
}

impl OfficialRelease {
    /// The files of `split`, in sample order.
    pub fn files(&self, split: Split) -> &'static [OfficialFile] {
        match split {
            Split::Train => self.train,
            Split::Test => self.test,
        }
    }

    /// How to obtain this release: the archive to download and unpack (the library's
    /// [`crate::data::fetch::fetch`] does both, verified).
    fn download_hint(&self) -> String {
        let archive = match official_archive(self.archive) {
            Ok(a) => format!("{} (MD5 {})", a.url, a.md5),
            Err(_) => format!("the official {} archive", self.archive),
        };
        format!("fetch the official `{}` archive, {archive}, and unpack it in the data directory, which creates {}", self.archive, self.dir)
    }

    /// What to do about a missing or damaged file of this release.
    fn remedy(&self) -> String {
        format!("delete the {} directory, then {}", self.dir, self.download_hint())
    }
}

const fn file(name: &'static str, md5: &'static str, size: Option<u64>) -> OfficialFile {
    OfficialFile { name, md5: Some(md5), size }
}

const fn names_file(name: &'static str) -> OfficialFile {
    OfficialFile { name, md5: None, size: None }
}

/// CIFAR-10 binary batch: 10,000 records of 1 + 3072 bytes.
const C10_BIN_SIZE: Option<u64> = Some(10_000 * 3073);

/// The four official releases: CIFAR-10 and CIFAR-100, binary and python layouts. MD5s are
/// those published with the releases (and listed by torchvision's `datasets/cifar.py`).
pub const OFFICIAL_RELEASES: [OfficialRelease; 4] = [
    OfficialRelease {
        variant: CifarVariant::Cifar10,
        layout: Layout::Binary,
        dir: "cifar-10-batches-bin",
        archive: "cifar10-binary",
        train: &[
            file("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25", C10_BIN_SIZE),
            file("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692", C10_BIN_SIZE),
            file("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421", C10_BIN_SIZE),
            file("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb", C10_BIN_SIZE),
            file("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d", C10_BIN_SIZE),
        ],
        test: &[file("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d", C10_BIN_SIZE)],
        meta: names_file("batches.meta.txt"),
    },
    OfficialRelease {
        variant: CifarVariant::Cifar10,
        layout: Layout::Python,
        dir: "cifar-10-batches-py",
        archive: "cifar10-python",
        train: &[
            file("data_batch_1", "c99cafc152244af753f735de768cd75f", Some(31_035_704)),
            file("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec", Some(31_035_320)),
            file("data_batch_3", "54ebc095f3ab1f0389bbae665268c751", Some(31_035_999)),
            file("data_batch_4", "634d18415352ddfa80567beed471001a", Some(31_035_696)),
            file("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb", Some(31_035_623)),
        ],
        test: &[file("test_batch", "40351d587109b95175f43aff81a1287e", Some(31_035_526))],
        meta: file("batches.meta", "5ff9c542aee3614f3951f8cda6e48888", Some(158)),
    },
    OfficialRelease {
        variant: CifarVariant::Cifar100,
        layout: Layout::Binary,
        dir: "cifar-100-binary",
        archive: "cifar100-binary",
        train: &[file("train.bin", "6172c7755cfe09b2fe270c85cebc1b15", Some(50_000 * 3074))],
        test: &[file("test.bin", "4499cfba6c016c1be1438163640a0898", Some(10_000 * 3074))],
        meta: names_file("fine_label_names.txt"),
    },
    OfficialRelease {
        variant: CifarVariant::Cifar100,
        layout: Layout::Python,
        dir: "cifar-100-python",
        archive: "cifar100-python",
        train: &[file("train", "16019d7e3df5f24257cddd939b257f8d", None)],
        test: &[file("test", "f0ef6b0ae62326f3e7ffdfab6717acfc", None)],
        meta: file("meta", "7973b15100ade9c7d40fb424638fde48", None),
    },
];

/// The official release of `variant` in `layout`.
pub fn official_release(variant: CifarVariant, layout: Layout) -> &'static OfficialRelease {
    let i = match (variant, layout) {
        (CifarVariant::Cifar10, Layout::Binary) => 0,
        (CifarVariant::Cifar10, Layout::Python) => 1,
        (CifarVariant::Cifar100, Layout::Binary) => 2,
        (CifarVariant::Cifar100, Layout::Python) => 3,
    };
    &OFFICIAL_RELEASES[i]
}

/// Loads `split` of `variant` from under `root`, which is either the directory holding an
/// unpacked release (`root/cifar-10-batches-bin`, ...) or that release directory itself.
///
/// The binary layout is used when present, else the python layout. Every file is checked
/// under `checksum` before use. Fails with [`ProcoError::Data`] naming the directory when
/// neither layout is there (listing both names looked for), or naming the file when one is
/// absent, truncated, not the official file (size / MD5) or malformed, with what to do.
pub fn load_cifar(root: &Path, variant: CifarVariant, split: Split, checksum: Checksum) -> Result<InMemoryDataset> {
    let (release, dir) = find_release(root, variant)?;
    let names = class_names(release, &dir, checksum)?;
    let mut samples = Samples::default();
    for f in release.files(split) {
        let path = dir.join(f.name);
        let bytes = read_checked(release, &path, f, checksum)?;
        match release.layout {
            Layout::Binary => samples.append_records(&path, &bytes, variant)?,
            Layout::Python => samples.append_pickle(&path, &bytes, variant).map_err(|e| with_remedy(e, release))?,
        }
    }
    InMemoryDataset::new(SIDE, SIDE, samples.pixels, samples.labels, variant.num_classes())?.with_class_names(names)
}

/// Decodes the bytes of one CIFAR batch file of `layout` (a binary batch, or a python
/// pickle) into a dataset of its images, checking its structure as [`load_cifar`] does under
/// [`Checksum::SizeOnly`]. `path` only names the file in errors.
///
/// # Errors
/// [`ProcoError::Data`] naming `path` for anything that is not a well-formed batch of
/// `variant`: never a panic, whatever the bytes.
pub fn decode_batch(bytes: &[u8], path: &Path, variant: CifarVariant, layout: Layout) -> Result<InMemoryDataset> {
    let mut samples = Samples::default();
    match layout {
        Layout::Binary => samples.append_records(path, bytes, variant)?,
        Layout::Python => samples.append_pickle(path, bytes, variant)?,
    }
    InMemoryDataset::new(SIDE, SIDE, samples.pixels, samples.labels, variant.num_classes())
}

/// The MD5 of a file, lower-case hex, read in 1 MiB blocks (constant memory).
pub fn md5_file(path: &Path) -> Result<String> {
    let io = |source| ProcoError::Io { path: path.to_path_buf(), source };
    let mut f = fs::File::open(path).map_err(io)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(format!("{:x}", hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// The release directory of `variant` under (or at) `root`: binary layout first.
fn find_release(root: &Path, variant: CifarVariant) -> Result<(&'static OfficialRelease, PathBuf)> {
    let releases = [official_release(variant, Layout::Binary), official_release(variant, Layout::Python)];
    for r in releases {
        if root.file_name().is_some_and(|n| n == r.dir) && root.is_dir() {
            return Ok((r, root.to_path_buf()));
        }
        if root.join(r.dir).is_dir() {
            return Ok((r, root.join(r.dir)));
        }
    }
    Err(ProcoError::Data {
        path: root.to_path_buf(),
        reason: format!(
            "no {} here: looked for the directories {} (binary layout) and {} (python layout); {} in this directory",
            variant.name(),
            releases[0].dir,
            releases[1].dir,
            releases[0].download_hint()
        ),
    })
}

/// Reads a file of `release` after checking it exists and, under [`Checksum::Official`],
/// that its size and MD5 are the official ones.
fn read_checked(release: &OfficialRelease, path: &Path, f: &OfficialFile, checksum: Checksum) -> Result<Vec<u8>> {
    let data_err = |reason: String| ProcoError::Data { path: path.to_path_buf(), reason: format!("{reason}; {}", release.remedy()) };
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => data_err(format!("this {} file is missing", release.variant.name())),
        _ => data_err(format!("cannot read this {} file ({e})", release.variant.name())),
    })?;
    let official = checksum == Checksum::Official;
    if let (true, Some(size)) = (official, f.size) {
        if meta.len() != size {
            return Err(data_err(format!("{} bytes, but the official file has {size}: it is truncated or not the official release", meta.len())));
        }
    }
    let bytes = fs::read(path).map_err(ProcoError::io_at(path))?;
    if let (true, Some(md5)) = (official, f.md5) {
        let got = format!("{:x}", Md5::digest(&bytes));
        if got != md5 {
            return Err(data_err(format!("MD5 {got}, but the official file has {md5}: it is corrupt or not the official release")));
        }
    }
    Ok(bytes)
}

fn with_remedy(e: ProcoError, release: &OfficialRelease) -> ProcoError {
    match e {
        ProcoError::Data { path, reason } => ProcoError::Data { path, reason: format!("{reason}; {}", release.remedy()) },
        other => other,
    }
}

/// Class names from the release's meta file, checked to be one per class.
fn class_names(release: &OfficialRelease, dir: &Path, checksum: Checksum) -> Result<Vec<String>> {
    let path = dir.join(release.meta.name);
    let bytes = read_checked(release, &path, &release.meta, checksum)?;
    let names = match release.layout {
        Layout::Binary => text_names(&path, &bytes)?,
        Layout::Python => pickle_names(&path, &bytes, release.variant).map_err(|e| with_remedy(e, release))?,
    };
    let want = release.variant.num_classes();
    if names.len() != want {
        let reason = format!("{} class names, expected {want}; {}", names.len(), release.remedy());
        return Err(ProcoError::Data { path, reason });
    }
    Ok(names)
}

/// One name per non-blank line (the official files end with blank lines).
fn text_names(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes).map_err(|_| ProcoError::Data { path: path.to_path_buf(), reason: "class names are not UTF-8 text".into() })?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

fn pickle_names(path: &Path, bytes: &[u8], variant: CifarVariant) -> Result<Vec<String>> {
    let key = match variant {
        CifarVariant::Cifar10 => "label_names",
        CifarVariant::Cifar100 => "fine_label_names",
    };
    let bad = |what: &str| ProcoError::Data { path: path.to_path_buf(), reason: format!("{what}: not a {} meta pickle", variant.name()) };
    let meta = pickle::parse(bytes, path)?;
    let list = meta.get(key).and_then(Value::items).ok_or_else(|| bad(&format!("no `{key}` list")))?;
    list.iter()
        .map(|v| v.text_bytes().and_then(|b| String::from_utf8(b.to_vec()).ok()).ok_or_else(|| bad("a class name is not text")))
        .collect()
}

/// Images (interleaved HWC RGB) and labels accumulated over the files of a split.
#[derive(Default)]
struct Samples {
    pixels: Vec<u8>,
    labels: Vec<u32>,
}

impl Samples {
    /// Appends the records of a binary file: label byte(s), then the R, G and B planes.
    fn append_records(&mut self, path: &Path, bytes: &[u8], variant: CifarVariant) -> Result<()> {
        let label_bytes = match variant {
            CifarVariant::Cifar10 => 1,
            CifarVariant::Cifar100 => 2,
        };
        let record = label_bytes + IMAGE_BYTES;
        if bytes.is_empty() || bytes.len() % record != 0 {
            let reason = format!(
                "{} bytes is not a whole, non-zero number of {record}-byte records ({label_bytes} label byte(s) + {IMAGE_BYTES} pixels): the file is truncated or damaged; {}",
                bytes.len(),
                official_release(variant, Layout::Binary).remedy()
            );
            return Err(ProcoError::Data { path: path.to_path_buf(), reason });
        }
        self.reserve(bytes.len() / record);
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            // CIFAR-100: [coarse, fine]; the fine label is the last label byte.
            self.push(path, i, u32::from(rec[label_bytes - 1]), &rec[label_bytes..], variant)?;
        }
        Ok(())
    }

    /// Appends the images and labels of a python batch (a pickled dict).
    fn append_pickle(&mut self, path: &Path, bytes: &[u8], variant: CifarVariant) -> Result<()> {
        let key = match variant {
            CifarVariant::Cifar10 => "labels",
            CifarVariant::Cifar100 => "fine_labels",
        };
        let bad = |what: String| ProcoError::Data { path: path.to_path_buf(), reason: format!("{what}: not a {} batch", variant.name()) };
        let batch = pickle::parse(bytes, path)?;
        let data = match batch.get("data") {
            Some(Value::Array(a)) if a.shape.len() == 2 && a.shape[1] == IMAGE_BYTES => a,
            Some(Value::Array(a)) => return Err(bad(format!("`data` has shape {:?}, expected (N, {IMAGE_BYTES})", a.shape))),
            _ => return Err(bad("no uint8 array `data`".into())),
        };
        let labels = batch.get(key).and_then(Value::items).ok_or_else(|| bad(format!("no `{key}` list")))?;
        if labels.len() != data.shape[0] {
            return Err(bad(format!("{} images but {} labels", data.shape[0], labels.len())));
        }
        self.reserve(labels.len());
        for (i, (label, pixels)) in labels.iter().zip(data.data.chunks_exact(IMAGE_BYTES)).enumerate() {
            let label = match label {
                Value::Int(l) => u32::try_from(*l).map_err(|_| bad(format!("label {i} is {l}")))?,
                _ => return Err(bad(format!("label {i} is not an integer"))),
            };
            self.push(path, i, label, pixels, variant)?;
        }
        Ok(())
    }

    fn reserve(&mut self, n: usize) {
        self.labels.reserve(n);
        self.pixels.reserve(n * IMAGE_BYTES);
    }

    /// Appends image `i` of `path` (planar R, G, B) as interleaved RGB, after checking its label.
    fn push(&mut self, path: &Path, i: usize, label: u32, planes: &[u8], variant: CifarVariant) -> Result<()> {
        if label as usize >= variant.num_classes() {
            let reason = format!("image {i} has label {label}, outside 0..{}: the file is damaged", variant.num_classes());
            return Err(ProcoError::Data { path: path.to_path_buf(), reason });
        }
        let (r, rest) = planes.split_at(IMAGE_BYTES / 3);
        let (g, b) = rest.split_at(IMAGE_BYTES / 3);
        self.pixels.extend(r.iter().zip(g).zip(b).flat_map(|((&r, &g), &b)| [r, g, b]));
        self.labels.push(label);
        Ok(())
    }
}
