//! `bonsaifs`: make, check, inspect and fill bonsaifs images from the host.
//!
//! Every command opens the image, mounts it (read-only for commands that only read), does its
//! work and, when it changed anything, unmounts it — a checkpoint — so the image is
//! consistent and durable when the command exits.

mod commands;
mod error;
mod fuse;
mod image;
mod output;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{dump, edit, fsck, info, list, mkfs, mount, transfer};
use crate::error::{CliResult, EXIT_FAILURE};

const EXAMPLES: &str = "\
Paths inside an image are written IMAGE:PATH (split at the first ':').

Examples:
  bonsaifs mkfs disk.img --size 64M
  bonsaifs put ./site disk.img:/www          copy a directory tree in
  bonsaifs ls -l disk.img:/www
  bonsaifs tree disk.img
  bonsaifs cat disk.img:/www/index.html
  bonsaifs get disk.img:/www ./restored      copy it back out
  bonsaifs mkdir -p disk.img:/logs/2026
  bonsaifs mv disk.img:/www disk.img:/old-www
  bonsaifs rm -r disk.img:/old-www
  bonsaifs df disk.img
  bonsaifs fsck disk.img                     exit 0 clean, 1 errors, 2 cannot check
  bonsaifs mount disk.img /mnt/disk          serve it through FUSE until Ctrl-C";

/// Make, check, inspect and fill bonsaifs images (image files or block devices).
#[derive(Debug, Parser)]
#[command(name = "bonsaifs", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an empty filesystem on an image file or block device.
    #[command(after_help = "\
Examples:
  bonsaifs mkfs disk.img --size 64M
  bonsaifs mkfs disk.img --size 1G --block-size 16K --log-size 4M
  bonsaifs mkfs /dev/loop0                   the whole device")]
    Mkfs(mkfs::Args),
    /// Check a filesystem (read-only): exit 0 when clean, 1 when errors are found, 2 when it
    /// cannot be checked.
    #[command(after_help = "\
Examples:
  bonsaifs fsck disk.img && echo clean")]
    Fsck(fsck::Args),
    /// List a directory.
    #[command(after_help = "\
Examples:
  bonsaifs ls disk.img
  bonsaifs ls -l disk.img:/logs
  bonsaifs ls -lR disk.img")]
    Ls(list::LsArgs),
    /// Draw a directory tree.
    #[command(after_help = "\
Examples:
  bonsaifs tree disk.img
  bonsaifs tree disk.img:/logs")]
    Tree(list::TreeArgs),
    /// Show a file's or directory's metadata.
    #[command(after_help = "\
Examples:
  bonsaifs stat disk.img:/etc/config.toml")]
    Stat(info::StatArgs),
    /// Print a file's contents.
    #[command(after_help = "\
Examples:
  bonsaifs cat disk.img:/etc/config.toml
  bonsaifs cat disk.img:/logs/boot.log | tail")]
    Cat(transfer::CatArgs),
    /// Show the volume's size, free space and inode count.
    #[command(after_help = "\
Examples:
  bonsaifs df disk.img")]
    Df(info::DfArgs),
    /// Copy a host file or directory (recursively) into the image.
    #[command(after_help = "\
Examples:
  bonsaifs put firmware.bin disk.img:/          into the root, as /firmware.bin
  bonsaifs put firmware.bin disk.img:/fw.bin    under a new name
  bonsaifs put ./site disk.img:/www             /www becomes a copy of ./site")]
    Put(transfer::PutArgs),
    /// Copy a file or directory (recursively) out of the image.
    #[command(after_help = "\
Examples:
  bonsaifs get disk.img:/fw.bin .
  bonsaifs get disk.img:/www ./restored
  bonsaifs get disk.img:/ ./everything")]
    Get(transfer::GetArgs),
    /// Remove a file, or with -r a directory tree.
    #[command(after_help = "\
Examples:
  bonsaifs rm disk.img:/fw.bin
  bonsaifs rm -r disk.img:/www")]
    Rm(edit::RmArgs),
    /// Create a directory.
    #[command(after_help = "\
Examples:
  bonsaifs mkdir disk.img:/logs
  bonsaifs mkdir -p disk.img:/logs/2026/01")]
    Mkdir(edit::MkdirArgs),
    /// Rename or move a file or directory within the image.
    #[command(after_help = "\
Examples:
  bonsaifs mv disk.img:/a.txt disk.img:/b.txt
  bonsaifs mv disk.img:/b.txt disk.img:/docs     into the existing directory /docs")]
    Mv(edit::MvArgs),
    /// Print the volume's internals: superblocks, tree roots, free runs, cache statistics.
    #[command(after_help = "\
Examples:
  bonsaifs dump disk.img")]
    Dump(dump::Args),
    /// Mount the filesystem through FUSE, in the foreground: Ctrl-C (or SIGTERM, or
    /// `fusermount3 -u MOUNTPOINT`) unmounts it and checkpoints the image. Needs /dev/fuse and
    /// the `fusermount3` program (Debian package fuse3).
    #[command(after_help = "\
Examples:
  bonsaifs mount disk.img /mnt/disk
  bonsaifs mount -o ro disk.img /mnt/disk      read-only: writes fail with EROFS

The format keeps no modes, owners, access times, symbolic or hard links: files show as 0644
and directories as 0755, owned by the user who mounted; chmod, chown and utimes succeed
without effect, symlink and link fail with EPERM. fsync is one journal record; unmount is a
checkpoint.")]
    Mount(mount::Args),
}

/// Run one command; `Ok` carries the exit code (fsck's 1 for errors found is not a failure of
/// the tool).
fn run(cli: &Cli) -> CliResult<u8> {
    match &cli.command {
        Command::Mkfs(a) => mkfs::run(a),
        Command::Fsck(a) => {
            return fsck::run(a).map(|clean| if clean { 0 } else { EXIT_FAILURE });
        }
        Command::Ls(a) => list::ls(a),
        Command::Tree(a) => list::tree(a),
        Command::Stat(a) => info::stat(a),
        Command::Cat(a) => transfer::cat(a),
        Command::Df(a) => info::df(a),
        Command::Put(a) => transfer::put(a),
        Command::Get(a) => transfer::get(a),
        Command::Rm(a) => edit::rm(a),
        Command::Mkdir(a) => edit::mkdir(a),
        Command::Mv(a) => edit::mv(a),
        Command::Dump(a) => dump::run(a),
        Command::Mount(a) => mount::run(a),
    }
    .map(|()| 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if !e.is_silent() {
                eprintln!("bonsaifs: {e}");
            }
            ExitCode::from(e.code())
        }
    }
}
