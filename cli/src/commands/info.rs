//! `stat` and `df`: metadata of one path, space of the whole volume.

use std::path::PathBuf;

use bonsaifs::fs::FileKind;

use crate::error::{CliError, CliResult};
use crate::image::{with_fs, Access, ImagePath};
use crate::output::Out;
use crate::units::{format_time, human_bytes};

/// Arguments of `stat`.
#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// The image and the path to describe (default: the root directory).
    #[arg(value_name = "IMAGE:PATH", value_parser = ImagePath::parse)]
    pub target: ImagePath,
}

/// Arguments of `df`.
#[derive(Debug, clap::Args)]
pub struct DfArgs {
    /// Image file or block device.
    pub image: PathBuf,
}

/// `stat`: type, inode, size, blocks and times of a path.
pub fn stat(args: &StatArgs) -> CliResult<()> {
    let t = &args.target;
    let path = t.path_or_root();
    with_fs(&t.image, Access::ReadOnly, |fs| {
        let m = fs.stat(&path).map_err(|e| CliError::fs(t.at(&path), e))?;
        let bs = fs.statfs().block_size;
        let mut out = Out::new();
        writeln!(out, "  path: {path}")?;
        match m.kind {
            FileKind::File => {
                writeln!(out, "  type: file")?;
                writeln!(out, "  size: {} bytes ({})", m.size, human_bytes(m.size))?;
            }
            FileKind::Dir => {
                writeln!(out, "  type: directory")?;
                writeln!(out, "  size: {} entries", m.size)?;
            }
        }
        writeln!(out, " inode: {}", m.ino)?;
        writeln!(out, "blocks: {} of {bs} bytes", m.blocks)?;
        writeln!(out, " links: {}", m.nlink)?;
        writeln!(out, " mtime: {}", time(m.mtime))?;
        writeln!(out, " ctime: {}", time(m.ctime))?;
        out.finish()
    })
}

/// A stored time: Unix seconds as the CLI writes them, shown in UTC with the raw value.
fn time(t: u64) -> String {
    if t == 0 {
        "- (not recorded)".to_string()
    } else {
        format!("{} UTC ({t})", format_time(t))
    }
}

/// `df`: size, used and free space, inodes.
pub fn df(args: &DfArgs) -> CliResult<()> {
    with_fs(&args.image, Access::ReadOnly, |fs| {
        let s = fs.statfs();
        let bs = u64::from(s.block_size);
        let used = s.total_blocks.saturating_sub(s.free_blocks);
        let pct = (used * 100).div_ceil(s.total_blocks.max(1));
        let name = args.image.display().to_string();
        let w = name.len().max(5);
        let mut out = Out::new();
        writeln!(
            out,
            "{:<w$} {:>11} {:>11} {:>11} {:>5} {:>8}",
            "Image", "Size", "Used", "Avail", "Use%", "Inodes"
        )?;
        writeln!(
            out,
            "{name:<w$} {:>11} {:>11} {:>11} {:>4}% {:>8}",
            human_bytes(s.total_blocks * bs),
            human_bytes(used * bs),
            human_bytes(s.free_blocks * bs),
            pct,
            s.inodes
        )?;
        writeln!(
            out,
            "{} blocks of {} bytes: {used} used, {} free",
            s.total_blocks, s.block_size, s.free_blocks
        )?;
        out.finish()
    })
}
