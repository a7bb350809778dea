//! Bring-your-own images arranged one directory per class (`root/<class>/**/*.jpg`), the layout
//! of torchvision's `ImageFolder`, decoded lazily from disk.

use std::fs;
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::data::decode::{decode_file, decode_file_reduced, DecodedImage};
use crate::data::Dataset;
use crate::error::{ProcoError, Result};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Other extensions torchvision's `ImageFolder` would load; finding one is an error (we do not
/// decode them), because skipping it would shift sample indices against a PyTorch run.
pub const UNSUPPORTED_IMAGE_EXTENSIONS: [&str; 6] = ["ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// Deepest directory nesting searched below a class directory; deeper trees (or a symlink
/// loop) are an error rather than an endless walk.
const MAX_NESTING: usize = 16;

/// Images under `root/<class_name>/`, labelled by class directory.
///
/// Classes are the sub-directories of `root` sorted by name (label i is the i-th), and the
/// samples of a class are its `.jpg` / `.jpeg` / `.png` files (any case) anywhere below it,
/// (a `.bmp`, `.webp`, `.tif` or other file torchvision would load is an error: we do not decode it),
/// sorted by directory then file name: the order of torchvision's `ImageFolder`, so labels and
/// sample indices match a PyTorch run on the same directory. Other files are ignored, as are
/// files directly in `root`. Symbolic links are followed. Only paths are held; `image(i)`
/// decodes the file.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    classes: Vec<String>,
    samples: Vec<(PathBuf, u32)>,
}

impl ImageFolder {
    /// Scans `root`. Fails with [`ProcoError::Data`] if `root` is not a readable directory,
    /// has no class directories, a class directory holds no image, a class name is not UTF-8,
    /// or the tree nests deeper than 16 directories; with [`ProcoError::Io`] on a read error.
    pub fn open(root: &Path) -> Result<Self> {
        let class_dirs = class_directories(root)?;
        if class_dirs.is_empty() {
            let reason = "no class directories: expected root/<class_name>/<image files>".to_string();
            return Err(ProcoError::Data { path: root.to_path_buf(), reason });
        }
        let mut samples = Vec::new();
        for (label, (_, dir)) in (0u32..).zip(&class_dirs) {
            let before = samples.len();
            collect_class(dir, label, &mut samples)?;
            if samples.len() == before {
                let reason = format!("class directory without images (expected files ending in {})", IMAGE_EXTENSIONS.join(", "));
                return Err(ProcoError::Data { path: dir.clone(), reason });
            }
        }
        Ok(Self { classes: class_dirs.into_iter().map(|(name, _)| name).collect(), samples })
    }

    /// Scans `root` (a val or test folder) labelling its class directories by their position
    /// in `classes` (the training folder's classes), so that labels agree with training even
    /// where this split lacks a class. Fails with [`ProcoError::Data`] for a class directory
    /// whose name is not in `classes`, or a split without any image; otherwise as [`Self::open`].
    pub fn open_with_classes(root: &Path, classes: &[String]) -> Result<Self> {
        let mut samples = Vec::new();
        for (name, dir) in class_directories(root)? {
            let Some(label) = classes.iter().position(|c| *c == name) else {
                let reason = format!("class `{name}` is not one of the {} training classes; rename or remove the directory", classes.len());
                return Err(ProcoError::Data { path: dir, reason });
            };
            collect_class(&dir, label as u32, &mut samples)?;
        }
        if samples.is_empty() {
            let reason = format!("no images in class directories (expected root/<class_name>/<files ending in {}>)", IMAGE_EXTENSIONS.join(", "));
            return Err(ProcoError::Data { path: root.to_path_buf(), reason });
        }
        Ok(Self { classes: classes.to_vec(), samples })
    }

    /// Path of sample i (i < len).
    pub fn path(&self, i: usize) -> &Path {
        &self.samples[i].0
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn label(&self, i: usize) -> usize {
        self.samples[i].1 as usize
    }
    fn image(&self, i: usize) -> Result<RgbImage> {
        let path = &self.samples[i].0;
        decode_file(path).map_err(|problem| image_error(path, problem))
    }
    fn image_reduced(&self, i: usize, choose: &dyn Fn(u32, u32) -> u32) -> Result<DecodedImage> {
        let path = &self.samples[i].0;
        decode_file_reduced(path, choose).map_err(|problem| image_error(path, problem))
    }
    fn describe(&self, i: usize) -> String {
        self.samples[i].0.display().to_string()
    }
    fn class_names(&self) -> Option<&[String]> {
        Some(&self.classes)
    }
}

/// The error of an image file that failed to decode.
fn image_error(path: &Path, problem: crate::error::ImageProblem) -> ProcoError {
    ProcoError::Image { path: path.to_path_buf(), listed_at: None, problem }
}

/// The class directories of `root`, sorted by name, with their UTF-8 names.
fn class_directories(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut class_dirs = Vec::new();
    for entry in read_dir_sorted(root)? {
        if entry.is_dir() {
            class_dirs.push((utf8_name(&entry)?, entry));
        }
    }
    Ok(class_dirs)
}

/// Appends the images of one class directory, in torchvision's order, with `label`.
fn collect_class(dir: &Path, label: u32, samples: &mut Vec<(PathBuf, u32)>) -> Result<()> {
    let mut files = Vec::new();
    collect_images(dir, 0, &mut files)?;
    // torchvision sorts os.walk's directories as strings, then file names.
    files.sort_by(|a, b| (a.parent().map(Path::as_os_str), a.file_name()).cmp(&(b.parent().map(Path::as_os_str), b.file_name())));
    samples.extend(files.into_iter().map(|f| (f, label)));
    Ok(())
}

/// Entries of a directory, sorted by name.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| ProcoError::Io { path: dir.to_path_buf(), source };
    let mut entries = fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>().map_err(io)?;
    entries.sort();
    Ok(entries)
}

fn utf8_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .ok_or_else(|| ProcoError::Data { path: path.to_path_buf(), reason: "class directory name is not UTF-8; rename it".into() })
}

/// Adds the image files under `dir` (recursively, following links) to `out`.
fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_NESTING {
        let reason = format!("directories nested more than {MAX_NESTING} deep (a symbolic-link loop?)");
        return Err(ProcoError::Data { path: dir.to_path_buf(), reason });
    }
    for entry in read_dir_sorted(dir)? {
        if entry.is_dir() {
            collect_images(&entry, depth + 1, out)?;
        } else if has_extension(&entry, &UNSUPPORTED_IMAGE_EXTENSIONS) {
            return Err(ProcoError::Data {
                path: entry.clone(),
                reason: format!("image format not supported (only {}); convert it, or move it out of the dataset", IMAGE_EXTENSIONS.join(", ")),
            });
        } else if has_extension(&entry, &IMAGE_EXTENSIONS) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Whether the file name ends in one of `extensions`, in any case.
fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
}
