/* Vector table, reset handler, semihosting and stack measurement for the C footprint
 * firmwares: the same things the Rust firmwares get from cortex-m-rt and ../src/lib.rs. */
#include <stdint.h>
#include <string.h>

#include "fw.h"

extern uint32_t _stack_start, _stack_end, _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);

#define PAINT 0xC0DE57ACu

void reset_handler(void) __attribute__((noreturn));
static void default_handler(void) { fw_exit(0); }

__attribute__((section(".vector_table"), used)) static const void *const vectors[16] = {
    &_stack_start, (const void *)reset_handler, default_handler, default_handler,
    default_handler, default_handler, default_handler, 0, 0, 0, 0,
    default_handler, default_handler, 0, default_handler, default_handler,
};

void reset_handler(void) {
  /* The FPU (the hard-float ABI may use it): full access for CP10 and CP11. */
  *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
  __asm__ volatile("dsb\n isb");
  for (uint32_t *s = &_sidata, *d = &_sdata; d < &_edata;) *d++ = *s++;
  for (uint32_t *d = &_sbss; d < &_ebss;) *d++ = 0;
  fw_exit(main() == 0);
}

static uint32_t semihost(uint32_t op, uint32_t arg) {
  register uint32_t r0 __asm__("r0") = op;
  register uint32_t r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt #0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void fw_print(const char *s) {
  char buf[65];
  while (*s) {
    unsigned n = 0;
    while (s[n] && n < 64) n++;
    memcpy(buf, s, n);
    buf[n] = 0;
    semihost(0x04, (uint32_t)buf);
    s += n;
  }
}

void fw_report(const char *key, uint32_t value) {
  char digits[11];
  int i = 10;
  digits[i] = 0;
  do {
    digits[--i] = (char)('0' + value % 10);
    value /= 10;
  } while (value);
  fw_print(key);
  fw_print("=");
  fw_print(&digits[i]);
  fw_print("\n");
}

void fw_exit(int ok) {
  semihost(0x18, ok ? 0x20026 : 0x20023);
  for (;;) __asm__ volatile("wfi");
}

void fw_expect(int cond, const char *what) {
  if (!cond) {
    fw_print("FAIL ");
    fw_print(what);
    fw_print("\n");
    fw_exit(0);
  }
}

/* The stack pointer when fw_paint_stack ran: just below main's frame. */
static uint32_t main_sp;

__attribute__((noinline)) void fw_paint_stack(void) {
  uint32_t sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  main_sp = sp;
  for (volatile uint32_t *p = &_stack_end; (uint32_t)p < ((sp - 64) & ~3u); p++) *p = PAINT;
}

static uint32_t lowest_used(void) {
  volatile uint32_t *p = &_stack_end;
  while (p < &_stack_start && *p == PAINT) p++;
  return (uint32_t)p;
}

uint32_t fw_stack_peak(void) { return (uint32_t)&_stack_start - lowest_used(); }

uint32_t fw_stack_calls_peak(void) {
  uint32_t low = lowest_used();
  return main_sp > low ? main_sp - low : 0;
}

void fw_report_all(uint32_t fs_bytes, int fs_on_stack, uint32_t cache_bytes) {
  fw_report("fs_bytes", fs_bytes);
  fw_report("fs_on_stack", fs_on_stack ? 1 : 0);
  fw_report("cache_bytes", cache_bytes);
  fw_report("stack_peak", fw_stack_peak());
  fw_report("stack_calls", fw_stack_calls_peak());
}
