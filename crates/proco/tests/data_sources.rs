//! Dataset sources: CIFAR-10 / CIFAR-100 in the official binary and python layouts (synthetic
//! files written here, pickles written by real Python under tests/data/cifar, and the real
//! CIFAR-10 binary release), image folders and list files.
//!
//! Synthetic image `seed` has planar pixel j = (seed * 101 + j * 7 + 3) % 256, the formula of
//! tests/data/cifar/make_fixtures.py.

use std::fs;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use proco::data::cifar::{load_cifar, md5_file, official_release, Checksum, CifarVariant, Layout, Split, OFFICIAL_RELEASES};
use proco::data::fetch::OFFICIAL_ARCHIVES;
use proco::data::folder::ImageFolder;
use proco::data::list_file::ListFileDataset;
use proco::error::ImageProblem;
use proco::data::pickle::{self, Value};
use proco::data::{Dataset, InMemoryDataset};
use proco::ProcoError;

use CifarVariant::{Cifar10, Cifar100};

// ---------------------------------------------------------------- helpers

/// A fresh directory under the system temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("proco-data-sources-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Planar pixels (R plane, G plane, B plane) of synthetic image `seed`.
fn planes(seed: usize) -> Vec<u8> {
    (0..3072).map(|j| ((seed * 101 + j * 7 + 3) % 256) as u8).collect()
}

/// Asserts that image i of `ds` is the planar image `seed` converted to interleaved HWC.
fn assert_image(ds: &InMemoryDataset, i: usize, seed: usize) {
    let planar = planes(seed);
    let img = ds.image(i).unwrap();
    assert_eq!(img.dimensions(), (32, 32));
    // R plane -> channel 0, G -> 1, B -> 2, each plane row-major.
    assert_eq!(img.get_pixel(0, 0).0, [planar[0], planar[1024], planar[2048]], "image {i}");
    assert_eq!(img.get_pixel(1, 0).0, [planar[1], planar[1025], planar[2049]], "image {i}");
    assert_eq!(img.get_pixel(0, 1).0, [planar[32], planar[1024 + 32], planar[2048 + 32]], "image {i}");
    let hwc = ds.pixels_of(i);
    for c in 0..3 {
        for k in 0..1024 {
            assert_eq!(hwc[k * 3 + c], planar[c * 1024 + k], "image {i} channel {c} pixel {k}");
        }
    }
}

fn data_err(err: ProcoError) -> (PathBuf, String) {
    match err {
        ProcoError::Data { path, reason } => (path, reason),
        other => panic!("expected a Data error, got {other}"),
    }
}

const C10_NAMES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

fn c100_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}_{i:02}")).collect()
}

/// A synthetic split: image seeds and (coarse, fine) labels per file, in file order.
struct SynthFile {
    seeds: Vec<usize>,
    labels: Vec<u8>,
    coarse: Vec<u8>,
}

/// File f (0-based, train files then test file) with n images: seed 100 f + k, label
/// (3 f + 7 k) % classes, coarse label k % 20.
fn synth(f: usize, n: usize, classes: usize) -> SynthFile {
    SynthFile {
        seeds: (0..n).map(|k| 100 * f + k).collect(),
        labels: (0..n).map(|k| ((3 * f + 7 * k) % classes) as u8).collect(),
        coarse: (0..n).map(|k| (k % 20) as u8).collect(),
    }
}

/// Train files then test file of a synthetic release with `counts` images per file.
fn synth_files(counts: &[usize], classes: usize) -> Vec<SynthFile> {
    counts.iter().enumerate().map(|(f, &n)| synth(f, n, classes)).collect()
}

fn assert_split(ds: &InMemoryDataset, files: &[SynthFile]) {
    let seeds: Vec<usize> = files.iter().flat_map(|f| f.seeds.iter().copied()).collect();
    let labels: Vec<u32> = files.iter().flat_map(|f| f.labels.iter().map(|&l| u32::from(l))).collect();
    assert_eq!(ds.labels(), &labels[..]);
    for (i, &seed) in seeds.iter().enumerate() {
        assert_image(ds, i, seed);
    }
}

// ---------------------------------------------------------------- binary layout writers

fn bin_records(f: &SynthFile, variant: CifarVariant) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..f.seeds.len() {
        if variant == Cifar100 {
            out.push(f.coarse[k]);
        }
        out.push(f.labels[k]);
        out.extend(planes(f.seeds[k]));
    }
    out
}

