/* Host tool: writes the littlefs image the read-only C firmware mounts (the counterpart of
 * the bonsaifs image the footprint script makes with the host CLI). Usage: mkimage OUT */
#include <stdio.h>
#include <string.h>

#include "disk.h"

static lfs_t lfs;
static lfs_file_t file;
static const struct lfs_file_config file_cfg = {.buffer = lfs_file_buffer};

static int put(const char *path, const char *data) {
  if (lfs_file_opencfg(&lfs, &file, path, LFS_O_WRONLY | LFS_O_CREAT, &file_cfg)) return -1;
  lfs_ssize_t n = lfs_file_write(&lfs, &file, data, (lfs_size_t)strlen(data));
  if (n != (lfs_ssize_t)strlen(data)) return -1;
  return lfs_file_close(&lfs, &file);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: mkimage OUT\n");
    return 2;
  }
  if (lfs_format(&lfs, &lfs_cfg) || lfs_mount(&lfs, &lfs_cfg) || lfs_mkdir(&lfs, "/dir") ||
      put("/hello.txt", "hello from the host\n") || put("/dir/a", "first\n") ||
      put("/dir/b", "second\n") || put("/dir/c", "third\n") || lfs_unmount(&lfs)) {
    fprintf(stderr, "mkimage: littlefs failed\n");
    return 1;
  }
  FILE *f = fopen(argv[1], "wb");
  if (!f || fwrite(lfs_disk, 1, DISK_BYTES, f) != DISK_BYTES || fclose(f)) {
    perror(argv[1]);
    return 1;
  }
  return 0;
}
