/*
 * libFuzzer target: the snapshot loader. Input byte 0 chooses whether the trailing checksum is skipped
 * (so every record parser state is reached) or checked. A load either succeeds with a consistent table or
 * fails leaving an empty, usable one.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *        -I.. fuzz_snapshot.c ../registry_core.c -o fuzz_snapshot
 */
#include <stdlib.h>
#include <string.h>

#include "registry_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rc_state s;
	const char *why = NULL;
	uint8_t *copy;
	size_t len, i, count = 0;
	uint64_t digest = 0;
	const struct rc_account *a;
	int rc;

	if(size < 1) return 0;
	len = size - 1;
	copy = malloc(len ? len : 1);
	if(copy == NULL) return 0;
	memcpy(copy, data + 1, len);
	rc = rc_snapshot_load_checked(&s, copy, len, 99, !(data[0] & 1), &why);
	free(copy);
	if(rc != RC_OK && (why == NULL || s.table.count != 0 || s.table.digest != 0)) abort();
	for(i = 0; i < s.table.n_buckets; i++){
		for(a = s.table.buckets[i]; a; a = a->next){
			count++;
			digest ^= a->record_hash;
			if(rc_table_find(&s.table, a->username, a->username_len) != a) abort();
		}
	}
	if(count != s.table.count || digest != s.table.digest) abort();
	rc_state_free(&s);
	return 0;
}
