// Marks threads Berth starts itself (see BerthSystem's spawnThread), per thread.
#include "CBerthSystem.h"

static __thread int own_thread;

void cberth_mark_own_thread(void) { own_thread = 1; }

int cberth_is_own_thread(void) { return own_thread; }
