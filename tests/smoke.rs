mod common;
use bonsaifs::btree::InsertMode;
use bonsaifs::wire::Key;
use common::*;

#[test]
fn insert_checkpoint_remount_remove() {
    let img = format_image(16 << 20, 4096);
    let ((), img, _) = with_mounted(&img, 1, |vol| {
        assert_clean(vol);
        for i in 0..3000u64 {
            let v = vec![(i % 251) as u8; (i % 700) as usize];
            vol.insert(Key::new(i, 1, 0), &v, InsertMode::Create)
                .unwrap();
        }
        vol.checkpoint().unwrap();
        assert_clean(vol);
        assert!(
            vol.fs_root().level >= 2,
            "root level {}",
            vol.fs_root().level
        );
    });
    let ((), img, _) = with_mounted(&img, 2, |vol| {
        for i in 0..3000u64 {
            let got = vol
                .get(&Key::new(i, 1, 0), |v| v.to_vec())
                .unwrap()
                .unwrap();
            assert_eq!(got, vec![(i % 251) as u8; (i % 700) as usize]);
        }
        for i in (0..3000u64).filter(|i| i % 3 != 0) {
            assert!(vol.remove(&Key::new(i, 1, 0)).unwrap());
        }
        vol.checkpoint().unwrap();
        assert_clean(vol);
    });
    with_mounted(&img, 3, |vol| {
        assert_clean(vol);
        let mut k = Key::MIN;
        let mut n = 0;
        let mut incl = true;
        while let Some(key) = vol.next(&k, incl, |k, _| k).unwrap() {
            assert_eq!(key.id % 3, 0);
            k = key;
            incl = false;
            n += 1;
        }
        assert_eq!(n, 1000);
        for i in 0..3000u64 {
            vol.remove(&Key::new(i, 1, 0)).unwrap();
        }
        vol.checkpoint().unwrap();
        let rep = assert_clean(vol);
        assert_eq!(rep.fs_items, 0);
        assert_eq!(vol.fs_root().level, 0);
    });
}