/// Writes `files` (train files, then the test file) in the binary layout under `root`.
fn write_binary(root: &Path, variant: CifarVariant, files: &[SynthFile]) -> PathBuf {
    let release = official_release(variant, Layout::Binary);
    let dir = root.join(release.dir);
    fs::create_dir_all(&dir).unwrap();
    let names = release.train.iter().chain(release.test);
    for (f, file) in names.zip(files) {
        fs::write(dir.join(f.name), bin_records(file, variant)).unwrap();
    }
    match variant {
        Cifar10 => fs::write(dir.join("batches.meta.txt"), format!("{}\n\n", C10_NAMES.join("\n"))).unwrap(),
        Cifar100 => {
            fs::write(dir.join("fine_label_names.txt"), c100_names("fine", 100).join("\n") + "\n").unwrap();
            fs::write(dir.join("coarse_label_names.txt"), c100_names("coarse", 20).join("\n") + "\n").unwrap();
        }
    }
    dir
}

// ---------------------------------------------------------------- pickle writer

/// A dict entry for [`Py2Pickle::dict`]: the key and a writer of the value.
type Field<'a> = (&'a str, Box<dyn Fn(&mut Py2Pickle) + 'a>);

/// Emits pickles with the opcode structure of Python 2 cPickle, protocol 2, as in the official
/// CIFAR python files: byte strings as SHORT_BINSTRING / BINSTRING, every string, container and
/// global memoized with BINPUT, lists filled with APPENDS in batches of 1000, the dict with
/// SETITEMS, and numpy arrays as `_reconstruct` + BUILD.
struct Py2Pickle {
    out: Vec<u8>,
    memo: u32,
}

impl Py2Pickle {
    fn new() -> Self {
        Self { out: vec![0x80, 2], memo: 0 }
    }

