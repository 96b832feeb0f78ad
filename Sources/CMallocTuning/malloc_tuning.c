#include "malloc_tuning.h"

#if defined(__GLIBC__)
#include <malloc.h>

int wa_limit_malloc_arenas(int arenas) { return mallopt(M_ARENA_MAX, arenas); }
#else
int wa_limit_malloc_arenas(int arenas) { (void)arenas; return 0; }
#endif
