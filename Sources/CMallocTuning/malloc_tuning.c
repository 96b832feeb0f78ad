#define _GNU_SOURCE  // open_memstream
#include <stdio.h>  // first: defines __GLIBC__, which this file tests (without it, nothing was compiled)
#include <stdlib.h>
#include <string.h>
#include "malloc_tuning.h"

#if defined(__GLIBC__)
#include <malloc.h>

/// One malloc arena instead of glibc's default of up to eight per core, unless the operator says
/// otherwise (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in GLIBC_TUNABLES). Threads still take
/// small blocks from their own tcache without the arena's lock; BENCHMARKS.md has the drains with
/// one arena and with two.
///
/// A worker runs a dozen threads (one per database and Redis connection, the event loops, the
/// cooperative pool), and glibc gives each new thread its own arena, whose freed memory no other
/// thread reuses. glibc fixes its arena limit when the second arena is made, so the cap is set
/// before any other thread allocates: here, when the binary is loaded, before main.
///
/// Until MallocArenaTests asked the executable (`wa-outbox malloc-arenas`), the cap never held:
/// this file tested __GLIBC__ before including any libc header, so the mallopt call was never
/// compiled, and a draining worker kept nine arenas.
__attribute__((constructor)) static void wa_cap_malloc_arenas(void) {
    // An operator's own setting wins, by either of glibc's two spellings.
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (getenv("MALLOC_ARENA_MAX") != NULL || (tunables != NULL && strstr(tunables, "glibc.malloc.arena_max") != NULL)) return;
    mallopt(M_ARENA_MAX, 1);
}

int wa_malloc_arena_count(void) {
    char *report = NULL;
    size_t size = 0;
    FILE *stream = open_memstream(&report, &size);
    if (stream == NULL) return -1;
    malloc_info(0, stream);
    fclose(stream);
    int count = 0;
    for (const char *at = report; (at = strstr(at, "<heap nr=")) != NULL; at++) count++;
    free(report);
    return count;
}
#else
int wa_malloc_arena_count(void) { return -1; }
#endif
