/* Read-only littlefs (built with LFS_READONLY), the same steps as ../src/bin/ro.rs: mount an
 * image QEMU's loader put into RAM (made by mkimage.c), stat, read (checked), list. */
#include <string.h>

#include "disk.h"
#include "fw.h"

static lfs_t lfs;
static lfs_file_t file;
static lfs_dir_t dir;
static const struct lfs_file_config file_cfg = {.buffer = lfs_file_buffer};

static const char hello[] = "hello from the host\n";

int main(void) {
  fw_paint_stack();
  struct lfs_info info;
  char buf[64];
  fw_expect(lfs_mount(&lfs, &lfs_cfg) == 0, "mount");
  fw_expect(lfs_stat(&lfs, "/hello.txt", &info) == 0, "stat");
  fw_expect(info.size == sizeof hello - 1, "size");
  fw_expect(lfs_file_opencfg(&lfs, &file, "/hello.txt", LFS_O_RDONLY, &file_cfg) == 0, "open");
  lfs_ssize_t n = lfs_file_read(&lfs, &file, buf, sizeof buf);
  fw_expect(n == (lfs_ssize_t)(sizeof hello - 1) && memcmp(buf, hello, (size_t)n) == 0, "data");
  fw_expect(lfs_file_close(&lfs, &file) == 0, "close");

  unsigned entries = 0;
  fw_expect(lfs_dir_open(&lfs, &dir, "/dir") == 0, "dir_open");
  for (;;) {
    int r = lfs_dir_read(&lfs, &dir, &info);
    fw_expect(r >= 0, "dir_read");
    if (r == 0) break;
    if (info.type != LFS_TYPE_REG) continue; /* "." and ".." */
    char path[5 + LFS_NAME_MAX + 1] = "/dir/";
    strcpy(path + 5, info.name);
    struct lfs_info st;
    fw_expect(lfs_stat(&lfs, path, &st) == 0 && st.size > 0, "stat entry");
    entries++;
  }
  fw_expect(lfs_dir_close(&lfs, &dir) == 0, "dir_close");
  fw_expect(entries == 3, "entries");

  fw_report_all(sizeof lfs + sizeof file + sizeof dir, 0, CACHE_BYTES);
  return 0;
}
