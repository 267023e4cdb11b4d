//! `bonsaifs mount` end to end: a FUSE mount of a fresh image, driven by real programs (tar,
//! fio, sqlite3, git) and by direct POSIX calls, then unmounted with SIGINT and checked with
//! `bonsaifs fsck`; then mounted again read-only to see that everything was made durable.
//!
//! Runs only where `/dev/fuse` exists and `fusermount3` is on PATH (otherwise it says why and
//! passes). A missing tool skips only its own sub-test, with a message.

use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_bonsaifs");

/// Why FUSE cannot be tested here, if it cannot.
fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist".into());
    }
    if !on_path("fusermount3") {
        return Some("fusermount3 is not on PATH (Debian package fuse3)".into());
    }
    None
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|d| fs::metadata(d.join(tool)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run `cmd`; `Err` with its output unless it exits 0.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            tail(&text(&out.stdout)),
            tail(&text(&out.stderr))
        ))
    }
}

/// The last 40 lines of `s`.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.to_str().expect("UTF-8 mount point");
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want))
}

/// A running `bonsaifs mount`; dropping it (e.g. when a test panics) stops it and, if the
/// kernel still has the mount, detaches it.
struct Mount {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Mount {
    fn start(image: &Path, mnt: &Path, opts: &[&str], log: PathBuf) -> Mount {
        let mnt = mnt.canonicalize().expect("mount point");
        let out = fs::File::create(&log).expect("mount log");
        let child = Command::new(BIN)
            .arg("mount")
            .args(opts)
            .arg(image)
            .arg(&mnt)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("spawn bonsaifs mount");
        let mut m = Mount {
            child: Some(child),
            mnt,
            log,
        };
        let t0 = Instant::now();
        while !is_mounted(&m.mnt) {
            if let Some(st) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "bonsaifs mount exited with {st} before mounting:\n{}",
                    m.log()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "not mounted after 20 s:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT, then wait (up to `limit`) for the process to checkpoint and exit.
    fn signal_and_wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if t0.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmount with SIGINT like a person pressing Ctrl-C; the process must exit 0.
    fn stop(mut self) {
        let st = self.signal_and_wait(Duration::from_secs(60));
        let log = self.log();
        assert!(
            st.is_some_and(|s| s.success()),
            "bonsaifs mount did not exit cleanly after SIGINT ({st:?}):\n{log}"
        );
        assert!(!is_mounted(&self.mnt), "still mounted after exit");
        assert!(log.contains("unmounted"), "{log}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() && self.signal_and_wait(Duration::from_secs(20)).is_none() {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mnt)
                .status();
        }
    }
}

/// Deterministic bytes that do not repeat with any small period.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A source tree of 1,250 files in 3 levels of directories (plus empty ones), sizes from
/// empty through inline-sized to multi-block, and two files of several MiB.
fn make_source_tree(root: &Path) -> usize {
    const SIZES: [usize; 9] = [0, 1, 100, 1000, 3000, 4096, 5000, 20_000, 70_000];
    let mut n = 0;
    for a in 0..10 {
        for b in 0..5 {
            let dir = root.join(format!("d{a}/sub {b}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..25 {
                let seed = (a * 1000 + b * 100 + f) as u64;
                let size = SIZES[(seed as usize * 7 + f) % SIZES.len()];
                fs::write(dir.join(format!("file-{f:02}.dat")), pattern(size, seed)).unwrap();
                n += 1;
            }
        }
        fs::create_dir_all(root.join(format!("d{a}/empty"))).unwrap();
    }
    fs::write(root.join("d0/big.bin"), pattern(3 << 20, 1)).unwrap();
    fs::write(root.join("d9/odd.bin"), pattern((1 << 20) + 4321, 2)).unwrap();
    n + 2
}

/// How a sub-test ended (a failure is an `Err`).
enum Outcome {
    Passed,
    Skipped(String),
}

type SubResult = Result<Outcome, String>;

/// A sub-test: gets the work directory and the mount point.
type SubTest = fn(&Path, &Path) -> SubResult;

fn need(tools: &[&str]) -> Option<Outcome> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    (!missing.is_empty()).then(|| Outcome::Skipped(format!("{} not on PATH", missing.join(", "))))
}

/// 1. Extract a tar of the source tree into the mount and compare with `diff -r`.
fn tar_round_trip(work: &Path, mnt: &Path) -> SubResult {
    if let Some(skip) = need(&["tar", "diff"]) {
        return Ok(skip);
    }
    let src = work.join("src");
    let files = make_source_tree(&src);
    assert!(files >= 1000);
    let tarball = work.join("src.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tarball)
        .arg("."))?;
    let dst = mnt.join("tar");
    fs::create_dir(&dst).map_err(|e| format!("mkdir {}: {e}", dst.display()))?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&dst)
        .arg("-xf")
        .arg(&tarball))?;
    run(Command::new("diff").arg("-r").arg(&src).arg(&dst))?;
    Ok(Outcome::Passed)
}

/// 2. fio: random 4 KiB writes with an fsync every 8, then read back and verify checksums.
fn fio_verify(work: &Path, mnt: &Path) -> SubResult {
    if let Some(skip) = need(&["fio"]) {
        return Ok(skip);
    }
    let dir = mnt.join("fio");
    fs::create_dir(&dir).map_err(|e| format!("mkdir fio: {e}"))?;
    let out = run(Command::new("fio")
        .current_dir(work)
        .arg("--name=randw")
        .arg(format!("--directory={}", dir.display()))
        .args([
            "--size=16M",
            "--bs=4k",
            "--rw=randwrite",
            "--fsync=8",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--ioengine=psync",
            "--fallocate=none",
            "--randrepeat=1",
        ])
        .arg(format!("--output={}", work.join("fio.out").display())))?;
    let report = fs::read_to_string(work.join("fio.out")).unwrap_or_default() + &text(&out.stderr);
    if report.contains("verify: bad") || report.contains("err=") && !report.contains("err= 0") {
        return Err(format!("fio reported errors:\n{}", tail(&report)));
    }
    Ok(Outcome::Passed)
}

/// 3. sqlite3: 10,000 rows in 100 transactions, then `PRAGMA integrity_check`.
fn sqlite(_work: &Path, mnt: &Path) -> SubResult {
    if let Some(skip) = need(&["sqlite3"]) {
        return Ok(skip);
    }
    let dir = mnt.join("sqlite");
    fs::create_dir(&dir).map_err(|e| format!("mkdir sqlite: {e}"))?;
    let db = dir.join("test.db");
    let mut sql = String::from(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB);\n\
         CREATE INDEX t_k ON t(k);\n",
    );
    for tx in 0..100 {
        sql.push_str("BEGIN;\n");
        for r in 0..100 {
            let i = tx * 100 + r;
            sql.push_str(&format!(
                "INSERT INTO t(k, v) VALUES ('key-{i:05}', randomblob({}));\n",
                50 + i % 400
            ));
        }
        sql.push_str("COMMIT;\n");
    }
    sql.push_str("SELECT count(*), count(DISTINCT k) FROM t;\nPRAGMA integrity_check;\n");
    let script = dir.join("load.sql");
    fs::write(&script, sql).map_err(|e| format!("write load.sql: {e}"))?;
    let out = run(Command::new("sqlite3")
        .arg(&db)
        .arg(format!(".read {}", script.display())))?;
    let got = text(&out.stdout);
    if got.trim() != "10000|10000\nok" {
        return Err(format!("sqlite3 printed {got:?}"));
    }
    // A second process sees the same, through a fresh open.
    let out = run(Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*) FROM t WHERE k LIKE 'key-099%'; PRAGMA integrity_check;"))?;
    let got = text(&out.stdout);
    if got.trim() != "100\nok" {
        return Err(format!("sqlite3 (reopened) printed {got:?}"));
    }
    Ok(Outcome::Passed)
}

