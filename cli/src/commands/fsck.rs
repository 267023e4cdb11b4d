//! `fsck`: check a volume, read-only. Exit 0 when clean, 1 when errors are found, 2 when the
//! image cannot be checked at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bonsaifs::fs::FsckReport;
use bonsaifs::fsck::Report;
use bonsaifs::wire::{Superblock, SUPERBLOCK_OFFSETS};
use bonsaifs::Error;
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{CliError, CliResult};
use crate::image::{
    mount_error, mount_memory, newest, open_device, read_superblocks, Access, ImageFs, ImageVolume,
};

/// Volumes larger than this get a spinner while the check runs.
const SPINNER_ABOVE: u64 = 64 << 20;

/// Arguments of `fsck`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image file or block device to check (opened read-only).
    pub image: PathBuf,
}

/// Check the image and print a summary; returns whether it is clean.
pub fn run(args: &Args) -> CliResult<bool> {
    let image = &args.image;
    let copies = read_superblocks(image)?;
    let bytes = newest(&copies).map_or(0, |sb| {
        sb.block_count
            .get()
            .saturating_mul(u64::from(sb.block_size.get()))
    });
    let spinner = (bytes > SPINNER_ABOVE).then(|| spinner(image));
    let r = check(image);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let outcome = r?;
    print_outcome(image, &outcome, &copies);
    Ok(outcome.is_clean())
}

fn spinner(image: &Path) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(format!("checking {}", image.display()));
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// What the check found.
enum Outcome {
    /// The full check (blocks and namespace) ran.
    Full(FsckReport),
    /// The filesystem did not mount (its root directory could not be read): only the block
    /// level was checked.
    BlocksOnly { mount: Error, blocks: Report },
    /// The check stopped at damage it could not step over.
    Aborted(Error),
}

impl Outcome {
    fn is_clean(&self) -> bool {
        matches!(self, Outcome::Full(r) if r.is_clean())
    }
}

/// Run the check. Errors only when the image cannot be checked (I/O, not a volume).
fn check(image: &Path) -> CliResult<Outcome> {
    let mut mem = mount_memory(image)?;
    let dev = open_device(image, Access::ReadOnly)?;
    let mount = match ImageFs::mount(dev, &mut mem) {
        Ok(mut fs) => {
            let mut scratch = vec![0u8; fs.fsck_scratch_len()];
            return match fs.fsck(&mut scratch) {
                Ok(rep) => Ok(Outcome::Full(rep)),
                Err(e @ Error::Io(_)) => Err(CliError::fs(image.display(), e)),
                Err(e) => Ok(Outcome::Aborted(e)),
            };
        }
        Err(e @ (Error::Corrupt | Error::NotFound)) => e,
        Err(e) => return Err(mount_error(image, e)),
    };
    // The root directory (or both superblocks) could not be read, so the namespace cannot be
    // walked: check what the volume level can (every node, every block owned once).
    let mut mem = mount_memory(image)?;
    let dev = open_device(image, Access::ReadOnly)?;
    let mounted = ImageVolume::mount(dev, &mut mem);
    // Bound to a local so the volume (which borrows `mem`) is dropped before `mem`.
    let outcome = match mounted {
        Ok(mut vol) => {
            let mut bits = vec![0u8; vol.space_info().data_blocks.div_ceil(8) as usize];
            match vol.fsck(&mut bits) {
                Ok(blocks) => Ok(Outcome::BlocksOnly { mount, blocks }),
                Err(e @ Error::Io(_)) => Err(CliError::fs(image.display(), e)),
                Err(e) => Ok(Outcome::Aborted(e)),
            }
        }
        Err(e @ Error::Corrupt) => Ok(Outcome::Aborted(e)),
        Err(e) => Err(mount_error(image, e)),
    };
    outcome
}

fn print_outcome(image: &Path, outcome: &Outcome, copies: &[bonsaifs::Result<Superblock>; 2]) {
    let name = image.display();
    match outcome {
        Outcome::Full(r) => {
            let state = if r.is_clean() {
                "clean"
            } else {
                "ERRORS FOUND"
            };
            println!("{name}: {state}");
            if r.blocks.bad_nodes > 0 {
                println!("  namespace: not checked (tree nodes are damaged)");
            } else {
                println!(
                    "  namespace: {} inodes ({} directories), {} entries, {} errors",
                    r.inodes, r.dirs, r.entries, r.errors
                );
            }
            print_blocks(&r.blocks);
            if let Some((ino, what)) = r.first_error {
                println!("first error: inode {ino}: {what}");
            }
        }
        Outcome::BlocksOnly { mount, blocks } => {
            println!("{name}: ERRORS FOUND");
            println!("  the filesystem does not mount: {mount}");
            println!("  namespace: not checked");
            print_blocks(blocks);
            print_superblocks(copies);
            if blocks.first_bad.is_none() {
                println!("first error: {mount} (found by mount)");
            }
        }
        Outcome::Aborted(e) => {
            println!("{name}: ERRORS FOUND");
            println!("  the check stopped early");
            print_superblocks(copies);
            println!("first error: {e}");
        }
    }
}

/// The superblock copies that are not valid, each with why (for a volume that did not mount or
/// whose check stopped: `Error::Corrupt` names no block, this says which copy is damaged).
fn print_superblocks(copies: &[bonsaifs::Result<Superblock>; 2]) {
    for (i, (c, off)) in copies.iter().zip(SUPERBLOCK_OFFSETS).enumerate() {
        if let Err(e) = c {
            println!("  superblock copy {i} (byte {off}): {e}");
        }
    }
}

fn print_blocks(b: &Report) {
    println!(
        "  filesystem tree: {} nodes, {} items, {} data blocks",
        b.fs_nodes, b.fs_items, b.data_blocks
    );
    println!(
        "  free-space tree: {} nodes, {} blocks in free runs, {} reserved",
        b.free_nodes, b.free_run_blocks, b.reserved_blocks
    );
    println!(
        "  bad nodes: {}, bad free-space items: {}, leaked blocks: {}, double references: {}{}",
        b.bad_nodes,
        b.bad_items,
        b.leaked,
        b.double_refs,
        if b.counter_mismatch {
            ", free-block counter WRONG"
        } else {
            ""
        }
    );
    if let Some(block) = b.first_bad {
        println!("first bad block: {block}");
    }
}
