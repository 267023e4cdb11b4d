//! # bonsaifs-harness
//!
//! Proves bonsaifs's durability contract (DESIGN.md) over a bounded but complete space, the way
//! CrashMonkey/ACE, littlefs's power-loss runner and SQLite's crash VFS do:
//!
//! | module | holds |
//! |---|---|
//! | [`workload`] | the ACE-style operation catalogue over a fixed namespace, workloads and their specs |
//! | [`model`] | the namespace model: operations by path (predicting the answer) and pinned to inodes |
//! | [`pattern`] | distinctive bytes per write, so a byte names the write it came from |
//! | [`execute`] | a workload run live on the recorded queued device, in lockstep with the model |
//! | [`crash_disk`] | the recording device, crash points at every barrier, crash states (subsets, torn sectors) |
//! | [`oracle`] | which volumes a crash may leave, given the acknowledged sync points |
//! | [`checker`] | mount + fsck + walk + oracle for each crash state; violations with a rerun command |
//! | [`powercut`] | power cut before the n-th request, for every n |
//! | [`fault`] | an I/O error at the k-th request, for every k |
//! | [`hostile`] | every byte of every metadata block flipped, in turn |
//! | [`campaign`] | running many workloads on all cores with progress, a deadline, a summary line |
//! | [`ci`] | the CI set: what `cargo test` and `bonsaifs-harness ci` run |
//! | [`image`] | the starting volume, mounting, walking, run-length images for the fuzz corpora |
//! | [`bounded`] | panics caught, request budgets, time limits |
//! | [`rng`] | the seeded PRNG every sample comes from |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bounded;
pub mod campaign;
pub mod checker;
pub mod ci;
pub mod crash_disk;
pub mod execute;
pub mod fault;
pub mod hostile;
pub mod image;
pub mod model;
pub mod oracle;
pub mod pattern;
pub mod powercut;
pub mod rng;
pub mod workload;