    fn put(&mut self) {
        self.memo += 1;
        if self.memo < 256 {
            self.out.extend([b'q', self.memo as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend(self.memo.to_le_bytes());
        }
    }

    fn bytes(&mut self, s: &[u8]) {
        if s.len() < 256 {
            self.out.extend([b'U', s.len() as u8]);
        } else {
            self.out.push(b'T');
            self.out.extend((s.len() as i32).to_le_bytes());
        }
        self.out.extend(s);
        self.put();
    }

    fn int(&mut self, v: i32) {
        match v {
            0..=255 => self.out.extend([b'K', v as u8]),
            256..=65535 => {
                self.out.push(b'M');
                self.out.extend((v as u16).to_le_bytes());
            }
            _ => {
                self.out.push(b'J');
                self.out.extend(v.to_le_bytes());
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.extend(format!("c{module}\n{name}\n").bytes());
        self.put();
    }

    fn array(&mut self, rows: usize, cols: usize, data: &[u8]) {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.out.extend([b'K', 0, 0x85]);
        self.put();
        self.bytes(b"b");
        self.out.push(0x87);
        self.put();
        self.out.push(b'R');
        self.put();
        self.out.extend([b'(', b'K', 1]);
        self.int(rows as i32);
        self.int(cols as i32);
        self.out.push(0x86);
        self.put();
        self.global("numpy", "dtype");
        self.bytes(b"u1");
        self.out.extend([b'K', 0, b'K', 1, 0x87]);
        self.put();
        self.out.push(b'R');
        self.put();
        self.out.extend([b'(', b'K', 3]);
        self.bytes(b"|");
        self.out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t");
        self.put();
        self.out.extend([b'b', 0x89]);
        self.bytes(data);
        self.out.push(b't');
        self.put();
        self.out.push(b'b');
    }

    fn list(&mut self, n: usize, mut item: impl FnMut(&mut Self, usize)) {
        self.out.push(b']');
        self.put();
        for start in (0..n).step_by(1000) {
            self.out.push(b'(');
            for i in start..n.min(start + 1000) {
                item(self, i);
            }
            self.out.push(b'e');
        }
    }

    /// A dict of (key, writer of the value), then STOP.
    fn dict(mut self, entries: Vec<Field<'_>>) -> Vec<u8> {
        self.out.push(b'}');
        self.put();
        self.out.push(b'(');
        for (key, value) in entries {
            self.bytes(key.as_bytes());
            value(&mut self);
        }
        self.out.extend(b"u.");
        self.out
    }
}

fn batch_pickle(file: &SynthFile, variant: CifarVariant) -> Vec<u8> {
    let data: Vec<u8> = file.seeds.iter().flat_map(|&s| planes(s)).collect();
    let n = file.seeds.len();
    let ints = |v: &[u8]| -> Box<dyn Fn(&mut Py2Pickle) + '_> {
        let v = v.to_vec();
        Box::new(move |p: &mut Py2Pickle| p.list(v.len(), |p, i| p.int(i32::from(v[i]))))
    };
    let mut entries: Vec<Field> = vec![
        ("batch_label", Box::new(|p: &mut Py2Pickle| p.bytes(b"training batch 1 of 5"))),
        ("data", Box::new(move |p: &mut Py2Pickle| p.array(n, 3072, &data))),
        ("filenames", Box::new(move |p: &mut Py2Pickle| p.list(n, |p, i| p.bytes(format!("img_{i}.png").as_bytes())))),
    ];
    match variant {
        Cifar10 => entries.push(("labels", ints(&file.labels))),
        Cifar100 => {
            entries.push(("fine_labels", ints(&file.labels)));
            entries.push(("coarse_labels", ints(&file.coarse)));
        }
    }
    Py2Pickle::new().dict(entries)
}

fn names_value(names: Vec<String>) -> Box<dyn Fn(&mut Py2Pickle)> {
    Box::new(move |p: &mut Py2Pickle| p.list(names.len(), |p, i| p.bytes(names[i].as_bytes())))
}

fn meta_pickle(variant: CifarVariant) -> Vec<u8> {
    match variant {
        Cifar10 => Py2Pickle::new().dict(vec![
            ("num_cases_per_batch", Box::new(|p: &mut Py2Pickle| p.int(10000))),
            ("label_names", names_value(C10_NAMES.iter().map(|s| s.to_string()).collect())),
            ("num_vis", Box::new(|p: &mut Py2Pickle| p.int(3072))),
        ]),
        Cifar100 => Py2Pickle::new().dict(vec![
            ("fine_label_names", names_value(c100_names("fine", 100))),
            ("coarse_label_names", names_value(c100_names("coarse", 20))),
        ]),
    }
}

/// Writes `files` (train files, then the test file) in the python layout under `root`.
fn write_python(root: &Path, variant: CifarVariant, files: &[SynthFile]) -> PathBuf {
    let release = official_release(variant, Layout::Python);
    let dir = root.join(release.dir);
    fs::create_dir_all(&dir).unwrap();
    for (f, file) in release.train.iter().chain(release.test).zip(files) {
        fs::write(dir.join(f.name), batch_pickle(file, variant)).unwrap();
    }
    fs::write(dir.join(release.meta.name), meta_pickle(variant)).unwrap();
    dir
}

// ---------------------------------------------------------------- CIFAR, synthetic

#[test]
fn cifar10_binary_layout_reads_in_official_order() {
    let tmp = TempDir::new("c10-bin");
    let files = synth_files(&[3, 2, 1, 2, 3, 4], 10);
    let dir = write_binary(&tmp.0, Cifar10, &files);
    let train = load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::SizeOnly).unwrap();
    assert_eq!((train.len(), train.num_classes(), train.image_size()), (11, 10, (32, 32)));
    assert_split(&train, &files[..5]);
    assert_eq!(train.class_names().unwrap(), &C10_NAMES.map(String::from)[..]);
    // The release directory itself is accepted as the root.
    let test = load_cifar(&dir, Cifar10, Split::Test, Checksum::SizeOnly).unwrap();
    assert_split(&test, &files[5..]);
}

#[test]
fn cifar100_binary_layout_uses_fine_labels() {
    let tmp = TempDir::new("c100-bin");
    let files = synth_files(&[5, 3], 100);
    write_binary(&tmp.0, Cifar100, &files);
    let train = load_cifar(&tmp.0, Cifar100, Split::Train, Checksum::SizeOnly).unwrap();
    assert_eq!(train.num_classes(), 100);
    assert_split(&train, &files[..1]);
    assert_eq!(train.class_names().unwrap(), &c100_names("fine", 100)[..]);
    let test = load_cifar(&tmp.0, Cifar100, Split::Test, Checksum::SizeOnly).unwrap();
    assert_split(&test, &files[1..]);
}

#[test]
fn python_layouts_read_the_same_as_binary_layouts() {
    for (variant, counts) in [(Cifar10, vec![4, 1, 3, 2, 2, 5]), (Cifar100, vec![1200, 7])] {
        let tmp = TempDir::new(&format!("py-{variant:?}"));
        let files = synth_files(&counts, variant.num_classes());
        write_python(&tmp.0, variant, &files);
        let split_files = [(Split::Train, &files[..files.len() - 1]), (Split::Test, &files[files.len() - 1..])];
        for (split, expected) in split_files {
            let ds = load_cifar(&tmp.0, variant, split, Checksum::SizeOnly).unwrap();
            assert_split(&ds, expected);
            assert_eq!(ds.class_names().unwrap().len(), variant.num_classes());
        }
        // With both layouts present, the binary one is read.
        let mut other = synth_files(&counts, variant.num_classes());
        other.iter_mut().for_each(|f| f.labels.iter_mut().for_each(|l| *l = 0));
        write_binary(&tmp.0, variant, &other);
        let ds = load_cifar(&tmp.0, variant, Split::Test, Checksum::SizeOnly).unwrap();
        assert!(ds.labels().iter().all(|&l| l == 0));
    }
}

// ---------------------------------------------------------------- CIFAR, Python-written fixtures

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cifar").join(name)
}

#[test]
fn pickles_written_by_python_parse() {
    for name in ["c10_batch_py2.pkl", "c10_batch_py3_p2.pkl", "c10_batch_py3_p4.pkl"] {
        let path = fixture(name);
        let v = pickle::parse(&fs::read(&path).unwrap(), &path).unwrap();
        let Some(Value::Array(a)) = v.get("data") else { panic!("{name}: no data array") };
        assert_eq!(a.shape, vec![3, 3072], "{name}");
        let expected: Vec<u8> = (0..3).flat_map(planes).collect();
        assert_eq!(&a.data[..], &expected[..], "{name}");
        let labels = v.get("labels").and_then(Value::items).unwrap();
        assert_eq!(labels, &[Value::Int(6), Value::Int(9), Value::Int(3)], "{name}");
        assert_eq!(v.get("batch_label").and_then(Value::text_bytes), Some(&b"training batch 1 of 5"[..]), "{name}");
        assert_eq!(v.get("filenames").and_then(Value::items).map(<[Value]>::len), Some(3), "{name}");
    }
}

#[test]
fn cifar_python_layouts_from_python_written_files() {
    let tmp = TempDir::new("fixtures");
    let dir = tmp.0.join("cifar-10-batches-py");
    fs::create_dir_all(&dir).unwrap();
    let batches = ["c10_batch_py2.pkl", "c10_batch_py3_p2.pkl", "c10_batch_py3_p4.pkl", "c10_batch_py2.pkl", "c10_batch_py3_p2.pkl"];
    for (i, name) in batches.iter().enumerate() {
        fs::copy(fixture(name), dir.join(format!("data_batch_{}", i + 1))).unwrap();
    }
    fs::copy(fixture("c10_batch_py3_p4.pkl"), dir.join("test_batch")).unwrap();
    fs::copy(fixture("c10_meta_py2.pkl"), dir.join("batches.meta")).unwrap();
    let train = load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::SizeOnly).unwrap();
    assert_eq!(train.labels(), &[6, 9, 3].repeat(5)[..]);
    for i in 0..15 {
        assert_image(&train, i, i % 3);
    }
    assert_eq!(train.class_names().unwrap(), &C10_NAMES.map(String::from)[..]);
    assert_eq!(load_cifar(&tmp.0, Cifar10, Split::Test, Checksum::SizeOnly).unwrap().labels(), &[6, 9, 3]);

