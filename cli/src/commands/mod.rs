//! The subcommands: each module has its clap `Args` and a `run`.

pub mod dump;
pub mod edit;
pub mod fsck;
pub mod info;
pub mod list;
pub mod mkfs;
pub mod mount;
pub mod transfer;

use bonsaifs::fs::DirEntry;

use crate::image::ImageFs;

/// The entries of directory `path`, sorted by name.
pub fn sorted_entries(fs: &mut ImageFs<'_>, path: &str) -> bonsaifs::Result<Vec<DirEntry>> {
    let mut cursor = fs.read_dir(path)?;
    let mut out = Vec::new();
    while let Some(e) = fs.read_dir_next(&mut cursor)? {
        out.push(e);
    }
    out.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(out)
}
