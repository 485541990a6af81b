/*
 * client-registry: the Mosquitto-free core of the registry plugin. See registry_core.h and
 * plugin_protocol.md.
 */
#include "registry_core.h"

#include <stdlib.h>
#include <string.h>

/* ---- FNV-1a 64 ---- */

uint64_t rc_fnv1a64_more(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t i;

	for(i = 0; i < len; i++){
		h ^= p[i];
		h *= RC_FNV_PRIME;
	}
	return h;
}

uint64_t rc_fnv1a64(const void *data, size_t len)
{
	return rc_fnv1a64_more(RC_FNV_OFFSET, data, len);
}

uint64_t rc_key_hash(uint64_t seed, const void *key, size_t len)
{
	uint64_t h = rc_fnv1a64_more(RC_FNV_OFFSET ^ seed, key, len);

	/* A finaliser (murmur3's) so the low bits used for buckets depend on every byte. */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* A memset the compiler cannot drop (explicit_bzero without depending on glibc): for buffers that held
 * password-derived state. */
static void *(*const volatile wipe_fn)(void *, int, size_t) = memset;
#define WIPE(p, n) ((void)wipe_fn((p), 0, (n)))

/* ---- SHA-256 (FIPS 180-4) ---- */

static const uint32_t K256[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t st[8], const uint8_t *b)
{
	uint32_t w[64], a, c, d, e, f, g, h, bb, t1, t2;
	int i;

	for(i = 0; i < 16; i++) w[i] = rc_get32(b + 4 * i);
	for(i = 16; i < 64; i++){
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = st[0]; bb = st[1]; c = st[2]; d = st[3]; e = st[4]; f = st[5]; g = st[6]; h = st[7];
	for(i = 0; i < 64; i++){
		t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
		t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
		h = g; g = f; f = e; e = d + t1; d = c; c = bb; bb = a; a = t1 + t2;
	}
	st[0] += a; st[1] += bb; st[2] += c; st[3] += d; st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

void rc_sha256_init(struct rc_sha256 *ctx)
{
	static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(ctx->state, iv, sizeof(iv));
	ctx->bytes = 0;
	ctx->used = 0;
}

void rc_sha256_update(struct rc_sha256 *ctx, const void *data, size_t len)
{
	const uint8_t *p = data;

	ctx->bytes += len;
	while(len > 0){
		size_t n = 64 - ctx->used;
		if(n > len) n = len;
		memcpy(ctx->block + ctx->used, p, n);
		ctx->used += n;
		p += n;
		len -= n;
		if(ctx->used == 64){
			sha256_block(ctx->state, ctx->block);
			ctx->used = 0;
		}
	}
}

void rc_sha256_final(struct rc_sha256 *ctx, uint8_t out[32])
{
	uint64_t bits = ctx->bytes * 8;
	uint8_t pad = 0x80, zero = 0, len_be[8];
	int i;

	rc_sha256_update(ctx, &pad, 1);
	while(ctx->used != 56) rc_sha256_update(ctx, &zero, 1);
	rc_put64(len_be, bits);
	rc_sha256_update(ctx, len_be, 8);
	for(i = 0; i < 8; i++) rc_put32(out + 4 * i, ctx->state[i]);
	WIPE(ctx, sizeof(*ctx));
}

struct hmac_ctx {
	struct rc_sha256 inner;
	uint8_t opad[64];
};

static void hmac_start(struct hmac_ctx *h, const uint8_t *key, size_t key_len)
{
	uint8_t k[64], ipad[64];
	int i;

	memset(k, 0, sizeof(k));
	if(key_len > 64){
		struct rc_sha256 kc;
		rc_sha256_init(&kc);
		rc_sha256_update(&kc, key, key_len);
		rc_sha256_final(&kc, k);
	}else if(key_len > 0){
		memcpy(k, key, key_len);
	}
	for(i = 0; i < 64; i++){
		ipad[i] = (uint8_t)(k[i] ^ 0x36);
		h->opad[i] = (uint8_t)(k[i] ^ 0x5c);
	}
	rc_sha256_init(&h->inner);
	rc_sha256_update(&h->inner, ipad, 64);
	WIPE(k, sizeof(k));
	WIPE(ipad, sizeof(ipad));
}

static void hmac_finish(struct hmac_ctx *h, uint8_t out[32])
{
	uint8_t ih[32];
	struct rc_sha256 outer;

	rc_sha256_final(&h->inner, ih);
	rc_sha256_init(&outer);
	rc_sha256_update(&outer, h->opad, 64);
	rc_sha256_update(&outer, ih, 32);
	rc_sha256_final(&outer, out);
	WIPE(ih, sizeof(ih));
	WIPE(h, sizeof(*h));
}

void rc_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len, uint8_t out[32])
{
	struct hmac_ctx h;

	hmac_start(&h, key, key_len);
	rc_sha256_update(&h.inner, msg, msg_len);
	hmac_finish(&h, out);
}

void rc_verifier(const uint8_t secret[32], const char *username, size_t username_len,
		const char *password, size_t password_len, uint8_t out[32])
{
	struct hmac_ctx h;
	uint8_t zero = 0;

	hmac_start(&h, secret, 32);
	rc_sha256_update(&h.inner, username, username_len);
	rc_sha256_update(&h.inner, &zero, 1);
	if(password_len) rc_sha256_update(&h.inner, password, password_len);
	hmac_finish(&h, out);
}

int rc_ct_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
	volatile uint8_t diff = 0;
	size_t i;

	for(i = 0; i < len; i++) diff |= (uint8_t)(a[i] ^ b[i]);
	return diff == 0;
}

/* ---- topics ---- */

static size_t level_end(const char *s, size_t start, size_t len)
{
	const char *slash = start < len ? memchr(s + start, '/', len - start) : NULL;
	return slash ? (size_t)(slash - s) : len;
}

static bool level_is(const char *s, size_t start, size_t end, char c)
{
	return end - start == 1 && s[start] == c;
}

static bool first_level_wild(const char *p, size_t plen)
{
	size_t end = level_end(p, 0, plen);
	return level_is(p, 0, end, '+') || level_is(p, 0, end, '#');
}

bool rc_filter_valid(const char *pattern, size_t len)
{
	size_t start = 0, end;

	if(len == 0 || len > RC_MAX_PATTERN || memchr(pattern, '\0', len) != NULL) return false;
	for(;;){
		end = level_end(pattern, start, len);
		if(memchr(pattern + start, '#', end - start) && (!level_is(pattern, start, end, '#') || end != len)){
			return false;
		}
		if(memchr(pattern + start, '+', end - start) && !level_is(pattern, start, end, '+')){
			return false;
		}
		if(end == len) return true;
		start = end + 1;
	}
}

bool rc_matches(const char *p, size_t plen, const char *t, size_t tlen)
{
	size_t pi = 0, ti = 0, pe, te = 0;
	bool t_done = false;

	if(tlen > 0 && t[0] == '$' && first_level_wild(p, plen)) return false;
	for(;;){
		pe = level_end(p, pi, plen);
		if(level_is(p, pi, pe, '#')) return true;
		if(t_done) return false;
		te = level_end(t, ti, tlen);
		if(!level_is(p, pi, pe, '+')){
			if(pe - pi != te - ti || memcmp(p + pi, t + ti, pe - pi) != 0) return false;
		}
		if(pe == plen) return te == tlen;
		pi = pe + 1;
		if(te == tlen) t_done = true;
		else ti = te + 1;
	}
}

bool rc_covers(const char *p, size_t plen, const char *r, size_t rlen)
{
	size_t pi = 0, ri = 0, pe, re = 0;
	bool r_done = false;

	if(rlen > 0 && r[0] == '$' && first_level_wild(p, plen)) return false;
	for(;;){
		pe = level_end(p, pi, plen);
		if(level_is(p, pi, pe, '#')) return true;
		if(r_done) return false;
		re = level_end(r, ri, rlen);
		if(level_is(r, ri, re, '#')) return false;
		if(!level_is(p, pi, pe, '+')){
			if(level_is(r, ri, re, '+')) return false;
			if(pe - pi != re - ri || memcmp(p + pi, r + ri, pe - pi) != 0) return false;
		}
		if(pe == plen) return re == rlen;
		pi = pe + 1;
		if(re == rlen) r_done = true;
		else ri = re + 1;
	}
}

/* ---- the table ---- */

static size_t buckets_for(size_t expected)
{
	size_t n = 16;
	while(n < expected && n < ((size_t)1 << 40)) n <<= 1;
	return n;
}

int rc_table_init(struct rc_table *t, size_t expected, uint64_t seed)
{
	memset(t, 0, sizeof(*t));
	t->seed = seed;
	t->n_buckets = buckets_for(expected);
	t->buckets = calloc(t->n_buckets, sizeof(*t->buckets));
	if(t->buckets == NULL){
		t->n_buckets = 0;
		return -1;
	}
	return 0;
}

void rc_account_free(struct rc_account *a)
{
	if(a == NULL) return;
	/* The verifier is secret-derived: do not leave it in freed memory. */
	WIPE(a->verifier, sizeof(a->verifier));
	free(a);
}

void rc_account_list_free(struct rc_account *list)
{
	while(list){
		struct rc_account *next = list->next;
		rc_account_free(list);
		list = next;
	}
}

struct rc_account *rc_table_clear(struct rc_table *t)
{
	struct rc_account *list = NULL, *a, *next;
	size_t i;

	for(i = 0; i < t->n_buckets; i++){
		for(a = t->buckets[i]; a; a = next){
			next = a->next;
			a->next = list;
			list = a;
		}
		t->buckets[i] = NULL;
	}
	t->count = 0;
	t->digest = 0;
	return list;
}

void rc_table_free(struct rc_table *t)
{
	rc_account_list_free(rc_table_clear(t));
	free(t->buckets);
	t->buckets = NULL;
	t->n_buckets = 0;
}

struct rc_account *rc_table_find(const struct rc_table *t, const char *username, size_t len)
{
	uint64_t h;
	struct rc_account *a;

	if(t->n_buckets == 0 || len == 0 || len > RC_MAX_USERNAME) return NULL;
	h = rc_key_hash(t->seed, username, len);
	for(a = t->buckets[h & (t->n_buckets - 1)]; a; a = a->next){
		if(a->key_hash == h && a->username_len == len && memcmp(a->username, username, len) == 0) return a;
	}
	return NULL;
}

static void table_grow(struct rc_table *t)
{
	size_t n = t->n_buckets ? t->n_buckets * 2 : 16, i;
	struct rc_account **b = calloc(n, sizeof(*b)), *a, *next;

	if(b == NULL) return; /* longer chains, still correct */
	for(i = 0; i < t->n_buckets; i++){
		for(a = t->buckets[i]; a; a = next){
			next = a->next;
			a->next = b[a->key_hash & (n - 1)];
			b[a->key_hash & (n - 1)] = a;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->n_buckets = n;
}

struct rc_account *rc_table_remove(struct rc_table *t, const char *username, size_t len)
{
	uint64_t h;
	struct rc_account **link, *a;

	if(t->n_buckets == 0 || len == 0 || len > RC_MAX_USERNAME) return NULL;
	h = rc_key_hash(t->seed, username, len);
	for(link = &t->buckets[h & (t->n_buckets - 1)]; (a = *link) != NULL; link = &a->next){
		if(a->key_hash == h && a->username_len == len && memcmp(a->username, username, len) == 0){
			*link = a->next;
			a->next = NULL;
			t->count--;
			t->digest ^= a->record_hash;
			return a;
		}
	}
	return NULL;
}

struct rc_account *rc_table_put(struct rc_table *t, struct rc_account *a)
{
	struct rc_account *old = rc_table_remove(t, a->username, a->username_len);
	size_t i;

	if(t->count >= t->n_buckets) table_grow(t);
	i = a->key_hash & (t->n_buckets - 1);
	a->next = t->buckets[i];
	t->buckets[i] = a;
	t->count++;
	t->digest ^= a->record_hash;
	return old;
}

/* ---- records ---- */

struct reader {
	const uint8_t *data;
	size_t len, pos;
};

static bool rd_take(struct reader *r, size_t n, const uint8_t **out)
{
	if(r->len - r->pos < n) return false;
	*out = r->data + r->pos;
	r->pos += n;
	return true;
}

static bool rd_u8(struct reader *r, uint8_t *v)
{
	const uint8_t *p;
	if(!rd_take(r, 1, &p)) return false;
	*v = p[0];
	return true;
}

static bool rd_u16(struct reader *r, uint16_t *v)
{
	const uint8_t *p;
	if(!rd_take(r, 2, &p)) return false;
	*v = rc_get16(p);
	return true;
}

static bool rd_str(struct reader *r, const uint8_t **s, uint16_t *len)
{
	return rd_u16(r, len) && rd_take(r, *len, s);
}

#define FAIL(msg) do { if(why) *why = (msg); return RC_MALFORMED; } while(0)

int rc_parse_account(const uint8_t *data, size_t len, size_t *pos, uint64_t seed,
		struct rc_account **out, const char **why)
{
	struct reader r = {data, len, *pos};
	const uint8_t *op, *user, *cid, *verifier, *certificate = NULL, *pat = NULL;
	uint16_t ulen, clen, n_acl, plen = 0, i;
	uint8_t flags, access = 0;
	size_t start = *pos, acl_start, size, pattern_bytes = 0;
	struct rc_account *a;
	char *strings;

	if(!rd_take(&r, 1, &op) || op[0] != 'P') FAIL("not an account record");
	if(!rd_str(&r, &user, &ulen)) FAIL("truncated account record");
	if(ulen == 0 || ulen > RC_MAX_USERNAME) FAIL("username length out of range");
	if(memchr(user, '\0', ulen)) FAIL("NUL in username");
	if(!rd_u8(&r, &flags)) FAIL("truncated account record");
	if(flags & ~(RC_DISABLED | RC_ADMIN | RC_SERVICE | RC_CERT)) FAIL("unknown account flags");
	if(!rd_take(&r, 32, &verifier)) FAIL("truncated account record");
	if((flags & RC_CERT) && !rd_take(&r, 32, &certificate)) FAIL("truncated account record");
	if(!rd_str(&r, &cid, &clen)) FAIL("truncated account record");
	if(memchr(cid, '\0', clen)) FAIL("NUL in client id");
	if(!rd_u16(&r, &n_acl)) FAIL("truncated account record");
	if(n_acl > RC_MAX_ACLS) FAIL("too many ACLs");
	acl_start = r.pos;
	for(i = 0; i < n_acl; i++){
		if(!rd_u8(&r, &access) || !rd_str(&r, &pat, &plen)) FAIL("truncated ACL");
		if(access == 0 || access > (RC_READ | RC_WRITE)) FAIL("ACL access out of range");
		if(!rc_filter_valid((const char *)pat, plen)) FAIL("invalid ACL pattern");
		pattern_bytes += (size_t)plen + 1;
	}
	if(out){
		size = sizeof(*a) + (size_t)n_acl * sizeof(struct rc_acl) + ulen + 1u + clen + 1u + pattern_bytes;
		a = malloc(size);
		if(a == NULL){
			if(why) *why = "out of memory";
			return RC_NOMEM;
		}
		memset(a, 0, sizeof(*a));
		a->acls = (struct rc_acl *)(a + 1);
		strings = (char *)(a->acls + n_acl);
		memcpy(strings, user, ulen);
		strings[ulen] = '\0';
		a->username = strings;
		a->username_len = ulen;
		strings += ulen + 1;
		memcpy(strings, cid, clen);
		strings[clen] = '\0';
		a->client_id = strings;
		a->client_id_len = clen;
		strings += clen + 1;
		a->flags = flags;
		memcpy(a->verifier, verifier, 32);
		if(certificate) memcpy(a->certificate, certificate, 32);
		a->n_acl = n_acl;
		r.pos = acl_start;
		for(i = 0; i < n_acl; i++){
			rd_u8(&r, &access);
			rd_str(&r, &pat, &plen);
			memcpy(strings, pat, plen);
			strings[plen] = '\0';
			a->acls[i].pattern = strings;
			a->acls[i].len = plen;
			a->acls[i].access = access;
			strings += plen + 1;
		}
		a->key_hash = rc_key_hash(seed, a->username, ulen);
		a->record_hash = rc_fnv1a64(data + start, r.pos - start);
		*out = a;
	}
	*pos = r.pos;
	return RC_OK;
}

/* ---- control messages ---- */

struct op {
	uint8_t type;
	uint16_t name_len;
	const uint8_t *name;
	struct rc_account *account;
	uint64_t window;
};

static void ops_free(struct op *ops, size_t n)
{
	size_t i;
	for(i = 0; i < n; i++) rc_account_free(ops[i].account);
	free(ops);
}

static bool kick_needed(const struct rc_account *old, const struct rc_account *cur)
{
	if(cur == NULL) return true;
	if(!rc_ct_equal(old->verifier, cur->verifier, 32)) return true;
	if(!(old->flags & RC_DISABLED) && (cur->flags & RC_DISABLED)) return true;
	if((old->flags ^ cur->flags) & (RC_ADMIN | RC_SERVICE | RC_CERT)) return true;
	/* A new binding: sessions made with the old certificate go (both are zeros when unbound). */
	if(!rc_ct_equal(old->certificate, cur->certificate, 32)) return true;
	if(old->client_id_len != cur->client_id_len
			|| memcmp(old->client_id, cur->client_id, old->client_id_len) != 0) return true;
	return false;
}

void rc_answer_encode(const struct rc_answer *a, uint8_t out[RC_ANSWER_LEN])
{
	uint8_t *p = out;

	memcpy(p, "CRA2", 4);
	p = rc_put64(p + 4, a->seq);
	*p++ = a->status;
	p = rc_put64(p, a->state_seq);
	p = rc_put32(p, a->accounts);
	rc_put64(p, a->digest);
}

static void fill_answer(const struct rc_state *s, uint64_t seq, uint8_t status, struct rc_answer *answer)
{
	answer->seq = seq;
	answer->status = status;
	answer->state_seq = s->seq;
	answer->accounts = (uint32_t)s->table.count;
	answer->digest = s->table.digest;
}

int rc_control(struct rc_state *s, const uint8_t *msg, size_t len, rc_kick_fn kick, void *ctx,
		struct rc_answer *answer, const char **why)
{
	struct reader r = {msg, len, 12};
	struct op *ops = NULL, *grown;
	size_t n_ops = 0, cap = 0, i;
	uint64_t seq, generation;
	struct rc_account *grave = NULL, *old, *next;
	const uint8_t *p;
	int rc;

	if(len < 12 || memcmp(msg, "CRC2", 4) != 0){
		fill_answer(s, len >= 12 ? rc_get64(msg + 4) : 0, 1, answer);
		if(why) *why = len < 12 ? "shorter than a header" : "bad magic";
		return RC_MALFORMED;
	}
	seq = rc_get64(msg + 4);
	/* Parse everything first: a bad record anywhere changes nothing. */
	while(r.pos < len){
		struct op o;
		memset(&o, 0, sizeof(o));
		o.type = msg[r.pos];
		if(o.type == 'P'){
			rc = rc_parse_account(msg, len, &r.pos, s->table.seed, &o.account, why);
			if(rc != RC_OK) goto refuse;
		}else if(o.type == 'D'){
			r.pos++;
			if(!rd_str(&r, &o.name, &o.name_len)){ rc = RC_MALFORMED; if(why) *why = "truncated delete"; goto refuse; }
			if(o.name_len == 0 || o.name_len > RC_MAX_USERNAME || memchr(o.name, '\0', o.name_len)){
				rc = RC_MALFORMED; if(why) *why = "bad username in delete"; goto refuse;
			}
		}else if(o.type == 'R'){
			r.pos++;
		}else if(o.type == 'W'){
			r.pos++;
			if(!rd_take(&r, 8, &p)){ rc = RC_MALFORMED; if(why) *why = "truncated window"; goto refuse; }
			o.window = rc_get64(p);
		}else{
			rc = RC_MALFORMED;
			if(why) *why = "unknown record type";
			goto refuse;
		}
		if(n_ops == cap){
			cap = cap ? cap * 2 : 16;
			grown = realloc(ops, cap * sizeof(*ops));
			if(grown == NULL){
				rc_account_free(o.account);
				rc = RC_NOMEM;
				if(why) *why = "out of memory";
				goto refuse;
			}
			ops = grown;
		}
		ops[n_ops++] = o;
	}
	if(n_ops == 0){ /* a query */
		fill_answer(s, seq, 0, answer);
		return RC_OK;
	}
	/* Apply: nothing below allocates (a failed table growth only lengthens chains). */
	generation = ++s->generation;
	for(i = 0; i < n_ops; i++){
		old = NULL;
		switch(ops[i].type){
			case 'P':
				ops[i].account->generation = generation;
				old = rc_table_put(&s->table, ops[i].account);
				ops[i].account = NULL;
				break;
			case 'D':
				old = rc_table_remove(&s->table, (const char *)ops[i].name, ops[i].name_len);
				break;
			case 'R':
				old = rc_table_clear(&s->table);
				break;
			case 'W':
				s->unlocked_until_ms = ops[i].window;
				break;
		}
		while(old){
			next = old->next;
			old->next = grave;
			grave = old;
			old = next;
		}
	}
	s->seq = seq;
	free(ops);
	/* Accounts that existed before this message and are gone or changed in a way that matters. */
	for(old = grave; old; old = old->next){
		if(old->generation != generation
				&& kick_needed(old, rc_table_find(&s->table, old->username, old->username_len))){
			if(kick) kick(ctx, old->username);
		}
	}
	rc_account_list_free(grave);
	fill_answer(s, seq, 0, answer);
	return RC_OK;

refuse:
	ops_free(ops, n_ops);
	fill_answer(s, seq, 1, answer);
	return rc;
}

/* ---- snapshot ---- */

#define SNAPSHOT_HEADER (4 + 8 + 8 + 4)
#define MIN_RECORD (1 + 2 + 1 + 1 + 32 + 2 + 2)

int rc_snapshot_load(struct rc_state *s, const uint8_t *data, size_t len, uint64_t seed, const char **why)
{
	return rc_snapshot_load_checked(s, data, len, seed, 1, why);
}

int rc_snapshot_load_checked(struct rc_state *s, const uint8_t *data, size_t len, uint64_t seed, int verify,
		const char **why)
{
	struct reader r;
	uint32_t count, i;
	struct rc_account *a, *old;
	int rc;

	memset(s, 0, sizeof(*s));
	if(rc_table_init(&s->table, 0, seed) != 0){
		if(why) *why = "out of memory";
		return RC_NOMEM;
	}
	if(len < SNAPSHOT_HEADER + 8){ if(why) *why = "truncated"; return RC_MALFORMED; }
	if(memcmp(data, "CRS2", 4) != 0){ if(why) *why = "bad magic"; return RC_MALFORMED; }
	count = rc_get32(data + 20);
	if(count > (len - SNAPSHOT_HEADER - 8) / MIN_RECORD){
		if(why) *why = "count larger than the file";
		return RC_MALFORMED;
	}
	rc_table_free(&s->table);
	if(rc_table_init(&s->table, count, seed) != 0){
		rc_table_init(&s->table, 0, seed);
		if(why) *why = "out of memory";
		return RC_NOMEM;
	}
	r.data = data;
	r.len = len - 8;
	r.pos = SNAPSHOT_HEADER;
	for(i = 0; i < count; i++){
		rc = rc_parse_account(r.data, r.len, &r.pos, seed, &a, why);
		if(rc != RC_OK) goto fail;
		old = rc_table_put(&s->table, a);
		if(old){
			rc_account_free(old);
			rc = RC_MALFORMED;
			if(why) *why = "duplicate username";
			goto fail;
		}
	}
	if(r.pos != r.len){
		rc = RC_MALFORMED;
		if(why) *why = "trailing bytes after the records";
		goto fail;
	}
	/* The checksum is the header's FNV-1a 64 XOR the records' digest, which the table has just summed: the
	 * service writes it from its own digest in O(1) (hashing a 10 MB file in Python took seconds). A corrupt
	 * record that still parses changes its hash, a lost one the count. */
	if(verify && (rc_fnv1a64(data, SNAPSHOT_HEADER) ^ s->table.digest) != rc_get64(data + len - 8)){
		rc = RC_MALFORMED;
		if(why) *why = "checksum mismatch (truncated or corrupt)";
		goto fail;
	}
	s->seq = rc_get64(data + 4);
	s->unlocked_until_ms = rc_get64(data + 12);
	return RC_OK;
fail:
	rc_account_list_free(rc_table_clear(&s->table));
	return rc;
}

void rc_state_free(struct rc_state *s)
{
	rc_table_free(&s->table);
	memset(s, 0, sizeof(*s));
}

/* ---- helpers ---- */

void rc_escape(const void *data, size_t len, char *out, size_t out_size)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = data;
	size_t i, o = 0;

	if(out_size == 0) return;
	for(i = 0; i < len; i++){
		uint8_t c = p[i];
		size_t need = (c >= 0x20 && c < 0x7f && c != '\\') ? 1 : (c == '\\' ? 2 : 4);
		if(o + need + 4 > out_size){ /* room for "..." and the NUL */
			if(o + 4 <= out_size){
				memcpy(out + o, "...", 3);
				o += 3;
			}
			break;
		}
		if(need == 1){
			out[o++] = (char)c;
		}else if(need == 2){
			out[o++] = '\\';
			out[o++] = '\\';
		}else{
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

static int hex_digit(char c)
{
	if(c >= '0' && c <= '9') return c - '0';
	if(c >= 'a' && c <= 'f') return c - 'a' + 10;
	if(c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

bool rc_secret_parse(const char *text, size_t len, uint8_t out[32])
{
	int i, hi, lo;

	if(len == 65 && text[64] == '\n') len = 64;
	if(len != 64) return false;
	for(i = 0; i < 32; i++){
		hi = hex_digit(text[2 * i]);
		lo = hex_digit(text[2 * i + 1]);
		if(hi < 0 || lo < 0) return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}