    let dir = tmp.0.join("cifar-100-python");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(fixture("c100_train_py2.pkl"), dir.join("train")).unwrap();
    fs::copy(fixture("c100_train_py2.pkl"), dir.join("test")).unwrap();
    fs::copy(fixture("c100_meta_py2.pkl"), dir.join("meta")).unwrap();
    let train = load_cifar(&tmp.0, Cifar100, Split::Train, Checksum::SizeOnly).unwrap();
    assert_eq!((train.labels(), train.num_classes()), (&[19, 29, 0][..], 100));
    assert_image(&train, 2, 2);
    assert_eq!(train.class_names().unwrap(), &c100_names("fine", 100)[..]);
}

// ---------------------------------------------------------------- CIFAR, failures

#[test]
fn missing_release_directory_lists_what_was_looked_for() {
    let tmp = TempDir::new("missing-dir");
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar100, Split::Train, Checksum::Official).unwrap_err());
    assert_eq!(path, tmp.0);
    assert!(reason.contains("cifar-100-binary") && reason.contains("cifar-100-python"), "{reason}");
    assert!(reason.contains("`cifar100-binary` archive") && reason.contains("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"), "{reason}");
    // The library names no command-line flag or script (the binary adds those).
    assert!(!reason.contains("--") && !reason.contains("scripts/"), "{reason}");
}

