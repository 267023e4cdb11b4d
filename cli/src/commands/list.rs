//! `ls` and `tree`: listings of directories inside an image.

use bonsaifs::fs::{FileKind, Metadata};

use crate::commands::sorted_entries;
use crate::error::{CliError, CliResult};
use crate::image::{join, with_fs, Access, ImageFs, ImagePath};
use crate::output::Out;
use crate::units::format_time;

/// Arguments of `ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Long listing: type, size (directories: number of entries), modification time, name.
    #[arg(short = 'l')]
    pub long: bool,
    /// List subdirectories recursively.
    #[arg(short = 'R')]
    pub recursive: bool,
    /// The image, and the directory or file to list (default: the root).
    #[arg(value_name = "IMAGE[:PATH]", value_parser = ImagePath::parse)]
    pub target: ImagePath,
}

/// Arguments of `tree`.
#[derive(Debug, clap::Args)]
pub struct TreeArgs {
    /// The image, and the directory to draw (default: the root).
    #[arg(value_name = "IMAGE[:PATH]", value_parser = ImagePath::parse)]
    pub target: ImagePath,
}

/// `ls`: list a directory (or name a file), sorted by name.
pub fn ls(args: &LsArgs) -> CliResult<()> {
    let t = &args.target;
    let path = t.path_or_root();
    with_fs(&t.image, Access::ReadOnly, |fs| {
        let mut out = Out::new();
        let meta = fs.stat(&path).map_err(|e| CliError::fs(t.at(&path), e))?;
        if meta.kind == FileKind::File {
            line(&mut out, args.long, &meta, &path)?;
        } else if args.recursive {
            ls_recursive(fs, t, &path, args.long, &mut out, true)?;
        } else {
            ls_dir(fs, t, &path, args.long, &mut out)?;
        }
        out.finish()
    })
}

/// One directory's entries; returns the subdirectories' paths.
fn ls_dir(
    fs: &mut ImageFs<'_>,
    t: &ImagePath,
    dir: &str,
    long: bool,
    out: &mut Out,
) -> CliResult<Vec<String>> {
    let entries = sorted_entries(fs, dir).map_err(|e| CliError::fs(t.at(dir), e))?;
    let mut subdirs = Vec::new();
    for e in entries {
        let path = join(dir, e.name());
        if e.kind == FileKind::Dir {
            subdirs.push(path.clone());
        }
        if long {
            let meta = fs
                .stat(&path)
                .map_err(|err| CliError::fs(t.at(&path), err))?;
            line(out, true, &meta, e.name())?;
        } else {
            let slash = if e.kind == FileKind::Dir { "/" } else { "" };
            writeln!(out, "{}{slash}", e.name())?;
        }
    }
    Ok(subdirs)
}

fn ls_recursive(
    fs: &mut ImageFs<'_>,
    t: &ImagePath,
    dir: &str,
    long: bool,
    out: &mut Out,
    first: bool,
) -> CliResult<()> {
    if !first {
        writeln!(out)?;
    }
    writeln!(out, "{dir}:")?;
    for sub in ls_dir(fs, t, dir, long, out)? {
        ls_recursive(fs, t, &sub, long, out, false)?;
    }
    Ok(())
}

/// One listing line: `d` or `-`, size, modification time, name (directories end in `/`).
fn line(out: &mut Out, long: bool, meta: &Metadata, name: &str) -> CliResult<()> {
    let dir = meta.kind == FileKind::Dir;
    let slash = if dir && !name.ends_with('/') { "/" } else { "" };
    if long {
        let kind = if dir { 'd' } else { '-' };
        writeln!(
            out,
            "{kind} {:>12} {:>19} {name}{slash}",
            meta.size,
            format_time(meta.mtime)
        )
    } else {
        writeln!(out, "{name}{slash}")
    }
}

/// `tree`: draw a directory and everything below it, then count directories and files.
pub fn tree(args: &TreeArgs) -> CliResult<()> {
    let t = &args.target;
    let path = t.path_or_root();
    with_fs(&t.image, Access::ReadOnly, |fs| {
        let mut out = Out::new();
        let meta = fs.stat(&path).map_err(|e| CliError::fs(t.at(&path), e))?;
        if meta.kind != FileKind::Dir {
            return Err(CliError::fs(t.at(&path), bonsaifs::Error::NotADirectory));
        }
        writeln!(out, "{path}")?;
        let mut counts = (0u64, 0u64);
        draw(fs, t, &path, "", &mut out, &mut counts)?;
        let (dirs, files) = counts;
        let plural =
            |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        writeln!(
            out,
            "\n{dirs} {}, {files} {}",
            plural(dirs, "directory", "directories"),
            plural(files, "file", "files")
        )?;
        out.finish()
    })
}

fn draw(
    fs: &mut ImageFs<'_>,
    t: &ImagePath,
    dir: &str,
    prefix: &str,
    out: &mut Out,
    counts: &mut (u64, u64),
) -> CliResult<()> {
    let entries = sorted_entries(fs, dir).map_err(|e| CliError::fs(t.at(dir), e))?;
    let n = entries.len();
    for (i, e) in entries.iter().enumerate() {
        let last = i + 1 == n;
        let branch = if last { "└── " } else { "├── " };
        if e.kind == FileKind::Dir {
            counts.0 += 1;
            writeln!(out, "{prefix}{branch}{}/", e.name())?;
            let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
            draw(fs, t, &join(dir, e.name()), &deeper, out, counts)?;
        } else {
            counts.1 += 1;
            writeln!(out, "{prefix}{branch}{}", e.name())?;
        }
    }
    Ok(())
}
