//! Every parser of user files under random, truncated and mutated input: the CIFAR binary and
//! python batch readers, the pickle reader, the list-file parser and the recipe TOML. Whatever
//! the bytes, each returns a value that satisfies its invariants or a typed error naming the
//! file; never a panic.
//!
//! A few hundred cases per property run by default; `PROCO_FUZZ_CASES=10000 ./scripts/test.sh`
//! (or `./scripts/test.sh --fuzz`) runs 10,000 or more each.

use std::path::{Path, PathBuf};

use proco::data::cifar::{decode_batch, CifarVariant, Layout, IMAGE_BYTES};
use proco::data::list_file::ListFileDataset;
use proco::data::{pickle, Dataset};
use proco::train::Recipe;
use proco::ProcoError;
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per property: `PROCO_FUZZ_CASES`, default 300; a value that is not a positive
/// integer fails the tests rather than silently running the default.
fn cases() -> u32 {
    match std::env::var("PROCO_FUZZ_CASES") {
        Ok(v) => v.trim().parse().ok().filter(|&n| n > 0).unwrap_or_else(|| panic!("PROCO_FUZZ_CASES={v:?} is not a positive integer")),
        Err(_) => 300,
    }
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cifar").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One edit of a byte string: overwrite, flip bits, insert or delete at a position.
#[derive(Debug, Clone)]
enum Edit {
    Set(Index, u8),
    Xor(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), 1..=255u8).prop_map(|(i, b)| Edit::Xor(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
    ];
    prop::collection::vec(edit, 1..8)
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            bytes.push(0);
        }
        match *e {
            Edit::Set(ref i, b) => {
                let k = i.index(bytes.len());
                bytes[k] = b;
            }
            Edit::Xor(ref i, b) => {
                let k = i.index(bytes.len());
                bytes[k] ^= b;
            }
            Edit::Insert(ref i, b) => {
                let k = i.index(bytes.len() + 1);
                bytes.insert(k, b);
            }
            Edit::Delete(ref i) => {
                let k = i.index(bytes.len());
                bytes.remove(k);
            }
        }
    }
    bytes
}

/// Random bytes, a truncation of a valid input, or a mutation of one.
fn around(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let pick = prop::sample::select(valid);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        (pick.clone(), any::<Index>()).prop_map(|(v, i)| v[..i.index(v.len() + 1)].to_vec()),
        (pick, edits()).prop_map(|(v, e)| mutate(v, &e)),
    ]
}

/// A binary CIFAR batch of `n` records with labels below `classes`.
fn binary_batch(variant: CifarVariant, n: usize) -> Vec<u8> {
    let label_bytes = if variant == CifarVariant::Cifar10 { 1 } else { 2 };
    let mut out = Vec::new();
    for i in 0..n {
        out.extend((0..label_bytes).map(|k| ((i + k) % 10) as u8));
        out.extend((0..IMAGE_BYTES).map(|j| ((i * 31 + j * 7) % 256) as u8));
    }
    out
}

fn path() -> PathBuf {
    PathBuf::from("fuzzed/input.bin")
}

/// A decoded batch is a dataset of 32 x 32 images with labels in range; a failure is
/// `ProcoError::Data` naming the file.
fn check_batch(bytes: &[u8], variant: CifarVariant, layout: Layout) -> Result<(), TestCaseError> {
    match decode_batch(bytes, &path(), variant, layout) {
        Ok(ds) => {
            prop_assert!(ds.len() > 0);
            prop_assert_eq!(ds.image_size(), (32, 32));
            prop_assert!((0..ds.len()).all(|i| ds.label(i) < variant.num_classes()));
        }
        Err(ProcoError::Data { path: p, reason }) => prop_assert!(p == path() && !reason.is_empty()),
        Err(other) => prop_assert!(false, "untyped failure: {other}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cifar_binary_reader(bytes in around(vec![binary_batch(CifarVariant::Cifar10, 1), binary_batch(CifarVariant::Cifar10, 3)]),
                           bytes100 in around(vec![binary_batch(CifarVariant::Cifar100, 2)])) {
        check_batch(&bytes, CifarVariant::Cifar10, Layout::Binary)?;
        check_batch(&bytes100, CifarVariant::Cifar100, Layout::Binary)?;
    }

    #[test]
    fn cifar_python_reader(bytes in around(vec![fixture("c10_batch_py2.pkl"), fixture("c10_batch_py3_p2.pkl"), fixture("c10_batch_py3_p4.pkl")]),
                           bytes100 in around(vec![fixture("c100_train_py2.pkl")])) {
        check_batch(&bytes, CifarVariant::Cifar10, Layout::Python)?;
        check_batch(&bytes100, CifarVariant::Cifar100, Layout::Python)?;
    }

    #[test]
    fn pickle_reader(bytes in around(vec![fixture("c10_batch_py2.pkl"), fixture("c10_batch_py3_p4.pkl"), fixture("c10_meta_py2.pkl"), fixture("c100_meta_py2.pkl")])) {
        match pickle::parse(&bytes, &path()) {
            Ok(_) => {}
            Err(ProcoError::Data { path: p, reason }) => prop_assert!(p == path() && !reason.is_empty()),
            Err(other) => prop_assert!(false, "untyped failure: {other}"),
        }
    }

    #[test]
    fn list_file_parser(bytes in around(vec![b"a/x.png 0\nb c/y.jpg\t4 \r\n\n./inner/x.png 1\n".to_vec(), b"train/n01440764/a.JPEG 0\n".to_vec()])) {
        let root = std::env::temp_dir();
        let list = PathBuf::from("fuzzed/list.txt");
        match ListFileDataset::from_bytes(&bytes, &list, &root) {
            Ok(ds) => {
                prop_assert!(ds.len() > 0);
                prop_assert!((0..ds.len()).all(|i| ds.label(i) < ds.num_classes()));
            }
            Err(ProcoError::Data { path: p, reason }) => prop_assert!(p == list && !reason.is_empty()),
            Err(other) => prop_assert!(false, "untyped failure: {other}"),
        }
    }

    #[test]
    fn recipe_toml(bytes in around(vec![
        Recipe::preset("cifar10-lt-if100").unwrap().to_toml().unwrap().into_bytes(),
        b"lr = 0.1\nmilestones = [80, 90]\nlimit = 500\nlr_decay = \"cosine\"\n".to_vec(),
    ])) {
        let text = String::from_utf8_lossy(&bytes);
        let base = Recipe::preset("cifar100-lt-if100").unwrap();
        for parsed in [Recipe::from_toml(&text), base.merge_toml(&text)] {
            match parsed {
                Ok(r) => prop_assert!(r.validate().is_ok()),
                Err(ProcoError::InvalidConfig { reason }) => prop_assert!(!reason.is_empty()),
                Err(other) => prop_assert!(false, "untyped failure: {other}"),
            }
        }
    }
}
