/* littlefs over a RAM disk: the configuration every C firmware (and mkimage) uses. */
#ifndef DISK_H
#define DISK_H

#include "lfs.h"

/* Same geometry as the bonsaifs firmwares: 512 KiB, 512-byte reads and programs, 2 KiB
 * blocks; caches of one sector (the smallest littlefs allows), a 16-byte lookahead. */
#define DISK_BYTES (512u * 1024u)
#define SECTOR 512u
#define BLOCK 2048u
#define CACHE SECTOR
#define LOOKAHEAD 16u

/* The disk: on the firmware the top MiB of data RAM (DISK_ADDR, outside the linker's RAM,
 * where QEMU's loader can put an image); on the host (mkimage) an array. */
extern uint8_t *const lfs_disk;
extern const struct lfs_config lfs_cfg;
/* The buffer of the one open file (littlefs without malloc needs one per open file). */
extern uint8_t lfs_file_buffer[CACHE];
/* Bytes of RAM the configuration's buffers take. */
#define CACHE_BYTES (2u * CACHE + LOOKAHEAD + CACHE)

#endif
