//! End-to-end tests of the `bonsaifs` binary: every command run as a process on real image
//! files in a temporary directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

const BLOCK: usize = 4096;

fn bonsaifs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bonsaifs"))
        .args(args)
        .output()
        .expect("run the bonsaifs binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run a command that must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = bonsaifs(args);
    assert!(
        out.status.success(),
        "bonsaifs {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Run a command that must exit with `code`; returns (stdout, stderr).
fn fails(args: &[&str], code: i32) -> (String, String) {
    let out = bonsaifs(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "bonsaifs {args:?}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
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

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_string()
    }

    /// A freshly formatted image of `size`; returns its path.
    fn mkfs(&self, name: &str, size: &str) -> String {
        let img = self.s(name);
        let out = ok(&["mkfs", &img, "--size", size]);
        assert!(out.contains("formatted"), "{out}");
        img
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

/// The host tree used by the round trip: nested directories, an empty directory, empty,
/// small and multi-MiB files, names with spaces and non-ASCII characters.
fn make_tree(root: &Path) {
    write(&root.join("empty"), b"");
    write(&root.join("small.txt"), b"hello, bonsai\n");
    write(&root.join("almost 1K.bin"), &pattern(1000, 1));
    write(&root.join("dir one/with space.txt"), &pattern(333, 2));
    write(
        &root.join("dir one/nested/deeper/big.bin"),
        &pattern(3 << 20, 3),
    );
    write(
        &root.join("dir one/nested/odd size (5 MiB + 123).bin"),
        &pattern((5 << 20) + 123, 4),
    );
    write(&root.join("ünïcødé ñame.txt"), "ßtraße\n".as_bytes());
    write(&root.join("block exact.bin"), &pattern(2 * BLOCK, 5));
    fs::create_dir_all(root.join("empty dir")).unwrap();
    for i in 0..40 {
        write(
            &root.join(format!("many/file {i:03}.dat")),
            &pattern(i * 97, 100 + i as u64),
        );
    }
}

/// Every path below `root` (relative, `/`-separated) mapped to `None` for a directory or the
/// file's bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    let names = |s: &BTreeMap<String, Option<Vec<u8>>>| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&sa), names(&sb), "the same paths");
    for (k, v) in &sa {
        assert!(sb[k] == *v, "{k} differs");
    }
}

#[test]
fn put_get_round_trip_is_byte_identical() {
    let env = Env::new();
    let img = env.mkfs("rt.img", "64M");
    let src = env.path("src");
    make_tree(&src);
    ok(&["put", src.to_str().unwrap(), &format!("{img}:/data")]);
    // Into an existing directory: lands under its own name.
    ok(&["mkdir", &format!("{img}:/copies")]);
    ok(&["put", src.to_str().unwrap(), &format!("{img}:/copies")]);
    let file = src.join("small.txt");
    ok(&["put", file.to_str().unwrap(), &format!("{img}:/")]);

    let out = env.path("out");
    ok(&["get", &format!("{img}:/data"), out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    // `get` into an existing directory puts the source under its own name.
    fs::create_dir(env.path("into")).unwrap();
    ok(&["get", &format!("{img}:/copies/src"), &env.s("into")]);
    assert_same_tree(&src, &env.path("into/src"));
    ok(&["get", &format!("{img}:/small.txt"), &env.s("small copy")]);
    assert_eq!(
        fs::read(env.path("small copy")).unwrap(),
        b"hello, bonsai\n"
    );

    let report = ok(&["fsck", &img]);
    assert!(report.contains("clean"), "{report}");
}

#[test]
fn listings_stat_cat_df() {
    let env = Env::new();
    let img = env.mkfs("ls.img", "16M");
    let src = env.path("src");
    write(&src.join("a/b/deep.txt"), b"deep\n");
    write(&src.join("a/one.txt"), b"1");
    write(&src.join("big.bin"), &pattern(100_000, 9));
    write(&src.join("with space.txt"), b"spaced out\n");
    ok(&["put", src.to_str().unwrap(), &format!("{img}:/")]);

    let ls = ok(&["ls", &format!("{img}:/src")]);
    assert_eq!(ls, "a/\nbig.bin\nwith space.txt\n");
    assert_eq!(ok(&["ls", &img]), "src/\n");
    let long = ok(&["ls", "-l", &format!("{img}:/src")]);
    let big = long.lines().find(|l| l.ends_with(" big.bin")).expect(&long);
    assert!(big.starts_with('-') && big.contains(" 100000 "), "{big}");
    assert!(long
        .lines()
        .any(|l| l.starts_with('d') && l.ends_with(" a/")));
    let rec = ok(&["ls", "-R", &format!("{img}:/src")]);
    assert!(rec.contains("/src/a/b:\ndeep.txt\n"), "{rec}");
    // `ls` of a file names it.
    assert_eq!(
        ok(&["ls", &format!("{img}:/src/a/one.txt")]),
        "/src/a/one.txt\n"
    );

    let tree = ok(&["tree", &img]);
    assert!(tree.starts_with("/\n└── src/\n"), "{tree}");
    assert!(tree.contains("│   │   └── deep.txt"), "{tree}");
    assert!(tree.contains("3 directories, 4 files"), "{tree}");

    let stat = ok(&["stat", &format!("{img}:/src/big.bin")]);
    assert!(stat.contains("type: file"), "{stat}");
    assert!(stat.contains("size: 100000 bytes"), "{stat}");
    assert!(stat.contains("blocks: 25 of 4096 bytes"), "{stat}");
    let stat = ok(&["stat", &format!("{img}:/src/a")]);
    assert!(stat.contains("type: directory") && stat.contains("size: 2 entries"));

    assert_eq!(
        ok(&["cat", &format!("{img}:/src/with space.txt")]),
        "spaced out\n"
    );
    let out = bonsaifs(&["cat", &format!("{img}:/src/big.bin")]);
    assert!(out.status.success());
    assert_eq!(out.stdout, pattern(100_000, 9));

    let df = ok(&["df", &img]);
    assert!(df.contains("16.0 MiB"), "{df}");
    assert!(df.contains("4096 blocks of 4096 bytes"), "{df}");
    let inodes: u64 = df
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .expect(&df);
    assert_eq!(inodes, 8, "root, src, a, b and four files");

    let dump = ok(&["dump", &img]);
    for needle in [
        "superblock copy 0 (byte 0): generation",
        "superblock copy 1 (byte 4096): generation",
        "block size: 4096, blocks: 4096",
        "filesystem tree root: block",
        "free-space tree root: block",
        "free runs:",
        "cache (this run):",
    ] {
        assert!(dump.contains(needle), "{needle} in\n{dump}");
    }

    let (_, err) = fails(&["cat", &format!("{img}:/src/a")], 1);
    assert!(err.contains("/src/a: is a directory"), "{err}");
    let (_, err) = fails(&["ls", &format!("{img}:/nope")], 1);
    assert!(err.contains("/nope: not found"), "{err}");
}

#[test]
fn rm_mkdir_mv() {
    let env = Env::new();
    let img = env.mkfs("edit.img", "16M");
    let at = |p: &str| format!("{img}:{p}");

    let (_, err) = fails(&["mkdir", &at("/x/y")], 1);
    assert!(err.contains("mkdir -p"), "{err}");
    ok(&["mkdir", "-p", &at("/x/y/z")]);
    ok(&["mkdir", "-p", &at("/x/y")]);
    let (_, err) = fails(&["mkdir", &at("/x")], 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(ok(&["ls", &at("/x/y")]), "z/\n");

    let file = env.path("f.txt");
    write(&file, b"moving\n");
    ok(&["put", file.to_str().unwrap(), &at("/x/f.txt")]);
    // Rename in place, then into an existing directory.
    ok(&["mv", &at("/x/f.txt"), &at("/x/g.txt")]);
    ok(&["mv", &at("/x/g.txt"), &at("/x/y/z")]);
    assert_eq!(ok(&["cat", &at("/x/y/z/g.txt")]), "moving\n");
    ok(&["mv", &at("/x/y"), &at("/moved")]);
    assert_eq!(ok(&["ls", &at("/")]), "moved/\nx/\n");
    let (_, err) = fails(&["mv", &at("/moved"), &at("/moved/z/inside")], 1);
    assert!(err.contains("invalid path"), "{err}");

    let (_, err) = fails(&["rm", &at("/moved")], 1);
    assert!(err.contains("is a directory"), "{err}");
    ok(&["rm", &at("/moved/z/g.txt")]);
    assert_eq!(ok(&["ls", &at("/moved/z")]), "");
    ok(&["put", file.to_str().unwrap(), &at("/moved/z/again.txt")]);
    ok(&["rm", "-r", &at("/moved")]);
    assert_eq!(ok(&["ls", &at("/")]), "x/\n");
    fails(&["rm", "-r", &at("/")], 1);
    fails(&["rm", &at("/moved")], 1);

    let report = ok(&["fsck", &img]);
    assert!(report.contains("clean"), "{report}");
}

/// Header fields of a tree node found in the image: (generation, owner, kind, nitems).
#[derive(Debug, Clone, Copy)]
struct NodeHead {
    generation: u64,
    owner: u64,
    kind: u8,
    nitems: u16,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Every block that starts with the magic `BnSf` and has kind 2 (leaf) or 3 (interior).
fn scan_nodes(image: &[u8]) -> BTreeMap<u64, NodeHead> {
    image
        .chunks_exact(BLOCK)
        .enumerate()
        .filter(|(_, b)| &b[..4] == b"BnSf" && matches!(b[32], 2 | 3))
        .map(|(i, b)| {
            let head = NodeHead {
                generation: u64_at(b, 8),
                owner: u64_at(b, 16),
                kind: b[32],
                nitems: u16::from_le_bytes([b[34], b[35]]),
            };
            (i as u64, head)
        })
        .collect()
}

/// The filesystem tree's root block, from the newest superblock copy.
fn fs_root_block(image: &[u8]) -> u64 {
    let copies = [0usize, 4096].map(|off| (u64_at(image, off + 8), u64_at(image, off + 88)));
    copies.iter().max_by_key(|c| c.0).unwrap().1
}

/// An image with enough files that the filesystem tree has an interior root and several
/// leaves; returns its path.
fn image_with_many_files(env: &Env) -> String {
    let img = env.mkfs("many.img", "16M");
    let src = env.path("many");
    for i in 0..300 {
        write(
            &src.join(format!("f{i}.txt")),
            format!("file {i}\n").as_bytes(),
        );
    }
    ok(&["put", src.to_str().unwrap(), &format!("{img}:/")]);
    assert!(ok(&["fsck", &img]).contains("clean"));
    img
}

fn flip(image: &mut [u8], block: u64, range: std::ops::Range<usize>) {
    let base = block as usize * BLOCK;
    for b in &mut image[base + range.start..base + range.end] {
        *b ^= 0xff;
    }
}

#[test]
fn fsck_finds_a_corrupt_leaf_that_mount_does_not_read() {
    let env = Env::new();
    let img = image_with_many_files(&env);
    let mut bytes = fs::read(&img).unwrap();
    let nodes = scan_nodes(&bytes);
    let root = fs_root_block(&bytes);
    let head = nodes[&root];
    assert_eq!(
        (head.owner, head.kind),
        (1, 3),
        "an interior root: {head:?}"
    );
    assert!(head.nitems >= 2);
    // The root's last child: a live leaf, away from the root directory's inode (which sits in
    // the first leaf, the one mount reads).
    let ptr = BLOCK * root as usize + 40 + 33 * (usize::from(head.nitems) - 1);
    let leaf = u64_at(&bytes, ptr + 17);
    let leaf_head = nodes.get(&leaf).copied().expect("the child is a node");
    assert_eq!((leaf_head.owner, leaf_head.kind), (1, 2), "{leaf_head:?}");
    assert!(leaf_head.generation >= 1);
    flip(&mut bytes, leaf, 200..216);
    fs::write(&img, &bytes).unwrap();

    // Mount still works: only the superblocks and the root directory's path are read.
    ok(&["df", &img]);
    assert_eq!(ok(&["ls", &img]), "many/\n");
    let (out, _) = fails(&["fsck", &img], 1);
    assert!(out.contains("ERRORS FOUND"), "{out}");
    assert!(out.contains("bad nodes: 1"), "{out}");
    assert!(out.contains(&format!("first bad block: {leaf}")), "{out}");
}

#[test]
fn fsck_finds_a_corrupt_root_that_stops_mount() {
    let env = Env::new();
    let img = image_with_many_files(&env);
    let mut bytes = fs::read(&img).unwrap();
    let root = fs_root_block(&bytes);
    assert!(scan_nodes(&bytes).contains_key(&root));
    flip(&mut bytes, root, 100..104);
    fs::write(&img, &bytes).unwrap();

    let (_, err) = fails(&["ls", &img], 1);
    assert!(err.contains("corrupt metadata"), "{err}");
    assert!(err.contains("fsck"), "{err}");
    let (out, _) = fails(&["fsck", &img], 1);
    assert!(out.contains("ERRORS FOUND"), "{out}");
    assert!(out.contains("does not mount"), "{out}");
    assert!(out.contains(&format!("first bad block: {root}")), "{out}");

    // Both superblocks damaged: still "errors found", not "cannot check".
    let mut bytes = fs::read(&img).unwrap();
    bytes[100] ^= 1;
    bytes[4096 + 100] ^= 1;
    fs::write(&img, &bytes).unwrap();
    let (out, _) = fails(&["fsck", &img], 1);
    assert!(
        out.contains("superblock copy 0 (byte 0): corrupt metadata"),
        "{out}"
    );
    assert!(
        out.contains("superblock copy 1 (byte 4096): corrupt metadata"),
        "{out}"
    );
}

#[test]
fn missing_or_foreign_images_and_usage_errors_exit_2() {
    let env = Env::new();
    let missing = env.s("missing.img");
    for args in [
        vec!["fsck", &missing],
        vec!["ls", &missing],
        vec!["df", &missing],
        vec!["dump", &missing],
    ] {
        let (out, err) = fails(&args, 2);
        assert!(out.is_empty(), "{out}");
        assert!(
            err.starts_with("bonsaifs: ") && err.contains("missing.img: No such file or directory"),
            "{err}"
        );
        assert!(!err.contains("Os {"), "no Debug dumps: {err}");
    }

    let junk = env.path("junk.img");
    write(&junk, &vec![0x5a; 64 << 10]);
    let (_, err) = fails(&["fsck", junk.to_str().unwrap()], 2);
    assert!(err.contains("no bonsaifs volume"), "{err}");

    fails(&["ls"], 2);
    fails(&["frobnicate"], 2);
    let img = env.mkfs("u.img", "8M");
    let (_, err) = fails(&["cat", &img], 2);
    assert!(err.contains("needs a path"), "{err}");
    let (_, err) = fails(&["mkfs", &env.s("new.img")], 2);
    assert!(err.contains("--size is required"), "{err}");
    let (_, err) = fails(&["mkfs", &img, "--size", "12Q"], 2);
    assert!(err.contains("unknown suffix"), "{err}");
    let (_, err) = fails(&["mkfs", &img, "--size", "8M", "--block-size", "1024"], 2);
    assert!(err.contains("invalid block size"), "{err}");
    let other = env.mkfs("other.img", "8M");
    let (_, err) = fails(&["mv", &format!("{img}:/a"), &format!("{other}:/b")], 2);
    assert!(err.contains("inside one image"), "{err}");
}

#[test]
fn mkfs_options() {
    let env = Env::new();
    let img = env.s("opts.img");
    let out = ok(&[
        "mkfs",
        &img,
        "--size",
        "32M",
        "--block-size",
        "8K",
        "--log-size",
        "32",
    ]);
    assert!(out.contains("4096 blocks of 8192 bytes"), "{out}");
    assert!(out.contains("journal: 32 blocks"), "{out}");
    assert_eq!(fs::metadata(&img).unwrap().len(), 32 << 20);
    let dump = ok(&["dump", &img]);
    assert!(dump.contains("block size: 8192"), "{dump}");

    // An existing image keeps its size when --size is omitted; a suffixed log size is bytes.
    let out = ok(&["mkfs", &img, "--log-size", "1M"]);
    assert!(out.contains("8192 blocks of 4096 bytes"), "{out}");
    assert!(out.contains("journal: 256 blocks"), "{out}");
    assert!(ok(&["fsck", &img]).contains("clean"));

    // Too small for a volume: a usage error, not a panic.
    let (_, err) = fails(&["mkfs", &env.s("tiny.img"), "--size", "16K"], 2);
    assert!(err.contains("too small"), "{err}");
}
