//! `rm`, `mkdir` and `mv`: namespace changes, each made durable before the command exits.

use bonsaifs::fs::FileKind;
use bonsaifs::Error;

use crate::commands::sorted_entries;
use crate::error::{CliError, CliResult};
use crate::image::{file_name, join, with_fs, Access, ImageFs, ImagePath};

/// Arguments of `rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Remove directories and everything below them.
    #[arg(short = 'r', short_alias = 'R', long)]
    pub recursive: bool,
    /// The image and the file (or, with -r, directory) to remove.
    #[arg(value_name = "IMAGE:PATH", value_parser = ImagePath::parse)]
    pub target: ImagePath,
}

/// Arguments of `mkdir`.
#[derive(Debug, clap::Args)]
pub struct MkdirArgs {
    /// Create missing parent directories too; an existing directory is not an error.
    #[arg(short, long)]
    pub parents: bool,
    /// The image and the directory to create.
    #[arg(value_name = "IMAGE:PATH", value_parser = ImagePath::parse)]
    pub target: ImagePath,
}

/// Arguments of `mv`.
#[derive(Debug, clap::Args)]
pub struct MvArgs {
    /// Treat TO as the new name even when it is an existing directory (which must then be
    /// empty, and is replaced).
    #[arg(short = 'T', long)]
    pub no_target_directory: bool,
    /// The image and the file or directory to move.
    #[arg(value_name = "IMAGE:FROM", value_parser = ImagePath::parse)]
    pub from: ImagePath,
    /// The same image and the new path; an existing directory receives FROM under its name.
    #[arg(value_name = "IMAGE:TO", value_parser = ImagePath::parse)]
    pub to: ImagePath,
}

/// `rm`: remove a file, or with `-r` a directory tree.
pub fn rm(args: &RmArgs) -> CliResult<()> {
    let t = &args.target;
    let path = t.required_path("rm")?;
    if path == "/" {
        return Err(CliError::failure(format!(
            "{}: refusing to remove the root directory",
            t.at(&path)
        )));
    }
    with_fs(&t.image, Access::ReadWrite, |fs| {
        let meta = fs.stat(&path).map_err(|e| CliError::fs(t.at(&path), e))?;
        match meta.kind {
            FileKind::File => fs.unlink(&path).map_err(|e| CliError::fs(t.at(&path), e)),
            FileKind::Dir if args.recursive => remove_tree(fs, t, &path),
            FileKind::Dir => Err(CliError::failure(format!(
                "{}: is a directory (use rm -r)",
                t.at(&path)
            ))),
        }
    })
}

/// Remove directory `dir` and everything below it.
fn remove_tree(fs: &mut ImageFs<'_>, t: &ImagePath, dir: &str) -> CliResult<()> {
    let entries = sorted_entries(fs, dir).map_err(|e| CliError::fs(t.at(dir), e))?;
    for e in entries {
        let path = join(dir, e.name());
        match e.kind {
            FileKind::File => fs.unlink(&path).map_err(|e| CliError::fs(t.at(&path), e))?,
            FileKind::Dir => remove_tree(fs, t, &path)?,
        }
    }
    fs.rmdir(dir).map_err(|e| CliError::fs(t.at(dir), e))
}

/// `mkdir`: create a directory (with `-p`, its missing parents too).
pub fn mkdir(args: &MkdirArgs) -> CliResult<()> {
    let t = &args.target;
    let path = t.required_path("mkdir")?;
    with_fs(&t.image, Access::ReadWrite, |fs| {
        if args.parents {
            mkdir_parents(fs, t, &path)
        } else {
            fs.mkdir(&path).map_err(|e| match e {
                Error::NotFound => CliError::failure(format!(
                    "{}: the parent directory does not exist (use mkdir -p)",
                    t.at(&path)
                )),
                e => CliError::fs(t.at(&path), e),
            })
        }
    })
}

/// Create every missing directory on the way to `path` (a normalised absolute path).
pub fn mkdir_parents(fs: &mut ImageFs<'_>, t: &ImagePath, path: &str) -> CliResult<()> {
    let mut cur = String::from("/");
    for name in path.split('/').filter(|c| !c.is_empty()) {
        cur = join(&cur, name);
        match fs.stat(&cur) {
            Ok(m) if m.kind == FileKind::Dir => {}
            Ok(_) => return Err(CliError::fs(t.at(&cur), Error::NotADirectory)),
            Err(Error::NotFound) => fs.mkdir(&cur).map_err(|e| CliError::fs(t.at(&cur), e))?,
            Err(e) => return Err(CliError::fs(t.at(&cur), e)),
        }
    }
    Ok(())
}

/// `mv`: rename or move within one image.
pub fn mv(args: &MvArgs) -> CliResult<()> {
    let from = args.from.required_path("mv")?;
    let mut to = args.to.required_path("mv")?;
    if !same_image(&args.from, &args.to) {
        return Err(CliError::usage(format!(
            "mv works inside one image: {} and {} differ",
            args.from.image.display(),
            args.to.image.display()
        )));
    }
    let t = &args.from;
    with_fs(&t.image, Access::ReadWrite, |fs| {
        if !args.no_target_directory {
            if let (Ok(m), Some(name)) = (fs.stat(&to), file_name(&from)) {
                if m.kind == FileKind::Dir {
                    to = join(&to, name);
                }
            }
        }
        fs.rename(&from, &to)
            .map_err(|e| CliError::fs(format!("cannot move {} to {to}", t.at(&from)), e))
    })
}

fn same_image(a: &ImagePath, b: &ImagePath) -> bool {
    match (a.image.canonicalize(), b.image.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.image == b.image,
    }
}
