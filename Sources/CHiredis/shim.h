#include <hiredis.h>
#include <sys/time.h>

/* Accessors that keep hiredis' structs out of Swift. */
static inline int wa_redis_err(const redisContext *c) { return c->err; }
static inline const char *wa_redis_errstr(const redisContext *c) { return c->errstr; }
static inline int wa_redis_fd(const redisContext *c) { return c->fd; }
static inline int wa_reply_type(const redisReply *r) { return r->type; }
static inline long long wa_reply_integer(const redisReply *r) { return r->integer; }
static inline const char *wa_reply_str(const redisReply *r) { return r->str; }
static inline size_t wa_reply_len(const redisReply *r) { return r->len; }
static inline size_t wa_reply_elements(const redisReply *r) { return r->elements; }
static inline const redisReply *wa_reply_element(const redisReply *r, size_t i) { return r->element[i]; }
static inline struct timeval wa_timeval_ms(long ms) { struct timeval tv = { ms / 1000, (ms % 1000) * 1000 }; return tv; }
