/* The littlefs block device: a RAM array. Erase is a no-op (RAM, like an SD card, needs
 * none); sync has nothing to flush. */
#include <string.h>

#include "disk.h"

#ifdef DISK_ADDR
uint8_t *const lfs_disk = (uint8_t *)DISK_ADDR;
#else
static uint8_t disk_mem[DISK_BYTES];
uint8_t *const lfs_disk = disk_mem;
#endif

static uint8_t read_buffer[CACHE];
/* littlefs sets up its program cache even when built with LFS_READONLY. */
static uint8_t prog_buffer[CACHE];
static uint8_t lookahead_buffer[LOOKAHEAD];
uint8_t lfs_file_buffer[CACHE];

static int bd_read(const struct lfs_config *c, lfs_block_t block, lfs_off_t off, void *buf,
                   lfs_size_t size) {
  memcpy(buf, &lfs_disk[block * c->block_size + off], size);
  return 0;
}

#ifndef LFS_READONLY
static int bd_prog(const struct lfs_config *c, lfs_block_t block, lfs_off_t off,
                   const void *buf, lfs_size_t size) {
  memcpy(&lfs_disk[block * c->block_size + off], buf, size);
  return 0;
}

static int bd_erase(const struct lfs_config *c, lfs_block_t block) {
  (void)c;
  (void)block;
  return 0;
}

static int bd_sync(const struct lfs_config *c) {
  (void)c;
  return 0;
}
#endif

const struct lfs_config lfs_cfg = {
    .read = bd_read,
#ifndef LFS_READONLY
    .prog = bd_prog,
    .erase = bd_erase,
    .sync = bd_sync,
#endif
    .prog_buffer = prog_buffer,
    .read_size = SECTOR,
    .prog_size = SECTOR,
    .block_size = BLOCK,
    .block_count = DISK_BYTES / BLOCK,
    .block_cycles = -1,
    .cache_size = CACHE,
    .lookahead_size = LOOKAHEAD,
    .read_buffer = read_buffer,
    .lookahead_buffer = lookahead_buffer,
};