#[test]
fn missing_truncated_or_corrupt_binary_files_are_named() {
    let tmp = TempDir::new("bad-bin");
    let files = synth_files(&[2, 2, 2, 2, 2, 2], 10);
    let dir = write_binary(&tmp.0, Cifar10, &files);

    // Official policy: the synthetic files do not have the official size.
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::Official).unwrap_err());
    assert_eq!(path, dir.join("data_batch_1.bin"));
    assert!(reason.contains("6146 bytes, but the official file has 30730000"), "{reason}");
    assert!(reason.contains("`cifar10-binary` archive") && reason.contains("creates cifar-10-batches-bin"), "{reason}");

    // Official size, wrong content: the MD5 says so.
    fs::write(dir.join("data_batch_1.bin"), vec![0u8; 30_730_000]).unwrap();
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::Official).unwrap_err());
    assert_eq!(path, dir.join("data_batch_1.bin"));
    assert!(reason.contains("MD5") && reason.contains("5dd7e06a14cb22eb9f671a540d1b7c25"), "{reason}");
    fs::write(dir.join("data_batch_1.bin"), bin_records(&files[0], Cifar10)).unwrap();

    // A partial record.
    let whole = bin_records(&files[1], Cifar10);
    fs::write(dir.join("data_batch_2.bin"), &whole[..whole.len() - 100]).unwrap();
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::SizeOnly).unwrap_err());
    assert_eq!(path, dir.join("data_batch_2.bin"));
    assert!(reason.contains("not a whole") && reason.contains("truncated"), "{reason}");
    fs::write(dir.join("data_batch_2.bin"), &whole).unwrap();

    // A label outside 0..10.
    let mut bad = bin_records(&files[2], Cifar10);
    bad[3073] = 10;
    fs::write(dir.join("data_batch_3.bin"), bad).unwrap();
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::SizeOnly).unwrap_err());
    assert_eq!(path, dir.join("data_batch_3.bin"));
    assert!(reason.contains("image 1 has label 10"), "{reason}");

    // A missing file.
    fs::remove_file(dir.join("test_batch.bin")).unwrap();
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Test, Checksum::SizeOnly).unwrap_err());
    assert_eq!(path, dir.join("test_batch.bin"));
    assert!(reason.contains("missing"), "{reason}");

    // Class names that do not match the class count.
    fs::write(dir.join("batches.meta.txt"), C10_NAMES[..9].join("\n")).unwrap();
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::SizeOnly).unwrap_err());
    assert_eq!(path, dir.join("batches.meta.txt"));
    assert!(reason.contains("9 class names, expected 10"), "{reason}");
}

#[test]
fn truncated_or_malformed_pickles_are_named() {
    let tmp = TempDir::new("bad-py");
    let files = synth_files(&[2, 2, 2, 2, 2, 2], 10);
    let dir = write_python(&tmp.0, Cifar10, &files);

    // The writer reproduces the official batches.meta byte for byte (same keys, same order,
    // same cPickle opcodes), so it passes the official check; the synthetic batches do not.
    assert_eq!(md5_file(&dir.join("batches.meta")).unwrap(), "5ff9c542aee3614f3951f8cda6e48888");
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::Official).unwrap_err());
    assert_eq!(path, dir.join("data_batch_1"));
    assert!(reason.contains("bytes, but the official file has 31035704"), "{reason}");

    let whole = batch_pickle(&files[0], Cifar10);
    fs::write(dir.join("data_batch_1"), &whole[..whole.len() / 2]).unwrap();
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::SizeOnly).unwrap_err());
    assert_eq!(path, dir.join("data_batch_1"));
    assert!(reason.contains("truncated") && reason.contains("cifar-10-python.tar.gz"), "{reason}");

    // Labels and images that do not pair up.
    let mut short = synth(0, 2, 10);
    short.labels.pop();
    fs::write(dir.join("data_batch_1"), batch_pickle(&short, Cifar10)).unwrap();
    let (path, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::SizeOnly).unwrap_err());
    assert_eq!(path, dir.join("data_batch_1"));
    assert!(reason.contains("2 images but 1 labels"), "{reason}");

    // A pickle that is not a CIFAR batch.
    fs::write(dir.join("data_batch_1"), meta_pickle(Cifar10)).unwrap();
    let (_, reason) = data_err(load_cifar(&tmp.0, Cifar10, Split::Train, Checksum::SizeOnly).unwrap_err());
    assert!(reason.contains("no uint8 array `data`"), "{reason}");
}

