//! `proco data show` and `proco data fetch` through the real binary.


mod support;
use support::{data_dir, proco};

#[test]
fn show_prints_the_histogram_and_draws_it() {
    use proco::data::cifar::{load_cifar, Checksum, CifarVariant, Split};
    use proco::data::long_tail::{long_tailed, LongTailProfile, Shot};
    use proco::data::Dataset;
    use proco::plot::{MARGIN, PALETTE, SIZE};

    let png = std::env::temp_dir().join(format!("proco-hist-{}.png", std::process::id()));
    let data = data_dir();
    let out = proco(&["data", "show", "--dataset", "cifar10", "--imbalance", "100", "--data-dir", data.to_str().unwrap(), "--png", png.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // What the library selects is what the command prints and draws.
    let train = std::sync::Arc::new(load_cifar(&data, CifarVariant::Cifar10, Split::Train, Checksum::Official).unwrap());
    let (subset, counts) = long_tailed(train.clone(), LongTailProfile::Exponential, 100.0, 0).unwrap();
    assert!(text.contains(&format!("{} images in {} classes", subset.len(), counts.len())), "{text}");
    let names = train.class_names().expect("CIFAR-10 has class names");
    for (c, &n) in counts.iter().enumerate() {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(&c.to_string())).unwrap_or_else(|| panic!("no line for class {c}: {text}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((fields[1], fields[2]), (names[c].as_str(), n.to_string().as_str()), "{line}");
    }
    let shots = |s: Shot| counts.iter().filter(|&&n| Shot::of(n) == s).count();
    let groups = format!("many-shot (>100): {} classes, medium (20-100): {}, few (<20): {}", shots(Shot::Many), shots(Shot::Medium), shots(Shot::Few));
    assert!(text.contains(&groups), "{text}");

    // The PNG: one bar per class in its shot group's colour, its top at log10(n) of the axis.
    let img = image::open(&png).unwrap().to_rgb8();
    std::fs::remove_file(&png).unwrap();
    assert_eq!((img.width() as i64, img.height() as i64), SIZE);
    let (l, r, t, b) = MARGIN;
    let (pw, ph) = ((SIZE.0 - l - r) as f64, (SIZE.1 - t - b) as f64);
    let decades = (*counts.iter().max().unwrap() as f64).log10().ceil();
    let slot = pw / counts.len() as f64;
    for (c, &n) in counts.iter().enumerate() {
        let colour = PALETTE[match Shot::of(n) { Shot::Many => 0, Shot::Medium => 1, Shot::Few => 2 }];
        let x = (l as f64 + (c as f64 + 0.4) * slot) as u32;
        let top = (t as u32..(SIZE.1 - b) as u32).find(|&y| img.get_pixel(x, y) == &colour).unwrap_or_else(|| panic!("class {c}: no bar"));
        assert_eq!(img.get_pixel(x, (SIZE.1 - b - 1) as u32), &colour, "class {c}: the bar reaches the axis");
        let want = t as f64 + ph * (1.0 - (n as f64).log10() / decades);
        assert!((top as f64 - want).abs() <= 1.0, "class {c} ({n} images): bar top at row {top}, expected {want:.1}");
    }
}

#[test]
fn fetch_names_the_known_archives() {
    let out = proco(&["data", "fetch", "--archive", "cifar1000", "--data-dir", "/nonexistent"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cifar10-binary") && err.contains("cifar100-python"), "{err}");
}
