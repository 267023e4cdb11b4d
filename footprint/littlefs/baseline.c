/* The empty C firmware: startup, semihosting and the stack measurement, no filesystem. */
#include "fw.h"

int main(void) {
  fw_paint_stack();
  fw_report_all(0, 0, 0);
  return 0;
}
