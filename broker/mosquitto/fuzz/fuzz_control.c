/*
 * libFuzzer target: control messages (parse, then apply) on one table, in random sequences.
 *
 * Input: frames of { u8 mode, u16 length, length bytes }. mode bit0: prefix "CRC2" + a seq so the bytes are
 * records. After every message the table's invariants are checked: count and digest equal a walk of the
 * buckets, every account is found by name, and its record hash equals the FNV-1a 64 of its re-encoded P
 * record (the parser kept exactly what it read, the certificate binding included). A refused message must change nothing.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *        -I.. fuzz_control.c ../registry_core.c -o fuzz_control
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry_core.h"

static unsigned kicks;

static void kick(void *ctx, const char *username)
{
	size_t len = strlen(username);
	(void)ctx;
	if(len == 0 || len > RC_MAX_USERNAME) abort();
	kicks++;
}

static uint64_t record_hash(const struct rc_account *a)
{
	uint8_t small[8];
	uint64_t h = RC_FNV_OFFSET;
	uint16_t i;

	small[0] = 'P';
	rc_put16(small + 1, a->username_len);
	h = rc_fnv1a64_more(h, small, 3);
	h = rc_fnv1a64_more(h, a->username, a->username_len);
	h = rc_fnv1a64_more(h, &a->flags, 1);
	h = rc_fnv1a64_more(h, a->verifier, 32);
	if(a->flags & RC_CERT) h = rc_fnv1a64_more(h, a->certificate, 32);
	rc_put16(small, a->client_id_len);
	h = rc_fnv1a64_more(h, small, 2);
	h = rc_fnv1a64_more(h, a->client_id, a->client_id_len);
	rc_put16(small, a->n_acl);
	h = rc_fnv1a64_more(h, small, 2);
	for(i = 0; i < a->n_acl; i++){
		small[0] = a->acls[i].access;
		rc_put16(small + 1, a->acls[i].len);
		h = rc_fnv1a64_more(h, small, 3);
		h = rc_fnv1a64_more(h, a->acls[i].pattern, a->acls[i].len);
	}
	return h;
}

static const uint8_t unbound[32]; /* an account without RC_CERT holds zeros: kick_needed compares them */

static void check(const struct rc_table *t)
{
	size_t i, count = 0;
	uint64_t digest = 0;
	const struct rc_account *a;

	for(i = 0; i < t->n_buckets; i++){
		for(a = t->buckets[i]; a; a = a->next){
			count++;
			digest ^= a->record_hash;
			if(rc_table_find(t, a->username, a->username_len) != a) abort();
			if(record_hash(a) != a->record_hash) abort();
			if(strlen(a->username) != a->username_len || strlen(a->client_id) != a->client_id_len) abort();
			if(!(a->flags & RC_CERT) && !rc_ct_equal(a->certificate, unbound, 32)) abort();
		}
	}
	if(count != t->count || digest != t->digest) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rc_state s;
	struct rc_answer answer;
	size_t pos = 0;
	uint8_t *msg;
	const char *why;
	int rc;

	memset(&s, 0, sizeof(s));
	if(rc_table_init(&s.table, 0, 0x1234) != 0) return 0;
	while(size - pos >= 3){
		uint8_t mode = data[pos];
		size_t len = rc_get16(data + pos + 1), off = (mode & 1) ? 12 : 0;
		uint64_t seq_before = s.seq, digest_before = s.table.digest, window_before = s.unlocked_until_ms;
		size_t count_before = s.table.count;
		pos += 3;
		if(len > size - pos) len = size - pos;
		msg = malloc(len + off + 1);
		if(msg == NULL) break;
		if(off){
			memcpy(msg, "CRC2", 4);
			rc_put64(msg + 4, (uint64_t)pos);
		}
		memcpy(msg + off, data + pos, len);
		pos += len;
		why = NULL;
		rc = rc_control(&s, msg, len + off, kick, NULL, &answer, &why);
		free(msg);
		if(rc != RC_OK){
			if(why == NULL || answer.status != 1) abort();
			if(s.seq != seq_before || s.table.digest != digest_before || s.table.count != count_before
					|| s.unlocked_until_ms != window_before) abort();
		}else if(answer.status != 0){
			abort();
		}
		if(answer.accounts != s.table.count || answer.digest != s.table.digest || answer.state_seq != s.seq) abort();
		check(&s.table);
	}
	rc_state_free(&s);
	return 0;
}
