//! CIFAR-10 / CIFAR-100 readers (binary and python layouts). Being written.
