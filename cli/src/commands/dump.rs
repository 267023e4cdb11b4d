//! `dump`: the volume's internals, for debugging: superblock copies and fields, tree roots,
//! node counts, free runs, cache statistics.

use std::path::PathBuf;

use bonsaifs::wire::{tree_id, SUPERBLOCK_OFFSETS};

use crate::commands::mkfs::format_uuid;
use crate::error::{CliError, CliResult};
use crate::image::{read_superblocks, with_volume};
use crate::output::Out;
use crate::units::human_bytes;

/// Free runs listed one by one (the rest are only counted).
const LIST_RUNS: usize = 8;

/// Arguments of `dump`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image file or block device (opened read-only).
    pub image: PathBuf,
}

/// Print the volume's internals.
pub fn run(args: &Args) -> CliResult<()> {
    let image = &args.image;
    let copies = read_superblocks(image)?;
    let mut out = Out::new();
    writeln!(out, "image: {}", image.display())?;
    for (i, c) in copies.iter().enumerate() {
        let off = SUPERBLOCK_OFFSETS[i];
        match c {
            Ok(sb) => writeln!(
                out,
                "superblock copy {i} (byte {off}): generation {}, valid",
                sb.generation()
            )?,
            Err(e) => writeln!(out, "superblock copy {i} (byte {off}): invalid: {e}")?,
        }
    }
    out.finish()?;
    with_volume(image, |vol| {
        let mut out = Out::new();
        let sb = *vol.superblock();
        let bs = u64::from(sb.block_size.get());
        let count = sb.block_count.get();
        let (log_start, log_blocks) = (sb.log_start.get(), sb.log_blocks.get());
        let data_start = sb.data_start.get();
        writeln!(
            out,
            "active superblock: copy {}, generation {} (committed generation {})",
            sb.header.blocknr.get(),
            sb.generation(),
            vol.committed_generation()
        )?;
        writeln!(
            out,
            "  version {}, compat {:#x}, incompat {:#x}",
            sb.version.get(),
            sb.compat.get(),
            sb.incompat.get()
        )?;
        writeln!(out, "  uuid: {}", format_uuid(&sb.uuid))?;
        writeln!(
            out,
            "  block size: {bs}, blocks: {count} ({})",
            human_bytes(count * bs)
        )?;
        writeln!(
            out,
            "  journal: blocks {log_start}..{} ({log_blocks} blocks)",
            log_start + log_blocks
        )?;
        writeln!(
            out,
            "  managed area: blocks {data_start}..{count} ({} blocks)",
            count - data_start
        )?;
        for (name, r) in [
            ("filesystem", vol.fs_root()),
            ("free-space", vol.free_root()),
        ] {
            writeln!(
                out,
                "  {name} tree root: block {}, generation {}, level {} (depth {})",
                r.block,
                r.generation,
                r.level,
                u32::from(r.level) + 1
            )?;
        }
        let runs: Vec<String> = sb
            .reserve
            .iter()
            .filter(|r| r.len.get() > 0)
            .map(|r| format!("{}+{}", r.start.get(), r.len.get()))
            .collect();
        writeln!(out, "  reserve runs: {}", runs.join(", "))?;
        let free = sb.free_blocks.get();
        writeln!(
            out,
            "  free blocks: {free} ({}), next id: {}, inodes: {}",
            human_bytes(free * bs),
            sb.next_id.get(),
            sb.inodes.get()
        )?;

        let (mut fs_nodes, mut free_nodes) = (0u64, 0u64);
        let walked = vol.visit_nodes(|tree, _| {
            if tree == tree_id::FS {
                fs_nodes += 1;
            } else {
                free_nodes += 1;
            }
        });
        writeln!(out, "tree nodes (each verified):")?;
        writeln!(out, "  filesystem tree: {fs_nodes} nodes")?;
        writeln!(out, "  free-space tree: {free_nodes} nodes")?;
        if let Err(e) = walked {
            writeln!(out, "  walk stopped: {e}")?;
        }

        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        let listed = vol.for_each_free_run(|start, len, freed| runs.push((start, len, freed)));
        let total: u64 = runs.iter().map(|r| r.1).sum();
        writeln!(out, "free runs: {} runs, {total} blocks", runs.len())?;
        if let Some(big) = runs.iter().max_by_key(|r| r.1) {
            writeln!(out, "  largest: {} blocks at block {}", big.1, big.0)?;
        }
        if let Some(small) = runs.iter().min_by_key(|r| r.1) {
            writeln!(out, "  smallest: {} blocks at block {}", small.1, small.0)?;
        }
        for (start, len, freed) in runs.iter().take(LIST_RUNS) {
            writeln!(
                out,
                "  {start}..{} ({len} blocks, freed by generation {freed})",
                start + len
            )?;
        }
        if runs.len() > LIST_RUNS {
            writeln!(out, "  … {} more", runs.len() - LIST_RUNS)?;
        }
        if let Err(e) = listed {
            writeln!(out, "  walk stopped: {e}")?;
        }

        let c = vol.cache_stats();
        writeln!(
            out,
            "cache (this run): {} hits, {} misses, {} eviction writes",
            c.hits, c.misses, c.evict_writes
        )?;
        out.finish()?;
        match (walked, listed) {
            (Err(e), _) | (_, Err(e)) => Err(CliError::fs(image.display(), e)),
            _ => Ok(()),
        }
    })
}
