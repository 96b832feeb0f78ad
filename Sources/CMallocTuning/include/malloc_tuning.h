#ifndef WA_OUTBOX_MALLOC_TUNING_H
#define WA_OUTBOX_MALLOC_TUNING_H

// Linking this target caps glibc's malloc arenas at one from before main (malloc_tuning.c).

/// The number of malloc arenas this process has (malloc_info(3)); -1 off glibc.
int wa_malloc_arena_count(void);

#endif
