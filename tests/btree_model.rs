//! The B+tree against `std::collections::BTreeMap`: random insert / update / delete / range /
//! checkpoint / remount / power-cut sequences over the queued RAM disk (out-of-order
//! completion, volatile write cache). The model tracks both the running state and the last
//! durable one, so a power cut must bring back exactly the last checkpoint.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use bonsaifs::btree::InsertMode;
use bonsaifs::device::{QueuedRamDisk, Trace};
use bonsaifs::wire::Key;
use bonsaifs::Error;
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Insert or replace `count` consecutive keys from `start`, values of `len` bytes.
    Put {
        start: u16,
        count: u16,
        len: u16,
        mode: u8,
    },
    /// Remove `count` consecutive keys from `start`.
    Del {
        start: u16,
        count: u16,
    },
    Get {
        key: u16,
    },
    /// Iterate `limit` items from `from`.
    Range {
        from: u16,
        limit: u8,
    },
    Checkpoint,
    /// Checkpoint, unmount, mount.
    Remount,
    /// Lose everything since the last checkpoint.
    PowerCut,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u16>(), 1..400u16, 0..1000u16, 0..3u8)
            .prop_map(|(start, count, len, mode)| Op::Put { start: start % 4096, count, len, mode }),
        3 => (any::<u16>(), 1..300u16).prop_map(|(start, count)| Op::Del { start: start % 4096, count }),
        2 => any::<u16>().prop_map(|key| Op::Get { key: key % 4096 }),
        2 => (any::<u16>(), 1..64u8).prop_map(|(from, limit)| Op::Range { from: from % 4096, limit }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Remount),
        1 => Just(Op::PowerCut),
    ]
}

fn key(k: u16) -> Key {
    // Spread keys over all three fields so every comparison path is used.
    // Monotone in `k`, so the model's order is the tree's.
    Key::new(u64::from(k) / 16, ((k / 4) % 4) as u8, u64::from(k))
}

fn value(k: u16, len: u16, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ u32::from(k) ^ salt) as u8)
        .collect()
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);
#[allow(dead_code)]
static SEQUENCES: AtomicUsize = AtomicUsize::new(0);

type Dev<'b> = Trace<QueuedRamDisk<'b>>;
type V<'b> = bonsaifs::volume::Volume<'b, Dev<'b>, SLOTS>;

fn mount_image(image: Vec<u8>, seed: u64, m: &mut [u8]) -> V<'_> {
    let dev = Trace::new(QueuedRamDisk::from_image(
        cfg(image.len() as u64, seed),
        image,
    ));
    V::mount(dev, m).expect("mount")
}

fn check_all(vol: &mut V<'_>, model: &BTreeMap<u16, Vec<u8>>) {
    let mut from = Key::MIN;
    let mut incl = true;
    let mut it = model.iter();
    while let Some((k, v)) = vol.next(&from, incl, |k, v| (k, v.to_vec())).unwrap() {
        let (mk, mv) = it.next().expect("tree has an extra item");
        assert_eq!(k, key(*mk));
        assert_eq!(&v, mv);
        from = k;
        incl = false;
    }
    assert!(it.next().is_none(), "tree lost items");
    let mut bits = vec![0u8; (vol.space_info().total_blocks as usize).div_ceil(8)];
    let rep = vol.fsck(&mut bits).unwrap();
    assert!(rep.is_clean(), "{rep:?}");
    assert_eq!(rep.fs_items as usize, model.len());
}

/// What one mount did before it ended.
enum End {
    /// The sequence is done.
    Done,
    /// Unmounted (clean) or power-cut; carry on from op `next` on this image.
    Again { next: usize, image: Vec<u8> },
}

struct Model {
    live: BTreeMap<u16, Vec<u8>>,
    durable: BTreeMap<u16, Vec<u8>>,
    salt: u32,
}

fn run(ops: &[Op], seed: u64, base: &[u8]) {
    let mut st = Model {
        live: BTreeMap::new(),
        durable: BTreeMap::new(),
        salt: 0,
    };
    let mut image = base.to_vec();
    let mut next = 0;
    for mount in 0u64.. {
        let mut m = mem(4096);
        let vol = mount_image(std::mem::take(&mut image), seed ^ mount, &mut m);
        match run_mounted(vol, &ops[next..], &mut st) {
            End::Done => break,
            End::Again {
                next: n,
                image: img,
            } => {
                next += n;
                image = img;
            }
        }
    }
    SEQUENCES.fetch_add(1, Ordering::Relaxed);
}