#[test]
fn md5_file_streams() {
    let tmp = TempDir::new("md5");
    let p = tmp.0.join("f");
    fs::write(&p, b"abc").unwrap();
    assert_eq!(md5_file(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    let big: Vec<u8> = (0..3_000_017u32).map(|i| (i * 31 % 251) as u8).collect();
    fs::write(&p, &big).unwrap();
    assert_eq!(md5_file(&p).unwrap(), format!("{:x}", Md5::digest(&big)));
    assert!(matches!(md5_file(&tmp.0.join("absent")), Err(ProcoError::Io { .. })));
}

#[test]
fn official_table_is_consistent_with_the_archives() {
    for r in OFFICIAL_RELEASES {
        let archive = OFFICIAL_ARCHIVES.iter().find(|a| a.0 == r.archive).unwrap();
        assert_eq!(archive.3, r.dir);
        assert_eq!(*official_release(r.variant, r.layout), r);
        let record = match r.variant {
            Cifar10 => 3073,
            Cifar100 => 3074,
        };
        for f in r.train.iter().chain(r.test) {
            let md5 = f.md5.unwrap();
            assert!(md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit()), "{}", f.name);
            if r.layout == Layout::Binary {
                assert_eq!(f.size.unwrap() % record, 0, "{}", f.name);
            }
        }
        let images: u64 = r.train.iter().map(|f| f.size.unwrap_or(0) / record).sum();
        assert!(r.layout == Layout::Python || images == 50_000);
    }
}

// ---------------------------------------------------------------- the real CIFAR-10

#[test]
fn real_cifar10_binary_release() {
    let data_dir = std::env::var_os("PROCO_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data"));
    assert!(
        data_dir.join("cifar-10-batches-bin").is_dir(),
        "the real CIFAR-10 is not in {}: run scripts/fetch-cifar10.sh (or set PROCO_DATA_DIR)",
        data_dir.join("cifar-10-batches-bin").display()
    );
    let batches = |names: &[&str]| -> Vec<u8> { names.iter().flat_map(|f| fs::read(data_dir.join("cifar-10-batches-bin").join(f)).unwrap()).collect() };
    let train_files = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
    for (split, n, raw) in [(Split::Train, 50_000, batches(&train_files)), (Split::Test, 10_000, batches(&["test_batch.bin"]))] {
        let ds = load_cifar(&data_dir, Cifar10, split, Checksum::Official).unwrap();
        assert_eq!(ds.len(), n);
        // Every label and, for a spread of images, every pixel, against the records as the
        // format defines them (1 label byte, then the R, G and B planes of 32 x 32 bytes).
        assert_eq!(raw.len(), n * 3073);
        let labels: Vec<i64> = raw.chunks_exact(3073).map(|r| i64::from(r[0])).collect();
        assert_eq!(ds.labels().iter().map(|&l| l as i64).collect::<Vec<_>>(), labels);
        for i in (0..n).step_by(997) {
            let (record, img) = (&raw[i * 3073 + 1..(i + 1) * 3073], ds.image(i).unwrap());
            for (k, p) in img.pixels().enumerate() {
                assert_eq!(p.0, [record[k], record[1024 + k], record[2048 + k]], "image {i} pixel {k}");
            }
        }
        let mut counts = [0usize; 10];
        ds.labels().iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [n / 10; 10]);
        assert_eq!(ds.class_names().unwrap(), &C10_NAMES.map(String::from)[..]);
    }
}

// ---------------------------------------------------------------- image folders

fn solid(path: &Path, rgb: [u8; 3], w: u32, h: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
}

