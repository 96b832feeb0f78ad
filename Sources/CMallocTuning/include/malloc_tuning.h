#ifndef WA_OUTBOX_MALLOC_TUNING_H
#define WA_OUTBOX_MALLOC_TUNING_H

/// Caps glibc's malloc arenas (mallopt(M_ARENA_MAX, n)); a no-op off glibc. Returns 1 on success.
int wa_limit_malloc_arenas(int arenas);

#endif
