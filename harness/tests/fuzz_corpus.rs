//! Every committed `mount_image` fuzz input, replayed on stable: the seeds (real images) and the
//! inputs that once crashed the target (`regress-*`). A case passes when it returns; a panic
//! (an overflow, an out-of-bounds index, an `unwrap` on disk bytes) fails it.

use std::path::Path;

use bonsaifs_harness::image::mount_image_case;

#[test]
fn committed_mount_image_corpus_runs_without_a_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mount_image");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus/mount_image")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    names.sort();
    assert!(
        names.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("regress-"))),
        "the regression inputs are missing from {}",
        dir.display()
    );
    for path in &names {
        let data = std::fs::read(path).expect("corpus file");
        println!("{}", path.display());
        mount_image_case(&data);
    }
    assert!(names.len() >= 2, "corpus has {} files", names.len());
}
