//! Hostile images through mount, fsck, a walk of the whole namespace and a read of every file.
//! Nothing may panic, overflow, read out of bounds or run unbounded (the device refuses work
//! past a request budget, which turns a loop of reads into an error).
//!
//! The case itself is `bonsaifs_harness::image::mount_image_case` (input format there), so
//! that `harness/tests/fuzz_corpus.rs` replays this target's committed corpus on stable. The
//! seeds in `fuzz/corpus/mount_image` are real images (`bonsaifs-harness fuzz-seeds`) and
//! inputs that once crashed the target (`regress-*`).
#![no_main]

use bonsaifs_harness::image::mount_image_case;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mount_image_case(data));
