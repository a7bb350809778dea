//! Long-tail profiles and the LDAM-DRW selection. Being written.