fn run_mounted(mut vol: V<'_>, ops: &[Op], st: &mut Model) -> End {
    check_all(&mut vol, &st.live);
    for (i, op) in ops.iter().enumerate() {
        st.salt += 1;
        let model = &mut st.live;
        match *op {
            Op::Put {
                start,
                count,
                len,
                mode,
            } => {
                let len = len.min(vol.max_value_len() as u16);
                let mode =
                    [InsertMode::Upsert, InsertMode::Create, InsertMode::Replace][mode as usize];
                for k in start..start.saturating_add(count).min(4096) {
                    let v = value(k, len, st.salt);
                    let r = vol.insert(key(k), &v, mode);
                    match (mode, model.contains_key(&k)) {
                        (InsertMode::Create, true) => assert_eq!(r, Err(Error::AlreadyExists)),
                        (InsertMode::Replace, false) => assert_eq!(r, Err(Error::NotFound)),
                        _ => {
                            r.unwrap();
                            model.insert(k, v);
                        }
                    }
                }
            }
            Op::Del { start, count } => {
                for k in start..start.saturating_add(count).min(4096) {
                    assert_eq!(vol.remove(&key(k)).unwrap(), model.remove(&k).is_some());
                }
            }
            Op::Get { key: k } => {
                assert_eq!(
                    vol.get(&key(k), |v| v.to_vec()).unwrap(),
                    model.get(&k).cloned()
                );
            }
            Op::Range { from, limit } => {
                let want: Vec<_> = model
                    .range(from..)
                    .take(limit as usize)
                    .map(|(k, v)| (key(*k), v.clone()))
                    .collect();
                let mut got = Vec::new();
                let mut cur = key(from);
                let mut incl = true;
                while got.len() < limit as usize {
                    match vol.next(&cur, incl, |k, v| (k, v.to_vec())).unwrap() {
                        Some((k, v)) => {
                            cur = k;
                            incl = false;
                            got.push((k, v));
                        }
                        None => break,
                    }
                }
                assert_eq!(got, want);
            }
            Op::Checkpoint => {
                vol.checkpoint().unwrap();
                st.durable = st.live.clone();
            }
            Op::Remount => {
                MAX_LEVEL.fetch_max(vol.fs_root().level, Ordering::Relaxed);
                let dev = vol.unmount().unwrap();
                st.durable = st.live.clone();
                let image = dev.into_inner().durable_image().to_vec();
                return End::Again { next: i + 1, image };
            }
            Op::PowerCut => {
                MAX_LEVEL.fetch_max(vol.fs_root().level, Ordering::Relaxed);
                let mut dev = vol.into_device().into_inner();
                dev.power_cut();
                st.live = st.durable.clone();
                return End::Again {
                    next: i + 1,
                    image: dev.durable_image().to_vec(),
                };
            }
        }
    }
    MAX_LEVEL.fetch_max(vol.fs_root().level, Ordering::Relaxed);
    check_all(&mut vol, &st.live);
    End::Done
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn btree_matches_btreemap(ops in proptest::collection::vec(op(), 1..40), seed in any::<u64>()) {
        run(&ops, seed, base_image());
    }
}

fn base_image() -> &'static [u8] {
    static IMG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMG.get_or_init(|| format_image(16 << 20, 4096))
}

/// Runs after the property (tests in one file run in parallel, so this one drives its own
/// deterministic sequence that must reach depth 3, and reports what the property reached).
#[test]
fn deep_tree_sequence_reaches_depth_three() {
    let mut ops = Vec::new();
    for i in 0..10u16 {
        ops.push(Op::Put {
            start: i * 400,
            count: 400,
            len: 900,
            mode: 0,
        });
        if i % 3 == 2 {
            ops.push(Op::Checkpoint);
        }
    }
    ops.push(Op::Del {
        start: 100,
        count: 2500,
    });
    ops.push(Op::PowerCut);
    ops.push(Op::Del {
        start: 0,
        count: 1000,
    });
    ops.push(Op::Remount);
    ops.push(Op::Put {
        start: 0,
        count: 4000,
        len: 10,
        mode: 0,
    });
    run(&ops, 42, base_image());
    assert!(
        MAX_LEVEL.load(Ordering::Relaxed) >= 2,
        "root level {}",
        MAX_LEVEL.load(Ordering::Relaxed)
    );
}
