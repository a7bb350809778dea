//! A list of iNaturalist 2018's training size (437,513 lines, 8,142 classes, paths shaped like
//! the real `train_val2018/<kingdom>/<class>/<32 hex>.jpg`) loads in bounded memory: the peak
//! resident set while it is read stays within twice the list's size on disk above what the
//! process held before. Alone in its test binary, so no other test allocates meanwhile.

use std::io::Write;

use proco::data::list_file::ListFileDataset;
use proco::data::Dataset;

/// (VmRSS, VmHWM) of this process in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in /proc/self/status"));
        line[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const LINES: usize = 437_513;
const CLASSES: usize = 8_142;

#[test]
fn an_inaturalist_sized_list_loads_within_twice_its_size() {
    let dir = std::env::temp_dir().join(format!("proco-list-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("iNaturalist18_train.txt");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let kingdoms = ["Plantae", "Insecta", "Aves", "Reptilia", "Mammalia", "Fungi", "Amphibia", "Mollusca", "Animalia", "Arachnida", "Actinopterygii", "Chromista", "Protozoa", "Bacteria"];
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..LINES {
            // Every class at least twice, the rest spread long-tailed over the labels.
            let c = if i < 2 * CLASSES { i % CLASSES } else { ((i as f64 / LINES as f64).powi(3) * CLASSES as f64) as usize % CLASSES };
            h = h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            writeln!(out, "train_val2018/{}/{c}/{:016x}{:016x}.jpg {c}", kingdoms[c % kingdoms.len()], h, h.rotate_left(29)).unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    // Reset the peak to the current resident set (Linux: write 5 to clear_refs).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (baseline, _) = memory();
    let ds = ListFileDataset::open(&path, &dir).unwrap();
    let (_, peak) = memory();
    let above = peak.saturating_sub(baseline);
    eprintln!(
        "list {:.1} MB on disk; peak {:.1} MB above the baseline ({:.2}x); the dataset holds {:.1} MB",
        size as f64 / 1e6,
        above as f64 / 1e6,
        above as f64 / size as f64,
        ds.heap_bytes() as f64 / 1e6
    );
    assert_eq!((ds.len(), ds.num_classes()), (LINES, CLASSES));
    assert!(proco::data::class_counts(&ds).iter().all(|&n| n >= 2));
    assert!(above <= 2 * size, "peak {above} bytes above the baseline for a {size}-byte list");
    assert!(ds.heap_bytes() as u64 <= size + 13 * LINES as u64, "the dataset holds {} bytes", ds.heap_bytes());
    let _ = std::fs::remove_dir_all(&dir);
}
