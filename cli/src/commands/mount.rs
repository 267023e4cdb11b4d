//! `mount`: serve an image through FUSE in the foreground until Ctrl-C (SIGINT) or SIGTERM,
//! or until someone unmounts the mount point; then checkpoint, so the image is consistent
//! and durable when the command exits.

use std::path::{Path, PathBuf};
use std::process::Command;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::error::{CliError, CliResult};
use crate::fuse::{BonsaiFuse, MountFs, State};
use crate::image::{mount_error, mount_memory, open_device, Access};
use crate::units::unix_now;

/// Arguments of `mount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image file (or block device) holding the filesystem.
    pub image: PathBuf,
    /// Directory to mount it on.
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated: `ro` (read-only: writes fail with EROFS), `rw` (the
    /// default), `allow_other`, `allow_root`.
    #[arg(short = 'o', value_name = "OPTIONS", value_delimiter = ',')]
    pub options: Vec<String>,
}

/// What the `-o` options ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Options {
    read_only: bool,
    acl: Acl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Acl {
    #[default]
    Owner,
    Root,
    All,
}

fn parse_options(opts: &[String]) -> CliResult<Options> {
    let mut o = Options::default();
    for opt in opts.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match opt {
            "ro" => o.read_only = true,
            "rw" => o.read_only = false,
            "allow_other" => o.acl = Acl::All,
            "allow_root" => o.acl = Acl::Root,
            _ => {
                return Err(CliError::usage(format!(
                    "unknown mount option '{opt}' (known: ro, rw, allow_other, allow_root)"
                )))
            }
        }
    }
    Ok(o)
}

/// The source name shown in /proc/mounts: the image path, unless it would confuse the
/// option parser of fusermount3.
fn fs_name(image: &std::path::Path) -> String {
    match image.to_str() {
        Some(s) if !s.is_empty() && !s.contains([',', ' ', '\t', '\n', '\\', '"']) => s.into(),
        _ => "bonsaifs".into(),
    }
}

/// Unmount `mnt`: umount(2) as root, `fusermount3 -u` otherwise. The FUSE session then ends
/// and [`run`] checkpoints.
fn unmount(mnt: &Path) -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        return nix::mount::umount(mnt).map_err(|e| e.desc().to_string());
    }
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(mnt)
        .output()
        .map_err(|e| format!("cannot run fusermount3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `mount`: mount, serve until unmounted, checkpoint.
pub fn run(args: &Args) -> CliResult<()> {
    let opts = parse_options(&args.options)?;
    let image = &args.image;
    let meta =
        std::fs::metadata(&args.mountpoint).map_err(|e| CliError::io(&args.mountpoint, &e))?;
    if !meta.is_dir() {
        return Err(CliError::usage(format!(
            "{}: the mount point is not a directory",
            args.mountpoint.display()
        )));
    }

    // The filesystem lives as long as the process: its memory is leaked on purpose, so the
    // FUSE session (which needs 'static) can own it.
    let mem: &'static mut [u8] = Box::leak(mount_memory(image)?.into_boxed_slice());
    let access = if opts.read_only {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let dev = open_device(image, access)?;
    let mut fs = MountFs::mount(dev, mem).map_err(|e| mount_error(image, e))?;
    if !opts.read_only {
        fs.set_clock(unix_now);
    }
    let (state, removed) = State::new(fs).map_err(|e| {
        CliError::fs(
            format!(
                "{}: cannot remove files left open by a crash",
                image.display()
            ),
            e,
        )
    })?;
    if removed > 0 {
        eprintln!("bonsaifs: removed {removed} file(s) unlinked while open before a crash");
    }
    let read_only = state.read_only();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(fs_name(image)),
        MountOption::Subtype("bonsaifs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        if read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = match opts.acl {
        Acl::Owner => SessionACL::Owner,
        Acl::Root => SessionACL::RootAndOwner,
        Acl::All => SessionACL::All,
    };
    let (fuse, shared) = BonsaiFuse::new(state);
    let session = match Session::new(fuse, &args.mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            // Nothing was served; still hand the image back cleanly.
            let state = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(s) = state {
                let _ = s.shutdown();
            }
            return Err(CliError::usage(format!(
                "cannot mount {} on {}: {e} (is fuse3 installed, and /dev/fuse usable?)",
                image.display(),
                args.mountpoint.display()
            )));
        }
    };

    // Each SIGINT / SIGTERM tries to unmount; while something under the mount point is in
    // use that fails (EBUSY) and the mount stays, so the user can close it and try again.
    let target = args
        .mountpoint
        .canonicalize()
        .unwrap_or_else(|_| args.mountpoint.clone());
    ctrlc::set_handler(move || {
        eprintln!("bonsaifs: unmounting {}", target.display());
        if let Err(e) = unmount(&target) {
            eprintln!(
                "bonsaifs: cannot unmount {}: {e} (close what is open under it, then press \
                 Ctrl-C again)",
                target.display()
            );
        }
    })
    .map_err(|e| CliError::usage(format!("cannot install the signal handler: {e}")))?;

    eprintln!(
        "bonsaifs: {} mounted on {} ({}); Ctrl-C unmounts",
        image.display(),
        args.mountpoint.display(),
        if read_only { "read-only" } else { "read-write" }
    );
    let served = session.run();

    let state = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
    let done = match state {
        Some(s) => s.shutdown(),
        None => Ok(()),
    };
    done.map_err(|e| CliError::fs(format!("{}: cannot write the changes", image.display()), e))?;
    served.map_err(|e| CliError::failure(format!("FUSE session ended with an error: {e}")))?;
    if read_only {
        eprintln!("bonsaifs: unmounted");
    } else {
        eprintln!("bonsaifs: unmounted; {} checkpointed", image.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = |s: &[&str]| parse_options(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(o(&[]).unwrap(), Options::default());
        assert!(o(&["ro"]).unwrap().read_only);
        assert!(!o(&["ro", "rw"]).unwrap().read_only);
        assert_eq!(o(&["allow_other"]).unwrap().acl, Acl::All);
        assert!(o(&["noatime"]).is_err());
    }

    #[test]
    fn source_names() {
        assert_eq!(fs_name("disk.img".as_ref()), "disk.img");
        assert_eq!(fs_name("my disk.img".as_ref()), "bonsaifs");
        assert_eq!(fs_name("a,b".as_ref()), "bonsaifs");
    }
}
