//! What each step of the ImageNet-LT three-view transform costs on one image: decode, the
//! crops, the colour ops, RandAugment and normalisation, in microseconds per call (mean over
//! many calls, one thread), on a JPEG given on the command line or a generated 500 x 375 one.
//!
//! Run: `cargo run --release -p proco --example view_costs -- [image.jpg] [calls]`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Instant;

use image::RgbImage;
use proco::augment::color::adjust_hue;
use proco::augment::enhance::{brightness, color, contrast};
use proco::augment::{normalize_into, ContrastiveView, RandAugment, RandAugmentView, RandomResizedCrop, IMAGENET_MEAN, IMAGENET_STD};
use proco::data::decode::decode_bytes;
use rand::SeedableRng;

fn time<T>(name: &str, calls: usize, mut f: impl FnMut(usize) -> T) {
    let start = Instant::now();
    for i in 0..calls {
        black_box(f(i));
    }
    println!("{name:<34} {:>9.1} us", start.elapsed().as_secs_f64() / calls as f64 * 1e6);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next();
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let bytes = match &path {
        Some(p) => std::fs::read(p).expect("reading the image"),
        None => {
            let img = RgbImage::from_fn(500, 375, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, ((x * y) % 251) as u8]));
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).expect("encoding");
            out
        }
    };
    let img = decode_bytes(&bytes).expect("decoding");
    println!("{} x {}, {} KB, {calls} calls each", img.width(), img.height(), bytes.len() / 1000);
    time("decode", calls, |_| decode_bytes(&bytes));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let crop = RandomResizedCrop::square(NonZeroU32::new(224).expect("224"));
    time("RandomResizedCrop 224", calls, |_| crop.apply(&img, &mut rng));
    let small = crop.apply(&img, &mut rng);
    time("brightness", calls, |_| brightness(&small, 1.2));
    time("contrast", calls, |_| contrast(&small, 0.8));
    time("saturation (ImageEnhance.Color)", calls, |_| color(&small, 1.3));
    time("hue", calls, |i| adjust_hue(&small, 0.05 + (i % 5) as f64 * 0.01));
    let ra = RandAugment::imagenet_lt();
    time("RandAugment n2 m10", calls, |_| ra.apply(&small, &mut rng));
    for op in proco::augment::randaugment::RAND_AUGMENT_OPS {
        for resample in [proco::augment::Resample::Nearest, proco::augment::Resample::Bilinear] {
            let step = proco::augment::RandAugmentStep { op, level: 10.0, negate: false, resample, cutout_u: (0.5, 0.5) };
            time(&format!("  {op:?} {resample:?}"), calls, |_| ra.apply_step(&small, &step));
        }
    }
    let mut buf = vec![0f32; 3 * 224 * 224];
    time("normalize", calls, |_| normalize_into(&small, IMAGENET_MEAN, IMAGENET_STD, &mut buf));
    let view1 = RandAugmentView::imagenet_lt();
    let view2 = ContrastiveView::imagenet();
    time("view 1 (RandAugment view)", calls, |_| view1.apply(&img, &mut rng));
    time("view 2 (contrastive view)", calls, |_| view2.apply(&img, &mut rng));
}
