//! `put`, `get` and `cat`: copying bytes between the host and an image.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use bonsaifs::fs::{FileKind, Metadata, OpenFlags};
use bonsaifs::Error;
use indicatif::{ProgressBar, ProgressStyle};

use crate::commands::sorted_entries;
use crate::error::{CliError, CliResult};
use crate::image::{file_name, join, with_fs, Access, ImageFs, ImagePath};
use crate::output::Out;

/// Bytes moved per read or write call.
const CHUNK: usize = 1 << 20;

/// Arguments of `put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// Host file or directory to copy (directories recursively; symbolic links and special
    /// files inside are skipped with a warning).
    pub src: PathBuf,
    /// The image and the destination: an existing directory receives SRC under its own name,
    /// anything else is the new name (an existing file is overwritten).
    #[arg(value_name = "IMAGE[:DST]", value_parser = ImagePath::parse)]
    pub dst: ImagePath,
}

/// Arguments of `get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The image and the file or directory to copy out (directories recursively).
    #[arg(value_name = "IMAGE:SRC", value_parser = ImagePath::parse)]
    pub src: ImagePath,
    /// Host destination: an existing directory receives SRC under its own name, anything else
    /// is the new name (an existing file is overwritten).
    pub dst: PathBuf,
}

/// Arguments of `cat`.
#[derive(Debug, clap::Args)]
pub struct CatArgs {
    /// The image and the file to print.
    #[arg(value_name = "IMAGE:PATH", value_parser = ImagePath::parse)]
    pub target: ImagePath,
}

/// One step of a copy, planned before anything is written.
enum Step {
    /// Make a directory (an existing one is fine).
    Dir { host: PathBuf, fs: String },
    /// Copy a file of `len` bytes (and, for `get`, set its modification time).
    File {
        host: PathBuf,
        fs: String,
        len: u64,
        mtime: u64,
    },
}

fn total_bytes(plan: &[Step]) -> u64 {
    plan.iter()
        .map(|s| match s {
            Step::File { len, .. } => *len,
            Step::Dir { .. } => 0,
        })
        .sum()
}

/// A byte-count progress bar on stderr (drawn only when stderr is a terminal).
fn progress(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style.progress_chars("=> "));
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// `put`: copy a host file or directory tree into the image.
pub fn put(args: &PutArgs) -> CliResult<()> {
    let src = &args.src;
    let meta = std::fs::metadata(src).map_err(|e| CliError::io(src, &e))?;
    let name = host_name(src)?;
    let image_id = std::fs::metadata(&args.dst.image)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let t = &args.dst;
    with_fs(&t.image, Access::ReadWrite, |fs| {
        let dst = t.path_or_root();
        let target = match fs.stat(&dst) {
            Ok(m) if m.kind == FileKind::Dir => match &name {
                Some(n) => join(&dst, n),
                None => dst.clone(),
            },
            Ok(_) if meta.is_dir() => {
                return Err(CliError::fs(t.at(&dst), Error::NotADirectory));
            }
            Ok(_) | Err(Error::NotFound) => dst.clone(),
            Err(e) => return Err(CliError::fs(t.at(&dst), e)),
        };
        let mut plan = Vec::new();
        plan_host(src, &meta, &target, image_id, &mut plan)?;
        let pb = progress(total_bytes(&plan));
        let r = run_put(fs, t, &plan, &pb);
        pb.finish_and_clear();
        r
    })
}

/// The name `src` has on the host, as UTF-8 (`None` for `/`).
fn host_name(src: &Path) -> CliResult<Option<String>> {
    let abs = std::fs::canonicalize(src).map_err(|e| CliError::io(src, &e))?;
    abs.file_name().map(|n| utf8_name(src, n)).transpose()
}

