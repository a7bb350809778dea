//! Typed errors of the library. Each variant says what was wrong and what to do about it.

use proco_vmf::VmfError;

/// Everything that can go wrong in the ProCo library.
#[derive(Debug, thiserror::Error)]
pub enum ProcoError {
    /// Features given to the ProCo loss or the estimator are unusable.
    #[error("invalid features: {reason}; pass an N x p tensor of finite, L2-normalised rows (normalise the projection head's output)")]
    InvalidFeatures {
        /// What was wrong.
        reason: String,
    },
    /// Labels are of the wrong type or shape, or name a class that does not exist.
    #[error("invalid labels: {reason}")]
    InvalidLabels {
        /// What was wrong.
        reason: String,
    },
    /// Images given to a network are of the wrong shape, dtype or device.
    #[error("invalid images: {reason}; pass an N x 3 x H x W tensor of the weights' dtype (f32 unless converted) on the network's device")]
    InvalidImages {
        /// What was wrong.
        reason: String,
    },
    /// A hyper-parameter is outside its domain.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What was wrong.
        reason: String,
    },
    /// The loss produced a non-finite value (diverged training, or broken inputs).
    #[error("non-finite loss ({value}); check the inputs for NaN, then the learning rate (training may have diverged)")]
    NonFiniteLoss {
        /// The loss value.
        value: f64,
    },
    /// Training produced non-finite values; the checkpoints of earlier epochs are untouched.
    #[error("training diverged at epoch {epoch}, step {step}: {what} is non-finite; lower the learning rate or resume from the last checkpoint")]
    Diverged {
        /// 0-based epoch.
        epoch: usize,
        /// 0-based step within the epoch.
        step: usize,
        /// What went non-finite.
        what: String,
    },
    /// A fresh run was asked for in a directory that already holds one.
    #[error("{} already holds a run; resume it or choose another run directory", dir.display())]
    RunExists {
        /// The run directory.
        dir: std::path::PathBuf,
    },
    /// A run was resumed with a recipe other than the one it was started with.
    #[error("the recipe differs from the one saved in {}; resume with the same settings", saved.display())]
    RecipeMismatch {
        /// The saved `recipe.toml`.
        saved: std::path::PathBuf,
    },
    /// A data file or directory is absent, truncated, corrupt or malformed.
    #[error("{}: {reason}", path.display())]
    Data {
        /// The file or directory concerned.
        path: std::path::PathBuf,
        /// What is wrong and what to do about it.
        reason: String,
    },
    /// One image file cannot be used: missing, unreadable, not an image, truncated, corrupt,
    /// too large, or outside the dataset's root.
    #[error("{}{}: {problem}", path.display(), listed_at.as_ref().map(|l| format!(" (listed at {l})")).unwrap_or_default())]
    Image {
        /// The image file.
        path: std::path::PathBuf,
        /// Where a list file names it, as `list.txt:LINE`, when it came from one.
        listed_at: Option<String>,
        /// What is wrong with it.
        problem: ImageProblem,
    },
    /// An I/O error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A vMF computation rejected its input (features, labels and estimator states that
    /// `proco-vmf` refuses arrive as [`ProcoError::InvalidFeatures`],
    /// [`ProcoError::InvalidLabels`] and [`ProcoError::InvalidConfig`]).
    #[error(transparent)]
    Vmf(VmfError),
    /// LibTorch reported an error (device, dtype or shape problem).
    #[error("LibTorch error: {0}")]
    Torch(#[from] tch::TchError),
    /// Data-parallel training could not start or continue: rendezvous, a collective, or
    /// ranks that disagree.
    #[error("rank {rank}: {reason}")]
    Distributed {
        /// This process's rank.
        rank: usize,
        /// What failed, naming the other rank where known, and what to do.
        reason: String,
    },
}

impl ProcoError {
    /// For `map_err`: turns an I/O error on `path` into [`ProcoError::Io`] naming that path.
    pub fn io_at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ProcoError + '_ {
        move |source| ProcoError::Io { path: path.to_path_buf(), source }
    }
}

/// Result alias of the library.
pub type Result<T, E = ProcoError> = std::result::Result<T, E>;

/// What is wrong with one image file ([`ProcoError::Image`]); each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageProblem {
    /// The file does not exist.
    #[error("the file does not exist; restore it or remove it from the dataset")]
    Missing,
    /// The file exists but cannot be read.
    #[error("cannot read the file ({0}); check its permissions")]
    Unreadable(String),
    /// The file is empty or its content is not an image format we decode.
    #[error("not an image (content is not JPEG or PNG); replace it or remove it from the dataset")]
    NotAnImage,
    /// The file ends before the image does.
    #[error("the image data is truncated (an interrupted copy or download?); fetch the file again")]
    Truncated,
    /// The decoder rejected the data.
    #[error("cannot decode the image ({0}); replace the file or remove it from the dataset")]
    Corrupt(String),
    /// Larger than the decoder's limit.
    #[error("the image is {width} x {height} pixels, more than the {limit} megapixels we decode; downscale it")]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The limit, in megapixels.
        limit: u32,
    },
    /// The path resolves (through a symbolic link) outside the dataset's root.
    #[error("resolves to {resolved}, outside the dataset root {root}; symbolic links must stay inside the root")]
    OutsideRoot {
        /// Where the path leads.
        resolved: String,
        /// The root.
        root: String,
    },
}

impl From<VmfError> for ProcoError {
    fn from(e: VmfError) -> Self {
        match e {
            VmfError::InvalidFeatures { reason } => ProcoError::InvalidFeatures { reason },
            VmfError::InvalidLabels { reason } => ProcoError::InvalidLabels { reason },
            VmfError::InvalidEstimator { reason } => ProcoError::InvalidConfig { reason },
            other => ProcoError::Vmf(other),
        }
    }
}
