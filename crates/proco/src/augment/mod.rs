//! Augmentations with PIL/torchvision semantics. Being written.