fn utf8_name(path: &Path, name: &std::ffi::OsStr) -> CliResult<String> {
    name.to_str().map(str::to_string).ok_or_else(|| {
        CliError::failure(format!(
            "{}: the name is not valid UTF-8 (bonsaifs names are UTF-8)",
            path.display()
        ))
    })
}

/// Plan copying host `src` (with metadata `meta`) to filesystem path `fs_path`.
fn plan_host(
    src: &Path,
    meta: &std::fs::Metadata,
    fs_path: &str,
    image_id: Option<(u64, u64)>,
    plan: &mut Vec<Step>,
) -> CliResult<()> {
    if meta.is_dir() {
        plan.push(Step::Dir {
            host: src.to_path_buf(),
            fs: fs_path.to_string(),
        });
        let rd = std::fs::read_dir(src).map_err(|e| CliError::io(src, &e))?;
        let mut children = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| CliError::io(src, &e))?;
            children.push(entry.path());
        }
        children.sort();
        for child in children {
            let m = std::fs::symlink_metadata(&child).map_err(|e| CliError::io(&child, &e))?;
            let name = utf8_name(&child, child.file_name().unwrap_or_default())?;
            if m.file_type().is_symlink() {
                eprintln!("bonsaifs: skipping symbolic link {}", child.display());
            } else if m.is_dir() || m.is_file() {
                plan_host(&child, &m, &join(fs_path, &name), image_id, plan)?;
            } else {
                eprintln!("bonsaifs: skipping special file {}", child.display());
            }
        }
    } else if meta.is_file() {
        if image_id == Some((meta.dev(), meta.ino())) {
            eprintln!(
                "bonsaifs: skipping {}: it is the image itself",
                src.display()
            );
            return Ok(());
        }
        plan.push(Step::File {
            host: src.to_path_buf(),
            fs: fs_path.to_string(),
            len: meta.len(),
            mtime: 0,
        });
    } else {
        return Err(CliError::failure(format!(
            "{}: not a regular file or directory",
            src.display()
        )));
    }
    Ok(())
}

fn run_put(fs: &mut ImageFs<'_>, t: &ImagePath, plan: &[Step], pb: &ProgressBar) -> CliResult<()> {
    let mut buf = vec![0u8; CHUNK];
    for step in plan {
        match step {
            Step::Dir { fs: path, .. } => match fs.mkdir(path) {
                Ok(()) => {}
                Err(Error::AlreadyExists)
                    if fs.stat(path).is_ok_and(|m| m.kind == FileKind::Dir) => {}
                Err(e) => return Err(CliError::fs(t.at(path), e)),
            },
            Step::File { host, fs: path, .. } => {
                pb.set_message(path.clone());
                put_file(fs, t, host, path, &mut buf, pb)?;
            }
        }
    }
    Ok(())
}

fn put_file(
    fs: &mut ImageFs<'_>,
    t: &ImagePath,
    host: &Path,
    path: &str,
    buf: &mut [u8],
    pb: &ProgressBar,
) -> CliResult<()> {
    let mut src = File::open(host).map_err(|e| CliError::io(host, &e))?;
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNC;
    let fd = fs
        .open(path, flags)
        .map_err(|e| CliError::fs(t.at(path), e))?;
    let r = (|| loop {
        let n = read_some(&mut src, buf).map_err(|e| CliError::io(host, &e))?;
        if n == 0 {
            return Ok(());
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            let w = fs
                .write(fd, data)
                .map_err(|e| CliError::fs(t.at(path), e))?;
            if w == 0 {
                return Err(CliError::fs(t.at(path), Error::NoSpace));
            }
            data = &data[w..];
            pb.inc(w as u64);
        }
    })();
    let c = fs.close(fd).map_err(|e| CliError::fs(t.at(path), e));
    r.and(c)
}