fn git(work: &Path, repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(repo)
        .env("HOME", work)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "user.name=bonsaifs test",
            "-c",
            "user.email=test@bonsaifs.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "gc.auto=0",
        ]);
    c
}

/// 4. git: commit 100 files, `git fsck` clean, a clean status.
fn git_repo(work: &Path, mnt: &Path) -> SubResult {
    if let Some(skip) = need(&["git"]) {
        return Ok(skip);
    }
    let repo = mnt.join("repo");
    fs::create_dir(&repo).map_err(|e| format!("mkdir repo: {e}"))?;
    run(git(work, &repo).args(["init", "-q"]))?;
    for i in 0..100 {
        let p = repo.join(format!("src/mod{}/file{i:03}.txt", i % 7));
        fs::create_dir_all(p.parent().unwrap()).map_err(|e| format!("mkdir: {e}"))?;
        let body: String = (0..(i * 13 % 200 + 1))
            .map(|l| format!("line {l} of file {i}\n"))
            .collect();
        fs::write(&p, body).map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    run(git(work, &repo).args(["add", "-A"]))?;
    run(git(work, &repo).args(["commit", "-q", "-m", "100 files"]))?;
    run(git(work, &repo).args(["fsck", "--full", "--strict", "--no-progress"]))?;
    let count = run(git(work, &repo).args(["ls-files"]))?;
    let n = text(&count.stdout).lines().count();
    if n != 100 {
        return Err(format!("git ls-files lists {n} files"));
    }
    let status = run(git(work, &repo).args(["status", "--porcelain"]))?;
    if !status.stdout.is_empty() {
        return Err(format!("git status not clean:\n{}", text(&status.stdout)));
    }
    Ok(Outcome::Passed)
}

fn raw(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

fn expect_errno<T: std::fmt::Debug>(
    what: &str,
    r: std::io::Result<T>,
    want: nix::errno::Errno,
) -> Result<(), String> {
    match r {
        Err(e) if raw(&e) == Some(want as i32) => Ok(()),
        other => Err(format!("{what}: expected {want:?}, got {other:?}")),
    }
}

/// POSIX details the programs above may not reach: errors, a file unlinked while open, rename
/// without replacing, a directory listed over several `readdir` calls.
fn posix(_work: &Path, mnt: &Path) -> SubResult {
    use nix::errno::Errno;
    let d = mnt.join("posix");
    fs::create_dir(&d).map_err(|e| format!("mkdir posix: {e}"))?;
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");

    // Errors.
    expect_errno("mkdir existing", fs::create_dir(&d), Errno::EEXIST)?;
    fs::write(d.join("f"), b"x").map_err(|e| io("write f", e))?;
    expect_errno(
        "rmdir non-empty",
        fs::remove_dir(mnt.join("posix")),
        Errno::ENOTEMPTY,
    )?;
    expect_errno("rmdir a file", fs::remove_dir(d.join("f")), Errno::ENOTDIR)?;
    expect_errno("unlink a dir", fs::remove_file(&d), Errno::EISDIR)?;
    expect_errno("open below a file", fs::read(d.join("f/x")), Errno::ENOTDIR)?;
    expect_errno(
        "long name",
        fs::write(d.join("n".repeat(256)), b""),
        Errno::ENAMETOOLONG,
    )?;
    fs::write(d.join("n".repeat(255)), b"ok").map_err(|e| io("255-byte name", e))?;
    fs::create_dir_all(d.join("a/b")).map_err(|e| io("mkdir a/b", e))?;
    expect_errno(
        "move a dir below itself",
        fs::rename(d.join("a"), d.join("a/b/c")),
        Errno::EINVAL,
    )?;

    // rename(2) replaces; RENAME_NOREPLACE does not.
    fs::write(d.join("g"), b"gg").map_err(|e| io("write g", e))?;
    let noreplace = nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &d.join("f"),
        nix::fcntl::AT_FDCWD,
        &d.join("g"),
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    );
    if noreplace != Err(Errno::EEXIST) {
        return Err(format!("RENAME_NOREPLACE onto a file: {noreplace:?}"));
    }
    fs::rename(d.join("f"), d.join("g")).map_err(|e| io("rename f g", e))?;
    if fs::read(d.join("g")).ok().as_deref() != Some(b"x") || d.join("f").exists() {
        return Err("rename did not replace g".into());
    }

    // A file unlinked (and another renamed over) while open stays usable until closed.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(d.join("tmp"))
        .map_err(|e| io("open tmp", e))?;
    f.write_all(&pattern(10_000, 9))
        .map_err(|e| io("write tmp", e))?;
    fs::remove_file(d.join("tmp")).map_err(|e| io("unlink tmp", e))?;
    if d.join("tmp").exists() {
        return Err("tmp still visible after unlink".into());
    }
    f.write_all(&pattern(5_000, 10))
        .map_err(|e| io("write unlinked", e))?;
    let meta = f.metadata().map_err(|e| io("fstat unlinked", e))?;
    if meta.len() != 15_000 || meta.nlink() != 0 {
        return Err(format!(
            "unlinked file: size {} nlink {}",
            meta.len(),
            meta.nlink()
        ));
    }
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
    f.read_to_end(&mut back)
        .map_err(|e| io("read unlinked", e))?;
    if back[..10_000] != pattern(10_000, 9)[..] || back[10_000..] != pattern(5_000, 10)[..] {
        return Err("unlinked file reads back wrong".into());
    }
    fs::write(d.join("victim"), b"old").map_err(|e| io("write victim", e))?;
    let mut v = fs::File::open(d.join("victim")).map_err(|e| io("open victim", e))?;
    fs::write(d.join("new"), b"new").map_err(|e| io("write new", e))?;
    fs::rename(d.join("new"), d.join("victim")).map_err(|e| io("rename over open", e))?;
    let mut old = String::new();
    v.read_to_string(&mut old)
        .map_err(|e| io("read replaced", e))?;
    if old != "old" || fs::read(d.join("victim")).ok().as_deref() != Some(b"new") {
        return Err(format!(
            "rename over an open file: old handle reads {old:?}"
        ));
    }
    drop(f);
    drop(v);
    let root: Vec<String> = fs::read_dir(mnt)
        .map_err(|e| io("list root", e))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    if root.iter().any(|n| n.starts_with(".bonsaifs")) {
        return Err(format!("hidden files show in the root: {root:?}"));
    }

    // truncate through a path and a handle.
    let p = d.join("t");
    fs::write(&p, pattern(9000, 3)).map_err(|e| io("write t", e))?;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map_err(|e| io("open t", e))?;
    f.set_len(100).map_err(|e| io("ftruncate", e))?;
    f.set_len(5000).map_err(|e| io("ftruncate up", e))?;
    drop(f);
    let t = fs::read(&p).map_err(|e| io("read t", e))?;
    if t.len() != 5000 || t[..100] != pattern(100, 3)[..] || t[100..].iter().any(|&b| b != 0) {
        return Err("truncate down then up does not read back as data + zeros".into());
    }

    // A directory large enough to be listed over several readdir calls.
    let big = d.join("big");
    fs::create_dir(&big).map_err(|e| io("mkdir big", e))?;
    for i in 0..2000 {
        fs::File::create(big.join(format!("entry-with-a-longish-name-{i:05}")))
            .map_err(|e| io("create entry", e))?;
    }
    let mut names: Vec<String> = fs::read_dir(&big)
        .map_err(|e| io("list big", e))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.dedup();
    if names.len() != 2000 {
        return Err(format!(
            "big directory lists {} distinct names",
            names.len()
        ));
    }
    fs::remove_dir_all(&big).map_err(|e| io("rm -r big", e))?;
    if big.exists() {
        return Err("big directory still exists".into());
    }

    // statfs.
    let st = nix::sys::statvfs::statvfs(mnt).map_err(|e| format!("statvfs: {e}"))?;
    if st.blocks() == 0 || st.blocks_free() == 0 || st.name_max() != 255 {
        return Err(format!("statvfs: {st:?}"));
    }
    Ok(Outcome::Passed)
}

#[test]
fn mount_serves_tar_fio_sqlite_git_then_fsck_is_clean() {
    if let Some(why) = fuse_unavailable() {
        eprintln!("skipping the FUSE mount tests: {why}");
        return;
    }
    let t0 = Instant::now();
    let work = tempfile::tempdir().expect("temporary directory");
    let w = work.path().canonicalize().unwrap();
    let image = w.join("disk.img");
    let mnt = w.join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(Command::new(BIN)
        .arg("mkfs")
        .arg(&image)
        .args(["--size", "256M"]))
    .unwrap();

    let m = Mount::start(&image, &mnt, &[], w.join("mount.log"));
    let subs: [(&str, SubTest); 5] = [
        ("tar + diff -r", tar_round_trip),
        ("fio randwrite + verify", fio_verify),
        ("sqlite3", sqlite),
        ("git", git_repo),
        ("posix", posix),
    ];
    let mut failures = Vec::new();
    let mut ran = Vec::new();
    for (name, f) in subs {
        let t = Instant::now();
        match f(&w, &mnt) {
            Ok(Outcome::Passed) => {
                eprintln!("fuse: {name}: passed in {:.1?}", t.elapsed());
                ran.push(name);
            }
            Ok(Outcome::Skipped(why)) => eprintln!("fuse: {name}: SKIPPED: {why}"),
            Err(e) => {
                eprintln!("fuse: {name}: FAILED in {:.1?}", t.elapsed());
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    let t = Instant::now();
    m.stop();
    eprintln!("fuse: unmount (SIGINT + checkpoint) in {:.1?}", t.elapsed());
    let fsck = run(Command::new(BIN).arg("fsck").arg(&image));
    assert!(
        failures.is_empty(),
        "sub-tests failed:\n{}",
        failures.join("\n\n")
    );
    fsck.unwrap();

    // Read-only: what was written survives the remount, and writes fail with EROFS.
    let m = Mount::start(&image, &mnt, &["-o", "ro"], w.join("mount-ro.log"));
    if ran.contains(&"tar + diff -r") {
        run(Command::new("diff")
            .arg("-r")
            .arg(w.join("src"))
            .arg(mnt.join("tar")))
        .unwrap();
    }
    if ran.contains(&"sqlite3") {
        let out = run(Command::new("sqlite3")
            .arg("-readonly")
            .arg(mnt.join("sqlite/test.db"))
            .arg("SELECT count(*) FROM t;"))
        .unwrap();
        assert_eq!(text(&out.stdout).trim(), "10000");
    }
    expect_errno(
        "write on a read-only mount",
        fs::write(mnt.join("nope"), b"x"),
        nix::errno::Errno::EROFS,
    )
    .unwrap();
    expect_errno(
        "mkdir on a read-only mount",
        fs::create_dir(mnt.join("nope")),
        nix::errno::Errno::EROFS,
    )
    .unwrap();
    assert!(matches!(
        fs::read(mnt.join("missing")).map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    ));
    m.stop();
    run(Command::new(BIN).arg("fsck").arg(&image)).unwrap();
    eprintln!("fuse: whole test in {:.1?}", t0.elapsed());
    drop(work);
}

/// A mount killed with SIGKILL (no unmount, no checkpoint) keeps what was fsynced: the
/// journal records written by FUSE `fsync` / `fsyncdir` are replayed at the next mount.
#[test]
fn killed_mount_keeps_fsynced_data() {
    if let Some(why) = fuse_unavailable() {
        eprintln!("skipping the FUSE mount tests: {why}");
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let w = work.path().canonicalize().unwrap();
    let image = w.join("disk.img");
    let mnt = w.join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(Command::new(BIN)
        .arg("mkfs")
        .arg(&image)
        .args(["--size", "64M"]))
    .unwrap();

    let mut m = Mount::start(&image, &mnt, &[], w.join("mount.log"));
    fs::create_dir_all(mnt.join("d/e")).unwrap();
    let big = pattern((1 << 20) + 77, 5);
    let mut f = fs::File::create(mnt.join("d/e/big.bin")).unwrap();
    f.write_all(&big).unwrap();
    f.sync_all().unwrap();
    let mut small = fs::File::create(mnt.join("d/small.txt")).unwrap();
    small.write_all(b"first\n").unwrap();
    small.sync_data().unwrap();
    fs::rename(mnt.join("d/small.txt"), mnt.join("d/renamed.txt")).unwrap();
    fs::create_dir(mnt.join("d/new-dir")).unwrap();
    fs::File::open(mnt.join("d")).unwrap().sync_all().unwrap(); // fsyncdir
    drop((f, small));
    // Power cut, as far as the mount is concerned.
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(m); // detaches the dead mount
             // The image as the crash left it: the last checkpoint plus a journal to replay.
    run(Command::new(BIN).arg("fsck").arg(&image)).unwrap();

    let mut m = Mount::start(&image, &mnt, &[], w.join("mount2.log"));
    let got = fs::read(mnt.join("d/e/big.bin")).unwrap();
    assert!(got == big, "fsynced file differs after the crash");
    assert_eq!(fs::read(mnt.join("d/renamed.txt")).unwrap(), b"first\n");
    assert!(!mnt.join("d/small.txt").exists());
    assert!(mnt.join("d/new-dir").is_dir());
    let st = m.signal_and_wait(Duration::from_secs(60));
    assert!(st.is_some_and(|s| s.success()), "{}", m.log());
    drop(m);
    run(Command::new(BIN).arg("fsck").arg(&image)).unwrap();
}

/// Filling the volume fails with ENOSPC; after deleting the filler (no checkpoint between)
/// the space can be written again.
#[test]
fn full_volume_gives_enospc_then_recovers_after_rm() {
    if let Some(why) = fuse_unavailable() {
        eprintln!("skipping the FUSE mount tests: {why}");
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let w = work.path().canonicalize().unwrap();
    let image = w.join("disk.img");
    let mnt = w.join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(Command::new(BIN)
        .arg("mkfs")
        .arg(&image)
        .args(["--size", "64M"]))
    .unwrap();
    let m = Mount::start(&image, &mnt, &[], w.join("mount.log"));
    let chunk = pattern(1 << 20, 11);
    let mut f = fs::File::create(mnt.join("fill")).unwrap();
    let mut written = 0usize;
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        assert!(written < 64 << 20, "a 32 MiB volume took {written} bytes");
    };
    assert_eq!(raw(&err), Some(nix::errno::Errno::ENOSPC as i32), "{err}");
    assert!(written > 16 << 20, "only {written} bytes fit");
    drop(f);
    assert_eq!(
        fs::metadata(mnt.join("fill")).unwrap().len(),
        written as u64
    );
    fs::remove_file(mnt.join("fill")).unwrap();
    let again = pattern(16 << 20, 12);
    fs::write(mnt.join("again"), &again).unwrap();
    assert!(fs::read(mnt.join("again")).unwrap() == again);
    m.stop();
    run(Command::new(BIN).arg("fsck").arg(&image)).unwrap();
}

/// Mount errors come before anything is served: a missing mount point, a bad option.
#[test]
fn mount_refuses_bad_arguments() {
    let work: TempDir = tempfile::tempdir().unwrap();
    let image = work.path().join("disk.img");
    run(Command::new(BIN)
        .arg("mkfs")
        .arg(&image)
        .args(["--size", "16M"]))
    .unwrap();
    let out = Command::new(BIN)
        .arg("mount")
        .arg(&image)
        .arg(work.path().join("no-such-dir"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = Command::new(BIN)
        .args(["mount", "-o", "bogus"])
        .arg(&image)
        .arg(work.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown mount option"));
}
