//! The real ImageNet-LT test / val and iNaturalist 2018 val lists (the files the authors'
//! repository ships, gzipped in tests/data/lists; see its README), parsed without the images:
//! every line, the classes, the per-class counts, and the shot groups of each split against a
//! training histogram.

use std::io::Read;
use std::path::{Path, PathBuf};

use proco::data::list_file::ListFileDataset;
use proco::data::long_tail::ShotGroups;
use proco::data::Dataset;

fn list(name: &str) -> (Vec<u8>, PathBuf) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lists").join(format!("{name}.gz"));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_end(&mut bytes).unwrap();
    (bytes, PathBuf::from(name))
}

/// Parses a list and checks it line by line against an independent reading of the text.
fn parse(name: &str) -> ListFileDataset {
    let (bytes, path) = list(name);
    let ds = ListFileDataset::from_bytes(&bytes, &path, &std::env::temp_dir()).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(ds.len(), lines.len(), "{name}");
    for (i, line) in lines.iter().enumerate() {
        let (p, l) = line.trim().rsplit_once(' ').unwrap();
        assert_eq!((ds.listed_path(i), ds.label(i)), (p, l.parse::<usize>().unwrap()), "{name} line {}", i + 1);
    }
    ds
}

/// The class counts of a split, asserting that every class has exactly `per_class` images.
fn balanced(ds: &ListFileDataset, classes: usize, per_class: usize) {
    assert_eq!(ds.num_classes(), classes);
    let counts = proco::data::class_counts(ds);
    assert_eq!(counts.len(), classes);
    if let Some((j, n)) = counts.iter().enumerate().find(|(_, &n)| n != per_class) {
        panic!("class {j} has {n} images, not {per_class}");
    }
}

/// A long-tailed training histogram over `classes` classes from `max` down to `min` images
/// (the exponential profile; ImageNet-LT's is 1,280 to 5, iNaturalist's 1,000 to 2).
fn histogram(classes: usize, max: f64, min: f64) -> Vec<usize> {
    (0..classes).map(|j| (max * (min / max).powf(j as f64 / (classes - 1) as f64)).round() as usize).collect()
}

/// Checks `images_per_group` on a balanced split: each group holds `per_class` images per
/// class of that group, whatever the label order.
fn shot_groups(ds: &ListFileDataset, train: &[usize], per_class: usize) {
    let classes = ShotGroups::from_counts(train);
    let images = ShotGroups::images_per_group(train, (0..ds.len()).map(|i| ds.label(i)));
    assert_eq!((images.many, images.medium, images.few), (classes.many * per_class, classes.medium * per_class, classes.few * per_class));
    assert!(classes.many > 0 && classes.medium > 0 && classes.few > 0, "{classes:?}");
}

#[test]
fn imagenet_lt_test_and_val_lists() {
    let test = parse("ImageNet_LT_test.txt");
    assert_eq!(test.len(), 50_000);
    balanced(&test, 1000, 50);
    assert!(test.listed_path(0).starts_with("val/n01440764/ILSVRC2012_val_"));
    let val = parse("ImageNet_LT_val.txt");
    assert_eq!(val.len(), 20_000);
    balanced(&val, 1000, 20);
    assert!(val.listed_path(0).starts_with("train/n01440764/"));
    let train = histogram(1000, 1280.0, 5.0);
    shot_groups(&test, &train, 50);
    shot_groups(&val, &train, 20);
    // The lists agree on the classes: the same synset directory for every label.
    let synset = |ds: &ListFileDataset, i: usize| ds.listed_path(i).split('/').nth(1).unwrap().to_string();
    let mut by_label = vec![String::new(); 1000];
    (0..test.len()).for_each(|i| by_label[test.label(i)] = synset(&test, i));
    assert!((0..val.len()).all(|i| by_label[val.label(i)] == synset(&val, i)));
}

#[test]
fn inaturalist_2018_val_list() {
    let val = parse("iNaturalist18_val.txt");
    assert_eq!(val.len(), 24_426);
    balanced(&val, 8142, 3);
    // The label is the species directory of the path.
    assert!((0..val.len()).all(|i| val.listed_path(i).split('/').nth(2).unwrap().parse::<usize>().unwrap() == val.label(i)));
    shot_groups(&val, &histogram(8142, 1000.0, 2.0), 3);
    // A val split checked against the training classes: all 8,142 fit, 8,000 do not.
    assert!(val.clone().with_num_classes(8142).is_ok());
    let err = val.with_num_classes(8000).unwrap_err().to_string();
    assert!(err.contains("iNaturalist18_val.txt") && err.contains("is outside the 8000 classes"), "{err}");
}