#[test]
fn image_folder_orders_like_torchvision() {
    let tmp = TempDir::new("folder");
    let root = &tmp.0;
    solid(&root.join("cat/b.png"), [10, 20, 30], 4, 3);
    solid(&root.join("cat/a.jpg"), [200, 100, 50], 16, 16);
    solid(&root.join("cat/sub/c.PNG"), [1, 2, 3], 2, 2);
    solid(&root.join("ant/z.jpeg"), [0, 255, 0], 8, 8);
    fs::write(root.join("cat/notes.txt"), "not an image").unwrap();
    fs::write(root.join("readme.txt"), "ignored").unwrap();
    let ds = ImageFolder::open(root).unwrap();
    assert_eq!(ds.class_names().unwrap(), &["ant".to_string(), "cat".to_string()]);
    let files: Vec<_> = (0..ds.len()).map(|i| ds.path(i).strip_prefix(root).unwrap().to_path_buf()).collect();
    assert_eq!(files, ["ant/z.jpeg", "cat/a.jpg", "cat/b.png", "cat/sub/c.PNG"].map(PathBuf::from));
    assert_eq!((0..4).map(|i| ds.label(i)).collect::<Vec<_>>(), [0, 1, 1, 1]);
    let png = ds.image(2).unwrap();
    assert_eq!((png.dimensions(), png.get_pixel(3, 2).0), ((4, 3), [10, 20, 30]));
    let jpg = ds.image(1).unwrap();
    assert_eq!(jpg.dimensions(), (16, 16));
    assert!(jpg.get_pixel(5, 5).0.iter().zip([200, 100, 50]).all(|(&a, b)| a.abs_diff(b) <= 4), "{:?}", jpg.get_pixel(5, 5));
}

