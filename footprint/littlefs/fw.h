/* What the C footprint firmwares share (the counterpart of ../src/lib.rs): semihosting
 * output and exit, stack painting and the high-water mark. */
#ifndef FW_H
#define FW_H

#include <stdint.h>

void fw_print(const char *s);
void fw_report(const char *key, uint32_t value);
void fw_exit(int ok) __attribute__((noreturn));
/* Exits with status 1 after printing "FAIL what" unless cond holds. */
void fw_expect(int cond, const char *what);
void fw_paint_stack(void);
/* Bytes of stack used so far at most, main's own frame included. */
uint32_t fw_stack_peak(void);
/* The same without main's own frame: the calls main made. */
uint32_t fw_stack_calls_peak(void);
/* The report lines every firmware ends with (see ../src/lib.rs `report_all`). */
void fw_report_all(uint32_t fs_bytes, int fs_on_stack, uint32_t cache_bytes);

#endif
