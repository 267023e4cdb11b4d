/* Read-write littlefs over a RAM disk, the same steps as ../src/bin/rw.rs: format, mkdir,
 * create, write, sync, unmount, mount, read (checked), rename, stat, remove, unmount. */
#include "disk.h"
#include "fw.h"

static lfs_t lfs;
static lfs_file_t file;
static const struct lfs_file_config file_cfg = {.buffer = lfs_file_buffer};

static uint8_t byte(unsigned i) { return (uint8_t)((uint8_t)i * 31u + 7u); }

int main(void) {
  fw_paint_stack();
  uint8_t chunk[100];
  fw_expect(lfs_format(&lfs, &lfs_cfg) == 0, "format");
  fw_expect(lfs_mount(&lfs, &lfs_cfg) == 0, "mount");
  fw_expect(lfs_mkdir(&lfs, "/d") == 0, "mkdir");
  fw_expect(lfs_file_opencfg(&lfs, &file, "/d/a", LFS_O_RDWR | LFS_O_CREAT, &file_cfg) == 0,
            "create");
  for (unsigned c = 0; c < 30; c++) {
    for (unsigned i = 0; i < sizeof chunk; i++) chunk[i] = byte(c * 100 + i);
    fw_expect(lfs_file_write(&lfs, &file, chunk, sizeof chunk) == sizeof chunk, "write");
  }
  fw_expect(lfs_file_sync(&lfs, &file) == 0, "sync");
  fw_expect(lfs_file_close(&lfs, &file) == 0, "close");
  fw_expect(lfs_unmount(&lfs) == 0, "unmount");

  fw_expect(lfs_mount(&lfs, &lfs_cfg) == 0, "mount");
  fw_expect(lfs_file_opencfg(&lfs, &file, "/d/a", LFS_O_RDONLY, &file_cfg) == 0, "open");
  unsigned at = 0;
  for (;;) {
    lfs_ssize_t n = lfs_file_read(&lfs, &file, chunk, sizeof chunk);
    fw_expect(n >= 0, "read");
    if (n == 0) break;
    for (lfs_ssize_t i = 0; i < n; i++) fw_expect(chunk[i] == byte(at + (unsigned)i), "data");
    at += (unsigned)n;
  }
  fw_expect(at == 3000, "length");
  fw_expect(lfs_file_close(&lfs, &file) == 0, "close");
  fw_expect(lfs_rename(&lfs, "/d/a", "/d/b") == 0, "rename");
  struct lfs_info info;
  fw_expect(lfs_stat(&lfs, "/d/b", &info) == 0 && info.size == 3000, "stat");
  fw_expect(lfs_remove(&lfs, "/d/b") == 0, "remove");
  fw_expect(lfs_stat(&lfs, "/d/b", &info) == LFS_ERR_NOENT, "removed");
  fw_expect(lfs_unmount(&lfs) == 0, "unmount");

  fw_report_all(sizeof lfs + sizeof file, 0, CACHE_BYTES);
  return 0;
}