#[test]
fn image_folder_failures_name_the_path() {
    let tmp = TempDir::new("folder-bad");
    let root = &tmp.0;
    let (path, _) = data_err(ImageFolder::open(root).unwrap_err());
    assert_eq!(&path, root);
    solid(&root.join("a/x.png"), [1, 1, 1], 1, 1);
    fs::create_dir_all(root.join("b")).unwrap();
    let (path, reason) = data_err(ImageFolder::open(root).unwrap_err());
    assert_eq!((path, reason.contains("without images")), (root.join("b"), true));
    fs::write(root.join("b/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let ds = ImageFolder::open(root).unwrap();
    match ds.image(1).unwrap_err() {
        ProcoError::Image { path, listed_at: None, problem } => {
            assert_eq!(path, root.join("b/broken.png"));
            assert!(matches!(problem, ImageProblem::Truncated | ImageProblem::Corrupt(_)), "{problem:?}");
        }
        other => panic!("not an image error: {other}"),
    }
    assert!(matches!(ImageFolder::open(&root.join("absent")), Err(ProcoError::Io { .. })));
    // A format torchvision would load but we do not decode is an error, not a silent skip.
    fs::write(root.join("b/photo.WEBP"), b"RIFF").unwrap();
    let (path, reason) = data_err(ImageFolder::open(root).unwrap_err());
    assert_eq!(path, root.join("b/photo.WEBP"));
    assert!(reason.contains("not supported"), "{reason}");
}

// ---------------------------------------------------------------- list files

#[test]
fn list_file_reads_paths_and_labels() {
    let tmp = TempDir::new("list");
    let root = tmp.0.join("root");
    solid(&root.join("a/x.png"), [9, 8, 7], 3, 3);
    solid(&root.join("b c/y.jpg"), [50, 50, 50], 8, 8);
    std::os::unix::fs::symlink(root.join("a"), root.join("inner")).unwrap();
    let list = tmp.0.join("train.txt");
    fs::write(&list, "a/x.png 0\n\n  b c/y.jpg\t4 \r\n./inner/x.png 1\n").unwrap();
    let ds = ListFileDataset::open(&list, &root).unwrap();
    assert_eq!((ds.len(), ds.num_classes()), (3, 5));
    assert_eq!((0..3).map(|i| ds.label(i)).collect::<Vec<_>>(), [0, 4, 1]);
    assert_eq!(ds.image(0).unwrap().get_pixel(2, 2).0, [9, 8, 7]);
    assert_eq!(ds.image(1).unwrap().dimensions(), (8, 8));
    assert_eq!(ds.image(2).unwrap().get_pixel(0, 0).0, [9, 8, 7]);
}

#[test]
fn list_file_refuses_malformed_lines_and_escaping_paths() {
    let tmp = TempDir::new("list-bad");
    let root = tmp.0.join("root");
    solid(&root.join("a/x.png"), [1, 2, 3], 2, 2);
    solid(&tmp.0.join("outside/z.png"), [4, 5, 6], 2, 2);
    let list = tmp.0.join("list.txt");
    let cases = [
        ("a/x.png 0\na/x.png\n", "line 2: expected `relative/path label`"),
        ("a/x.png -1\n", "line 1: label \"-1\" is not a non-negative integer"),
        ("a/x.png 0\n\n/etc/hostname 0\n", "line 3: path /etc/hostname leaves the root"),
        ("a/../../outside/z.png 0\n", "line 1: path a/../../outside/z.png leaves the root"),
        ("\n  \n", "the list has no entries"),
        ("a/x.png 4294967295\n", "beyond the supported"),
    ];
    for (text, message) in cases {
        fs::write(&list, text).unwrap();
        let (path, reason) = data_err(ListFileDataset::open(&list, &root).unwrap_err());
        assert_eq!(path, list);
        assert!(reason.contains(message), "{text:?}: {reason}");
    }

    // A symbolic link out of the root passes the list check but is refused when read.
    std::os::unix::fs::symlink(tmp.0.join("outside"), root.join("link")).unwrap();
    fs::write(&list, "a/x.png 0\nlink/z.png 1\na/missing.png 0\n").unwrap();
    let ds = ListFileDataset::open(&list, &root).unwrap();
    assert!(ds.image(0).is_ok());
    let err = ds.image(1).unwrap_err();
    let message = err.to_string();
    match err {
        ProcoError::Image { path, listed_at: Some(at), problem: ImageProblem::OutsideRoot { .. } } => {
            assert_eq!(path, fs::canonicalize(&root).unwrap().join("link/z.png"));
            assert!(at.ends_with("list.txt:2"), "{at}");
            assert!(message.contains("outside the dataset root") && message.contains("list.txt:2"), "{message}");
        }
        other => panic!("not an outside-root error: {other}"),
    }
    assert!(matches!(ds.image(2), Err(ProcoError::Image { path, listed_at: Some(at), problem: ImageProblem::Missing }) if path.ends_with("a/missing.png") && at.ends_with("list.txt:3")));
}

#[test]
fn val_folders_take_the_training_labels_by_name() {
    let tmp = TempDir::new("folder-classes");
    for class in ["ant", "bee", "cat"] {
        solid(&tmp.0.join("train").join(class).join("a.png"), [1, 2, 3], 2, 2);
    }
    // val lacks `ant`: its `bee` and `cat` must keep the training labels 1 and 2.
    solid(&tmp.0.join("val/bee/x.png"), [4, 5, 6], 2, 2);
    solid(&tmp.0.join("val/cat/y.png"), [7, 8, 9], 2, 2);
    let train = ImageFolder::open(&tmp.0.join("train")).unwrap();
    let classes = train.class_names().unwrap().to_vec();
    let val = ImageFolder::open_with_classes(&tmp.0.join("val"), &classes).unwrap();
    assert_eq!((val.len(), val.num_classes()), (2, 3));
    assert_eq!((val.label(0), val.label(1)), (1, 2));
    // A class that training does not have is refused, naming its directory.
    solid(&tmp.0.join("val/dog/z.png"), [1, 1, 1], 2, 2);
    let (path, reason) = data_err(ImageFolder::open_with_classes(&tmp.0.join("val"), &classes).unwrap_err());
    assert_eq!(path, tmp.0.join("val/dog"));
    assert!(reason.contains("not one of the 3 training classes"), "{reason}");
}

#[test]
fn a_val_list_without_the_last_class_takes_the_training_class_count() {
    let tmp = TempDir::new("list-classes");
    solid(&tmp.0.join("a.png"), [1, 2, 3], 2, 2);
    let list = tmp.0.join("val.txt");
    fs::write(&list, "a.png 0\na.png 1\n").unwrap();
    let val = ListFileDataset::open(&list, &tmp.0).unwrap();
    assert_eq!(val.num_classes(), 2, "from its own labels");
    let val = val.with_num_classes(5).unwrap();
    assert_eq!((val.num_classes(), proco::data::class_counts(&val)), (5, vec![1, 1, 0, 0, 0]));
    let err = ListFileDataset::open(&list, &tmp.0).unwrap().with_num_classes(1).unwrap_err().to_string();
    assert!(err.contains("line 2: label 1 is outside the 1 classes"), "{err}");
}