/// Read up to `buf.len()` bytes, retrying interrupted reads; 0 at the end.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `get`: copy a file or directory tree out of the image.
pub fn get(args: &GetArgs) -> CliResult<()> {
    let t = &args.src;
    let src = t.path_or_root();
    with_fs(&t.image, Access::ReadOnly, |fs| {
        let meta = fs.stat(&src).map_err(|e| CliError::fs(t.at(&src), e))?;
        let target = match (args.dst.is_dir(), file_name(&src)) {
            (true, Some(name)) => args.dst.join(name),
            _ => args.dst.clone(),
        };
        let mut plan = Vec::new();
        plan_image(fs, t, &src, &meta, &target, &mut plan)?;
        let pb = progress(total_bytes(&plan));
        let r = run_get(fs, t, &plan, &pb);
        pb.finish_and_clear();
        r
    })
}

/// Plan copying filesystem path `src` (with metadata `meta`) to host path `host`.
fn plan_image(
    fs: &mut ImageFs<'_>,
    t: &ImagePath,
    src: &str,
    meta: &Metadata,
    host: &Path,
    plan: &mut Vec<Step>,
) -> CliResult<()> {
    if meta.kind == FileKind::File {
        plan.push(Step::File {
            host: host.to_path_buf(),
            fs: src.to_string(),
            len: meta.size,
            mtime: meta.mtime,
        });
        return Ok(());
    }
    plan.push(Step::Dir {
        host: host.to_path_buf(),
        fs: src.to_string(),
    });
    for e in sorted_entries(fs, src).map_err(|e| CliError::fs(t.at(src), e))? {
        let path = join(src, e.name());
        let m = fs.stat(&path).map_err(|e| CliError::fs(t.at(&path), e))?;
        plan_image(fs, t, &path, &m, &host.join(e.name()), plan)?;
    }
    Ok(())
}

fn run_get(fs: &mut ImageFs<'_>, t: &ImagePath, plan: &[Step], pb: &ProgressBar) -> CliResult<()> {
    let mut buf = vec![0u8; CHUNK];
    for step in plan {
        match step {
            Step::Dir { host, .. } => match std::fs::create_dir(host) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && host.is_dir() => {}
                Err(e) => return Err(CliError::io(host, &e)),
            },
            Step::File {
                host,
                fs: path,
                mtime,
                ..
            } => {
                pb.set_message(path.clone());
                get_file(fs, t, path, host, *mtime, &mut buf, pb)?;
            }
        }
    }
    Ok(())
}

fn get_file(
    fs: &mut ImageFs<'_>,
    t: &ImagePath,
    path: &str,
    host: &Path,
    mtime: u64,
    buf: &mut [u8],
    pb: &ProgressBar,
) -> CliResult<()> {
    let fd = fs
        .open(path, OpenFlags::READ)
        .map_err(|e| CliError::fs(t.at(path), e))?;
    let r = (|| {
        let mut out = File::create(host).map_err(|e| CliError::io(host, &e))?;
        loop {
            let n = fs.read(fd, buf).map_err(|e| CliError::fs(t.at(path), e))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| CliError::io(host, &e))?;
            pb.inc(n as u64);
        }
        if mtime != 0 {
            // Best effort: the CLI stores Unix seconds; other writers may not.
            let _ = out.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
        }
        Ok(())
    })();
    let c = fs.close(fd).map_err(|e| CliError::fs(t.at(path), e));
    r.and(c)
}

/// `cat`: write a file's bytes to standard output.
pub fn cat(args: &CatArgs) -> CliResult<()> {
    let t = &args.target;
    let path = t.required_path("cat")?;
    with_fs(&t.image, Access::ReadOnly, |fs| {
        let fd = fs
            .open(&path, OpenFlags::READ)
            .map_err(|e| CliError::fs(t.at(&path), e))?;
        let mut out = Out::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = fs
                .read(fd, &mut buf)
                .map_err(|e| CliError::fs(t.at(&path), e))?;
            if n == 0 {
                break;
            }
            out.write_bytes(&buf[..n])?;
        }
        out.finish()
    })
}
