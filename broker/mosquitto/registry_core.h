/*
 * client-registry: the Mosquitto-free core of the registry plugin (plugin_protocol.md).
 *
 * SHA-256 and HMAC, FNV-1a 64, MQTT topic matching (store/topics.py mirrored), the account table, the
 * record parser, control messages (parse, then apply) and the snapshot loader. Nothing here logs, blocks
 * or calls Mosquitto, so the fuzz targets (fuzz/) link it alone.
 */
#ifndef REGISTRY_CORE_H
#define REGISTRY_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- hashes ---- */
#define RC_FNV_OFFSET 0xcbf29ce484222325ULL
#define RC_FNV_PRIME 0x100000001b3ULL

uint64_t rc_fnv1a64(const void *data, size_t len);
uint64_t rc_fnv1a64_more(uint64_t h, const void *data, size_t len);

struct rc_sha256 {
	uint32_t state[8];
	uint64_t bytes;
	uint8_t block[64];
	size_t used;
};
void rc_sha256_init(struct rc_sha256 *ctx);
void rc_sha256_update(struct rc_sha256 *ctx, const void *data, size_t len);
void rc_sha256_final(struct rc_sha256 *ctx, uint8_t out[32]);
void rc_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len, uint8_t out[32]);
/* HMAC-SHA256(secret, username || 0x00 || password): store/crypto.py's verifier. */
void rc_verifier(const uint8_t secret[32], const char *username, size_t username_len,
		const char *password, size_t password_len, uint8_t out[32]);
/* 1 when equal; time depends on len only. */
int rc_ct_equal(const uint8_t *a, const uint8_t *b, size_t len);

/* ---- topics (store/topics.py, plus MQTT 4.7.2 for topics starting with '$') ---- */
#define RC_MAX_PATTERN 1024
bool rc_filter_valid(const char *pattern, size_t len);
bool rc_matches(const char *pattern, size_t plen, const char *topic, size_t tlen);
bool rc_covers(const char *pattern, size_t plen, const char *filter, size_t flen);

/* ---- accounts ---- */
#define RC_DISABLED 1u
#define RC_ADMIN 2u
#define RC_SERVICE 4u
#define RC_CERT 8u /* bound to one client certificate: its SHA-256 fingerprint follows the verifier */
#define RC_READ 1u
#define RC_WRITE 2u
#define RC_MAX_USERNAME 1024
#define RC_MAX_ACLS 4096

struct rc_acl {
	const char *pattern; /* NUL-terminated (no NUL inside) */
	uint16_t len;
	uint8_t access;
};

/* One allocation holds the struct, its ACL array and its strings. */
struct rc_account {
	struct rc_account *next; /* hash chain, or a list while detached */
	uint64_t key_hash;       /* seeded hash of username (table placement) */
	uint64_t record_hash;    /* FNV-1a 64 of the P record: the digest's share */
	uint64_t generation;     /* control message that created it (kick decisions) */
	const char *username;    /* NUL-terminated */
	const char *client_id;   /* NUL-terminated, "" = any */
	struct rc_acl *acls;
	uint16_t username_len;
	uint16_t client_id_len;
	uint16_t n_acl;
	uint8_t flags;
	uint8_t verifier[32];
	uint8_t certificate[32]; /* SHA-256 of the certificate's DER, when flags has RC_CERT (else zeros) */
};

struct rc_table {
	struct rc_account **buckets;
	size_t n_buckets; /* a power of two */
	size_t count;
	uint64_t digest;  /* XOR of record_hash */
	uint64_t seed;
};

int rc_table_init(struct rc_table *t, size_t expected, uint64_t seed); /* 0 or -1 (no memory) */
void rc_table_free(struct rc_table *t);
uint64_t rc_key_hash(uint64_t seed, const void *key, size_t len);
struct rc_account *rc_table_find(const struct rc_table *t, const char *username, size_t len);
/* Inserts a (takes ownership); returns the account it replaced (now detached), or NULL. */
struct rc_account *rc_table_put(struct rc_table *t, struct rc_account *a);
/* Detaches and returns the account, or NULL. */
struct rc_account *rc_table_remove(struct rc_table *t, const char *username, size_t len);
/* Detaches every account, returned as a list linked by next. */
struct rc_account *rc_table_clear(struct rc_table *t);
void rc_account_free(struct rc_account *a);
void rc_account_list_free(struct rc_account *list);

/* ---- parsing ---- */
enum rc_parse {
	RC_OK = 0,
	RC_MALFORMED = 1,
	RC_NOMEM = 2,
};

/* Parses one P record at data[*pos] (the 'P' included); on success *pos is past it and, if out is not
 * NULL, *out is a new account. why (if not NULL) names the problem on failure. */
int rc_parse_account(const uint8_t *data, size_t len, size_t *pos, uint64_t seed,
		struct rc_account **out, const char **why);

/* ---- the state: accounts, seq, window ---- */
struct rc_state {
	struct rc_table table;
	uint64_t seq;
	uint64_t unlocked_until_ms;
	uint64_t generation;
};

/* Called after a control message is applied, once per account whose sessions must go: removed, or its
 * verifier, client id, admin/service flag changed, or it became disabled. */
typedef void (*rc_kick_fn)(void *ctx, const char *username);

struct rc_answer {
	uint64_t seq;        /* echoed */
	uint8_t status;      /* 0 applied, 1 refused */
	uint64_t state_seq;
	uint32_t accounts;
	uint64_t digest;
};
#define RC_ANSWER_LEN (4 + 8 + 1 + 8 + 4 + 8)

/* Parses the whole "CRC2" message, then (only if all of it is valid) applies it. Returns RC_OK,
 * RC_MALFORMED (nothing changed) or RC_NOMEM (nothing changed). */
int rc_control(struct rc_state *s, const uint8_t *msg, size_t len, rc_kick_fn kick, void *ctx,
		struct rc_answer *answer, const char **why);
void rc_answer_encode(const struct rc_answer *a, uint8_t out[RC_ANSWER_LEN]);

/* Loads a whole "CRS2" snapshot into s (initialised here). RC_OK, or an error with s empty and usable. */
int rc_snapshot_load(struct rc_state *s, const uint8_t *data, size_t len, uint64_t seed, const char **why);
/* The same; verify 0 skips the checksum (the fuzz target, to reach every parser state). */
int rc_snapshot_load_checked(struct rc_state *s, const uint8_t *data, size_t len, uint64_t seed, int verify,
		const char **why);
void rc_state_free(struct rc_state *s);

/* ---- helpers ---- */
/* Writes a printable, capped copy of data (non-printable bytes as \xNN, "..." when cut) into out. */
void rc_escape(const void *data, size_t len, char *out, size_t out_size);
bool rc_secret_parse(const char *text, size_t len, uint8_t out[32]);

static inline uint16_t rc_get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rc_get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t rc_get64(const uint8_t *p) { return ((uint64_t)rc_get32(p) << 32) | rc_get32(p + 4); }
static inline uint8_t *rc_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; return p + 2; }
static inline uint8_t *rc_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
	return p + 4;
}
static inline uint8_t *rc_put64(uint8_t *p, uint64_t v) { rc_put32(p, (uint32_t)(v >> 32)); return rc_put32(p + 4, (uint32_t)v); }

#endif
